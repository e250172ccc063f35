//! The top of the screen: the database's state, the queue, success rates and throughput.

use super::*;

pub(super) fn render_header(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
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

pub(super) fn render_stats(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let mut health = Block::bordered()
        .title(" Health ")
        .padding(Padding::horizontal(1));
    if let Some(s) = &app.snapshot {
        // What the history can reach back to, and whether a dead event ever goes by itself;
        // left out rather than cut where it does not fit.
        let retained = format!(" {} ", s.retained.summary());
        if retained.chars().count() + 2 <= usize::from(left.width) {
            health = health.title_bottom(Line::from(retained).right_aligned());
        }
    }
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
