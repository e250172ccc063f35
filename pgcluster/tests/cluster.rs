//! Real clusters from the local server binaries (CI installs them; `cargo xtask test` sets
//! HOOKD_PG_BIN). As root, the servers run as `postgres`.

use pgcluster::{Binaries, Cluster, Stop};

fn binaries() -> Binaries {
    Binaries::find().expect("PostgreSQL server binaries (apt-get install postgresql)")
}

#[test]
fn a_temporary_cluster_serves_stops_restarts_and_is_removed_when_dropped() {
    let cluster = Cluster::temporary()
        .binaries(binaries())
        .setting("cluster_name", "it's quoted")
        .database("hookd")
        .start()
        .unwrap();
    let root = cluster.data_dir().parent().unwrap().to_owned();
    assert_eq!(
        cluster
            .psql("hookd", "SELECT current_database()")
            .unwrap()
            .trim(),
        "hookd"
    );
    assert_eq!(
        cluster.psql("hookd", "SHOW fsync").unwrap().trim(),
        "off",
        "throwaway by default"
    );
    assert_eq!(
        cluster.psql("hookd", "SHOW cluster_name").unwrap().trim(),
        "it's quoted"
    );

    cluster.stop(Stop::Immediate).unwrap();
    assert!(!cluster.is_running());
    assert!(
        cluster.psql("hookd", "SELECT 1").is_err(),
        "a stopped server answers nothing"
    );
    cluster
        .stop(Stop::Fast)
        .expect("stopping a stopped server is a no-op");
    // A plain start of the same data directory comes back on the same port, as the fault
    // tests need.
    cluster.start().unwrap();
    cluster.restart().unwrap();
    assert_eq!(cluster.psql("hookd", "SELECT 1").unwrap().trim(), "1");
    assert!(
        cluster.start().is_err(),
        "a second server on the same data directory is refused"
    );

    drop(cluster);
    assert!(!root.exists(), "{} is left behind", root.display());
}

#[test]
fn a_failing_sql_statement_says_why() {
    let cluster = Cluster::temporary().binaries(binaries()).start().unwrap();
    let error = cluster
        .psql("postgres", "SELECT * FROM no_such_table")
        .unwrap_err();
    assert!(error.to_string().contains("no_such_table"), "{error}");
}

#[test]
fn a_persistent_cluster_is_durable_reused_and_follows_its_port() {
    let home = tempfile::Builder::new()
        .prefix("pgcluster-test-")
        .tempdir()
        .unwrap();
    // As root the server user must reach it: a temp dir is mode 700 by default.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = home.path().join("pg");
    let port = free_port();
    let first = Cluster::persistent(&root)
        .binaries(binaries())
        .port(port)
        .database("hookd")
        .start()
        .unwrap();
    assert_eq!(first.psql("hookd", "SHOW fsync").unwrap().trim(), "on");
    first
        .psql(
            "hookd",
            "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)",
        )
        .unwrap();
    drop(first);

    // Still running after its owner went away; a second start reuses it as it is.
    let again = Cluster::persistent(&root).port(port).start().unwrap();
    assert_eq!(
        again.psql("hookd", "SELECT n FROM kept").unwrap().trim(),
        "7"
    );

    // Another port: restarted there, with its data.
    let moved = free_port();
    let there = Cluster::persistent(&root).port(moved).start().unwrap();
    assert_eq!(there.port(), moved);
    assert_eq!(
        there.psql("hookd", "SELECT n FROM kept").unwrap().trim(),
        "7"
    );
    there.stop(Stop::Fast).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_interrupted_process_leaves_no_cluster_behind() {
    use std::io::BufRead;
    // Cargo builds the examples beside the tests' deps directory.
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let hold = deps.parent().unwrap().join("examples/hold");
    let mut child = std::process::Command::new(&hold)
        .env("HOOKD_PG_BIN", binaries().dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", hold.display()));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (data, _url) = line.trim().split_once(' ').expect("data directory and URL");
    let data = std::path::PathBuf::from(data);
    assert!(data.join("postmaster.pid").exists(), "the server runs");

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "exits as an interrupted shell command would"
    );
    assert!(
        !data.parent().unwrap().exists(),
        "{} is left behind",
        data.display()
    );
}
