//! Command line. The database URL may carry a password, so it is never echoed.

use clap::Parser;
use common::db::archive::ArchiveTarget;

#[derive(Debug, Parser)]
#[command(
    name = "hooktop",
    version,
    about = "Live dashboard of hookd: success rates, queue, event types and dead-letter recovery",
    // The packaging subcommands run on a build machine, with no database to name.
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// PostgreSQL URL of hookd's database.
    // An Option only so that a packaging subcommand can leave it out: it is required otherwise.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, required = true)]
    pub database_url: Option<String>,

    /// hookd's own schema in that database.
    #[arg(long, env = "HOOKD_SCHEMA", default_value = "hookd")]
    pub schema: common::db::schema::Schema,

    /// Notify when the event success rate of the last 5 minutes falls below this fraction.
    #[arg(long, default_value_t = 0.9, value_parser = fraction)]
    pub alert_below: f64,

    /// No desktop notifications.
    #[arg(long)]
    pub no_notify: bool,

    /// Where a purge archives the events it deletes, as hookd's own purges do; `off` keeps no
    /// copy.
    #[arg(
        long,
        env = "HOOKD_ARCHIVE_DIR",
        default_value = "/var/lib/hookd/archive",
        value_parser = archive_target
    )]
    pub archive_dir: ArchiveTarget,

    /// Time N refreshes against the database, print the median and exit (no terminal UI).
    #[arg(long, hide = true, value_name = "N")]
    pub bench_refresh: Option<usize>,

    #[command(subcommand)]
    pub packaging: Option<Packaging>,
}

/// What the Debian package is built from (hidden: not for day-to-day use).
#[derive(Debug, clap::Subcommand)]
pub enum Packaging {
    /// Print the completion script for a shell, from this very command line.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Write the man page into a directory.
    #[command(hide = true)]
    Man { dir: std::path::PathBuf },
}

impl Packaging {
    pub fn run(self) -> std::io::Result<()> {
        use clap::CommandFactory;
        match self {
            Packaging::Completions { shell } => {
                // Into a buffer first: clap_complete panics on a write error such as a closed
                // pipe.
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "hooktop", &mut script);
                std::io::Write::write_all(&mut std::io::stdout(), &script)
            }
            Packaging::Man { dir } => {
                std::fs::create_dir_all(&dir)?;
                clap_mangen::generate_to(Cli::command(), &dir)
            }
        }
    }
}

fn archive_target(raw: &str) -> Result<ArchiveTarget, String> {
    match raw.trim() {
        "" => Err("expected a directory, or off".to_owned()),
        "off" => Ok(ArchiveTarget::Off),
        dir => Ok(ArchiveTarget::Dir(dir.into())),
    }
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
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    #[test]
    fn defaults_and_flags() {
        let cli = Cli::try_parse_from(["hooktop", "--database-url", "postgres://x/y"]).unwrap();
        assert_eq!(cli.alert_below, 0.9);
        assert!(!cli.no_notify);
        assert_eq!(cli.database_url.as_deref(), Some("postgres://x/y"));
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
    fn the_database_url_is_required_except_for_packaging() {
        // Not taken from the environment the tests run in.
        let command = || Cli::command().mut_arg("database_url", |a| a.env(None::<&str>));
        let err = command().try_get_matches_from(["hooktop"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let matches = command()
            .try_get_matches_from(["hooktop", "completions", "bash"])
            .unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        assert!(cli.database_url.is_none());
        assert!(matches!(cli.packaging, Some(Packaging::Completions { .. })));
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_color_needs_a_non_empty_value() {
        assert!(!no_color(None));
        assert!(!no_color(Some("".into())));
        assert!(no_color(Some("1".into())));
    }
}
