//! The only part of hooktop that talks to PostgreSQL. A task refreshes snapshots when hookd
//! announces work (LISTEN/NOTIFY) or the fallback timer fires, runs DLQ commands, and reports
//! everything back as [`Action`]s, so the screen never waits on the database.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::Source;
use common::db::archive::{self, Actor, ArchiveError, ArchiveTarget};
use common::db::clusters::{self, ClusterKey};
use common::db::dlq::{self, DeadFilter, PurgeFilter};
use common::db::events;
use common::db::retention;
use common::db::selection::{self, Selection, TypeCount};
use common::db::stats;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::action::{Action, Command};
use crate::model::{Bound, Bulk, Choice, Outcome};
pub use crate::model::{Detail, Snapshot};

/// Refresh at least this often, in case a notification was lost (or hookd is an older build).
pub const FALLBACK_REFRESH: Duration = Duration::from_secs(2);
/// A burst of notifications becomes at most one refresh per this gap (about 4 per second).
pub const MIN_REFRESH_GAP: Duration = Duration::from_millis(250);
/// Dead events listed: newest first, enough to page through by eye at 3 a.m.
pub const DLQ_LIMIT: i64 = 200;
/// Newest dead events checked for notifications, whatever the filter on screen.
pub const RECENT_DEAD: i64 = 100;
/// Error clusters read: the largest first, more causes than anyone triages at once.
pub const CLUSTER_LIMIT: i64 = 100;
/// How many of a selection a canary retries first.
pub const CANARY_SIZE: i64 = 5;
/// Dead events older than this are what `p` purges.
pub const PURGE_AGE: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// The window of the success rate alert.
pub const ALERT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// A refresh that takes longer than this counts as the database being unreachable.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);
/// Grouping dead events reads all of them, so it may take far longer than a refresh.
const CLUSTERS_TIMEOUT: Duration = Duration::from_secs(60);
/// The clusters are read again only after this many times as long as they took to read, so
/// grouping a large DLQ keeps at most a fifth of one connection busy.
const CLUSTERS_PAUSE_FACTOR: u32 = 4;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
const LISTEN_RETRY: Duration = Duration::from_secs(2);
/// The payload view stops here; a megabyte of JSON is not read on a terminal.
const PAYLOAD_LINES: usize = 2_000;

/// The database side of a filter: a source name selects the source, anything else matches the
/// event type, provider event id or last error.
pub fn dead_filter(text: &str, limit: i64) -> DeadFilter {
    let text = text.trim();
    let source = text.parse::<Source>().ok();
    DeadFilter {
        source,
        text: (source.is_none() && !text.is_empty()).then(|| text.to_owned()),
        limit,
        ..DeadFilter::default()
    }
}

/// What the DLQ list shows for `filter`, as a bulk action's selection.
pub fn filter_selection(text: &str) -> Selection {
    let filter = dead_filter(text, 0);
    Selection::matching(filter.source, filter.event_type, filter.text)
}

/// A pool for hooktop: lazy, so the dashboard starts (and says the database is down) without
/// a database, and small, since it runs a handful of cheap queries.
pub fn pool(options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        // One held by the listener, one by the clusters' read, the rest let a refresh run
        // its queries side by side.
        .max_connections(5)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options.application_name("hooktop"))
}

/// One full refresh: the exact queries the dashboard runs, also timed by `--bench-refresh`.
/// The DLQ list is `cluster`'s events when one is given, else those matching `filter`.
pub async fn fetch(
    pool: &PgPool,
    filter: &str,
    cluster: Option<&ClusterKey>,
) -> sqlx::Result<Snapshot> {
    let started = Instant::now();
    let filtered = dead_filter(filter, DLQ_LIMIT);
    let unfiltered = filter.trim().is_empty() && cluster.is_none();
    let (queue, last_5m, last_hour, last_day, throughput, retained) = tokio::try_join!(
        stats::queue(pool),
        stats::totals(pool, ALERT_WINDOW),
        stats::totals(pool, chrono::TimeDelta::hours(1)),
        stats::totals(pool, chrono::TimeDelta::hours(24)),
        stats::throughput(pool, 60),
        retention::status(pool),
    )?;
    let (by_type, dead, recent_dead) = tokio::try_join!(
        stats::by_type(pool, chrono::TimeDelta::hours(24)),
        async {
            match cluster {
                Some(key) => clusters::events(pool, key, DLQ_LIMIT).await,
                None => dlq::list(pool, &filtered).await,
            }
        },
        async {
            // Without a filter the list on screen already holds the newest dead events.
            if unfiltered {
                return Ok(None);
            }
            let newest = DeadFilter {
                limit: RECENT_DEAD,
                ..DeadFilter::default()
            };
            dlq::list(pool, &newest).await.map(Some)
        },
    )?;
    let recent_dead =
        recent_dead.unwrap_or_else(|| dead.iter().take(RECENT_DEAD as usize).cloned().collect());
    Ok(Snapshot {
        taken_at: Utc::now(),
        took: started.elapsed(),
        queue,
        last_5m,
        last_hour,
        last_day,
        throughput,
        by_type,
        dead,
        filter: filter.to_owned(),
        cluster: cluster.cloned(),
        recent_dead,
        retained,
    })
}

pub async fn detail(pool: &PgPool, id: i64) -> sqlx::Result<Option<Detail>> {
    let Some(event) = events::get(pool, id).await? else {
        return Ok(None);
    };
    let attempts = events::attempts(pool, id).await?;
    let superseded = dlq::superseded(pool, id).await?.unwrap_or(false);
    let pretty =
        serde_json::to_string_pretty(&event.payload).unwrap_or_else(|_| event.payload.to_string());
    let mut payload: Vec<String> = pretty
        .lines()
        .take(PAYLOAD_LINES)
        .map(str::to_owned)
        .collect();
    let total = pretty.lines().count();
    if total > PAYLOAD_LINES {
        payload.push(format!("… {} more lines", total - PAYLOAD_LINES));
    }
    Ok(Some(Detail {
        event,
        attempts,
        payload,
        superseded,
    }))
}

/// Errors for the screen: one line, never the connection string.
pub fn describe(err: &sqlx::Error) -> String {
    let text = match err {
        // The pool retries a refused or unreachable server until its timeout.
        sqlx::Error::PoolTimedOut => "cannot connect".to_owned(),
        sqlx::Error::Io(e) => e.to_string(),
        other => other.to_string(),
    };
    text.lines().next().unwrap_or_default().to_owned()
}

/// Runs until `commands` closes. Reports to `actions`; a closed `actions` ends it too. Purges
/// archive into `archive`.
pub async fn run(
    pool: PgPool,
    archive: ArchiveTarget,
    commands: mpsc::UnboundedReceiver<Command>,
    actions: mpsc::UnboundedSender<Action>,
) {
    run_with_fallback(pool, archive, commands, actions, FALLBACK_REFRESH).await;
}

/// [`run`] with another fallback period (tests make it long to see what NOTIFY alone does).
pub async fn run_with_fallback(
    pool: PgPool,
    archive: ArchiveTarget,
    mut commands: mpsc::UnboundedReceiver<Command>,
    actions: mpsc::UnboundedSender<Action>,
    fallback_every: Duration,
) {
    let archive = Arc::new(archive);
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(pool.clone(), wake.clone()));
    let clusters_wake = Arc::new(Notify::new());
    let clusters = tokio::spawn(refresh_clusters(
        pool.clone(),
        clusters_wake.clone(),
        actions.clone(),
    ));
    let mut fallback = tokio::time::interval(fallback_every);
    fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut filter = String::new();
    let mut cluster = None;
    let mut watched: Vec<i64> = Vec::new();
    let mut down_since: Option<DateTime<Utc>> = None;
    let mut dirty = true;
    let mut next_allowed = Instant::now();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => break,
                Some(Command::Refresh) => dirty = true,
                Some(Command::SetFilter(text)) => {
                    filter = text;
                    dirty = true;
                }
                Some(Command::SetCluster(key)) => {
                    cluster = key;
                    dirty = true;
                }
                Some(Command::Watch(ids)) => {
                    watched = ids;
                    dirty = true;
                }
                Some(other) => {
                    tokio::spawn(execute(
                        pool.clone(),
                        archive.clone(),
                        other,
                        actions.clone(),
                        wake.clone(),
                    ));
                }
            },
            () = wake.notified() => dirty = true,
            _ = fallback.tick() => dirty = true,
            () = tokio::time::sleep_until(next_allowed), if dirty => {
                dirty = false;
                next_allowed = Instant::now() + MIN_REFRESH_GAP;
                // An outage dates from the first attempt that failed, not from its timeout.
                let attempted_at = Utc::now();
                let result =
                    tokio::time::timeout(REFRESH_TIMEOUT, fetch(&pool, &filter, cluster.as_ref()))
                        .await;
                let action = match result {
                    Ok(Ok(snapshot)) => {
                        down_since = None;
                        clusters_wake.notify_one();
                        Action::Snapshot(Box::new(snapshot))
                    }
                    Ok(Err(e)) => Action::DbDown {
                        since: *down_since.get_or_insert(attempted_at),
                        error: describe(&e),
                    },
                    Err(_) => Action::DbDown {
                        since: *down_since.get_or_insert(attempted_at),
                        error: "the database did not answer in time".to_owned(),
                    },
                };
                let up = matches!(action, Action::Snapshot(_));
                if actions.send(action).is_err() {
                    break;
                }
                // hookd announces each attempt it records, so a canary's progress is read
                // with the refresh that the announcement causes.
                if up && !watched.is_empty() {
                    let progress = tokio::time::timeout(
                        REFRESH_TIMEOUT,
                        selection::states(&pool, &watched),
                    )
                    .await;
                    if let Ok(Ok(progress)) = progress
                        && actions.send(Action::Canary(progress)).is_err()
                    {
                        break;
                    }
                }
            }
        }
    }
    listener.abort();
    clusters.abort();
}

/// Reads the error clusters after each refresh, apart from it: grouping every dead event is
/// the one read whose cost grows with the DLQ, and the refresh must not wait on it. Wakes
/// that come while a read runs or pauses make one more read, not one each.
async fn refresh_clusters(pool: PgPool, wake: Arc<Notify>, actions: mpsc::UnboundedSender<Action>) {
    loop {
        wake.notified().await;
        let started = Instant::now();
        let result =
            tokio::time::timeout(CLUSTERS_TIMEOUT, clusters::list(&pool, CLUSTER_LIMIT)).await;
        // A failure leaves the clusters on screen as they were; the refresh says the
        // database is down.
        if let Ok(Ok(list)) = result
            && actions.send(Action::Clusters(list)).is_err()
        {
            return;
        }
        let pause = started.elapsed() * CLUSTERS_PAUSE_FACTOR;
        tokio::time::sleep(pause.max(MIN_REFRESH_GAP)).await;
    }
}

async fn execute(
    pool: PgPool,
    archive: Arc<ArchiveTarget>,
    command: Command,
    actions: mpsc::UnboundedSender<Action>,
    wake: Arc<Notify>,
) {
    let action = match command {
        Command::Refresh | Command::SetFilter(_) | Command::SetCluster(_) | Command::Watch(_) => {
            return;
        }
        Command::Retry(id) => Action::Retried {
            id,
            result: dlq::retry(&pool, id).await.map_err(|e| match e {
                dlq::DlqError::Database(e) => describe(&e),
                other => other.to_string(),
            }),
        },
        Command::Preview { op, selections } => Action::Previewed {
            op,
            result: preview(&pool, op, &selections)
                .await
                .map_err(|e| describe(&e)),
        },
        Command::Run { op, choice } => Action::Bulk {
            op,
            result: run_bulk(&pool, &archive, op, &choice).await,
        },
        Command::Find(key) => Action::Found {
            result: events::find(&pool, &key)
                .await
                .map(|found| found.iter().map(|e| e.id).collect())
                .map_err(|e| describe(&e)),
            key,
        },
        Command::LoadDetail(id) => Action::Detail {
            id,
            result: detail(&pool, id)
                .await
                .map(|d| d.map(Box::new))
                .map_err(|e| describe(&e)),
        },
    };
    let changed = matches!(
        action,
        Action::Retried { .. } | Action::Bulk { result: Ok(_), .. }
    );
    // Only the UI's end of the channel can be gone, and then nobody is left to tell.
    let _ = actions.send(action);
    if changed {
        wake.notify_one();
    }
}

/// The choices a confirmation offers for `op`, each counted in a snapshot of its own. A purge
/// offers what died more than 7 days ago, and the superseded dead events of any age.
async fn preview(pool: &PgPool, op: Bulk, selections: &[Selection]) -> sqlx::Result<Vec<Choice>> {
    if op == Bulk::Purge {
        let superseded = PurgeFilter {
            older_than_secs: None,
            superseded: true,
        };
        let mut choices = Vec::with_capacity(2);
        for filter in [PurgeFilter::older_than(PURGE_AGE), superseded] {
            let preview = dlq::purge_preview(pool, &filter).await?;
            choices.push(Choice {
                what: filter.describe(),
                count: preview.count(),
                by_type: preview
                    .by_type
                    .into_iter()
                    .map(|t| TypeCount {
                        source: t.source,
                        event_type: t.event_type,
                        count: t.count,
                    })
                    .collect(),
                superseded: Some(preview.superseded),
                bound: Bound::Purge(preview.token),
            });
        }
        return Ok(choices);
    }
    let mut choices = Vec::with_capacity(selections.len());
    for selection in selections {
        let preview = selection::preview(pool, selection).await?;
        choices.push(Choice {
            what: selection.describe(),
            count: preview.count(),
            by_type: preview.by_type,
            superseded: None,
            bound: Bound::Retry(preview.token),
        });
    }
    Ok(choices)
}

async fn run_bulk(
    pool: &PgPool,
    archive: &ArchiveTarget,
    op: Bulk,
    choice: &Choice,
) -> Result<Outcome, String> {
    let done = match (op, &choice.bound) {
        (Bulk::Purge, Bound::Purge(token)) => {
            let actor = Actor::os_user("hooktop");
            return archive::purge(pool, token, archive, &actor)
                .await
                .map(Outcome::Purged)
                .map_err(|e| match e {
                    ArchiveError::Database(e) => describe(&e),
                    other => other.to_string(),
                });
        }
        (Bulk::Retry, Bound::Retry(token)) => {
            selection::retry(pool, token).await.map(Outcome::Retried)
        }
        (Bulk::Canary, Bound::Retry(token)) => selection::canary(pool, token, CANARY_SIZE)
            .await
            .map(Outcome::CanaryStarted),
        // The app pairs each action with its own kind of preview.
        (op, bound) => return Err(format!("{op:?} cannot act on {bound:?}")),
    };
    done.map_err(|e| describe(&e))
}

/// Wakes the refresher on every notification, and once after each (re)connection, since
/// notifications sent while disconnected are lost.
async fn listen(pool: PgPool, wake: Arc<Notify>) {
    loop {
        if let Ok(mut listener) = PgListener::connect_with(&pool).await
            && listener
                .listen_all([common::EVENTS_CHANNEL, common::PROGRESS_CHANNEL])
                .await
                .is_ok()
        {
            wake.notify_one();
            // `Ok(None)` is a lost connection that the listener re-established by itself.
            while listener.try_recv().await.is_ok() {
                wake.notify_one();
            }
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn seed(pool: &PgPool) {
        sqlx::query(
            "INSERT INTO events (source, event_id, event_type, state, body, payload, received_at,
                                 attempts, last_error, dead_at)
             SELECT 'stripe', 'evt_' || g, CASE WHEN g % 2 = 0 THEN 'invoice.paid' ELSE 'x.y' END,
                    'dead', '\\x7b7d', '{}', now() - make_interval(mins => g), 4,
                    'boom ' || g, now() - make_interval(mins => g)
             FROM generate_series(1, 150) g",
        )
        .execute(pool)
        .await
        .unwrap();
        // Counters older than the hour must not leak into it.
        sqlx::query(
            "INSERT INTO stats_minute (bucket, source, event_type, received)
             SELECT date_trunc('minute', now()) - make_interval(mins => g), 'custom', 'old', 1000
             FROM generate_series(60, 200) g",
        )
        .execute(pool)
        .await
        .unwrap();
    }

    #[sqlx::test(migrator = "common::MIGRATOR")]
    async fn throughput_counts_the_last_hour_only(pool: PgPool) {
        seed(&pool).await;
        let hour = stats::throughput(&pool, 60).await.unwrap();
        assert_eq!(hour.len(), 60);
        // One event in each whole minute before this one, nothing older than the hour (the
        // first minute may just have rolled over).
        let sum: i64 = hour.iter().map(|(_, n)| n).sum();
        assert!((58..=59).contains(&sum), "{sum}");
    }

    #[sqlx::test(migrator = "common::MIGRATOR")]
    async fn a_refresh_reads_the_filtered_list_and_the_newest_deaths(pool: PgPool) {
        seed(&pool).await;
        let all = fetch(&pool, "", None).await.unwrap();
        assert_eq!(all.queue.dead, 150);
        assert_eq!(all.dead.len(), 150);
        assert_eq!(all.recent_dead.len(), RECENT_DEAD as usize);
        assert_eq!(all.recent_dead[0].event_id, "evt_1", "newest first");
        let some = fetch(&pool, "invoice", None).await.unwrap();
        assert_eq!(some.dead.len(), 75);
        assert!(some.dead.iter().all(|e| e.event_type == "invoice.paid"));
        assert_eq!(some.recent_dead.len(), RECENT_DEAD as usize, "unfiltered");
        assert_eq!(some.filter, "invoice");
        let id = some.dead[0].id;
        let detail = detail(&pool, id).await.unwrap().unwrap();
        assert_eq!(detail.payload, ["{}"]);
        assert!(detail.attempts.is_empty());
        assert!(super::detail(&pool, -1).await.unwrap().is_none());
    }

    #[sqlx::test(migrator = "common::MIGRATOR")]
    async fn find_names_events_of_any_state_by_provider_id(pool: PgPool) {
        seed(&pool).await;
        sqlx::query(
            "UPDATE events SET state = 'succeeded', dead_at = NULL WHERE event_id = 'evt_3'",
        )
        .execute(&pool)
        .await
        .unwrap();
        let find = |key: &str| {
            let (actions, mut answers) = mpsc::unbounded_channel();
            let pool = pool.clone();
            let key = key.to_owned();
            async move {
                let archive = Arc::new(ArchiveTarget::Off);
                let wake = Arc::new(Notify::new());
                execute(pool, archive, Command::Find(key), actions, wake).await;
                match answers.recv().await {
                    Some(Action::Found { result, .. }) => result.unwrap(),
                    other => panic!("{other:?}"),
                }
            }
        };
        let succeeded: i64 = sqlx::query_scalar("SELECT id FROM events WHERE event_id = 'evt_3'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(find("evt_3").await, [succeeded]);
        assert_eq!(find(&succeeded.to_string()).await, [succeeded]);
        assert!(find("evt_").await.is_empty(), "exact, not a prefix");
    }

    #[sqlx::test(migrator = "common::MIGRATOR")]
    async fn a_cluster_takes_the_filter_s_place_in_the_list(pool: PgPool) {
        seed(&pool).await;
        let key = ClusterKey {
            source: "stripe".into(),
            event_type: "x.y".into(),
            fingerprint: "boom <n>".into(),
        };
        let snapshot = fetch(&pool, "invoice", Some(&key)).await.unwrap();
        assert_eq!(snapshot.dead.len(), 75);
        assert!(snapshot.dead.iter().all(|e| e.event_type == "x.y"));
        assert_eq!(snapshot.dead[0].event_id, "evt_1", "newest first");
        assert_eq!(snapshot.cluster, Some(key));
        assert_eq!(snapshot.recent_dead.len(), RECENT_DEAD as usize);
        assert!(
            snapshot
                .recent_dead
                .iter()
                .any(|e| e.event_type == "invoice.paid"),
            "notifications see every death, not the cluster's"
        );
    }

    /// The clusters arrive after a refresh, in an action of their own.
    #[sqlx::test(migrator = "common::MIGRATOR")]
    async fn the_clusters_follow_each_refresh(pool: PgPool) {
        seed(&pool).await;
        let (_commands, commands_rx) = mpsc::unbounded_channel();
        let (actions, mut actions_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(pool.clone(), ArchiveTarget::Off, commands_rx, actions));
        let clusters = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(Action::Clusters(list)) = actions_rx.recv().await {
                    return list;
                }
            }
        })
        .await
        .expect("clusters within 20 s");
        let found: Vec<(&str, i64)> = clusters
            .iter()
            .map(|c| (c.event_type.as_str(), c.count))
            .collect();
        // As large, so the latest death comes first: x.y's evt_1.
        assert_eq!(found, [("x.y", 75), ("invoice.paid", 75)]);
        task.abort();
    }

    #[test]
    fn a_source_name_filters_by_source_and_other_text_by_content() {
        let f = dead_filter(" Stripe ", 10);
        assert_eq!(f.source, Some(Source::Stripe));
        assert_eq!(f.text, None);
        let f = dead_filter("invoice", 10);
        assert_eq!((f.source, f.text.as_deref()), (None, Some("invoice")));
        let f = dead_filter("  ", 10);
        assert_eq!((f.source, f.text), (None, None));
        assert_eq!(f.limit, 10);
    }
}
