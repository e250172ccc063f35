//! Where the server binaries are: `HOOKD_PG_BIN`, else the newest Debian
//! `/usr/lib/postgresql/<major>/bin`, else a directory on `PATH` that has them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result, run};

const SERVER: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// A directory holding `initdb`, `pg_ctl` and `postgres`, and their major version.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
    major: u32,
}

impl Binaries {
    /// The binaries to use; [`Error::NotFound`] when there are none.
    pub fn find() -> Result<Binaries> {
        Self::find_where(|_| true)
    }

    /// The binaries of one major version, which an existing data directory needs.
    pub fn find_major(major: u32) -> Result<Binaries> {
        Self::find_where(|b| b.major == major).map_err(|_| {
            Error::NotFound(format!(
                "the data directory is PostgreSQL {major}: install postgresql-{major}, set \
                 HOOKD_PG_BIN to its bin directory, or remove the old cluster directory"
            ))
        })
    }

    /// The binaries, installing Debian's `postgresql` package first when there are none.
    pub fn find_or_install() -> Result<Binaries> {
        match Self::find() {
            Err(Error::NotFound(_)) => {
                eprintln!(
                    "PostgreSQL server binaries not found: installing Debian's postgresql \
                     package (its system cluster on port 5432 is not used)"
                );
                crate::apt_install(&["postgresql"])?;
                Self::find()
            }
            found => found,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn major(&self) -> u32 {
        self.major
    }

    /// A PostgreSQL program (`pgbench`, `psql`, `pg_isready`): the one beside the server if
    /// there is one, else whatever `PATH` finds.
    pub fn tool(&self, name: &str) -> PathBuf {
        let beside = self.dir.join(name);
        if beside.is_file() {
            beside
        } else {
            PathBuf::from(name)
        }
    }

    fn find_where(wanted: impl Fn(&Binaries) -> bool) -> Result<Binaries> {
        if let Some(dir) = std::env::var_os("HOOKD_PG_BIN").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            return Self::at(&dir).filter(&wanted).ok_or_else(|| {
                Error::NotFound(format!(
                    "HOOKD_PG_BIN={} holds no usable initdb, pg_ctl and postgres",
                    dir.display()
                ))
            });
        }
        let mut debian: Vec<Binaries> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .filter_map(|entry| Self::at(&entry.ok()?.path().join("bin")))
            .collect();
        debian.sort_by_key(|b| std::cmp::Reverse(b.major));
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .filter_map(|dir| Self::at(&dir));
        debian
            .into_iter()
            .chain(on_path)
            .find(wanted)
            .ok_or_else(|| {
                Error::NotFound(
                "no initdb, pg_ctl and postgres in HOOKD_PG_BIN, /usr/lib/postgresql/*/bin or PATH"
                    .into(),
            )
            })
    }

    fn at(dir: &Path) -> Option<Binaries> {
        if !SERVER.iter().all(|b| dir.join(b).is_file()) {
            return None;
        }
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        let version = run(Command::new(dir.join("postgres")).arg("--version")).ok()?;
        let number = version.split(')').nth(1)?.trim_start();
        let major = number.split(|c: char| !c.is_ascii_digit()).next()?;
        Some(Binaries {
            dir: dir.to_owned(),
            major: major.parse().ok()?,
        })
    }
}
