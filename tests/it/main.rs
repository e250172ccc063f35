//! hookd's end-to-end suite: the real server over loopback HTTP against a real PostgreSQL.
//! Each `#[sqlx::test]` gets a private database with the migrations applied.

mod admin;
mod archive;
mod badinput;
mod batching;
mod bench;
mod clusters;
mod dashboards;
mod dlq;
mod edge;
mod faults;
mod forward;
mod harness;
mod ingest;
mod netns;
mod openapi;
mod package;
mod processes;
mod processing;
mod providers;
mod retention;
mod runbook;
mod selection;
mod superseded;
mod systemd;
mod tally;
mod upgrade;
