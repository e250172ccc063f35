use anyhow::Context;
use clap::Parser;
use hookd::cli::{Cli, Command};
use hookd::config::{self, Config, Sources};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookd: {e:#}");
            // EX_CONFIG: the unit's RestartPreventExitStatus keeps systemd from restarting a
            // hookd that can only fail the same way again.
            let misfit = matches!(
                e.downcast_ref::<hookd::SchemaError>(),
                Some(hookd::SchemaError::Misfit(_))
            );
            if misfit || e.downcast_ref::<config::ConfigError>().is_some() {
                std::process::ExitCode::from(78)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// The small pool an operator's command needs, on hookd's schema.
fn tool_pool(sources: &Sources) -> anyhow::Result<sqlx::PgPool> {
    let settings = hookd::PoolSettings::tool(config::schema(sources)?, 2);
    hookd::pool(&config::database_url(sources)?, &settings)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    // Needs no configuration: it is run to regenerate docs/openapi.json, anywhere.
    if let Command::Openapi = command {
        print!("{}", hookd::http::openapi::json());
        return Ok(());
    }
    let sources = Sources::from_process()?;
    match command {
        Command::Serve => {
            let config = Config::load(&sources)?;
            // Held until hookd stops, so the lines still buffered are written.
            let _log = init_tracing(config.log_json);
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            hookd::run(config, listener, shutdown).await
        }
        Command::Migrate => {
            let schema = config::schema(&sources)?;
            let settings = hookd::PoolSettings::tool(schema.clone(), 1);
            let pool = hookd::pool(&config::database_url(&sources)?, &settings)?;
            hookd::migrate(&pool, &schema).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Send(args) => {
            println!("{}", hookd::send::send(&args, &sources).await?);
            Ok(())
        }
        Command::Dlq(command) => {
            let pool = tool_pool(&sources)?;
            println!("{}", hookd::cli::dlq(&pool, command).await?);
            Ok(())
        }
        Command::Events(command) => {
            let pool = tool_pool(&sources)?;
            println!("{}", hookd::cli::events(&pool, command).await?);
            Ok(())
        }
        Command::Retention(command) => {
            let settings = hookd::retention::settings(&sources)?;
            let pool = tool_pool(&sources)?;
            println!(
                "{}",
                hookd::cli::retention(&pool, &settings, command).await?
            );
            Ok(())
        }
        Command::DevSecrets => {
            print!("{}", hookd::send::dev_secrets());
            Ok(())
        }
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error such as a closed pipe.
            let mut script = Vec::new();
            let mut definition = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut definition, "hookd", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            Ok(())
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))
        }
        Command::Openapi => unreachable!("handled above"),
    }
}

/// Logs go to stdout from a thread of their own: a reader that stops reading (journald
/// under pressure, a pipe nobody drains) costs the lines past a buffer of `metrics::LOG_BUFFER_LINES`
/// (about 2 MiB; `hookd_log_lines_dropped_total` counts them), never the runtime's threads,
/// which also no longer make a write(2) per line.
fn init_tracing(json: bool) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // sqlx reports PostgreSQL's NOTICEs ("relation already exists, skipping") at info.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let colours = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(hookd::metrics::LOG_BUFFER_LINES)
        .lossy(true)
        .finish(std::io::stdout());
    hookd::metrics::report_dropped_log_lines(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        builder.json().flatten_event(true).init();
    } else if std::env::var_os("JOURNAL_STREAM").is_some() {
        // Under systemd: journald stamps each line itself.
        builder.with_ansi(false).without_time().init();
    } else {
        // Colours only for a person at a terminal, not for a file or a log collector.
        builder.with_ansi(colours).init();
    }
    guard
}

/// SIGTERM (systemd stop) and SIGINT (Ctrl-C) both start a graceful drain.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, draining"),
        _ = int.recv() => tracing::info!("SIGINT received, draining"),
    }
    shutdown.cancel();
}
