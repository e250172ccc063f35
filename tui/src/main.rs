//! hooktop: wires the real terminal, database, clock, signals and desktop to the library.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use crossterm::event::EventStream;
use hooktop::action::Action;
use hooktop::app::{App, Settings};
use hooktop::cli::{Cli, no_color};
use hooktop::notify::{self, DesktopNotifier};
use hooktop::{Sinks, data, term};
use sqlx::postgres::PgConnectOptions;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(packaging) = cli.packaging {
        return match packaging.run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hooktop: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // clap insists on it unless a packaging subcommand was given.
    let url = cli.database_url.as_deref().unwrap_or_default();
    let Ok(options) = url.parse::<PgConnectOptions>() else {
        eprintln!("hooktop: DATABASE_URL (or --database-url) is not a valid PostgreSQL URL");
        return ExitCode::from(2);
    };
    let options = common::db::schema::connect_options(options, &cli.schema);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hooktop: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.bench_refresh {
            Some(n) => bench(options, n).await,
            None => dashboard(&cli, options).await,
        }
    });
    // A notification stuck on a hung D-Bus must not keep the shell waiting.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hooktop: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dashboard(cli: &Cli, options: PgConnectOptions) -> anyhow::Result<()> {
    let (actions, actions_rx) = mpsc::unbounded_channel();
    let (commands, commands_rx) = mpsc::unbounded_channel();
    spawn_signal_watch(actions.clone()).context("watching signals")?;
    tokio::spawn(data::run(
        data::pool(options),
        cli.archive_dir.clone(),
        commands_rx,
        actions.clone(),
    ));
    let notifications = notify::spawn_dispatcher(Arc::new(DesktopNotifier), actions.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            if actions.send(Action::Tick(chrono::Utc::now())).is_err() {
                break;
            }
        }
    });
    let settings = Settings {
        alert_below: cli.alert_below,
        notify: !cli.no_notify,
        color: !no_color(std::env::var_os("NO_COLOR")),
        archive: cli.archive_dir.clone(),
    };
    let mut app = App::new(settings, chrono::Utc::now());
    let sinks = Sinks {
        commands,
        notifications,
    };
    let mut tui = term::Tui::enter().context("setting up the terminal")?;
    let result = hooktop::run(
        &mut tui.terminal,
        &mut app,
        EventStream::new(),
        actions_rx,
        &sinks,
    )
    .await;
    drop(tui);
    result
}

/// SIGTERM, SIGINT and SIGHUP end the dashboard through the normal path, which restores the
/// terminal.
fn spawn_signal_watch(actions: mpsc::UnboundedSender<Action>) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
            _ = hangup.recv() => {}
        }
        let _ = actions.send(Action::Quit);
    });
    Ok(())
}

/// `--bench-refresh N`: the dashboard's own refresh, timed, with a listener holding a
/// connection as in the dashboard.
async fn bench(options: PgConnectOptions, runs: usize) -> anyhow::Result<()> {
    let pool = data::pool(options);
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .context("connecting")?;
    listener
        .listen_all([common::EVENTS_CHANNEL, common::PROGRESS_CHANNEL])
        .await?;
    let first = data::fetch(&pool, "", None)
        .await
        .context("first refresh")?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        data::fetch(&pool, "", None).await?;
        times.push(started.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "refresh x{}: median {:.2} ms, min {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        times.len(),
        ms(at(0.5)),
        ms(times[0]),
        ms(at(0.9)),
        ms(times[times.len() - 1])
    );
    println!(
        "snapshot: {} types, {} dead listed of {} dead, queue depth {}, 24h received {}",
        first.by_type.len(),
        first.dead.len(),
        first.queue.dead,
        first.queue.depth(),
        first.last_day.received
    );
    // Apart from the refresh, as the dashboard reads them.
    let started = Instant::now();
    let clusters = common::db::clusters::list(&pool, data::CLUSTER_LIMIT).await?;
    println!(
        "clusters: {} causes read in {:.2} ms",
        clusters.len(),
        ms(started.elapsed())
    );
    Ok(())
}
