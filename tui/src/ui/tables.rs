//! The two panes: event types, and the dead-letter queue.

use super::*;

pub(super) fn render_types(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let rows = app.visible_types();
    let mut title = " Event types · 24 h (retry, dead: now) ".to_owned();
    if !app.filter.is_empty() {
        title.push_str(&format!("· filter \"{}\" ", app.filter));
    }
    let arrow = if app.descending { "▼" } else { "▲" };
    let block = pane_block(app, theme, Pane::Types, title)
        .title_top(Line::from(format!(" sort: {} {arrow} ", app.sort.label())).right_aligned());
    let header = Row::new(
        ["source", "type"].into_iter().map(Cell::from).chain(
            ["recv", "ok", "skip", "retry", "dead"]
                .into_iter()
                .map(|h| right(h.to_owned())),
        ),
    )
    .style(Style::new().add_modifier(Modifier::BOLD));
    let placeholder = if app.snapshot.is_none() {
        "loading…"
    } else if app.filter.is_empty() {
        "no events in the last 24 hours"
    } else {
        "no event type matches the filter"
    };
    let body: Vec<Row> = rows
        .iter()
        .map(|t| {
            Row::new([
                Cell::from(t.source.clone()),
                Cell::from(t.event_type.clone()),
                right(count(t.received)),
                right(count(t.succeeded)).style(theme.count(t.succeeded, theme.good())),
                right(count(t.skipped)),
                right(count(t.retrying_now)).style(theme.count(t.retrying_now, theme.warn())),
                right(count(t.dead_now)).style(theme.count(t.dead_now, theme.bad())),
            ])
        })
        .collect();
    let empty = body.is_empty();
    let table = Table::new(
        body,
        [
            Constraint::Length(6),
            Constraint::Fill(1),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
        ],
    )
    .header(header)
    .block(block)
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ")
    .highlight_spacing(ratatui::widgets::HighlightSpacing::Always);
    let selected =
        (app.panes.focus == Pane::Types && !empty).then_some(app.panes.selected(Pane::Types));
    let mut state = TableState::default().with_selected(selected);
    StatefulWidget::render(table, area, buf, &mut state);
    if empty {
        render_placeholder(area, placeholder, theme.dim(), buf);
    }
}

pub(super) fn render_dead(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let dead = app.dead();
    let total = app.snapshot.as_ref().map_or(0, |s| s.queue.dead);
    let shown_filter = app.snapshot.as_ref().map_or("", |s| s.filter.as_str());
    let title = if shown_filter.is_empty() {
        format!(
            " Dead letters · {} of {} · newest first ",
            dead.len(),
            total
        )
    } else {
        format!(
            " Dead letters · {} matching \"{}\" of {} ",
            dead.len(),
            shown_filter,
            total
        )
    };
    let block = pane_block(app, theme, Pane::Dead, title);
    let header = Row::new([
        Cell::from("died"),
        Cell::from("source"),
        Cell::from("type"),
        right("att".to_owned()),
        Cell::from("last error"),
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let (placeholder, placeholder_style) = match (&app.snapshot, shown_filter.is_empty()) {
        (None, _) => ("loading…", theme.dim()),
        (Some(_), true) => ("the dead-letter queue is empty", theme.good()),
        (Some(_), false) => ("no dead event matches the filter", theme.dim()),
    };
    let body: Vec<Row> = dead
        .iter()
        .map(|e| {
            Row::new([
                Cell::from(format!(
                    "{} ago",
                    short_age((app.now - e.dead_at).num_seconds())
                )),
                Cell::from(e.source.clone()),
                Cell::from(e.event_type.clone()),
                right(e.attempts.to_string()),
                Cell::from(one_line(e.last_error.as_deref().unwrap_or(""))).style(theme.bad()),
            ])
        })
        .collect();
    let table = Table::new(
        body,
        [
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Max(30),
            Constraint::Length(3),
            Constraint::Fill(1),
        ],
    )
    .header(header)
    .block(block)
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ")
    .highlight_spacing(ratatui::widgets::HighlightSpacing::Always);
    let selected = (app.panes.focus == Pane::Dead && !dead.is_empty())
        .then_some(app.panes.selected(Pane::Dead));
    let mut state = TableState::default().with_selected(selected);
    StatefulWidget::render(table, area, buf, &mut state);
    if dead.is_empty() {
        render_placeholder(area, placeholder, placeholder_style, buf);
    }
}
