//! Drawing: a pure function of [`App`]. Colour carries meaning (green good, yellow retrying,
//! red dead or down) and every meaning is also in the text, so `NO_COLOR` loses nothing.

use chrono::{DateTime, Utc};
use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Cell, Clear, Padding, Paragraph, Row, Sparkline, StatefulWidget, Table, TableState,
    Widget, Wrap,
};

use crate::action::Bulk;
use crate::app::{App, DbState, DetailView, Level, Overlay, Pane};
use crate::data::Detail;

/// Every key, for the help overlay; the README's key table says the same.
pub const KEYS: &[(&str, &str)] = &[
    (
        "j/k, ↓/↑",
        "move the selection (PgUp/PgDn, g/G: page, top, end)",
    ),
    ("Tab", "switch between event types and dead letters"),
    (
        "Enter",
        "open the selected dead event: payload, error, attempts",
    ),
    ("r", "retry the selected dead event"),
    ("R", "retry all dead events (asks first, with the count)"),
    ("p", "purge dead events older than 7 days (asks first)"),
    ("/", "filter by type, source or text (Enter applies)"),
    ("Esc", "close an overlay, or clear the filter"),
    ("s / S", "sort event types by the next column / reverse"),
    ("?", "this help"),
    ("q", "quit (also Ctrl-C)"),
];

#[derive(Clone, Copy)]
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }
    fn good(self) -> Style {
        self.fg(Color::Green)
    }
    fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }
    fn bad(self) -> Style {
        self.fg(Color::Red)
    }
    fn dim(self) -> Style {
        self.fg(Color::DarkGray)
    }
    fn accent(self) -> Style {
        self.fg(Color::Cyan)
    }
    fn level(self, level: Level) -> Style {
        match level {
            Level::Info => Style::new(),
            Level::Success => self.good(),
            Level::Error => self.bad().add_modifier(Modifier::BOLD),
        }
    }
    fn count(self, n: i64, when_nonzero: Style) -> Style {
        if n > 0 { when_nonzero } else { Style::new() }
    }
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let theme = Theme {
            color: self.settings.color,
        };
        let [header, stats, types, dead, status] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(6),
            Constraint::Fill(2),
            Constraint::Fill(3),
            Constraint::Length(1),
        ])
        .areas(area);
        render_header(self, theme, header, buf);
        render_stats(self, theme, stats, buf);
        render_types(self, theme, types, buf);
        render_dead(self, theme, dead, buf);
        render_status(self, theme, status, buf);
        let above_status = Rect {
            height: area.height.saturating_sub(1),
            ..area
        };
        match &self.overlay {
            Overlay::None => {}
            Overlay::Help => render_help(theme, area, buf),
            Overlay::Detail(view) => render_detail(self, theme, view, above_status, buf),
            Overlay::Confirm(confirm) => render_confirm(theme, confirm, area, buf),
        }
    }
}

fn render_header(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let title = Span::styled("hooktop", theme.accent().add_modifier(Modifier::BOLD));
    let line = match &app.db {
        DbState::Connecting => Line::from(vec![
            title,
            Span::styled("  connecting to the database…", theme.warn()),
        ]),
        DbState::Up => {
            let mut spans = vec![title, Span::raw("  ")];
            if app.alerts.rate.is_below() {
                spans.push(Span::styled(
                    format!(
                        "ALERT: 5-min success below {}",
                        pct(Some(app.settings.alert_below))
                    ),
                    theme.bad().add_modifier(Modifier::BOLD),
                ));
            }
            if let Some(s) = &app.snapshot {
                if app.alerts.rate.is_below() {
                    spans.push(Span::raw(" · "));
                }
                spans.push(Span::styled("db ok", theme.good()));
                spans.push(Span::styled(
                    format!(
                        " · updated {} ({} ago) · refresh {} ms",
                        clock(s.taken_at),
                        age((app.now - s.taken_at).num_seconds()),
                        s.took.as_millis()
                    ),
                    theme.dim(),
                ));
            }
            Line::from(spans)
        }
        DbState::Down { since, error } => {
            let mut text = format!(
                "DATABASE DOWN since {} ({}), reconnecting",
                clock(*since),
                age((app.now - *since).num_seconds())
            );
            if let Some(s) = &app.snapshot {
                text.push_str(&format!(" · data from {}", clock(s.taken_at)));
            }
            text.push_str(&format!(" · {error}"));
            Line::from(vec![
                title,
                Span::raw("  "),
                Span::styled(text, theme.bad().add_modifier(Modifier::BOLD)),
            ])
        }
    };
    line.render(area, buf);
}

fn render_stats(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let health = Block::bordered()
        .title(" Health ")
        .padding(Padding::horizontal(1));
    let inner = health.inner(left);
    health.render(left, buf);
    let Some(s) = &app.snapshot else {
        Paragraph::new(Span::styled("no data yet", theme.dim())).render(inner, buf);
        Block::bordered()
            .title(" Received/min · last 60 min ")
            .render(right, buf);
        return;
    };
    let threshold = app.settings.alert_below;
    let rate = |r: Option<f64>| {
        let style = match r {
            None => theme.dim(),
            Some(r) if r >= threshold => theme.good(),
            Some(_) => theme.bad().add_modifier(Modifier::BOLD),
        };
        Span::styled(format!("{:>6}", pct(r)), style)
    };
    let q = &s.queue;
    let oldest = q.oldest_pending_secs.unwrap_or(0.0);
    let oldest_style = match oldest {
        x if x >= 600.0 => theme.bad(),
        x if x >= 60.0 => theme.warn(),
        _ => Style::new(),
    };
    let lines = vec![
        Line::from(vec![
            Span::raw("events ok   1h "),
            rate(s.last_hour.event_success_rate()),
            Span::raw("  24h "),
            rate(s.last_day.event_success_rate()),
        ]),
        Line::from(vec![
            Span::raw("attempts ok 1h "),
            rate(s.last_hour.attempt_success_rate()),
            Span::raw("  24h "),
            rate(s.last_day.attempt_success_rate()),
        ]),
        Line::from(vec![
            Span::raw("queue "),
            Span::raw(count(q.depth())),
            Span::raw("  retrying "),
            Span::styled(count(q.retrying), theme.count(q.retrying, theme.warn())),
            Span::raw("  dead "),
            Span::styled(
                count(q.dead),
                theme.count(q.dead, theme.bad().add_modifier(Modifier::BOLD)),
            ),
        ]),
        Line::from(vec![
            Span::raw("oldest pending "),
            Span::styled(
                q.oldest_pending_secs
                    .map_or_else(|| "none".to_owned(), |x| age(x as i64)),
                oldest_style,
            ),
            Span::raw("  5m ok "),
            rate(s.last_5m.event_success_rate()).clone(),
        ]),
    ];
    Paragraph::new(lines).render(inner, buf);

    let total: i64 = s.throughput.iter().map(|(_, n)| n).sum();
    let peak = s.throughput.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let block = Block::bordered()
        .title(" Received/min · last 60 min ")
        .title_bottom(
            Line::from(format!(
                " peak {}/min · total {} ",
                count(peak),
                count(total)
            ))
            .right_aligned(),
        );
    let inner = block.inner(right);
    block.render(right, buf);
    let per_column = resample(&s.throughput, inner.width as usize);
    Sparkline::default()
        .data(&per_column)
        .style(theme.accent())
        .render(inner, buf);
}

/// Spreads the minutes over `width` columns, each column the average of its minutes, so the
/// whole hour shows at any width.
pub fn resample(series: &[(DateTime<Utc>, i64)], width: usize) -> Vec<u64> {
    let n = series.len();
    if width == 0 || n == 0 {
        return Vec::new();
    }
    if n <= width {
        return series.iter().map(|(_, v)| (*v).max(0) as u64).collect();
    }
    (0..width)
        .map(|c| {
            let (from, to) = (c * n / width, ((c + 1) * n / width).max(c * n / width + 1));
            let sum: i64 = series[from..to.min(n)].iter().map(|(_, v)| *v).sum();
            (sum.max(0) as u64).div_ceil((to - from) as u64)
        })
        .collect()
}

fn pane_block<'a>(app: &App, theme: Theme, pane: Pane, title: String) -> Block<'a> {
    let focused = app.focus == pane;
    let style = if focused {
        theme.accent().add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    let marker = if focused { "▸" } else { " " };
    Block::bordered()
        .border_style(if focused {
            theme.accent()
        } else {
            Style::new()
        })
        .title(Span::styled(format!("{marker}{title}"), style))
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Text::from(text).alignment(Alignment::Right))
}

fn render_types(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
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
    let selected = (app.focus == Pane::Types && !empty).then_some(app.types_selected);
    let mut state = TableState::default().with_selected(selected);
    StatefulWidget::render(table, area, buf, &mut state);
    if empty {
        render_placeholder(area, placeholder, theme.dim(), buf);
    }
}

fn render_dead(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
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
    let selected = (app.focus == Pane::Dead && !dead.is_empty()).then_some(app.dead_selected);
    let mut state = TableState::default().with_selected(selected);
    StatefulWidget::render(table, area, buf, &mut state);
    if dead.is_empty() {
        render_placeholder(area, placeholder, placeholder_style, buf);
    }
}

/// The line under an empty table's header.
fn render_placeholder(area: Rect, text: &str, style: Style, buf: &mut Buffer) {
    let inner = Block::bordered().inner(area);
    if inner.height < 2 {
        return;
    }
    let line = Rect {
        x: inner.x + 2,
        y: inner.y + 1,
        width: inner.width.saturating_sub(2),
        height: 1,
    };
    Span::styled(text.to_owned(), style).render(line, buf);
}

fn render_status(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
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
            Bulk::RetryAll => "counting dead events…",
            Bulk::Purge => "counting dead events older than 7 days…",
        };
        Line::from(Span::raw(what))
    } else if let Some(status) = app.current_status() {
        Line::from(Span::styled(status.text.clone(), theme.level(status.level)))
    } else {
        let mut spans = Vec::new();
        for (key, what) in [
            ("?", "help"),
            ("q", "quit"),
            ("Tab", "pane"),
            ("Enter", "open"),
            ("r", "retry"),
            ("R", "retry all"),
            ("p", "purge"),
            ("/", "filter"),
            ("s", "sort"),
        ] {
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

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

fn render_help(theme: Theme, area: Rect, buf: &mut Buffer) {
    let spot = centered(area, 76, KEYS.len() as u16 + 2);
    Clear.render(spot, buf);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(
                    format!(" {key:<10}"),
                    theme.accent().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
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

fn render_confirm(theme: Theme, confirm: &crate::app::Confirm, area: Rect, buf: &mut Buffer) {
    let n = confirm.count;
    let noun = crate::app::events(n.max(0) as u64);
    let (question, consequence) = match confirm.op {
        Bulk::RetryAll => (
            format!("Retry all {n} dead {noun}?"),
            "They go back to the queue with a fresh attempt budget.",
        ),
        Bulk::Purge => (
            format!("Purge {n} dead {noun} older than 7 days?"),
            "They are deleted with their attempt history.",
        ),
    };
    let spot = centered(area, 62, 6);
    Clear.render(spot, buf);
    let style = match confirm.op {
        Bulk::RetryAll => theme.warn(),
        Bulk::Purge => theme.bad(),
    };
    Paragraph::new(vec![
        Line::from(Span::styled(question, style.add_modifier(Modifier::BOLD))),
        Line::from(consequence),
        Line::from(""),
        Line::from(vec![
            Span::styled("y", theme.accent().add_modifier(Modifier::BOLD)),
            Span::raw(" yes   "),
            Span::styled("n", theme.accent().add_modifier(Modifier::BOLD)),
            Span::raw(" / Esc no"),
        ]),
    ])
    .block(
        Block::bordered()
            .title(" Confirm ")
            .border_style(style)
            .padding(Padding::horizontal(1)),
    )
    .wrap(Wrap { trim: true })
    .render(spot, buf);
}

fn render_detail(app: &App, theme: Theme, view: &DetailView, area: Rect, buf: &mut Buffer) {
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

fn detail_lines<'a>(app: &App, theme: Theme, detail: &'a Detail) -> Vec<Line<'a>> {
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

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn pct(rate: Option<f64>) -> String {
    rate.map_or_else(|| "—".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

pub fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S UTC").to_string()
}

/// Counts that fit a narrow column: exact below 100 000.
pub fn count(n: i64) -> String {
    match n {
        n if n < 100_000 => n.to_string(),
        n if n < 10_000_000 => format!("{}k", n / 1_000),
        n => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// "12s", "4m", "3h", "2d": for a narrow column.
pub fn short_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// "12s", "4m 12s", "3h 2m", "2d 4h".
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

#[cfg(test)]
mod tests;
