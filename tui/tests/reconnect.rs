//! The data task against a real PostgreSQL: refreshes driven by NOTIFY and coalesced, and an
//! outage (a proxy between it and PostgreSQL is cut and restored) reported with its start and
//! recovered from.

use std::net::SocketAddr;
use std::time::Duration;

use hooktop::action::{Action, Command};
use hooktop::data;
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Forwards 127.0.0.1:port to PostgreSQL until dropped or cut.
struct Proxy {
    port: u16,
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(port: u16, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Proxy { port, tasks }
    }

    /// Closes every connection and stops listening: to hooktop, the database is gone.
    async fn cut(mut self) -> u16 {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.port
    }
}

async fn next_state(actions: &mut mpsc::UnboundedReceiver<Action>) -> Action {
    loop {
        let action = tokio::time::timeout(Duration::from_secs(20), actions.recv())
            .await
            .expect("the data task reports within 20 s")
            .expect("the data task runs");
        if matches!(action, Action::Snapshot(_) | Action::DbDown { .. }) {
            return action;
        }
    }
}

#[sqlx::test(migrator = "common::MIGRATOR")]
async fn an_outage_is_reported_with_its_start_and_recovered_from(pool: PgPool) {
    let options = pool.connect_options();
    let host = options.get_host().to_owned();
    let target: SocketAddr = tokio::net::lookup_host((host.as_str(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(0, target).await;
    let through_proxy = (*options).clone().host("127.0.0.1").port(proxy.port);
    let (commands, commands_rx) = mpsc::unbounded_channel();
    let (actions, mut actions_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(data::run(
        data::pool(through_proxy),
        common::db::archive::ArchiveTarget::Off,
        commands_rx,
        actions,
    ));

    assert!(matches!(
        next_state(&mut actions_rx).await,
        Action::Snapshot(_)
    ));

    let before = chrono::Utc::now();
    let port = proxy.cut().await;
    // A refresh that finished just before the cut may still report a snapshot.
    let mut first_since = None;
    for _ in 0..3 {
        if let Action::DbDown { since, error } = next_state(&mut actions_rx).await {
            assert!(!error.is_empty());
            assert!(!error.contains("postgres://"), "no URL on screen: {error}");
            first_since = Some(since);
            break;
        }
    }
    let first_since = first_since.expect("the outage is reported");
    // A refresh already under way when the proxy was cut may be the first to fail.
    assert!(first_since >= before - chrono::TimeDelta::seconds(5));
    assert!(first_since <= chrono::Utc::now());
    // Later failures keep the outage's start.
    commands.send(Command::Refresh).unwrap();
    match next_state(&mut actions_rx).await {
        Action::DbDown { since, .. } => assert_eq!(since, first_since),
        other => panic!("expected the outage to go on, got {other:?}"),
    }

    let _proxy = Proxy::start(port, target).await;
    let mut recovered = false;
    for _ in 0..5 {
        if let Action::Snapshot(_) = next_state(&mut actions_rx).await {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the data task reconnects by itself");
    drop(commands);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the data task ends when the UI is gone")
        .unwrap();
}

async fn snapshots_within(
    actions: &mut mpsc::UnboundedReceiver<Action>,
    window: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + window;
    let mut n = 0;
    while let Ok(Some(action)) = tokio::time::timeout_at(deadline, actions.recv()).await {
        n += usize::from(matches!(action, Action::Snapshot(_)));
    }
    n
}

/// Waits (up to 10 s) for one snapshot, then counts those that follow within `quiet`.
async fn one_snapshot_then(
    actions: &mut mpsc::UnboundedReceiver<Action>,
    quiet: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(action)) = tokio::time::timeout_at(deadline, actions.recv()).await {
        if matches!(action, Action::Snapshot(_)) {
            return snapshots_within(actions, quiet).await;
        }
    }
    panic!("no refresh within 10 s");
}

#[sqlx::test(migrator = "common::MIGRATOR")]
async fn notifications_drive_refreshes_and_bursts_are_coalesced(pool: PgPool) {
    let (_commands, commands_rx) = mpsc::unbounded_channel();
    let (actions, mut actions_rx) = mpsc::unbounded_channel();
    // A fallback too slow to matter here: every refresh below comes from NOTIFY.
    let task = tokio::spawn(data::run_with_fallback(
        data::pool((*pool.connect_options()).clone()),
        common::db::archive::ArchiveTarget::Off,
        commands_rx,
        actions,
        Duration::from_secs(3_600),
    ));
    assert!(matches!(
        next_state(&mut actions_rx).await,
        Action::Snapshot(_)
    ));
    // Notifications sent before the data task listens are lost: wait until it does.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the data task never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Settle: the listener's own (re)connection asks for one refresh too.
    snapshots_within(&mut actions_rx, Duration::from_millis(700)).await;

    let notify = |channel: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT pg_notify($1, 'x')")
                .bind(channel)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    notify(common::PROGRESS_CHANNEL).await;
    assert_eq!(
        one_snapshot_then(&mut actions_rx, Duration::from_millis(700)).await,
        0,
        "a progress notification refreshes once"
    );
    notify(common::EVENTS_CHANNEL).await;
    assert_eq!(
        one_snapshot_then(&mut actions_rx, Duration::from_millis(700)).await,
        0,
        "so does a new-events notification"
    );

    // 50 notifications in separate transactions over about a second (or longer on a busy
    // machine: the bound follows the burst's real length).
    let started = std::time::Instant::now();
    let burst = async {
        for _ in 0..50 {
            notify(common::PROGRESS_CHANNEL).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    };
    let (n, took) = tokio::join!(
        snapshots_within(&mut actions_rx, Duration::from_millis(1_500)),
        burst
    );
    let n = n + snapshots_within(&mut actions_rx, Duration::from_millis(700)).await;
    // At most one refresh per 250 ms gap, plus the one in flight at each end.
    let most = (took.max(Duration::from_millis(1_500)).as_millis() / 250) as usize + 2;
    assert!(
        (2..=most).contains(&n),
        "about 4 refreshes a second, got {n} over {took:?}"
    );
    task.abort();
}
