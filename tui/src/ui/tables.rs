//! The panes: event types, error clusters, and the dead-letter queue.

use super::*;

/// What a pane's table shows; [`PaneTable::render`] draws every pane the same way.
struct PaneTable<'a> {
    pane: Pane,
    block: Block<'a>,
    header: Vec<Cell<'a>>,
    widths: Vec<Constraint>,
    rows: Vec<Row<'a>>,
    /// Said under the header when there are no rows.
    placeholder: (&'a str, Style),
}

impl PaneTable<'_> {
    /// The selection is drawn only in the pane that has the focus.
    fn render(self, app: &App, area: Rect, buf: &mut Buffer) {
        let empty = self.rows.is_empty();
        let table = Table::new(self.rows, self.widths)
            .header(Row::new(self.header).style(Style::new().add_modifier(Modifier::BOLD)))
            .block(self.block)
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .highlight_symbol("> ")
            .highlight_spacing(ratatui::widgets::HighlightSpacing::Always);
        let selected =
            (app.panes.focus == self.pane && !empty).then_some(app.panes.selected(self.pane));
        let mut state = TableState::default().with_selected(selected);
        StatefulWidget::render(table, area, buf, &mut state);
        if empty {
            let (text, style) = self.placeholder;
            render_placeholder(area, text, style, buf);
        }
    }
}

/// "3m ago": when something happened, for a narrow column.
fn ago(app: &App, at: DateTime<Utc>) -> String {
    format!("{} ago", short_age((app.now - at).num_seconds()))
}

pub(super) fn render_types(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let mut title = " Event types · 24 h (retry, dead: now) ".to_owned();
    if !app.filter.is_empty() {
        title.push_str(&format!("· filter \"{}\" ", app.filter));
    }
    let placeholder = if app.snapshot.is_none() {
        "loading…"
    } else if app.filter.is_empty() {
        "no events in the last 24 hours"
    } else {
        "no event type matches the filter"
    };
    let rows = app
        .visible_types()
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
    PaneTable {
        pane: Pane::Types,
        block: pane_block(app, theme, Pane::Types, title).title_top(sort_title(app.sort)),
        header: ["source", "type"]
            .into_iter()
            .map(Cell::from)
            .chain(
                ["recv", "ok", "skip", "retry", "dead"]
                    .into_iter()
                    .map(|h| right(h.to_owned())),
            )
            .collect(),
        widths: vec![
            Constraint::Length(6),
            Constraint::Fill(1),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
        ],
        rows,
        placeholder: (placeholder, theme.dim()),
    }
    .render(app, area, buf);
}

pub(super) fn render_clusters(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let clusters = app.visible_clusters();
    let mut title = format!(" Error clusters · {} causes ", clusters.len());
    if !app.filter.is_empty() {
        title.push_str(&format!("· filter \"{}\" ", app.filter));
    }
    let placeholder = match &app.clusters {
        None => ("loading…", theme.dim()),
        Some(_) if app.filter.is_empty() => ("no dead events", theme.good()),
        Some(_) => ("no cluster matches the filter", theme.dim()),
    };
    let rows = clusters
        .iter()
        .map(|c| {
            Row::new([
                right(count(c.count)).style(theme.bad()),
                Cell::from(c.source.clone()),
                Cell::from(c.event_type.clone()),
                Cell::from(ago(app, c.first_death)),
                Cell::from(ago(app, c.last_death)),
                error_cell(
                    theme,
                    (c.superseded > 0).then(|| format!("{} superseded · ", c.superseded)),
                    c.sample_error.as_deref(),
                ),
            ])
        })
        .collect();
    PaneTable {
        pane: Pane::Clusters,
        block: pane_block(app, theme, Pane::Clusters, title)
            .title_top(sort_title(app.cluster_sort)),
        header: vec![
            right("dead".to_owned()),
            Cell::from("source"),
            Cell::from("type"),
            Cell::from("first"),
            Cell::from("last"),
            Cell::from("latest error"),
        ],
        // Counts and ages are at most 5 and 7 wide; what is left goes to the error.
        widths: vec![
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Max(30),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Fill(1),
        ],
        rows,
        placeholder,
    }
    .render(app, area, buf);
}

pub(super) fn render_dead(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let dead = app.dead();
    let total = app.snapshot.as_ref().map_or(0, |s| s.queue.dead);
    let shown_filter = app.snapshot.as_ref().map_or("", |s| s.filter.as_str());
    let shown_cluster = app.snapshot.as_ref().and_then(|s| s.cluster.as_ref());
    let title = match shown_cluster {
        // What matters most first: a long cause is cut at the pane's edge.
        Some(c) => format!(
            " Dead letters · {} of a cluster (Esc: all {}) · {} {} \"{}\" ",
            dead.len(),
            total,
            c.source,
            c.event_type,
            c.fingerprint
        ),
        None if shown_filter.is_empty() => format!(
            " Dead letters · {} of {} · newest first ",
            dead.len(),
            total
        ),
        None => format!(
            " Dead letters · {} matching \"{}\" of {} ",
            dead.len(),
            shown_filter,
            total
        ),
    };
    let placeholder = match (&app.snapshot, shown_filter.is_empty(), shown_cluster) {
        (None, _, _) => ("loading…", theme.dim()),
        (Some(_), _, Some(_)) => ("none of this cluster is dead any more", theme.good()),
        (Some(_), true, None) => ("the dead-letter queue is empty", theme.good()),
        (Some(_), false, None) => ("no dead event matches the filter", theme.dim()),
    };
    let rows = dead
        .iter()
        .map(|e| {
            Row::new([
                Cell::from(ago(app, e.dead_at)),
                Cell::from(e.source.clone()),
                Cell::from(e.event_type.clone()),
                right(e.attempts.to_string()),
                error_cell(
                    theme,
                    e.superseded.then(|| "superseded · ".to_owned()),
                    e.last_error.as_deref(),
                ),
            ])
        })
        .collect();
    PaneTable {
        pane: Pane::Dead,
        block: pane_block(app, theme, Pane::Dead, title),
        header: vec![
            Cell::from("died"),
            Cell::from("source"),
            Cell::from("type"),
            right("att".to_owned()),
            Cell::from("last error"),
        ],
        widths: vec![
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Max(30),
            Constraint::Length(3),
            Constraint::Fill(1),
        ],
        rows,
        placeholder,
    }
    .render(app, area, buf);
}

/// An error on one line, after a note that a retry would change nothing when there is one.
fn error_cell(theme: Theme, superseded: Option<String>, error: Option<&str>) -> Cell<'static> {
    let error = Span::styled(one_line(error.unwrap_or("")), theme.bad());
    match superseded {
        Some(note) => Cell::from(Line::from(vec![Span::styled(note, theme.warn()), error])),
        None => Cell::from(Line::from(error)),
    }
}
