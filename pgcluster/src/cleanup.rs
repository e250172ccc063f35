//! Temporary clusters are removed when dropped; this module also removes them when the process
//! is interrupted, where no destructor runs.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// How to get rid of one temporary cluster: its `pg_ctl stop -m immediate`, then its directory.
pub(crate) struct Removal {
    pub stop: Vec<std::ffi::OsString>,
    pub root: PathBuf,
}

impl Removal {
    pub fn run(&self) {
        let (program, args) = self.stop.split_first().expect("a stop command");
        let _ = Command::new(program)
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

static LIVE: Mutex<Vec<(u64, Removal)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

pub(crate) fn register(removal: Removal) -> u64 {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, removal));
    id
}

pub(crate) fn remove(id: u64) {
    let removal = {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.iter()
            .position(|(i, _)| *i == id)
            .map(|at| live.swap_remove(at).1)
    };
    if let Some(removal) = removal {
        removal.run();
    }
}

/// On SIGINT, SIGTERM or SIGHUP, stops and deletes every temporary cluster still alive, then
/// exits with 128 + the signal, as the shell would report it. For commands (the test runner,
/// the benchmark), not libraries; calling it again does nothing.
pub fn clean_up_on_signal() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!(
                    "pgcluster: cannot watch for signals ({e}); Ctrl-C leaves clusters behind"
                );
                return;
            }
        };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
                for (_, removal) in &live {
                    removal.run();
                }
                std::process::exit(128 + signal);
            }
        });
    });
}
