//! One cluster: its directory (`data/`, `postgres.log`, the Unix socket), the OS user its
//! server runs as, and the commands that drive it.
//!
//! Every setting this crate makes lives in `data/hookd.conf`, included last by
//! `postgresql.conf` and rewritten on each [`Builder::start`], so a plain `pg_ctl start` of the
//! same data directory (a fault test restarting it) comes back identically.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Uid, User};

use crate::cleanup::{self, Removal};
use crate::{Binaries, Error, Result, io, run};

/// `sun_path` holds 108 bytes: "<dir>/.s.PGSQL.<port>" must fit, else the socket is left out.
const SOCKET_DIR_MAX: usize = 107 - 16;

/// How [`Cluster::stop`] shuts the server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Disconnect the sessions, checkpoint, exit.
    Fast,
    /// Exit at once, as a crash would; the next start recovers from the WAL.
    Immediate,
}

impl Stop {
    fn mode(self) -> &'static str {
        match self {
            Stop::Fast => "fast",
            Stop::Immediate => "immediate",
        }
    }
}

/// How to make a [`Cluster`]: [`Cluster::temporary`] or [`Cluster::persistent`].
#[derive(Debug)]
pub struct Builder {
    persistent: Option<PathBuf>,
    binaries: Option<Binaries>,
    port: Option<u16>,
    listen: String,
    throwaway: bool,
    settings: Vec<(String, String)>,
    hba: Vec<String>,
    netns: Option<String>,
    database: Option<String>,
}

/// A running PostgreSQL server with its own data directory; the superuser is `postgres`,
/// trusted on loopback. A temporary cluster is stopped and deleted when dropped; a
/// persistent one keeps running.
#[derive(Debug)]
pub struct Cluster {
    binaries: Binaries,
    user: Option<String>,
    root: PathBuf,
    data: PathBuf,
    port: u16,
    netns: Option<String>,
    /// Set for a temporary cluster: its entry in the clean-up list.
    removal: Option<u64>,
}

impl Cluster {
    /// A cluster in a new temporary directory, tuned for speed over durability (see
    /// [`Builder::throwaway`]), removed when dropped or when the process is interrupted
    /// ([`crate::clean_up_on_signal`]).
    pub fn temporary() -> Builder {
        Builder::new(None)
    }

    /// A durable cluster in `root` (`root/data`, `root/postgres.log`): created on the first
    /// start, reused (and restarted when its port changed) after that, left running.
    pub fn persistent(root: impl Into<PathBuf>) -> Builder {
        Builder::new(Some(root.into()))
    }
}

impl Builder {
    fn new(persistent: Option<PathBuf>) -> Builder {
        Builder {
            throwaway: persistent.is_none(),
            persistent,
            binaries: None,
            port: None,
            listen: "127.0.0.1".into(),
            settings: Vec::new(),
            hba: Vec::new(),
            netns: None,
            database: None,
        }
    }

    /// The server binaries to use (default: [`Binaries::find_or_install`]).
    pub fn binaries(mut self, binaries: Binaries) -> Builder {
        self.binaries = Some(binaries);
        self
    }

    /// The TCP port (default: a free one, picked again if taken before the server binds it).
    pub fn port(mut self, port: u16) -> Builder {
        self.port = Some(port);
        self
    }

    /// `listen_addresses` (default `127.0.0.1`).
    pub fn listen(mut self, addresses: &str) -> Builder {
        self.listen = addresses.into();
        self
    }

    /// `fsync`, `synchronous_commit` and `full_page_writes` off: for data nobody will miss
    /// (the default for temporary clusters; a benchmark must turn it off).
    pub fn throwaway(mut self, throwaway: bool) -> Builder {
        self.throwaway = throwaway;
        self
    }

    /// Any other server setting, written as `name = 'value'`.
    pub fn setting(mut self, name: &str, value: &str) -> Builder {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// A line appended to `pg_hba.conf` when the cluster is created.
    pub fn hba(mut self, line: &str) -> Builder {
        self.hba.push(line.into());
        self
    }

    /// Runs the server inside network namespace `netns` (as root); reach it on its Unix
    /// socket ([`Cluster::socket_url`]) from here.
    pub fn netns(mut self, netns: &str) -> Builder {
        self.netns = Some(netns.into());
        self
    }

    /// A database to create if it does not exist yet.
    pub fn database(mut self, name: &str) -> Builder {
        self.database = Some(name.into());
        self
    }

    pub fn start(self) -> Result<Cluster> {
        let root = match &self.persistent {
            Some(root) => root.clone(),
            None => tempfile::Builder::new()
                .prefix("hookd-pg-")
                .tempdir()
                .map_err(io("cannot create a temporary directory"))?
                .keep(),
        };
        let data = root.join("data");
        let existing = std::fs::read_to_string(data.join("PG_VERSION")).ok();
        let user = server_user(&root, existing.is_some())?;
        let binaries = match (&existing, self.binaries.clone()) {
            (Some(version), _) => {
                let major = version.trim().parse().map_err(|_| {
                    Error::Setup(format!("{}/PG_VERSION is not a version", data.display()))
                })?;
                match self.binaries.clone().filter(|b| b.major() == major) {
                    Some(b) => b,
                    None => Binaries::find_major(major)?,
                }
            }
            (None, Some(binaries)) => binaries,
            (None, None) => Binaries::find_or_install()?,
        };
        let mut cluster = Cluster {
            binaries,
            user,
            root,
            data,
            port: self.port.unwrap_or(0),
            netns: self.netns.clone(),
            removal: None,
        };
        if self.persistent.is_none() {
            cluster.removal = Some(cleanup::register(Removal {
                stop: cluster.ctl_argv(&["stop", "-s", "-w", "-m", "immediate"]),
                root: cluster.root.clone(),
            }));
        }
        cluster.prepare_root()?;
        if existing.is_none() {
            cluster.initdb(self.throwaway, &self.hba)?;
        }
        if cluster.is_running() {
            match (cluster.running_port(), self.port) {
                (Some(running), Some(wanted)) if running == wanted => {}
                (Some(running), None) => cluster.port = running,
                _ => cluster.stop(Stop::Fast)?,
            }
        }
        if !cluster.is_running() {
            self.first_start(&mut cluster)?;
        }
        if let Some(name) = &self.database {
            cluster.create_database(name)?;
        }
        Ok(cluster)
    }

    /// Writes the settings and starts; a port taken between picking and binding it is picked
    /// again, unless the caller chose it.
    fn first_start(&self, cluster: &mut Cluster) -> Result<()> {
        for _ in 0..10 {
            cluster.port = match self.port {
                Some(port) => port,
                None => free_port()?,
            };
            cluster.write_settings(&self.conf(cluster))?;
            match cluster.start() {
                Err(_) if self.port.is_none() && cluster.port_was_taken() => continue,
                started => return started,
            }
        }
        Err(Error::Setup("no free TCP port after 10 tries".into()))
    }

    fn conf(&self, cluster: &Cluster) -> String {
        let mut conf = String::from("# Written by pgcluster on every start; edits are lost.\n");
        let mut set = |name: &str, value: &str| {
            let _ = writeln!(conf, "{name} = '{}'", value.replace('\'', "''"));
        };
        set("listen_addresses", &self.listen);
        set("port", &cluster.port.to_string());
        set("unix_socket_directories", &cluster.socket_dir());
        if self.throwaway {
            // Throwaway data only: trades durability for speed.
            for name in ["fsync", "synchronous_commit", "full_page_writes"] {
                set(name, "off");
            }
        }
        for (name, value) in &self.settings {
            set(name, value);
        }
        conf
    }
}

impl Cluster {
    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's Unix socket, which reaches across network namespaces.
    pub fn socket_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{database}?host={}",
            self.port,
            self.socket_dir()
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The OS user the server runs as when it is not ourselves (we are root).
    pub fn os_user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn start(&self) -> Result<()> {
        let log = self.log_file();
        let mut ctl = self.ctl(&["start", "-s", "-w", "-t", "60", "-l"]);
        ctl.arg(&log);
        run(&mut ctl).map(drop).map_err(|e| match e {
            Error::Tool {
                command, status, ..
            } => Error::Tool {
                command,
                status,
                output: format!(":\n{}", tail(&log, 20)),
            },
            other => other,
        })
    }

    /// Stops the server; a server that is not running is already stopped.
    pub fn stop(&self, how: Stop) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        run(&mut self.ctl(&["stop", "-s", "-w", "-t", "60", "-m", how.mode()])).map(drop)
    }

    pub fn restart(&self) -> Result<()> {
        self.stop(Stop::Fast)?;
        self.start()
    }

    pub fn is_running(&self) -> bool {
        run(&mut self.ctl(&["status"])).is_ok()
    }

    /// `pg_ctl -D <data> ARGS` as the server's user (and in its namespace): for callers that
    /// drive the server themselves, e.g. asynchronously with `tokio::process::Command::from`.
    pub fn ctl(&self, args: &[&str]) -> Command {
        let argv = self.ctl_argv(args);
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).current_dir("/");
        command
    }

    /// A PostgreSQL program (`pgbench`, `vacuumdb`) run as the server's user, in its namespace.
    pub fn command(&self, tool: &str) -> Command {
        let argv = self.as_server(self.binaries.tool(tool).into());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).current_dir("/");
        command
    }

    /// Runs `sql` in `database` with psql; its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let url = match self.netns {
            Some(_) => self.socket_url(database),
            None => self.url(database),
        };
        run(Command::new(self.binaries.tool("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(url)
            .arg("-c")
            .arg(sql))
    }

    pub fn create_database(&self, name: &str) -> Result<()> {
        let quoted = name.replace('\'', "''");
        let exists = self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{quoted}'"),
        )?;
        if exists.trim() != "1" {
            let ident = name.replace('"', "\"\"");
            self.psql("postgres", &format!("CREATE DATABASE \"{ident}\""))?;
        }
        Ok(())
    }

    pub fn drop_database(&self, name: &str) -> Result<()> {
        let ident = name.replace('"', "\"\"");
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{ident}\" WITH (FORCE)"),
        )
        .map(drop)
    }

    fn ctl_argv(&self, args: &[&str]) -> Vec<OsString> {
        let mut argv = self.as_server(self.binaries.dir().join("pg_ctl").into());
        argv.extend(["-D".into(), self.data.clone().into()]);
        argv.extend(args.iter().map(OsString::from));
        argv
    }

    /// `program` wrapped to run inside the namespace and as the server's user.
    fn as_server(&self, program: OsString) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(netns) = &self.netns {
            argv.extend(["ip", "netns", "exec", netns].map(OsString::from));
        }
        if let Some(user) = &self.user {
            argv.extend(["runuser", "-u", user, "--"].map(OsString::from));
        }
        argv.push(program);
        argv
    }

    fn socket_dir(&self) -> String {
        let dir = self.root.to_string_lossy().into_owned();
        if dir.len() <= SOCKET_DIR_MAX {
            dir
        } else {
            String::new()
        }
    }

    /// The root is the server user's, and that user can reach it (a checkout under a mode-700
    /// home directory cannot be reached by `postgres`).
    fn prepare_root(&self) -> Result<()> {
        let what = || format!("cannot prepare {}", self.root.display());
        std::fs::create_dir_all(&self.root).map_err(io(what()))?;
        // Temporary: others traverse it to reach the socket. Persistent: the owner only.
        let mode = if self.removal.is_some() { 0o755 } else { 0o700 };
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(mode))
            .map_err(io(what()))?;
        let Some(user) = &self.user else {
            return Ok(());
        };
        let owner = User::from_name(user)
            .ok()
            .flatten()
            .ok_or_else(|| Error::Setup(format!("no OS user {user}")))?;
        nix::unistd::chown(&self.root, Some(owner.uid), Some(owner.gid))
            .map_err(|e| io(what())(e.into()))?;
        let mut reach = Command::new("runuser");
        reach.args(["-u", user, "--", "test", "-w"]).arg(&self.root);
        run(&mut reach).map(drop).map_err(|_| {
            Error::Setup(format!(
                "user {user} cannot reach {}: a parent directory is not searchable by others \
                 (a home directory of mode 700?); use a checkout or TMPDIR others can traverse, \
                 or set DATABASE_URL",
                self.root.display()
            ))
        })
    }

    /// initdb into a scratch directory, then renamed: an interrupted first run leaves no half
    /// cluster behind.
    fn initdb(&self, throwaway: bool, hba: &[String]) -> Result<()> {
        let scratch = self.root.join("data.initdb");
        let _ = std::fs::remove_dir_all(&scratch);
        let mut argv = self.as_server(self.binaries.dir().join("initdb").into());
        argv.extend(
            [
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "-D",
            ]
            .map(OsString::from),
        );
        argv.push(scratch.clone().into());
        if throwaway {
            argv.push("--no-sync".into());
        }
        run(Command::new(&argv[0]).args(&argv[1..]).current_dir("/"))?;
        let mut conf = "\ninclude_if_exists = 'hookd.conf'\n".to_owned();
        append(&scratch.join("postgresql.conf"), &conf)?;
        conf.clear();
        for line in hba {
            let _ = writeln!(conf, "{line}");
        }
        append(&scratch.join("pg_hba.conf"), &conf)?;
        std::fs::rename(&scratch, &self.data).map_err(io(format!(
            "cannot move the new cluster to {}",
            self.data.display()
        )))
    }

    fn write_settings(&self, conf: &str) -> Result<()> {
        let path = self.data.join("hookd.conf");
        std::fs::write(&path, conf).map_err(io(format!("cannot write {}", path.display())))?;
        if let Some(owner) = self
            .user
            .as_deref()
            .and_then(|u| User::from_name(u).ok().flatten())
        {
            nix::unistd::chown(&path, Some(owner.uid), Some(owner.gid))
                .map_err(|e| io(format!("cannot chown {}", path.display()))(e.into()))?;
        }
        Ok(())
    }

    /// The port a running server listens on: the fourth line of `postmaster.pid`.
    fn running_port(&self) -> Option<u16> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .nth(3)?
            .trim()
            .parse()
            .ok()
    }

    fn port_was_taken(&self) -> bool {
        let log = tail(&self.log_file(), 30).to_lowercase();
        [
            "could not bind",
            "address already in use",
            "could not create any tcp/ip sockets",
        ]
        .iter()
        .any(|said| log.contains(said))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(id) = self.removal.take() {
            cleanup::remove(id);
        }
    }
}

/// Who runs the server: ourselves, unless we are root, which PostgreSQL refuses; then the
/// owner of an existing cluster, or `postgres` (created if the system has no such user).
fn server_user(root: &Path, existing: bool) -> Result<Option<String>> {
    if !nix::unistd::geteuid().is_root() {
        if existing {
            let owner = std::fs::metadata(root)
                .map_err(io(format!("cannot read {}", root.display())))?
                .uid();
            if owner != Uid::current().as_raw() {
                return Err(Error::Setup(format!(
                    "{} belongs to another user (created as root?): run as that user, or \
                     delete it to start over",
                    root.display()
                )));
            }
        }
        return Ok(None);
    }
    if existing {
        let owner = std::fs::metadata(root)
            .map_err(io(format!("cannot read {}", root.display())))?
            .uid();
        if owner != 0 {
            let user = User::from_uid(Uid::from_raw(owner)).ok().flatten();
            return Ok(Some(user.map_or_else(|| owner.to_string(), |u| u.name)));
        }
    }
    if User::from_name("postgres").ok().flatten().is_none() {
        run(Command::new("useradd").args([
            "--system",
            "--user-group",
            "--home-dir",
            "/var/lib/postgresql",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "postgres",
        ]))?;
    }
    Ok(Some("postgres".into()))
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("cannot find a free port"))
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io(format!("cannot write {}", path.display())))
}

/// The last `lines` lines of a log, for an error message.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
