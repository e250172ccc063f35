# shellcheck shell=bash
# scripts/pg.sh — helpers for running a PRIVATE PostgreSQL cluster for hookd.
#
# Sourced (not executed) by scripts/test.sh and scripts/dev.sh. It never touches
# the system cluster Debian's `postgresql` package creates on port 5432: every
# cluster made here has its own data directory, listens only on 127.0.0.1 on its
# own port, and keeps its unix socket next to its data directory.
#
# Layout of a cluster "root" directory R:
#   R/data            the data directory (PGDATA)
#   R/postgres.log    server log (pg_ctl -l)
#   R/.s.PGSQL.<port> unix socket (omitted if the path would be too long)
#
# PostgreSQL refuses to run as root. When the caller is root, the cluster is owned
# by, and every initdb/pg_ctl runs as, the `postgres` system user (created with
# useradd --system if missing), via runuser.
#
# Public functions:
#   pg_ensure_bin [MAJOR]          find (or apt-get install) initdb/pg_ctl/postgres; sets PG_BIN
#   pg_install_exit_trap           EXIT/INT/TERM/HUP traps that stop+remove the test cluster;
#                                  calls pg_on_exit_hook RC afterwards if the caller defines it
#   pg_start_test_cluster          throwaway cluster in a mktemp dir, tuned for speed (fsync=off);
#                                  exports DATABASE_URL; removed again on exit by the trap
#   pg_test_cluster_cleanup        stop the test cluster and delete its directory (idempotent)
#   pg_dev_cluster_up ROOT PORT    persistent development cluster in ROOT (init once, start if
#                                  needed, create db hookd); exports DATABASE_URL
#   pg_stop                        pg_ctl -m fast stop of the current cluster (if running)
# Globals set: PG_BIN PG_MAJOR PG_OS_USER PG_DATA PG_LOG PG_SOCKDIR PG_PORT
#
# Environment:
#   HOOKD_PG_BIN   use the PostgreSQL server binaries in this directory

PG_DB_NAME=hookd
PG_BIN=
PG_MAJOR=
PG_OS_USER=
PG_DATA=
PG_LOG=
PG_SOCKDIR=
PG_PORT=
_PG_TEST_ROOT=

_pg_say() { printf '  [pg] %s\n' "$*" >&2; }
_pg_die() {
    printf '\nERROR (scripts/pg.sh): %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- binaries ----

_pg_bin_ok() {
    [[ -n $1 && -x $1/initdb && -x $1/pg_ctl && -x $1/postgres ]]
}

_pg_bin_major() { # DIR -> "15" (from "postgres (PostgreSQL) 15.18 (Debian ...)")
    local v
    v=$("$1/postgres" --version 2>/dev/null) || return 1
    v=${v#*) }
    printf '%s\n' "${v%%[^0-9]*}"
}

_pg_candidate_dirs() { # PATH's directory first, then /usr/lib/postgresql/*/bin, highest first
    local p
    if p=$(command -v initdb 2>/dev/null); then
        # The symlink's target directory first: it normally also holds psql, pg_isready, ...
        printf '%s\n' "$(dirname -- "$(readlink -f -- "$p")")"
        printf '%s\n' "$(dirname -- "$p")"
    fi
    # shellcheck disable=SC2012 # names are /usr/lib/postgresql/<number>/bin
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r
}

# pg_find_bin [MAJOR]: set PG_BIN/PG_MAJOR; with MAJOR, only accept that major version.
pg_find_bin() {
    local want=${1:-} d
    PG_BIN=
    if [[ -n ${HOOKD_PG_BIN:-} ]]; then
        _pg_bin_ok "$HOOKD_PG_BIN" ||
            _pg_die "HOOKD_PG_BIN=$HOOKD_PG_BIN does not contain initdb, pg_ctl and postgres"
        PG_BIN=$HOOKD_PG_BIN
    else
        while IFS= read -r d; do
            _pg_bin_ok "$d" || continue
            if [[ -n $want && $(_pg_bin_major "$d") != "$want" ]]; then continue; fi
            PG_BIN=$d
            break
        done < <(_pg_candidate_dirs)
    fi
    [[ -n $PG_BIN ]] || return 1
    PG_MAJOR=$(_pg_bin_major "$PG_BIN") || _pg_die "$PG_BIN/postgres --version failed"
}

pg_install() {
    command -v apt-get >/dev/null 2>&1 ||
        _pg_die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found and apt-get is not" \
            "available. Install a PostgreSQL server (>= 13), set HOOKD_PG_BIN to its bin directory," \
            "or set DATABASE_URL to a database you already have."
    local -a sudo=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 ||
            _pg_die "PostgreSQL server binaries not found and you are not root (no sudo either)." \
                "Ask an admin to run: apt-get install -y postgresql — or set DATABASE_URL."
        sudo=(sudo)
    fi
    cat >&2 <<EOF

  PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found.
  Installing Debian's 'postgresql' package${sudo:+ with sudo (you may be asked for your password)}:
      ${sudo:+sudo }apt-get update && ${sudo:+sudo }apt-get install -y postgresql
  (The package also creates and starts a system cluster on port 5432; hookd's
  scripts do not use it — they run their own private cluster.)

EOF
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update ||
        _pg_die "apt-get update failed"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql ||
        _pg_die "apt-get install postgresql failed"
}

# pg_ensure_bin [MAJOR]: find the server binaries, installing the Debian package if needed.
pg_ensure_bin() {
    if ! pg_find_bin "$@"; then
        if [[ -n ${1:-} ]]; then
            # A specific major was asked for (existing data dir): don't install a different one.
            _pg_die "PostgreSQL $1 server binaries not found (need /usr/lib/postgresql/$1/bin)." \
                "Install postgresql-$1, set HOOKD_PG_BIN, or remove the old cluster directory."
        fi
        pg_install
        pg_find_bin || _pg_die "PostgreSQL was installed but initdb/pg_ctl/postgres are still not found"
    fi
    _pg_say "using PostgreSQL $PG_MAJOR server binaries in $PG_BIN"
}

_pg_tool() { # client tool path: from PG_BIN, else PATH
    if [[ -x $PG_BIN/$1 ]]; then printf '%s\n' "$PG_BIN/$1"; else command -v "$1"; fi
}

# ------------------------------------------------------------- os user ----

# Decide which OS user runs the server: nobody special (ourselves) unless we are root.
_pg_setup_os_user() {
    PG_OS_USER=
    [[ $EUID -eq 0 ]] || return 0
    PG_OS_USER=${1:-postgres}
    if ! getent passwd "$PG_OS_USER" >/dev/null; then
        _pg_say "creating system user '$PG_OS_USER' (PostgreSQL refuses to run as root)"
        useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
            --shell /usr/sbin/nologin "$PG_OS_USER" ||
            _pg_die "useradd $PG_OS_USER failed"
    fi
}

# _pg_run CMD...: run CMD as the cluster's OS user (runuser when we are root).
_pg_run() {
    if [[ -n $PG_OS_USER ]]; then
        if command -v runuser >/dev/null 2>&1; then
            (cd / && runuser -u "$PG_OS_USER" -- "$@")
        else
            (cd / && su -s /bin/bash "$PG_OS_USER" -c "$(printf '%q ' "$@")")
        fi
    else
        "$@"
    fi
}

# _pg_own DIR: hand DIR to the cluster's OS user (when root) and check that user can use it.
_pg_own() {
    if [[ -n $PG_OS_USER ]]; then
        chown "$PG_OS_USER:" "$1"
        _pg_run test -w "$1" -a -x "$1" ||
            _pg_die "user '$PG_OS_USER' cannot reach $1: some parent directory is not" \
                "world-searchable (e.g. /root is mode 700). Use a checkout/TMPDIR that other users" \
                "can traverse, or set DATABASE_URL."
    fi
}

# ------------------------------------------------------------- cluster ----

_pg_set_root() { # ROOT -> PG_DATA PG_LOG PG_SOCKDIR
    PG_DATA=$1/data
    PG_LOG=$1/postgres.log
    PG_SOCKDIR=$1
    # sun_path is 108 bytes: "<dir>/.s.PGSQL.<port>" must fit, else TCP only.
    if ((${#PG_SOCKDIR} + 16 > 107)); then
        _pg_say "path $PG_SOCKDIR too long for a unix socket; using TCP only"
        PG_SOCKDIR=
    fi
}

# pg_port_free PORT: true if nothing listens on PORT (any address) — ss, plus a connect test.
pg_port_free() {
    local port=$1
    if command -v ss >/dev/null 2>&1 && [[ -n $(ss -Htln "sport = :$port" 2>/dev/null) ]]; then
        return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        return 1
    fi
    return 0
}

# pg_pick_port LOW HIGH: print a free port in [LOW, HIGH], starting at a random offset.
pg_pick_port() {
    local low=$1 high=$2 span i port
    span=$((high - low + 1))
    local start=$(((RANDOM * 32768 + RANDOM) % span))
    for ((i = 0; i < span && i < 500; i++)); do
        port=$((low + (start + i) % span))
        if pg_port_free "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    return 1
}

_pg_initdb() { # MODE (test|dev)
    # initdb into a scratch name, then rename: an interrupted first run leaves no half cluster.
    local out tmp=$PG_DATA.initdb-tmp
    local -a args=(-D "$tmp" -U postgres -A trust -E UTF8 --no-locale)
    [[ $1 == test ]] && args+=(--no-sync)
    _pg_say "initdb $PG_DATA${PG_OS_USER:+ (as OS user $PG_OS_USER)}"
    _pg_run rm -rf -- "$tmp"
    out=$(_pg_run "$PG_BIN/initdb" "${args[@]}" 2>&1) || {
        printf '%s\n' "$out" >&2
        _pg_die "initdb failed"
    }
    # All our settings live in hookd.conf, included last, so a plain
    # `pg_ctl -D "$PG_DATA" start` (e.g. from a test) gets the same configuration.
    printf "\n# hookd: private-cluster settings (written by scripts/pg.sh)\ninclude_if_exists = 'hookd.conf'\n" |
        _pg_run tee -a "$tmp/postgresql.conf" >/dev/null
    _pg_run rm -rf -- "$PG_DATA" # at most an empty directory (checked by the callers)
    _pg_run mv -- "$tmp" "$PG_DATA"
}

_pg_write_conf() { # MODE PORT
    local mode=$1 sock=${PG_SOCKDIR//\'/\'\'}
    PG_PORT=$2
    {
        printf '# Written by scripts/pg.sh for a hookd %s cluster; rewritten on each start.\n' "$mode"
        printf "listen_addresses = '127.0.0.1'\n"
        printf 'port = %s\n' "$PG_PORT"
        printf "unix_socket_directories = '%s'\n" "$sock"
        if [[ $mode == test ]]; then
            # Tests run in parallel and every #[sqlx::test] creates its own database + pool.
            printf 'max_connections = 300\n'
            printf 'shared_buffers = 128MB\n'
            # Throwaway data: trade durability for speed. NEVER do this outside tests.
            printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n'
        fi
    } | _pg_run tee "$PG_DATA/hookd.conf" >/dev/null
}

pg_is_running() {
    [[ -n $PG_DATA ]] && _pg_run "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

_pg_start() { # -> 0 started, 2 port in use, 1 other failure
    if _pg_run "$PG_BIN/pg_ctl" start -w -t 60 -D "$PG_DATA" -l "$PG_LOG" >/dev/null 2>&1; then
        return 0
    fi
    if tail -n 30 "$PG_LOG" 2>/dev/null | grep -qiE 'could not bind|address already in use|could not create any TCP/IP sockets'; then
        return 2
    fi
    return 1
}

_pg_show_log() {
    printf '\n----- last lines of %s -----\n' "$PG_LOG" >&2
    tail -n 30 "$PG_LOG" >&2 2>/dev/null || true
    printf -- '-----\n' >&2
}

_pg_wait_ready() {
    local isready i
    isready=$(_pg_tool pg_isready) || _pg_die "pg_isready not found"
    for ((i = 0; i < 60; i++)); do
        "$isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres && return 0
        sleep 0.5
    done
    _pg_show_log
    _pg_die "PostgreSQL on 127.0.0.1:$PG_PORT did not become ready"
}

_pg_ensure_db() { # NAME
    local psql exists
    psql=$(_pg_tool psql) || _pg_die "psql not found"
    exists=$("$psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$1'") || _pg_die "cannot query databases"
    if [[ $exists != 1 ]]; then
        "$psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
            -c "CREATE DATABASE \"$1\"" >/dev/null || _pg_die "CREATE DATABASE $1 failed"
        _pg_say "created database $1"
    fi
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$1"
}

pg_stop() {
    [[ -n $PG_DATA && -n $PG_BIN ]] || return 0
    pg_is_running || return 0
    _pg_say "stopping PostgreSQL ($PG_DATA)"
    _pg_run "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null 2>&1 ||
        _pg_run "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w -t 30 >/dev/null 2>&1 ||
        _pg_say "WARNING: could not stop PostgreSQL in $PG_DATA"
}

# ---------------------------------------------------------- test cluster ----

pg_test_cluster_cleanup() {
    [[ -n $_PG_TEST_ROOT ]] || return 0
    pg_stop || true
    rm -rf -- "$_PG_TEST_ROOT" || true
    _pg_say "removed $_PG_TEST_ROOT"
    _PG_TEST_ROOT=
}

_pg_on_exit() {
    local rc=$?
    trap '' INT TERM HUP # don't let a second Ctrl-C interrupt the cleanup
    pg_test_cluster_cleanup
    if declare -F pg_on_exit_hook >/dev/null; then pg_on_exit_hook "$rc" || true; fi
    exit "$rc"
}

pg_install_exit_trap() {
    trap _pg_on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# pg_start_test_cluster: private throwaway cluster; exports DATABASE_URL.
pg_start_test_cluster() {
    local base attempt rc=2 port
    pg_install_exit_trap
    [[ -n $PG_BIN ]] || pg_ensure_bin
    _pg_setup_os_user
    base=$(mktemp -d "${TMPDIR:-/tmp}/hookd-test-pg.XXXXXX") || _pg_die "mktemp failed"
    _PG_TEST_ROOT=$base
    chmod 755 "$base"
    _pg_own "$base"
    _pg_set_root "$base"
    _pg_initdb test
    for ((attempt = 1; attempt <= 10 && rc == 2; attempt++)); do
        port=$(pg_pick_port 20000 29999) || _pg_die "no free TCP port in 20000-29999"
        _pg_write_conf test "$port"
        _pg_start && rc=0 || rc=$?
        ((rc != 2)) || _pg_say "port $port was taken meanwhile; retrying"
    done
    if ((rc != 0)); then
        _pg_show_log
        _pg_die "could not start the test cluster"
    fi
    _pg_wait_ready
    _pg_ensure_db "$PG_DB_NAME"
    _pg_say "test cluster up: $DATABASE_URL (data: $PG_DATA, log: $PG_LOG)"
}

# ----------------------------------------------------------- dev cluster ----

# pg_dev_cluster_up ROOT PORT: persistent cluster under ROOT (ROOT/data, ROOT/postgres.log).
pg_dev_cluster_up() {
    local root=$1 port=$2 owner='' ver running_port rc
    if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        _pg_die "invalid port '$port'"
    fi
    _pg_set_root "$root"
    [[ -e $root ]] && owner=$(stat -c %U -- "$root")
    if [[ -n $owner && $EUID -ne 0 && $owner != "$(id -un)" ]]; then
        _pg_die "$root is owned by '$owner', not you ($(id -un)) — it was probably created by" \
            "running as root. Run as root again, or delete it (sudo rm -rf $root) to start over."
    fi
    if [[ -f $PG_DATA/PG_VERSION ]]; then
        if [[ $EUID -eq 0 ]]; then
            [[ $owner != root ]] ||
                _pg_die "$root is owned by root; PostgreSQL cannot run as root. Delete it and rerun."
            _pg_setup_os_user "$owner" # reuse whoever owns it (postgres, or a developer)
        fi
        ver=$(<"$PG_DATA/PG_VERSION")
        [[ -n $PG_BIN && $PG_MAJOR == "$ver" ]] || pg_ensure_bin "$ver"
    else
        if [[ -n $(ls -A -- "$PG_DATA" 2>/dev/null) ]]; then
            _pg_die "$PG_DATA exists but is not a PostgreSQL data directory; remove it"
        fi
        [[ -n $PG_BIN ]] || pg_ensure_bin
        _pg_setup_os_user
        mkdir -p -- "$root"
        chmod 700 "$root"
        _pg_own "$root"
        _pg_say "first run: creating development cluster in $PG_DATA"
        _pg_initdb dev
    fi

    if pg_is_running; then
        running_port=$(sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true)
        if [[ $running_port == "$port" ]]; then
            PG_PORT=$port
            _pg_say "development cluster already running on 127.0.0.1:$port"
        else
            _pg_say "development cluster runs on port ${running_port:-?}, want $port: restarting"
            pg_stop
        fi
    fi
    if ! pg_is_running; then
        pg_port_free "$port" ||
            _pg_die "port $port on 127.0.0.1 is already in use by something else." \
                "Pick another with HOOKD_DEV_PG_PORT=<port> ./scripts/dev.sh"
        _pg_write_conf dev "$port"
        _pg_start && rc=0 || rc=$?
        if ((rc != 0)); then
            _pg_show_log
            _pg_die "could not start the development cluster in $PG_DATA"
        fi
        _pg_say "started development cluster on 127.0.0.1:$port (log: $PG_LOG)"
    fi
    _pg_wait_ready
    _pg_ensure_db "$PG_DB_NAME"
}
