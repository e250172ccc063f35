//! `sqlx::migrate!` embeds `../migrations` at compile time, but Cargo reruns the macro only when
//! a file it already knows changes. A new migration is a new file: without this, binaries and
//! tests built incrementally keep the old list and refuse a database migrated by the new one.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
