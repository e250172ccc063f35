//! `cargo xtask bench`: the release binaries, then `loadgen bench` beside them, so the figures
//! are always of what the tree builds now.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Context;

use crate::{cargo, heading, step, target_dir};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    heading("Build the release binaries");
    step(
        cargo()
            .args(["build", "--locked", "--release"])
            .args(["-p", "hookd", "-p", "hooktop", "-p", "hookd-loadgen"])
            .env_remove("DATABASE_URL"),
    )?;
    let loadgen = target_dir()?.join("release").join("loadgen");
    // exec: Ctrl-C reaches loadgen alone, which stops what it started.
    let err = Command::new(&loadgen).arg("bench").args(args).exec();
    Err(err).with_context(|| format!("cannot run {}", loadgen.display()))
}
