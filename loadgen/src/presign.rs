//! `loadgen presign`: requests signed ahead of time, for a load generator that does not sign
//! (wrk with `loadgen/wrk/replay.lua`), so that the client's cost is only sending them.
//!
//! The file is raw HTTP/1.1 requests, each after a line holding its length in bytes. The
//! signatures carry the time they were made: hookd accepts them for five minutes.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use common::Source;

use crate::payload::Generator;

/// The replay script, so `loadgen bench` needs nothing from the source tree.
pub const REPLAY_LUA: &str = include_str!("../wrk/replay.lua");

/// Writes requests `0..count` of `mix` for hookd at `host`; returns the bytes written.
pub fn write(
    generator: &Generator,
    mix: &[Source],
    host: &str,
    count: u64,
    path: &Path,
) -> anyhow::Result<u64> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let now = chrono::Utc::now().timestamp();
    let mut request = Vec::with_capacity(4096);
    let mut bytes = 0;
    for i in 0..count {
        let source = mix[(i % mix.len() as u64) as usize];
        let signed = generator.request(source, i, now);
        request.clear();
        write!(
            request,
            "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             User-Agent: hookd-wrk-replay\r\nContent-Length: {}\r\n",
            signed.path,
            signed.body.len()
        )?;
        for (name, value) in &signed.headers {
            write!(request, "{name}: {value}\r\n")?;
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(&signed.body);
        writeln!(out, "{}", request.len())?;
        out.write_all(&request)?;
        bytes += request.len() as u64;
    }
    // On disk before the run starts: the kernel writing back hundreds of MiB meanwhile would
    // delay PostgreSQL's WAL flushes, and that would be charged to hookd.
    out.into_inner()?.sync_all()?;
    Ok(bytes)
}
