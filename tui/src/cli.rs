//! Command line. The database URL may carry a password, so it is never echoed.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "hooktop",
    version,
    about = "Live dashboard of hookd: success rates, queue, event types and dead-letter recovery"
)]
pub struct Cli {
    /// PostgreSQL URL of hookd's database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// hookd's own schema in that database.
    #[arg(long, env = "HOOKD_SCHEMA", default_value = "hookd")]
    pub schema: common::db::schema::Schema,

    /// Notify when the event success rate of the last 5 minutes falls below this fraction.
    #[arg(long, default_value_t = 0.9, value_parser = fraction)]
    pub alert_below: f64,

    /// No desktop notifications.
    #[arg(long)]
    pub no_notify: bool,

    /// Time N refreshes against the database, print the median and exit (no terminal UI).
    #[arg(long, hide = true, value_name = "N")]
    pub bench_refresh: Option<usize>,
}

fn fraction(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!(
            "expected a fraction from 0 to 1 (0.9 is 90%), got {raw:?}"
        )),
    }
}

/// `NO_COLOR` set and non-empty means no colours at all (no-color.org).
pub fn no_color(value: Option<std::ffi::OsString>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_flags() {
        let cli = Cli::try_parse_from(["hooktop", "--database-url", "postgres://x/y"]).unwrap();
        assert_eq!(cli.alert_below, 0.9);
        assert!(!cli.no_notify);
        let cli = Cli::try_parse_from([
            "hooktop",
            "--database-url=postgres://x/y",
            "--alert-below",
            "0.5",
            "--no-notify",
        ])
        .unwrap();
        assert_eq!(cli.alert_below, 0.5);
        assert!(cli.no_notify);
        let err = Cli::try_parse_from(["hooktop", "--database-url=u", "--alert-below=90"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a fraction"), "{err}");
    }

    #[test]
    fn no_color_needs_a_non_empty_value() {
        assert!(!no_color(None));
        assert!(!no_color(Some("".into())));
        assert!(no_color(Some("1".into())));
    }
}
