//! What opens over the panes: the help and an event's detail.

use super::*;

pub(super) fn render_help(theme: Theme, area: Rect, buf: &mut Buffer) {
    let spot = centered(area, 76, keymap::MAIN.len() as u16 + 2);
    Clear.render(spot, buf);
    let lines: Vec<Line> = keymap::MAIN
        .iter()
        .map(|binding| {
            Line::from(vec![
                Span::styled(
                    format!(" {:<10}", binding.keys),
                    theme.accent().add_modifier(Modifier::BOLD),
                ),
                Span::raw(binding.help),
            ])
        })
        .collect();
    Paragraph::new(lines)
        .block(
            Block::bordered()
                .title(" Keys ")
                .title_bottom(Line::from(" Esc closes ").right_aligned()),
        )
        .wrap(Wrap { trim: false })
        .render(spot, buf);
}

pub(super) fn render_detail(
    app: &App,
    theme: Theme,
    view: &DetailView,
    area: Rect,
    buf: &mut Buffer,
) {
    Clear.render(area, buf);
    let mut block = Block::bordered()
        .border_style(theme.accent())
        .padding(Padding::horizontal(1))
        .title_bottom(Line::from(" j/k scroll · r retry · Esc back ").right_aligned());
    let lines = match &view.detail {
        None => vec![Line::from(format!("loading event {}…", view.id))],
        Some(Err(e)) => vec![Line::from(Span::styled(
            format!("could not load event {}: {e}", view.id),
            theme.bad(),
        ))],
        Some(Ok(None)) => vec![Line::from(format!(
            "event {} no longer exists (purged?)",
            view.id
        ))],
        Some(Ok(Some(detail))) => {
            let e = &detail.event;
            block = block.title(format!(
                " Event {} · {} · {} ",
                e.id, e.source, e.event_type
            ));
            detail_lines(app, theme, detail)
        }
    };
    if view
        .detail
        .as_ref()
        .is_none_or(|d| !matches!(d, Ok(Some(_))))
    {
        block = block.title(format!(" Event {} ", view.id));
    }
    Paragraph::new(lines)
        .block(block)
        .wrap(Wrap { trim: false })
        .scroll((view.scroll, 0))
        .render(area, buf);
}

pub(super) fn detail_lines<'a>(app: &App, theme: Theme, detail: &'a Detail) -> Vec<Line<'a>> {
    let e = &detail.event;
    let heading = |text: &'static str| {
        Line::from(Span::styled(
            text,
            theme.accent().add_modifier(Modifier::BOLD),
        ))
    };
    let state_style = match e.state.as_str() {
        "dead" => theme.bad().add_modifier(Modifier::BOLD),
        "retrying" => theme.warn(),
        "succeeded" => theme.good(),
        _ => Style::new(),
    };
    let when = |at: DateTime<Utc>| {
        format!(
            "{} UTC ({} ago)",
            at.format("%Y-%m-%d %H:%M:%S"),
            age((app.now - at).num_seconds())
        )
    };
    let mut lines = vec![
        Line::from(vec![
            Span::raw("event id   "),
            Span::raw(e.event_id.as_str()),
        ]),
        Line::from(vec![
            Span::raw("state      "),
            Span::styled(e.state.as_str(), state_style),
            Span::raw(format!(" after {} attempts", e.attempts)),
        ]),
        Line::from(format!("received   {}", when(e.received_at))),
    ];
    if let Some(at) = e.dead_at {
        lines.push(Line::from(format!("died       {}", when(at))));
    }
    if detail.superseded {
        lines.push(Line::from(vec![
            Span::raw("superseded "),
            Span::styled(
                "newer state of its object is applied: retrying changes nothing",
                theme.warn(),
            ),
        ]));
    }
    if let Some(at) = e.processed_at {
        lines.push(Line::from(format!("processed  {}", when(at))));
    }
    lines.push(Line::from(""));
    lines.push(heading("Last error"));
    lines.extend(
        e.last_error
            .as_deref()
            .unwrap_or("none")
            .lines()
            .map(|l| Line::from(Span::styled(format!("  {l}"), theme.bad()))),
    );
    lines.push(Line::from(""));
    lines.push(heading("Attempt history"));
    if detail.attempts.is_empty() {
        lines.push(Line::from("  none recorded"));
    } else {
        lines.push(Line::from(Span::styled(
            "    #  started (UTC)       took  outcome    http",
            theme.dim(),
        )));
    }
    for a in &detail.attempts {
        let style = match a.outcome.as_str() {
            "succeeded" | "skipped" => theme.good(),
            "failed" => theme.warn(),
            _ => theme.bad(),
        };
        lines.push(Line::from(vec![
            Span::raw(format!(
                "  {:>3}  {}  {:>6}  ",
                a.attempt,
                a.started_at.format("%m-%d %H:%M:%S"),
                format!("{}ms", a.duration_ms)
            )),
            Span::styled(format!("{:<9}", a.outcome), style),
            Span::raw(format!(
                "  {:>4}",
                a.http_status.map_or("-".to_owned(), |s| s.to_string())
            )),
        ]));
        if let Some(error) = a.error.as_deref().filter(|e| !e.is_empty()) {
            lines.push(Line::from(Span::styled(
                format!("       {}", one_line(error)),
                theme.dim(),
            )));
        }
        if let Some(body) = a.response_body.as_deref().filter(|b| !b.is_empty()) {
            lines.push(Line::from(Span::styled(
                format!("       response: {}", one_line(body)),
                theme.dim(),
            )));
        }
    }
    lines.push(Line::from(""));
    lines.push(heading("Payload"));
    lines.extend(detail.payload.iter().map(|l| Line::from(l.as_str())));
    lines
}
