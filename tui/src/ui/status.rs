//! The bottom line: what is being typed or counted, the last report, or the key hints.

use super::*;

pub(super) fn render_status(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    // The note about notifications keeps its corner; the rest of the line gives way to it.
    let mut area = area;
    if let Some(note) = &app.notify_note {
        let note = format!(" notifications off: {note}");
        let width = (note.chars().count() as u16).min(area.width / 2);
        let spot = Rect {
            x: area.x + area.width - width,
            width,
            ..area
        };
        Line::from(Span::styled(note, theme.dim())).render(spot, buf);
        area.width -= width;
    }
    let line = if let Some(input) = &app.filter_input {
        Line::from(vec![
            Span::styled("filter: ", theme.accent()),
            Span::raw(input.clone()),
            Span::styled("█", theme.accent()),
            Span::styled("  Enter apply · Esc cancel · empty clears", theme.dim()),
        ])
    } else if let Some(op) = app.counting {
        let what = match op {
            Bulk::Retry => "counting dead events…",
            Bulk::Canary => "counting the dead events for a canary…",
            Bulk::Purge => "counting dead events older than 7 days…",
        };
        Line::from(Span::raw(what))
    } else if let Some(status) = app.current_status() {
        Line::from(Span::styled(status.text.clone(), theme.level(status.level)))
    } else {
        let mut spans = Vec::new();
        for (key, what) in keymap::hints() {
            spans.push(Span::styled(
                key,
                theme.accent().add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::raw(format!(" {what}  ")));
        }
        Line::from(spans)
    };
    line.render(area, buf);
}
