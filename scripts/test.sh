#!/usr/bin/env bash
# scripts/test.sh — hookd's whole test suite: rustfmt, clippy, then `cargo test`
# against a private, throwaway PostgreSQL cluster. This is exactly what CI runs.
#
# Usage:
#   ./scripts/test.sh                                 # everything (what CI does)
#   ./scripts/test.sh -p hookd some_test -- --nocapture   # extra args go to `cargo test`
#
# Database:
#   DATABASE_URL unset -> a new cluster is initdb'd in a mktemp dir, listening only on
#                         127.0.0.1 on a free port (fsync=off: tests only), with database
#                         `hookd`; it is stopped and deleted on exit (success, failure,
#                         Ctrl-C). PostgreSQL is apt-get installed if missing (see pg.sh).
#   DATABASE_URL set   -> used as is (its role must be allowed to CREATE DATABASE, since
#                         every #[sqlx::test] makes its own database).
#
# Exported to the tests, for tests that must stop/start PostgreSQL mid-test.
# All are UNSET when DATABASE_URL was provided by the caller — such tests should skip.
#   HOOKD_TEST_PG_BIN       directory holding pg_ctl, postgres, psql, ...
#   HOOKD_TEST_PGDATA       the cluster's data directory
#   HOOKD_TEST_PG_PORT      its TCP port on 127.0.0.1 (same as in DATABASE_URL)
#   HOOKD_TEST_PG_LOG       its server log file (pass to pg_ctl -l when restarting)
#   HOOKD_TEST_PG_CTL_USER  "" normally; "postgres" when running as root (CI). Then pg_ctl
#                           must run as that user, e.g.:
#     ${HOOKD_TEST_PG_CTL_USER:+runuser -u "$HOOKD_TEST_PG_CTL_USER" --} \
#       "$HOOKD_TEST_PG_BIN/pg_ctl" stop  -D "$HOOKD_TEST_PGDATA" -m fast -w
#     ${HOOKD_TEST_PG_CTL_USER:+runuser -u "$HOOKD_TEST_PG_CTL_USER" --} \
#       "$HOOKD_TEST_PG_BIN/pg_ctl" start -D "$HOOKD_TEST_PGDATA" -l "$HOOKD_TEST_PG_LOG" -w
#   (All settings incl. the port live in the data dir's config, so a plain restart comes
#   back identically. Note other tests run in parallel against the same server.)
#
# Other knobs:
#   HOOKD_TEST_SKIP_LINT=1  skip the rustfmt/clippy steps (local iteration only)
#   HOOKD_PG_BIN=DIR        use PostgreSQL server binaries from DIR
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo"
# shellcheck source=SCRIPTDIR/pg.sh
source "$repo/scripts/pg.sh"

bold='' green='' red='' reset=''
if [[ -t 1 ]]; then bold=$'\e[1m' green=$'\e[1;32m' red=$'\e[1;31m' reset=$'\e[0m'; fi
step=startup
heading() {
    step=$1
    printf '\n%s==> %s%s\n' "$bold" "$1" "$reset"
}
pg_on_exit_hook() { # called by pg.sh's EXIT trap, after the test cluster is gone
    if (($1 == 0)); then
        printf '\n%s==> test.sh: all checks passed%s\n' "$green" "$reset"
    else
        printf '\n%s==> test.sh: FAILED (exit %s) during: %s%s\n' "$red" "$1" "$step" "$reset" >&2
    fi
}
pg_install_exit_trap

own_db=
if [[ -z ${DATABASE_URL:-} ]]; then
    own_db=1
    unset DATABASE_URL
fi
unset HOOKD_TEST_PG_BIN HOOKD_TEST_PGDATA HOOKD_TEST_PG_PORT HOOKD_TEST_PG_LOG HOOKD_TEST_PG_CTL_USER

heading "Toolchain and PostgreSQL"
cargo --version
rustc --version
if [[ ${HOOKD_TEST_SKIP_LINT:-} != 1 ]]; then
    for c in fmt clippy; do
        cargo "$c" --version >/dev/null 2>&1 || {
            echo "cargo $c is not installed; run: rustup component add rustfmt clippy" >&2
            exit 1
        }
    done
fi
# The end-to-end tests drive real tools: tmux (hooktop in a real terminal), a D-Bus session
# bus (desktop notifications), systemd-analyze (the unit files) and promtool (the dashboard
# and alert rules: Debian's prometheus, which also starts a Prometheus server on machines
# that let packages start services). Install what is missing.
missing=()
for tool in tmux:tmux dbus-daemon:dbus systemd-analyze:systemd promtool:prometheus; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    sudo=()
    [[ $EUID -eq 0 ]] || sudo=(sudo)
    echo "Installing test tools: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The package test builds the Debian package with cargo-deb: about 70 s of compiling on two idle
# cores, 3 min on a busy machine, once per machine. Pinned, because the test packages the debug
# binaries the suite builds anyway (a release build would cost CI far more), and cargo-deb warns
# that it means to refuse the dev profile some day.
if ! cargo deb --version >/dev/null 2>&1; then
    echo "Installing cargo-deb"
    cargo install --locked --quiet cargo-deb --version 3.8.0
fi
if [[ -n $own_db ]]; then
    pg_ensure_bin # installs Debian's postgresql if needed — early, before the long build
    "$PG_BIN/postgres" --version
else
    echo "DATABASE_URL is set by the caller; using that database (no private cluster)."
fi

# Extra args go to `cargo test`; anything after a `--` goes to the test harness.
cargo_args=() harness_args=()
while (($#)); do
    if [[ $1 == -- ]]; then
        harness_args=("$@")
        break
    fi
    cargo_args+=("$1")
    shift
done
cargo_test=(cargo test --workspace --locked "${cargo_args[@]}")

if [[ ${HOOKD_TEST_SKIP_LINT:-} == 1 ]]; then
    heading "Lint skipped (HOOKD_TEST_SKIP_LINT=1)"
else
    heading "cargo fmt --all -- --check"
    cargo fmt --all -- --check

    heading "cargo clippy --workspace --all-targets --locked -- -D warnings"
    cargo clippy --workspace --all-targets --locked -- -D warnings
fi

# Compile before our (still empty, unmigrated) database exists, so compile-time
# tooling never looks at it; the run below reuses these artifacts.
heading "Build tests: ${cargo_test[*]} --no-run"
"${cargo_test[@]}" --no-run
# The executables the process tests spawn: built here, not on both cores mid-suite.
cargo build --workspace --bins --locked

if [[ -n $own_db ]]; then
    heading "Start throwaway PostgreSQL cluster"
    pg_start_test_cluster
    export HOOKD_TEST_PG_BIN=$PG_BIN
    export HOOKD_TEST_PGDATA=$PG_DATA
    export HOOKD_TEST_PG_PORT=$PG_PORT
    export HOOKD_TEST_PG_LOG=$PG_LOG
    export HOOKD_TEST_PG_CTL_USER=$PG_OS_USER
fi

# hookd's tables live in its own schema; the tests' own connections (every #[sqlx::test]
# pool) find them the way hookd's do.
[[ $DATABASE_URL == *\?* ]] && sep='&' || sep='?'
export DATABASE_URL="$DATABASE_URL${sep}options=-csearch_path%3Dhookd%2Cpublic"

heading "Run tests: ${cargo_test[*]} ${harness_args[*]}"
echo "DATABASE_URL=$DATABASE_URL"
"${cargo_test[@]}" "${harness_args[@]}"
step=finished
