//! The overlays of the actions that touch many events: the question with its preview, and a
//! canary being watched.

use common::db::archive::ArchiveTarget;
use common::db::selection::Verdict;

use super::*;
use crate::app::{CanaryView, Confirm};
use crate::data::CANARY_SIZE;
use crate::model::Choice;

/// Types listed in a preview's breakdown; the rest are summed up in one line.
const BREAKDOWN_ROWS: usize = 6;

/// "all 120 dead events", "the 41 dead events matching "cus_"".
fn label(choice: &Choice) -> String {
    match choice.what.strip_prefix("all ") {
        Some(rest) => format!("all {} {rest}", choice.count),
        None => format!("the {} {}", choice.count, choice.what),
    }
}

fn key(theme: Theme, text: &'static str) -> Span<'static> {
    Span::styled(text, theme.accent().add_modifier(Modifier::BOLD))
}

pub(super) fn render_confirm(
    theme: Theme,
    confirm: &Confirm,
    archive: &ArchiveTarget,
    area: Rect,
    buf: &mut Buffer,
) {
    let choice = confirm.choice();
    let n = choice.count;
    let style = match confirm.op {
        Bulk::Retry | Bulk::Canary => theme.warn(),
        Bulk::Purge => theme.bad(),
    };
    let question = match (confirm.op, confirm.choices.len()) {
        (Bulk::Retry, 1) => format!("Retry {}?", label(choice)),
        (Bulk::Retry, _) => "Retry which dead events?".to_owned(),
        (Bulk::Canary, _) => format!(
            "Canary: retry {} of {} first?",
            CANARY_SIZE.min(n),
            label(choice)
        ),
        (Bulk::Purge, 1) => format!("Purge {}?", label(choice)),
        (Bulk::Purge, _) => "Purge which dead events?".to_owned(),
    };
    let mut lines = vec![Line::from(Span::styled(
        question,
        style.add_modifier(Modifier::BOLD),
    ))];
    if confirm.choices.len() > 1 {
        for (i, other) in confirm.choices.iter().enumerate() {
            let line = if i == confirm.chosen {
                Line::from(Span::styled(
                    format!("▸ {}", label(other)),
                    theme.accent().add_modifier(Modifier::BOLD),
                ))
            } else {
                Line::from(format!("  {}", label(other)))
            };
            lines.push(line);
        }
    }
    if !choice.by_type.is_empty() {
        lines.push(Line::from(""));
        for t in choice.by_type.iter().take(BREAKDOWN_ROWS) {
            lines.push(Line::from(format!(
                "{:>7}  {} {}",
                count(t.count),
                t.source,
                t.event_type
            )));
        }
        if let Some(rest) = choice
            .by_type
            .get(BREAKDOWN_ROWS..)
            .filter(|r| !r.is_empty())
        {
            let events: i64 = rest.iter().map(|t| t.count).sum();
            lines.push(Line::from(Span::styled(
                format!("{:>7}  in {} more types", count(events), rest.len()),
                theme.dim(),
            )));
        }
    }
    match choice.superseded {
        Some(k) if k > 0 && k == n => lines.push(Line::from(Span::styled(
            "All superseded: newer state of their objects is already applied, so a retry \
             would change nothing.",
            theme.warn(),
        ))),
        Some(k) if k > 0 => lines.push(Line::from(Span::styled(
            format!("{k} of them superseded: newer state of their objects is already applied."),
            theme.warn(),
        ))),
        _ => {}
    }
    lines.push(Line::from(""));
    lines.push(Line::from(match confirm.op {
        Bulk::Retry => {
            "Exactly these go back to the queue with a fresh attempt budget; any that die \
             after this count stay dead."
                .to_owned()
        }
        Bulk::Canary => format!(
            "The newest {} go back to the queue now; the other {} are offered only if all \
             of those succeed.",
            CANARY_SIZE.min(n),
            (n - CANARY_SIZE).max(0)
        ),
        Bulk::Purge => match archive {
            ArchiveTarget::Dir(dir) => format!(
                "They are archived with their attempt history into {}, then deleted; \
                 audit_logs records the receipt.",
                dir.display()
            ),
            ArchiveTarget::Off => "Archiving is off (HOOKD_ARCHIVE_DIR=off): they are deleted \
                                   with their attempt history and no copy is kept."
                .to_owned(),
        },
    }));
    lines.push(Line::from(""));
    let mut keys = vec![key(theme, "y"), Span::raw(" yes   ")];
    if confirm.choices.len() > 1 {
        keys.extend([key(theme, "Tab"), Span::raw(" the other set   ")]);
    }
    keys.extend([key(theme, "n"), Span::raw(" / Esc no")]);
    lines.push(Line::from(keys));
    render_box(" Confirm ", style, lines, area, buf);
}

pub(super) fn render_canary(theme: Theme, view: &CanaryView, area: Rect, buf: &mut Buffer) {
    let total = view.choice.count;
    let n = view.ids.len();
    let mut lines = vec![Line::from(Span::styled(
        format!("Canary of {}", label(&view.choice)),
        theme.warn().add_modifier(Modifier::BOLD),
    ))];
    lines.push(Line::from(if view.ids.is_empty() {
        format!("retrying {} of {total}…", CANARY_SIZE.min(total))
    } else {
        format!("retried the newest {n} of {total}")
    }));
    if !view.ids.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            format!("{:>8}  {:<28} {:<10} last error", "id", "type", "state"),
            theme.dim(),
        )));
    }
    for id in &view.ids {
        let progress = view.progress.iter().find(|p| p.id == *id);
        let (state, style) = match progress {
            None if view.progress.is_empty() => ("…", Style::new()),
            None => ("gone", theme.bad()),
            Some(p) if p.succeeded() => (p.state.as_str(), theme.good()),
            Some(p) if p.failed() => (p.state.as_str(), theme.bad()),
            Some(p) => (p.state.as_str(), theme.warn()),
        };
        let (event_type, error) = progress.map_or(("", String::new()), |p| {
            (
                p.event_type.as_str(),
                // The error of the attempt that is still running is the previous one.
                if p.failed() {
                    one_line(p.last_error.as_deref().unwrap_or(""))
                } else {
                    String::new()
                },
            )
        });
        lines.push(Line::from(vec![
            Span::raw(format!("{id:>8}  {event_type:<28} ")),
            Span::styled(format!("{state:<10}"), style),
            Span::styled(format!(" {error}"), theme.dim()),
        ]));
    }
    lines.push(Line::from(""));
    let rest = (total - n as i64).max(0);
    let failed =
        view.progress.iter().filter(|p| p.failed()).count() + n.saturating_sub(view.progress.len());
    lines.push(match view.verdict {
        Verdict::Running => Line::from(vec![
            Span::raw("waiting for hookd to process them…   "),
            key(theme, "Esc"),
            Span::raw(" stop watching (the rest is not retried)"),
        ]),
        Verdict::Succeeded => Line::from(vec![
            Span::styled(format!("All {n} succeeded.  "), theme.good()),
            key(theme, "y"),
            Span::raw(format!(" retry the other {rest}   ")),
            key(theme, "n"),
            Span::raw(" / Esc stop here"),
        ]),
        Verdict::Failed => Line::from(vec![
            Span::styled(
                format!("{failed} of {n} failed again: the rest was not retried.  "),
                theme.bad().add_modifier(Modifier::BOLD),
            ),
            key(theme, "Esc"),
            Span::raw(" close"),
        ]),
    });
    render_box(" Canary ", theme.warn(), lines, area, buf);
}

fn render_box(
    title: &'static str,
    style: Style,
    lines: Vec<Line<'_>>,
    area: Rect,
    buf: &mut Buffer,
) {
    let spot = centered(area, 76, 0);
    // Inside the borders and the padding; a wrapped line may take one row more than its
    // width says, as words move whole.
    let inner = spot.width.saturating_sub(4).max(1) as usize;
    let rows: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let wraps = lines.iter().any(|l| l.width() > inner);
    let spot = centered(area, spot.width, (rows + usize::from(wraps)) as u16 + 2);
    Clear.render(spot, buf);
    Paragraph::new(lines)
        .block(
            Block::bordered()
                .title(title)
                .border_style(style)
                .padding(Padding::horizontal(1)),
        )
        .wrap(Wrap { trim: false })
        .render(spot, buf);
}
