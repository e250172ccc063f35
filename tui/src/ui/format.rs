//! Numbers, ages and clocks as the screen writes them.

use super::*;

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

pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
