//! Faults across a real network: PostgreSQL and two hookd instances on hosts of their own,
//! network namespaces this test makes (iproute2), each hookd linked to the database host by a
//! veth pair. Every address is inside those namespaces; the test itself reaches PostgreSQL on
//! its Unix socket, which crosses namespaces.

use std::process::Command;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use pgcluster::Cluster;

use crate::faults::private_cluster;
use crate::harness::*;

const EXACTLY_ONCE: &str = "SELECT count(*) FROM (
    SELECT e.id FROM events e JOIN audit_logs a ON a.webhook_id = e.id
    GROUP BY e.id HAVING count(*) = 1) once";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Three hosts: `db` and two for hookd, `a` and `b`, each linked to `db` by its own veth
/// pair. Removed on drop, links and all.
struct Hosts {
    db: String,
    hookd: [String; 2],
    /// The veth end on each hookd host, to cut and mend its link.
    links: [String; 2],
    /// The database host's address as each hookd host sees it.
    db_addresses: [String; 2],
}

impl Hosts {
    /// None, after saying why, where this machine cannot make namespaces.
    fn make() -> Option<Hosts> {
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{:x}{n}", pid % 0xfffff);
        // Subnets of the test's own, apart per process and per test.
        let subnet = 16 + (pid % 50 * 4 + n) % 230;
        let hosts = Hosts {
            db: format!("hk{tag}db"),
            hookd: [format!("hk{tag}a"), format!("hk{tag}b")],
            links: [format!("hk{tag}a1"), format!("hk{tag}b1")],
            db_addresses: [format!("10.231.{subnet}.1"), format!("10.231.{subnet}.5")],
        };
        if let Err(e) = ip(&["netns", "add", &hosts.db]) {
            println!("skipped: cannot create network namespaces here ({e})");
            return None;
        }
        let setup = || -> Result<(), String> {
            ip(&["netns", "exec", &hosts.db, "ip", "link", "set", "lo", "up"])?;
            for (n, host) in hosts.hookd.iter().enumerate() {
                ip(&["netns", "add", host])?;
                ip(&["netns", "exec", host, "ip", "link", "set", "lo", "up"])?;
                let near = &hosts.links[n];
                let far = format!("{near}d");
                ip(&["link", "add", near, "type", "veth", "peer", "name", &far])?;
                ip(&["link", "set", near, "netns", host])?;
                ip(&["link", "set", &far, "netns", &hosts.db])?;
                let base = 4 * n as u32;
                let db_side = format!("10.231.{subnet}.{}/30", base + 1);
                let host_side = format!("10.231.{subnet}.{}/30", base + 2);
                ip(&[
                    "netns", "exec", &hosts.db, "ip", "addr", "add", &db_side, "dev", &far,
                ])?;
                ip(&["netns", "exec", &hosts.db, "ip", "link", "set", &far, "up"])?;
                ip(&[
                    "netns", "exec", host, "ip", "addr", "add", &host_side, "dev", near,
                ])?;
                ip(&["netns", "exec", host, "ip", "link", "set", near, "up"])?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            panic!("setting up the test hosts: {e}");
        }
        Some(hosts)
    }

    fn set_link(&self, n: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "netns",
            "exec",
            &self.hookd[n],
            "ip",
            "link",
            "set",
            &self.links[n],
            state,
        ])
        .unwrap();
    }

    /// hookd on host `n`, reaching the database over its link.
    fn spawn(&self, n: usize, cluster: &Cluster, extra: &[(&str, &str)]) -> Process {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.hookd[n]])
            .arg(hookd_bin());
        let url = format!(
            "postgres://postgres@{}:{}/hookd",
            self.db_addresses[n],
            cluster.port()
        );
        Process::spawn_at(&url, free_port(), extra, command)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it, and so the pairs.
        for host in self.hookd.iter().chain([&self.db]) {
            let _ = ip(&["netns", "del", host]);
        }
    }
}

async fn database(cluster: &Cluster) -> PgPool {
    let options = hookd::schema::connect_options(
        cluster.socket_url("hookd").parse().unwrap(),
        &hookd::Schema::default(),
    );
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("the database host's socket");
    hookd::migrate(&pool, &hookd::Schema::default())
        .await
        .expect("migrate");
    pool
}

/// The link of one of two instances is cut mid-batch: the other finishes its events (the
/// database drops the cut one's liveness lock once keepalives give up on it); when the link
/// comes back the cut instance rejoins under a new owner; no effect is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_hands_the_work_to_the_other_host_and_the_cut_one_rejoins() {
    let Some(hosts) = Hosts::make() else { return };
    let listen = hosts.db_addresses.join(",");
    let Some(cluster) = private_cluster(Some(&hosts.db), &listen) else {
        return;
    };
    let pool = database(&cluster).await;
    backlog(&pool, 4_000).await;
    let settings = [
        ("HOOKD_LEASE_SECS", "120"),
        ("HOOKD_BATCH_SIZE", "50"),
        ("HOOKD_WORKERS", "2"),
    ];
    let a = hosts.spawn(0, &cluster, &settings);
    let b = hosts.spawn(1, &cluster, &settings);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while a.log_lines("event processed") < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "host a never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hosts.set_link(0, false);
    let cut = tokio::time::Instant::now();
    let stranded: Vec<i64> = sqlx::query_scalar(
        "SELECT e.id FROM events e
         WHERE e.state = 'processing' AND e.claimed_by IS NOT NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
        4_000,
        Duration::from_secs(90),
    )
    .await;
    let finished_in = cut.elapsed();
    println!(
        "RELIABILITY scenario=netns-cut-link stranded={} all_processed_after_cut_ms={}",
        stranded.len(),
        finished_in.as_millis()
    );
    assert!(
        finished_in < Duration::from_secs(60),
        "the lease is 120 s: only the liveness lock can have freed host a's claims"
    );

    hosts.set_link(0, true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while a.log_lines("holding the liveness lock") < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "host a did not rejoin after its link came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // More work after the rejoin: both hosts take part again.
    sqlx::query(
        "INSERT INTO events (source, event_id, event_type, body, payload)
         SELECT 'custom', 'after_' || g, 'load.test', '{}'::bytea, '{}'
         FROM generate_series(1, 2000) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before_a = a.log_lines("event processed");
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
        6_000,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        a.log_lines("event processed") > before_a,
        "host a processes again"
    );
    assert_eq!(count(&pool, EXACTLY_ONCE).await, 6_000);
    assert_eq!(count(&pool, "SELECT count(*) FROM audit_logs").await, 6_000);
    drop((a, b));
}

/// Latency and loss on the database links (`tc netem`) while the work runs: nothing lost,
/// nothing doubled. Skipped where the kernel has no netem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_loss_on_the_database_links_lose_and_double_nothing() {
    let Some(hosts) = Hosts::make() else { return };
    for (n, host) in hosts.hookd.iter().enumerate() {
        let netem = ip(&[
            "netns",
            "exec",
            host,
            "tc",
            "qdisc",
            "add",
            "dev",
            &hosts.links[n],
            "root",
            "netem",
            "delay",
            "50ms",
            "20ms",
            "loss",
            "1%",
        ]);
        if let Err(e) = netem {
            println!("skipped: this kernel cannot add latency and loss (tc netem: {e})");
            return;
        }
    }
    let listen = hosts.db_addresses.join(",");
    let Some(cluster) = private_cluster(Some(&hosts.db), &listen) else {
        return;
    };
    let pool = database(&cluster).await;
    backlog(&pool, 2_000).await;
    let settings = [("HOOKD_BATCH_SIZE", "50"), ("HOOKD_WORKERS", "2")];
    let _a = hosts.spawn(0, &cluster, &settings);
    let _b = hosts.spawn(1, &cluster, &settings);
    let started = tokio::time::Instant::now();
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
        2_000,
        Duration::from_secs(240),
    )
    .await;
    println!(
        "RELIABILITY scenario=netns-netem events=2000 processed_in_ms={}",
        started.elapsed().as_millis()
    );
    assert_eq!(count(&pool, EXACTLY_ONCE).await, 2_000);
}
