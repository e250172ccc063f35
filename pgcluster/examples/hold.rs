//! Starts a temporary cluster, prints its data directory and waits to be interrupted: the
//! Ctrl-C test's subject, and a quick way to get a scratch server by hand.

fn main() -> Result<(), pgcluster::Error> {
    pgcluster::clean_up_on_signal();
    let cluster = pgcluster::Cluster::temporary().start()?;
    println!(
        "{} {}",
        cluster.data_dir().display(),
        cluster.url("postgres")
    );
    loop {
        std::thread::park();
    }
}
