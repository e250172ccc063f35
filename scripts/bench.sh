#!/usr/bin/env bash
# scripts/bench.sh — hookd's performance targets (DESIGN.md §4), measured side by side in one
# run on a fresh, private, DURABLE PostgreSQL cluster (fsync=on, synchronous_commit=on).
#
# Usage:
#   ./scripts/bench.sh                 # everything, 3 runs per figure (15-25 min on 2 cores)
#   ./scripts/bench.sh --quick         # smoke check: 1 run, small sizes (~3 min)
#   ./scripts/bench.sh --runs 5 -c 64  # more runs, other concurrency
#   ./scripts/bench.sh --only pgbench,ingest,half   # a subset of the stages
#
# Options:
#   --runs N            runs per figure; each figure is the median (default 3; --quick: 1)
#   --quick             1 run, 5 s loads, 10k backlog, 100k/1M history, 100k purge
#   -c, --concurrency C connections for pgbench and loadgen (default 32)
#   -T, --duration S    seconds of each throughput run (default 20), plus a 2 s warm-up
#   --backlog N         events in the drain backlog (default 100000)
#   --history A,B       stored events for the hooktop refresh (default 1000000,10000000)
#   --purge N           dead events older than 7 days to purge (default 1000000)
#   --purge-rate R      open-loop ingest rate while purging, req/s (default 200)
#   --mix M             loadgen source mix (default stripe=1,telnyx=1,custom=1)
#   --drain-mix M       backlog source mix (default telnyx=1,custom=1)
#   --only LIST         stages: pgbench,ingest,half,receive,drain,refresh,purge (default all)
#   --diagnose          also load pg_stat_statements and sample wait events during ingest
#                       (small overhead; output in the run directory)
#   --no-build          use the binaries already in target/release
#   --out DIR           where logs and results go (default target/bench/<timestamp>)
#
# Stages (what DESIGN.md §4 asks):
#   1 pgbench: single-row autocommit INSERT of an events-shaped row (~1 KB body, unique key)
#     into a copy of `events` (same columns and indexes, no triggers), -c C -j 2 -T S.
#     Also, for information, the same INSERT into hookd's real `events` (with its triggers).
#   2 ingest: release hookd (workers running, as in production; HOOKD_RATE_LIMIT=off) driven by
#     loadgen with C keep-alive connections, closed loop: sustained acks/s, latency, ratio to 1.
#     Then open loop at half the measured rate: latency (target p99 <= 20 ms).
#     loadgen checks that every acknowledged event is in the database (missing must be 0).
#   2c receive: the same closed loop against a receive-only hookd (HOOKD_WORKERS=0), which
#     only verifies and stores, as pgbench only inserts: ingest without processing beside it.
#   3 drain: a backlog of N pending events (built-in handlers do real work), hookd started,
#     timed until nothing is pending/retrying/processing; ratio to 1 (target >= 0.6).
#   4 refresh: hooktop's refresh (`hooktop --bench-refresh`, the dashboard's own code) at each
#     history size (events + per-minute counters over 30 days, a few thousand dead events);
#     target <= 50 ms at 10M and flat. loadgen refresh-bench gives the per-query breakdown.
#   5 purge: `hookd dlq purge --older-than 7d` of N dead events (4 attempts each, as hookd
#     leaves them) while loadgen sends at a fixed rate; target <= 2 s, ingest keeps answering.
#   6 memory: peak RSS (VmHWM) of hookd under full load and of hooktop (in tmux) at the first
#     history size; targets 64 MiB and 32 MiB.
#
# Runs as root (PostgreSQL then runs as the `postgres` user, see pg.sh) or as a normal user.
# Everything started here is stopped on exit, whatever happens.
set -euo pipefail
# The whole script is one block: bash reads it completely before running any of it, so editing
# this file while a benchmark runs cannot derail that run.
{

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo"
# shellcheck source=SCRIPTDIR/pg.sh
source "$repo/scripts/pg.sh"

# ------------------------------------------------------------------ options ----

runs=3 quick='' conc=32 dur=20 warm=2 backlog=100000 history=1000000,10000000 purge_n=1000000
purge_rate=200 mix=stripe=1,telnyx=1,custom=1 drain_mix=telnyx=1,custom=1 only=all diagnose=
build=1 out='' runs_set=''
die() {
    printf 'bench.sh: %s\n' "$*" >&2
    exit 2
}
need_arg() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) need_arg "$@"; runs=$2; runs_set=1; shift ;;
    --quick) quick=1 ;;
    -c | --concurrency) need_arg "$@"; conc=$2; shift ;;
    -T | --duration) need_arg "$@"; dur=$2; shift ;;
    --backlog) need_arg "$@"; backlog=$2; shift ;;
    --history) need_arg "$@"; history=$2; shift ;;
    --purge) need_arg "$@"; purge_n=$2; shift ;;
    --purge-rate) need_arg "$@"; purge_rate=$2; shift ;;
    --mix) need_arg "$@"; mix=$2; shift ;;
    --drain-mix) need_arg "$@"; drain_mix=$2; shift ;;
    --only) need_arg "$@"; only=$2; shift ;;
    --diagnose) diagnose=1 ;;
    --no-build) build= ;;
    --out) need_arg "$@"; out=$2; shift ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
if [[ -n $quick ]]; then
    [[ -n $runs_set ]] || runs=1
    dur=5 warm=1 backlog=10000 history=100000,1000000 purge_n=100000
fi
for v in runs conc dur backlog purge_n purge_rate; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "--${v//_/-} must be a whole number above 0"
done
IFS=, read -r -a history_sizes <<<"$history"
stage() { [[ $only == all || ,$only, == *,$1,* ]]; }

# ------------------------------------------------------------------ helpers ----

bold='' reset=''
if [[ -t 1 ]]; then bold=$'\e[1m' reset=$'\e[0m'; fi
say() { printf '%s\n' "$*" >&2; }
heading() { printf '\n%s==> %s%s  (load average %s)\n' "$bold" "$*" "$reset" "$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" >&2; }
now() { date +%s.%N; }
# calc EXPR: floating-point arithmetic (awk), printed with up to 6 significant digits.
calc() { awk "BEGIN { x = $1; printf \"%.6g\\n\", x }"; }
fmt() { awk -v x="$1" -v d="${2:-1}" 'BEGIN { if (x == "" || x == "-") print "-"; else printf "%.*f\n", d, x }'; }
# total V...: the sum of the numbers given (empty when none).
total() { printf '%s\n' "$@" | awk '{ s += $1 } END { print s }'; }
# median V...: of the numbers given (empty when none).
median() {
    printf '%s\n' "$@" | grep -E '^-?[0-9.eE+-]+$' | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# jnum FILE KEY: a top-level number from loadgen's one-line JSON (no jq needed).
jnum() { grep -o "\"$2\":[-0-9.eE+]*" "$1" | head -n 1 | cut -d: -f2; }
# jobj FILE KEY: a flat object such as "status":{"200":5,"503":2} -> 200:5 503:2
jobj() { grep -o "\"$2\":{[^}]*}" "$1" | head -n 1 | sed -E "s/^\"$2\":\{//; s/\}$//; s/\"//g; s/,/ /g"; }

psql_bin=$(command -v psql || true)
# hookd's tables are in its own schema (the business tables and views in public); psql and
# pgbench find them as hookd does.
export PGOPTIONS="-c search_path=${HOOKD_SCHEMA:-hookd},public"
pgbench_bin=
q() { # q DB SQL...: one value, unaligned
    local db=$1
    shift
    PGOPTIONS="$PGOPTIONS -c client_min_messages=warning" "$psql_bin" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" -tAc "$*"
}
qf() { # qf DB: run stdin as a script
    "$psql_bin" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -f -
}
url_of() { printf 'postgres://postgres@127.0.0.1:%s/%s\n' "$PG_PORT" "$1"; }

fresh_db() { # fresh_db NAME: drop, create, migrate
    q postgres "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null
    q postgres "CREATE DATABASE \"$1\"" >/dev/null
    DATABASE_URL=$(url_of "$1") "$HOOKD" migrate >/dev/null
}

checkpoint() { q postgres "CHECKPOINT" >/dev/null; }

vmhwm_kib() { # peak RSS of PID in KiB
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true
}
proc_cpu() { # CPU seconds (user + system) PID has used so far
    awk '{ sub(/^.*\) /, ""); print ($12 + $13) / 100 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
cpu_snapshot() { # "busy total" jiffies of the whole machine
    awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}
# cpu_line HOOKD_CPU0 SNAP0 SECS LOADGEN_JSON: where the CPU went during a run
cpu_line() {
    local h1 busy1 total1 busy0 total0
    h1=$(proc_cpu "$hookd_pid")
    read -r busy1 total1 < <(cpu_snapshot)
    read -r busy0 total0 <<<"$2"
    awk -v h="$(calc "$h1 - $1")" -v s="$3" -v l="$(jnum "$4" client_cpu_secs)" -v b="$((busy1 - busy0))" \
        -v t="$((total1 - total0))" -v n="$(nproc)" 'BEGIN {
        printf "CPU (cores): hookd %.2f, loadgen %.2f, whole machine %.2f of %d busy\n", h / s, l / s, n * b / t, n }'
}
mib() { awk -v k="$1" 'BEGIN { if (k == "") print "-"; else printf "%.1f\n", k / 1024 }'; }

# ------------------------------------------------------- processes we start ----

hookd_pid='' loadgen_pid='' tmux_sock="hookd-bench-$$"
stop_hookd() {
    [[ -n $hookd_pid ]] || return 0
    if kill -0 "$hookd_pid" 2>/dev/null; then
        kill -TERM "$hookd_pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$hookd_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$hookd_pid" 2>/dev/null || true
    fi
    wait "$hookd_pid" 2>/dev/null || true
    hookd_pid=
}
# shellcheck disable=SC2317 # called from the EXIT trap
bench_cleanup() {
    if [[ -n $loadgen_pid ]]; then kill -TERM "$loadgen_pid" 2>/dev/null || true; fi
    stop_hookd
    if command -v tmux >/dev/null 2>&1; then tmux -L "$tmux_sock" kill-server 2>/dev/null || true; fi
}
# shellcheck disable=SC2317 # the EXIT trap
bench_on_exit() {
    local rc=$?
    trap '' INT TERM HUP
    bench_cleanup
    # pg.sh's handler stops and deletes the cluster, then exits with the status it sees.
    (exit "$rc")
    _pg_on_exit
}
install_traps() {
    trap bench_on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

hookd_port=
start_hookd() { # start_hookd DB LOG [ENV=VALUE...]: hookd serve in the background
    local db=$1 log=$2 i
    shift 2
    hookd_port=$(pg_pick_port 30000 39999) || die "no free port for hookd"
    env DATABASE_URL="$(url_of "$db")" HOOKD_LISTEN="127.0.0.1:$hookd_port" \
        HOOKD_RATE_LIMIT=off "$@" "$HOOKD" serve >"$log" 2>&1 &
    hookd_pid=$!
    for ((i = 0; i < 200; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$hookd_port") 2>/dev/null; then return 0; fi
        kill -0 "$hookd_pid" 2>/dev/null || {
            tail -n 20 "$log" >&2
            die "hookd exited during start-up (log: $log)"
        }
        sleep 0.05
    done
    die "hookd did not listen on 127.0.0.1:$hookd_port within 10 s (log: $log)"
}

queue_depth() { q "$1" "SELECT count(*) FROM events WHERE state IN ('pending', 'retrying', 'processing')"; }

loadgen_run() { # loadgen_run OUT_JSON DB ARGS...: loadgen run against the running hookd
    local json=$1 db=$2
    shift 2
    env DATABASE_URL="$(url_of "$db")" "$LOADGEN" run --url "http://127.0.0.1:$hookd_port" \
        --json "$@" >"$json" 2>"$json.err" || {
        local rc=$?
        if [[ $rc -eq 3 ]]; then
            say "  WARNING: acknowledged events missing from the database (see $json)"
        else
            cat "$json.err" >&2
            die "loadgen failed (exit $rc)"
        fi
    }
}

describe_loadgen() { # one line about a loadgen JSON
    local j=$1 extra=''
    [[ $(jnum "$j" non_2xx) == 0 ]] || extra+=" non-2xx {$(jobj "$j" status)}"
    [[ $(jnum "$j" errors) == 0 ]] || extra+=" errors {$(jobj "$j" error_kinds)}"
    # Open loop: the part of the latency spent before the request left the client.
    if grep -q '"mode":"open"' "$j"; then
        extra+=" (client send lag p99 $(jnum "$j" send_lag_p99_ms) ms)"
    fi
    printf '%8.1f acks/s  p50 %6.2f  p90 %6.2f  p99 %7.2f  max %7.2f ms  acked %s missing %s%s\n' \
        "$(jnum "$j" throughput)" "$(jnum "$j" p50_ms)" "$(jnum "$j" p90_ms)" "$(jnum "$j" p99_ms)" \
        "$(jnum "$j" max_ms)" "$(jnum "$j" acked)" "$(jnum "$j" missing)" "$extra"
}

# ---------------------------------------------------------------- build ----

if [[ -n $build ]]; then
    heading "building release binaries"
    cargo build --release -p hookd -p hookd-loadgen -p hooktop >&2
fi
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
target_dir=${target_dir:-$repo/target}
HOOKD=$target_dir/release/hookd
LOADGEN=$target_dir/release/loadgen
HOOKTOP=$target_dir/release/hooktop
for b in "$HOOKD" "$LOADGEN"; do [[ -x $b ]] || die "$b is missing (build it or drop --no-build)"; done
[[ -x $HOOKTOP ]] || say "NOTE: $HOOKTOP is missing; hooktop figures come from loadgen refresh-bench"

out=${out:-$target_dir/bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd -P)
chmod 755 "$out"

# ---------------------------------------------------------------- cluster ----

heading "starting a private PostgreSQL cluster"
pg_start_test_cluster
install_traps
[[ -n $psql_bin ]] || psql_bin=$(_pg_tool psql) || die "psql not found"
pgbench_bin=$(_pg_tool pgbench) || die "pgbench not found (Debian: postgresql-client / contrib)"
# pg.sh tunes test clusters for speed (fsync=off ...). Benchmarks must pay for durability:
# ALTER SYSTEM writes postgresql.auto.conf, which is read after pg.sh's hookd.conf and wins.
{
    cat <<'SQL'
ALTER SYSTEM SET fsync = on;
ALTER SYSTEM SET synchronous_commit = on;
ALTER SYSTEM SET full_page_writes = on;
ALTER SYSTEM SET shared_buffers = '512MB';
ALTER SYSTEM SET max_wal_size = '4GB';
ALTER SYSTEM SET checkpoint_timeout = '15min';
SQL
    if [[ -n $diagnose ]]; then
        echo "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';"
        echo "ALTER SYSTEM SET track_io_timing = on;"
    fi
} | qf postgres >/dev/null
_pg_run "$PG_BIN/pg_ctl" restart -w -t 120 -D "$PG_DATA" -l "$PG_LOG" -m fast >/dev/null ||
    die "restarting PostgreSQL with durable settings failed (log: $PG_LOG)"
_pg_wait_ready
settings=$(q postgres "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name)
    FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method',
    'shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'max_connections')")
[[ $settings == *fsync=on* && $settings == *synchronous_commit=on* ]] ||
    die "PostgreSQL is not durable: $settings"

# ---------------------------------------------------------------- machine ----

heading "machine"
pg_version=$(q postgres "SELECT version()")
cpu=$(awk -F: '/model name/ { gsub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
mem=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || true)
fsync_summary=
if fsync_tool=$(_pg_tool pg_test_fsync); then
    # On the cluster's filesystem; the file is written by whoever we are (root can, users own it).
    fsync_summary=$("$fsync_tool" -s 2 -f "$PG_DATA/../pg_test_fsync.tmp" 2>&1 |
        awk '/one 8kB write/ { on = 1 } /two 8kB writes/ { on = 0 } on && /ops\/sec/' |
        sed -E 's/^ +//; s/ +/ /g') || true
    rm -f "$PG_DATA/../pg_test_fsync.tmp" 2>/dev/null || true
fi
{
    printf 'date: %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'nproc: %s  cpu: %s  memory: %s\n' "$(nproc)" "${cpu:-?}" "${mem:-?}"
    printf 'kernel: %s\n' "$(uname -sr)"
    printf 'postgres: %s\n' "$pg_version"
    printf 'settings: %s\n' "$settings"
    printf 'pg_test_fsync -s 2 (one 8kB write):\n'
    printf '%s\n' "${fsync_summary:-  (pg_test_fsync not available)}" | sed 's/^/  /'
    printf 'git: %s%s\n' "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "$([[ -n $(git status --porcelain 2>/dev/null) ]] && echo ' + uncommitted changes')"
    printf 'runs per figure: %s, concurrency %s, %s s per throughput run (+%s s warm-up)\n' \
        "$runs" "$conc" "$dur" "$warm"
} | tee "$out/machine.txt" >&2

# Secrets for this run only: hookd's own generator prints them as export lines.
eval "$("$HOOKD" dev-secrets)"
export STRIPE_WEBHOOK_SECRET TELNYX_PUBLIC_KEY TELNYX_SIGNING_KEY CUSTOM_WEBHOOK_SECRET

# Results, filled in by the stages (medians); "-" = not measured.
pgb_tps=- pgb_p50=- pgb_p99=- pgb_events_tps=- ing_rate=- ing_p50=- ing_p99=- ing_max=- ing_missing=-
ing_non2xx=- half_rate=- half_p50=- half_p99=- half_max=- half_missing=- drain_rate=- drain_failed=-
hookd_hwm=- drain_hwm=- hooktop_hwm=- purge_s=- purge_p99=- purge_max=- purge_non2xx=-
declare -A refresh_ms=()
ing_ratio_l=() drain_ratio_l=() recv_ratio_l=() ratio_l=() recv_rate=- recv_p99=- recv_missing=-

# ---------------------------------------------------------------- 1 pgbench ----

# A realistic ~1 KB custom event, the body pgbench stores each transaction.
pgb_body=$(
    cat <<'JSON' | tr -d '\n'
{"type":"order.created","timestamp":"2026-11-29T03:00:00.000Z","data":{"business_id":42,
"order_id":"ord_000000123456","channel":"web","currency":"usd","total_cents":5623,"customer":{
"id":"cust_0000123456","email":"customer123456@example.com","name":"Bench Customer","phone":
"+15557654321","marketing_opt_in":false},"items":[{"sku":"SKU-CUT-001","name":"Haircut",
"quantity":1,"unit_cents":3500},{"sku":"SKU-WASH-002","name":"Wash and style","quantity":1,
"unit_cents":2000},{"sku":"SKU-TIP-000","name":"Tip","quantity":1,"unit_cents":123}],"shipping":
{"method":"in_store","address":{"line1":"1 Bench Street","city":"Springfield","postal_code":
"12345","country":"US"}},"notes":"Customer asked for the 3 pm slot; confirm by SMS the day before.",
"staff":{"id":"stf_0042","name":"Alex Example","role":"stylist"},"location":{"id":"loc_main",
"timezone":"America/New_York"},"tags":["returning","sms-reminder","web-booking"],"metadata":{
"source":"pgbench","request_index":123456,"schema":"v2"}}}
JSON
)

run_pgbench() { # run_pgbench DB TABLE TAG -> prints "tps p50_ms p99_ms"
    local db=$1 table=$2 tag=$3 script=$out/pgbench-$3.sql logdir=$out/pgbench-$3-log
    # The key is unique and increasing (like loadgen's ids); the body is a bind parameter
    # (-M prepared), parsed into jsonb on every insert, exactly as hookd's INSERT does. hookd's
    # own table keeps its keys in event_keys, through a trigger, so it has no ON CONFLICT.
    local on_conflict="ON CONFLICT (source, event_id) DO NOTHING"
    [ "$table" = events ] && on_conflict=
    cat >"$script" <<SQL
INSERT INTO $table (source, event_id, event_type, body, payload)
VALUES ('custom', 'msg_pgb' || lpad(nextval('bench_key')::text, 12, '0'), 'order.created',
        convert_to(:body, 'UTF8'), :body::jsonb)
$on_conflict
RETURNING id;
SQL
    rm -rf "$logdir"
    mkdir -p "$logdir"
    checkpoint
    local res
    res=$(cd "$logdir" && "$pgbench_bin" -n -M prepared -h 127.0.0.1 -p "$PG_PORT" -U postgres \
        -c "$conc" -j 2 -T $((dur + warm)) -f "$script" -D "body=$pgb_body" -l --log-prefix=tx "$db" 2>&1) ||
        {
            printf '%s\n' "$res" >&2
            die "pgbench failed"
        }
    printf '%s\n' "$res" >"$out/pgbench-$tag.txt"
    local tps
    tps=$(printf '%s\n' "$res" | awk '/^tps = / { print $3; exit }')
    # Latency percentiles from the per-transaction log (column 3: microseconds), warm-up included.
    cat "$logdir"/tx.* | awk '{ print $3 }' | sort -n >"$logdir/lat"
    local n p50 p99
    n=$(wc -l <"$logdir/lat")
    p50=$(awk -v n="$n" 'NR == int(n * 0.50) + 1 { printf "%.2f", $1 / 1000; exit }' "$logdir/lat")
    p99=$(awk -v n="$n" 'NR == int(n * 0.99) + 1 { printf "%.2f", $1 / 1000; exit }' "$logdir/lat")
    rm -rf "$logdir"
    printf '%s %s %s\n' "$tps" "$p50" "$p99"
}

pgb_all=() pgb_p50_all=() pgb_p99_all=() pgb_last=
# pgbench_once LABEL: one baseline run on an emptied table; sets pgb_last.
pgbench_once() {
    local res t p5 p9
    q bench_pgbench "TRUNCATE bench_events" >/dev/null
    res=$(run_pgbench bench_pgbench bench_events plain)
    read -r t p5 p9 <<<"$res"
    pgb_last=$t
    pgb_all+=("$t") pgb_p50_all+=("$p5") pgb_p99_all+=("$p9")
    say "  pgbench baseline ($1): $(fmt "$t") tps  p50 $p5 ms  p99 $p9 ms"
}

if stage pgbench; then
    heading "1. pgbench baseline: single-row autocommit INSERT, -c $conc -j 2 -T $((dur + warm))"
    fresh_db bench_pgbench
    qf bench_pgbench >/dev/null <<'SQL'
-- Same columns, defaults and constraints as hookd's events, unpartitioned, with the unique
-- key and indexes it had in one table before migration 0005; none of its triggers.
CREATE TABLE bench_events (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS,
                           PRIMARY KEY (id), UNIQUE (source, event_id));
CREATE INDEX ON bench_events (next_attempt_at) WHERE state IN ('pending', 'retrying', 'processing');
CREATE INDEX ON bench_events (dead_at DESC) WHERE state = 'dead';
CREATE INDEX ON bench_events (source, event_type) INCLUDE (state) WHERE state IN ('retrying', 'dead');
CREATE SEQUENCE bench_key;
SQL
    if stage ingest || stage drain; then
        # The machine is shared and noisy: each hookd run is paired with a baseline run just
        # before it, and ratios are taken pair by pair.
        say "  (baseline runs are interleaved with the ingest and drain runs below)"
    else
        for ((r = 1; r <= runs; r++)); do pgbench_once "run $r"; done
    fi
    # For information: the same INSERT into hookd's own table, whose triggers add the key and
    # upsert the per-minute counters.
    fresh_db bench_pgbench_events
    q bench_pgbench_events "CREATE SEQUENCE bench_key" >/dev/null
    res=$(run_pgbench bench_pgbench_events events events)
    read -r t p5 p9 <<<"$res"
    pgb_events_tps=$t
    say "  into hookd's events table (with its triggers), 1 run: $(fmt "$t") tps  p50 $p5 ms  p99 $p9 ms"
    q postgres "DROP DATABASE bench_pgbench_events WITH (FORCE)" >/dev/null
fi

# ---------------------------------------------------------------- 2 ingest ----

sample_waits() { # sample_waits DB FILE: wait events of hookd's backends every 100 ms until killed
    while :; do
        "$psql_bin" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -tAc \
            "SELECT COALESCE(wait_event_type || ':' || wait_event, 'CPU'), state FROM pg_stat_activity
             WHERE application_name = 'hookd' AND state <> 'idle'" 2>/dev/null || true
        sleep 0.1
    done >>"$2"
}

# ingest_run KIND R ARGS...: one measured loadgen run against a fresh hookd on a fresh database
# (so no run inherits the previous one's backlog); sets run_json, run_cpu; adds to the totals.
ing_failed=- ing_deadlocks=- hookd_hwm_max=0 hookd_env=()
ingest_run() {
    local kind=$1 r=$2 h0 snap0 t0 waits_pid='' hwm
    shift 2
    run_json=$out/$kind-$r.json
    fresh_db bench_ingest
    [[ -z $diagnose ]] || q bench_ingest "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    checkpoint
    start_hookd bench_ingest "$out/hookd-$kind-$r.log" "${hookd_env[@]}"
    if [[ -n $diagnose && $r == 1 ]]; then
        sample_waits bench_ingest "$out/$kind-waits.txt" &
        waits_pid=$!
    fi
    h0=$(proc_cpu "$hookd_pid") snap0=$(cpu_snapshot) t0=$(now)
    # The first WARM seconds (connections, prepared statements) are sent but not measured.
    loadgen_run "$run_json" bench_ingest -c "$conc" -d "$((dur + warm))s" --warmup "${warm}s" \
        --mix "$mix" "$@"
    run_cpu=$(cpu_line "$h0" "$snap0" "$(calc "$(now) - $t0")" "$run_json")
    if [[ -n $waits_pid ]]; then
        kill "$waits_pid" 2>/dev/null || true
        wait "$waits_pid" 2>/dev/null || true
        q bench_ingest "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms,
            round(mean_exec_time::numeric, 3) AS mean_ms, left(regexp_replace(query, '\s+', ' ', 'g'), 110)
            FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15" >"$out/$kind-statements.txt"
        sort "$out/$kind-waits.txt" | uniq -c | sort -rn >"$out/$kind-waits-summary.txt"
    fi
    hwm=$(vmhwm_kib "$hookd_pid")
    ((${hwm:-0} > hookd_hwm_max)) && hookd_hwm_max=$hwm
    # What the workers made of the events meanwhile: they run, as in production.
    local failed deadlocks backlog
    failed=$(q bench_ingest "SELECT count(*) FROM event_attempts WHERE outcome <> 'succeeded'")
    deadlocks=$(q bench_ingest "SELECT count(*) FROM event_attempts WHERE error LIKE '%deadlock%'")
    backlog=$(queue_depth bench_ingest)
    q bench_ingest "SELECT count(*), left(error, 120) FROM event_attempts WHERE outcome <> 'succeeded'
        GROUP BY 2 ORDER BY 1 DESC LIMIT 10" >"$out/$kind-$r-failed-attempts.txt"
    stop_hookd
    ing_failed=$((${ing_failed/-/0} + failed)) ing_deadlocks=$((${ing_deadlocks/-/0} + deadlocks))
    run_cpu+="; workers: $failed failed attempts ($deadlocks deadlocks), $backlog events still queued"
}

# ingest_runs KIND LABEL paired|alone [LOADGEN ARGS...]: $runs runs of `ingest_run KIND`; when
# paired, each comes after its own pgbench run (if that stage runs) and its ratio to it is kept.
# Fills rate_l p50_l p99_l max_l miss_l non_l and ratio_l.
ingest_runs() {
    local kind=$1 label=$2 paired=$3 r
    shift 3
    rate_l=() p50_l=() p99_l=() max_l=() miss_l=() non_l=() ratio_l=()
    if [[ $paired != paired ]] || ! stage pgbench; then paired=''; fi
    for ((r = 1; r <= runs; r++)); do
        if [[ -n $paired ]]; then pgbench_once "before $label run $r"; fi
        ingest_run "$kind" "$r" "$@"
        say "  run $r: $(describe_loadgen "$run_json")"
        say "         $run_cpu"
        if [[ -n $paired ]]; then
            ratio_l+=("$(calc "$(jnum "$run_json" throughput) / $pgb_last")")
            say "         ratio to the baseline run just before: $(fmt "${ratio_l[-1]}" 2)"
        fi
        rate_l+=("$(jnum "$run_json" throughput)")
        p50_l+=("$(jnum "$run_json" p50_ms)")
        p99_l+=("$(jnum "$run_json" p99_ms)")
        max_l+=("$(jnum "$run_json" max_ms)")
        miss_l+=("$(jnum "$run_json" missing)")
        non_l+=("$(($(jnum "$run_json" non_2xx) + $(jnum "$run_json" errors)))")
    done
}

if stage ingest || stage half; then
    heading "2. hookd ingest: $conc connections, mix $mix, workers on (default), rate limit off"
    if stage ingest; then
        ingest_runs ingest ingest paired
        ing_ratio_l=("${ratio_l[@]}")
        hookd_hwm=$hookd_hwm_max
        ing_rate=$(median "${rate_l[@]}") ing_p50=$(median "${p50_l[@]}") ing_p99=$(median "${p99_l[@]}")
        ing_max=$(median "${max_l[@]}")
        ing_missing=$(total "${miss_l[@]}")
        ing_non2xx=$(total "${non_l[@]}")
        say "  median: $(fmt "$ing_rate") acks/s, p99 $(fmt "$ing_p99" 2) ms; hookd peak RSS $(mib "$hookd_hwm") MiB"
    fi
    if stage half; then
        if [[ $ing_rate == - ]]; then die "--only half needs the ingest stage too"; fi
        target=$(calc "$ing_rate / 2")
        heading "2b. hookd at half that rate, open loop: $(fmt "$target") req/s over $conc connections"
        ingest_runs half "half load" alone --rate "$target"
        half_rate=$(median "${rate_l[@]}") half_p50=$(median "${p50_l[@]}")
        half_p99=$(median "${p99_l[@]}") half_max=$(median "${max_l[@]}")
        half_missing=$(total "${miss_l[@]}")
        say "  median p99 $(fmt "$half_p99" 2) ms at $(fmt "$half_rate") acks/s"
    fi
    q postgres "DROP DATABASE IF EXISTS bench_ingest WITH (FORCE)" >/dev/null
fi

if stage receive; then
    heading "2c. receive-only hookd (HOOKD_WORKERS=0): $conc connections, closed loop, mix $mix"
    hookd_env=(HOOKD_WORKERS=0)
    ingest_runs receive receive-only paired
    hookd_env=()
    recv_ratio_l=("${ratio_l[@]}")
    recv_rate=$(median "${rate_l[@]}") recv_p99=$(median "${p99_l[@]}")
    recv_missing=$(total "${miss_l[@]}")
    say "  median: $(fmt "$recv_rate") acks/s, p99 $(fmt "$recv_p99" 2) ms"
    q postgres "DROP DATABASE IF EXISTS bench_ingest WITH (FORCE)" >/dev/null
fi

# ---------------------------------------------------------------- 3 drain ----

if stage drain; then
    heading "3. drain of a $backlog-event backlog through the built-in handlers (mix $drain_mix)"
    rate_l=() failed_l=() hwm_l=() drain_ratio_l=()
    for ((r = 1; r <= runs; r++)); do
        if stage pgbench; then pgbench_once "before drain run $r"; fi
        fresh_db bench_drain
        env DATABASE_URL="$(url_of bench_drain)" "$LOADGEN" seed-backlog -n "$backlog" \
            --mix "$drain_mix" >"$out/drain-seed-$r.txt"
        q bench_drain "VACUUM ANALYZE" >/dev/null
        checkpoint
        t0=$(now)
        start_hookd bench_drain "$out/hookd-drain-$r.log"
        hwm=
        while (($(queue_depth bench_drain) > 0)); do
            hwm=$(vmhwm_kib "$hookd_pid")
            if awk -v a="$(now)" -v b="$t0" 'BEGIN { exit !(a - b > 600) }'; then
                say "  (backlog not drained after 600 s; giving up)"
                break
            fi
            sleep 0.25
        done
        # The end as PostgreSQL saw it, not when the poll noticed.
        t1=$(q bench_drain "SELECT extract(epoch FROM max(processed_at)) FROM events")
        done_n=$(q bench_drain "SELECT count(*) FROM events WHERE processed_at IS NOT NULL")
        hwm=$(vmhwm_kib "$hookd_pid")
        stop_hookd
        secs=$(calc "$t1 - $t0")
        rate=$(calc "$done_n / $secs")
        states=$(q bench_drain "SELECT string_agg(state || '=' || n, ' ') FROM
            (SELECT state, count(*) AS n FROM events GROUP BY 1 ORDER BY 1) s")
        failed=$(q bench_drain "SELECT count(*) FROM event_attempts WHERE outcome <> 'succeeded'")
        batch_fail=$(grep -c 'batch failed' "$out/hookd-drain-$r.log" || true)
        say "  run $r: $(fmt "$secs" 2) s  $(fmt "$rate") events/s  ($states; failed attempts $failed; failed batches $batch_fail; hookd peak RSS $(mib "$hwm") MiB)"
        rate_l+=("$rate") failed_l+=("$failed") hwm_l+=("$hwm")
        if stage pgbench; then
            drain_ratio_l+=("$(calc "$rate / $pgb_last")")
            say "         ratio to the baseline run just before: $(fmt "${drain_ratio_l[-1]}" 2)"
        fi
    done
    drain_rate=$(median "${rate_l[@]}")
    drain_failed=$(total "${failed_l[@]}")
    drain_hwm=$(printf '%s\n' "${hwm_l[@]}" | sort -n | tail -n 1)
    q postgres "DROP DATABASE bench_drain WITH (FORCE)" >/dev/null
fi

if stage pgbench; then
    q postgres "DROP DATABASE IF EXISTS bench_pgbench WITH (FORCE)" >/dev/null
    if ((${#pgb_all[@]} > 0)); then
        pgb_tps=$(median "${pgb_all[@]}") pgb_p50=$(median "${pgb_p50_all[@]}")
        pgb_p99=$(median "${pgb_p99_all[@]}")
    fi
fi

# ---------------------------------------------------------------- 4 refresh ----

# hist_rows FROM TO DEAD_EVERY RETRY_EVERY: a SELECT of history rows g = FROM..TO, as hookd
# would have left them: spread over the last 30 days, mostly succeeded, the unhandled type
# skipped, one in DEAD_EVERY dead, one in RETRY_EVERY retrying; 16 types over three sources.
hist_rows() {
    cat <<SQL
SELECT g, t.src, t.typ,
       CASE WHEN g % $3 = 7 THEN 'dead'
            WHEN g % $4 = 11 THEN 'retrying'
            WHEN t.handled THEN 'succeeded' ELSE 'skipped' END AS st,
       -- Spread evenly over 30 days (golden-ratio sequence): every load covers the whole span,
       -- so a top-up makes history denser, as more traffic would.
       now() - interval '30 days' * (1 - ((g * 0.6180339887) % 1)) AS at
FROM generate_series($1, $2) AS g
CROSS JOIN LATERAL (
    SELECT (ARRAY['stripe','stripe','stripe','stripe','stripe','telnyx','telnyx','telnyx',
                  'telnyx','telnyx','telnyx','custom','custom','custom','custom','stripe'])[1 + g % 16] AS src,
           (ARRAY['invoice.payment_succeeded','invoice.payment_failed',
                  'customer.subscription.created','customer.subscription.updated',
                  'customer.subscription.deleted','call.initiated','call.answered',
                  'call.hangup','message.received','message.sent','message.finalized',
                  'order.created','order.fulfilled','appointment.booked','review.posted',
                  'charge.refunded'])[1 + g % 16] AS typ,
           g % 16 <> 15 AS handled
) t
SQL
}

# dead_days DB: the dead-letter day partitions of the last 31 days, as a hookd that saw events
# die on each of them would have left.
dead_days() {
    q "$1" "SELECT count(*) FILTER (WHERE hookd_create_dead_day((now() AT TIME ZONE 'UTC')::date - ago))
            FROM generate_series(-2, 31) AS ago" >/dev/null
}

# seed_history DB FROM TO DEAD_EVERY RETRY_EVERY: stores history rows FROM..TO (in parallel sessions) and
# adds them to the per-minute counters. hookd's triggers are off for the load (they would count
# every row as received now); the counters are computed from the same rows instead.
seed_history() {
    local db=$1 from=$2 to=$3 every=$4 retry=$5 n lo hi step i pids=()
    n=$(nproc 2>/dev/null || echo 2)
    ((n >= 1 && n <= 4)) || n=4
    step=$(((to - from + n) / n))
    dead_days "$db"
    for ((i = 0; i < n; i++)); do
        lo=$((from + i * step))
        hi=$((lo + step - 1 < to ? lo + step - 1 : to))
        ((lo <= hi)) || continue
        {
            echo "SET session_replication_role = replica;"
            echo "SET synchronous_commit = off;  -- the load only; the benchmarks run with it on"
            echo "INSERT INTO events (source, event_id, event_type, state, attempts, next_attempt_at,"
            echo "    last_error, received_at, processed_at, dead_at, body, payload)"
            echo "SELECT src, 'hist_' || lpad(g::text, 10, '0'), typ, st,"
            echo "    CASE st WHEN 'dead' THEN 4 WHEN 'retrying' THEN 2 ELSE 1 END,"
            echo "    CASE WHEN st = 'retrying' THEN now() + interval '10 minutes' ELSE at END,"
            echo "    CASE WHEN st IN ('dead', 'retrying') THEN 'no business is linked to customer cus_unknown' END,"
            echo "    at, CASE WHEN st IN ('succeeded', 'skipped') THEN at + interval '40 ms' END,"
            echo "    CASE WHEN st = 'dead' THEN at + interval '15 minutes' END,"
            echo "    convert_to(b, 'UTF8'), b::jsonb"
            echo "FROM ($(hist_rows "$lo" "$hi" "$every" "$retry")) s,"
            echo "LATERAL (SELECT format('{\"id\":\"hist_%s\",\"type\":\"%s\",\"data\":{\"object\":{\"id\":\"obj_%s\",\"livemode\":false}}}', g, typ, g) AS b) x;"
        } | qf "$db" >/dev/null &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || die "loading history failed"; done
    {
        echo "INSERT INTO stats_minute (bucket, source, event_type, received, succeeded, skipped, failed, dead)"
        echo "SELECT date_trunc('minute', at), src, typ, count(*),"
        echo "    count(*) FILTER (WHERE st = 'succeeded'), count(*) FILTER (WHERE st = 'skipped'),"
        echo "    3 * count(*) FILTER (WHERE st = 'dead') + count(*) FILTER (WHERE st = 'retrying'),"
        echo "    count(*) FILTER (WHERE st = 'dead')"
        echo "FROM ($(hist_rows "$from" "$to" "$every" "$retry")) s"
        echo "GROUP BY 1, 2, 3"
        echo "ON CONFLICT (bucket, source, event_type, shard) DO UPDATE SET"
        echo "    received = stats_minute.received + EXCLUDED.received,"
        echo "    succeeded = stats_minute.succeeded + EXCLUDED.succeeded,"
        echo "    skipped = stats_minute.skipped + EXCLUDED.skipped,"
        echo "    failed = stats_minute.failed + EXCLUDED.failed,"
        echo "    dead = stats_minute.dead + EXCLUDED.dead;"
    } | qf "$db" >/dev/null
}

hooktop_refresh() { # hooktop_refresh DB RUNS -> median ms of one `hooktop --bench-refresh`
    local res
    res=$("$HOOKTOP" --database-url "$(url_of "$1")" --bench-refresh "$2" 2>&1) || {
        printf '%s\n' "$res" >&2
        return 1
    }
    printf '%s\n' "$res" >>"$out/refresh-hooktop.txt"
    printf '%s\n' "$res" | sed -nE 's/.*median ([0-9.]+) ms.*/\1/p' | head -n 1
}

hooktop_tmux_hwm() { # hooktop_tmux_hwm DB -> peak RSS (KiB) of the real dashboard after 6 s
    command -v tmux >/dev/null 2>&1 || return 0
    local pid hwm
    tmux -L "$tmux_sock" new-session -d -s bench -x 160 -y 48 \
        "exec env DATABASE_URL='$(url_of "$1")' '$HOOKTOP' --no-notify" || return 0
    sleep 6
    pid=$(tmux -L "$tmux_sock" list-panes -t bench -F '#{pane_pid}' 2>/dev/null | head -n 1)
    [[ -n $pid ]] && hwm=$(vmhwm_kib "$pid")
    tmux -L "$tmux_sock" capture-pane -p -t bench >"$out/hooktop-screen.txt" 2>/dev/null || true
    tmux -L "$tmux_sock" send-keys -t bench q 2>/dev/null || true
    sleep 0.5
    tmux -L "$tmux_sock" kill-server 2>/dev/null || true
    printf '%s\n' "${hwm:-}"
}

if stage refresh; then
    fresh_db bench_history
    loaded=0 size_i=0
    for size in "${history_sizes[@]}"; do
        [[ $size =~ ^[0-9]+$ ]] || die "--history takes sizes such as 1000000,10000000"
        heading "4. hooktop refresh at $size stored events"
        t0=$(now)
        # Loads in chunks of 1M rows (one transaction per session each). Only the first size
        # brings dead and retrying events (one in 400 dead: a few thousand at 1M); top-ups add
        # succeeded and skipped history only, so what grows between sizes is history alone.
        dead_every=$((size_i == 0 ? 400 : 1000000000000))
        retry_every=$((size_i == 0 ? 100003 : 1000000000000))
        while ((loaded < size)); do
            next=$((loaded + 1000000 < size ? loaded + 1000000 : size))
            seed_history bench_history $((loaded + 1)) "$next" "$dead_every" "$retry_every"
            loaded=$next
        done
        # hookd appends counter rows minute after minute, so they lie in time order on disk;
        # the load wrote them in arbitrary order. CLUSTER puts them back as hookd would have.
        q bench_history "CLUSTER stats_minute USING stats_minute_pkey" >/dev/null
        q bench_history "VACUUM ANALYZE events" >/dev/null
        q bench_history "VACUUM ANALYZE stats_minute" >/dev/null
        checkpoint
        say "  loaded in $(fmt "$(calc "$(now) - $t0")") s: $(q bench_history "SELECT count(*) FROM events") events, \
$(q bench_history "SELECT count(*) FROM events WHERE state = 'dead'") dead, \
$(q bench_history "SELECT count(*) FROM stats_minute") counter rows, \
$(q bench_history "SELECT pg_size_pretty(pg_database_size(current_database()))")"
        ms_l=()
        if [[ -x $HOOKTOP ]]; then
            for ((r = 1; r <= runs; r++)); do
                m=$(hooktop_refresh bench_history 30) || die "hooktop --bench-refresh failed"
                say "  run $r: hooktop --bench-refresh 30: median $m ms"
                ms_l+=("$m")
            done
        fi
        env DATABASE_URL="$(url_of bench_history)" "$LOADGEN" refresh-bench --runs 30 \
            >"$out/refresh-loadgen-$size.txt"
        sed 's/^/  /' "$out/refresh-loadgen-$size.txt" >&2
        if ((${#ms_l[@]} == 0)); then
            ms_l+=("$(sed -nE 's/.*median ([0-9.]+) ms.*/\1/p' "$out/refresh-loadgen-$size.txt" | head -n 1)")
        fi
        refresh_ms[$size]=$(median "${ms_l[@]}")
        if ((size_i == 0)) && [[ -x $HOOKTOP ]]; then
            hooktop_hwm=$(hooktop_tmux_hwm bench_history)
            say "  hooktop dashboard in tmux for 6 s: peak RSS $(mib "$hooktop_hwm") MiB"
        fi
        size_i=$((size_i + 1))
    done
    q postgres "DROP DATABASE bench_history WITH (FORCE)" >/dev/null
fi

# ---------------------------------------------------------------- 5 purge ----

seed_dead() { # seed_dead DB N: N dead events 8-30 days old, 4 attempts each, + 10k recent dead
    dead_days "$1"
    qf "$1" >/dev/null <<SQL
SET synchronous_commit = off;  -- the load only
SET session_replication_role = replica;
INSERT INTO events (source, event_id, event_type, state, attempts, last_error, received_at,
                    dead_at, body, payload)
SELECT 'stripe', 'old_dead_' || g, 'invoice.payment_failed', 'dead', 4,
       'no business is linked to customer cus_gone_' || (g % 977),
       now() - interval '8 days' - interval '22 days' * ((g * 0.6180339887) % 1),
       now() - interval '8 days' - interval '22 days' * ((g * 0.6180339887) % 1) + interval '15 minutes',
       convert_to(b, 'UTF8'), b::jsonb
FROM generate_series(1, $2) AS g,
     LATERAL (SELECT format('{"id":"old_dead_%s","object":"event","type":"invoice.payment_failed","data":{"object":{"id":"in_%s","object":"invoice","customer":"cus_gone_%s","amount_due":4900,"status":"open"}}}', g, g, g % 977) AS b) x;
INSERT INTO events (source, event_id, event_type, state, attempts, last_error, received_at,
                    dead_at, body, payload)
SELECT 'custom', 'recent_dead_' || g, 'order.created', 'dead', 4, 'downstream answered 500',
       now() - interval '3 days', now() - interval '3 days', convert_to('{}', 'UTF8'), '{}'
FROM generate_series(1, 10000) AS g;
-- Each dead event carries the four attempts that killed it, in its day's partition.
INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome, error, dead_at)
SELECT e.id, a, e.dead_at - interval '1 minute' * (4 - a), 12,
       CASE WHEN a = 4 THEN 'dead' ELSE 'failed' END, e.last_error, e.dead_at
FROM events e, generate_series(1, 4) AS a
WHERE e.state = 'dead';
-- The keys the disabled trigger would have added, so ingest meanwhile checks against them.
INSERT INTO event_keys (source, event_id, id) SELECT source, event_id, id FROM events;
SQL
}

if stage purge; then
    heading "5. purge of $purge_n dead events older than 7 days, with ingest at $purge_rate req/s"
    secs_l=() p99_l=() max_l=() non_l=()
    # Seeded once into a template; each run purges a file-level copy of it.
    fresh_db bench_purge_tpl
    t0=$(now)
    seed_dead bench_purge_tpl "$purge_n"
    q bench_purge_tpl "VACUUM ANALYZE" >/dev/null
    say "  seeded in $(fmt "$(calc "$(now) - $t0")") s: $(q bench_purge_tpl "SELECT count(*) FROM events WHERE state = 'dead'") dead, \
$(q bench_purge_tpl "SELECT count(*) FROM event_attempts") attempts, \
$(q bench_purge_tpl "SELECT pg_size_pretty(pg_database_size(current_database()))")"
    strategy=
    (($(q postgres "SHOW server_version_num") >= 150000)) && strategy="STRATEGY = FILE_COPY"
    for ((r = 1; r <= runs; r++)); do
        q postgres "DROP DATABASE IF EXISTS bench_purge WITH (FORCE)" >/dev/null
        q postgres "CREATE DATABASE bench_purge TEMPLATE bench_purge_tpl $strategy" >/dev/null
        checkpoint
        start_hookd bench_purge "$out/hookd-purge-$r.log"
        env DATABASE_URL="$(url_of bench_purge)" "$LOADGEN" run --url "http://127.0.0.1:$hookd_port" \
            --json -c 8 -d 600s --rate "$purge_rate" --mix "$mix" >"$out/purge-load-$r.json" \
            2>"$out/purge-load-$r.err" &
        loadgen_pid=$!
        sleep 2
        t0=$(now)
        DATABASE_URL=$(url_of bench_purge) "$HOOKD" dlq purge --older-than 7d --json >"$out/purge-$r.json"
        t1=$(now)
        sleep 1
        kill -INT "$loadgen_pid" 2>/dev/null || true
        wait "$loadgen_pid" || say "  WARNING: loadgen reported a problem (see $out/purge-load-$r.err)"
        loadgen_pid=
        stop_hookd
        secs=$(calc "$t1 - $t0")
        purged=$(jnum "$out/purge-$r.json" purged)
        left_old=$(q bench_purge "SELECT count(*) FROM events WHERE state = 'dead' AND dead_at < now() - interval '7 days'")
        left_new=$(q bench_purge "SELECT count(*) FROM events WHERE state = 'dead' AND dead_at >= now() - interval '7 days'")
        j=$out/purge-load-$r.json
        say "  run $r: purged $purged in $(fmt "$secs" 2) s (old dead left $left_old, recent dead kept $left_new)"
        say "         ingest meanwhile: $(describe_loadgen "$j")"
        secs_l+=("$secs") p99_l+=("$(jnum "$j" p99_ms)") max_l+=("$(jnum "$j" max_ms)")
        non_l+=("$(($(jnum "$j" non_2xx) + $(jnum "$j" errors)))")
        q postgres "DROP DATABASE bench_purge WITH (FORCE)" >/dev/null
    done
    q postgres "DROP DATABASE bench_purge_tpl WITH (FORCE)" >/dev/null
    purge_s=$(median "${secs_l[@]}") purge_p99=$(median "${p99_l[@]}") purge_max=$(median "${max_l[@]}")
    purge_non2xx=$(total "${non_l[@]}")
fi

# ---------------------------------------------------------------- summary ----

verdict() { # verdict VALUE OP LIMIT -> met / NOT met / -
    [[ $1 == - || -z $1 ]] && {
        echo "-"
        return
    }
    if awk -v v="$1" -v l="$3" "BEGIN { exit !(v $2 l) }"; then echo "met"; else echo "NOT met"; fi
}
ratio() {
    if [[ $1 == - || $2 == - || -z $1 || -z $2 ]]; then echo -; else calc "$1 / $2"; fi
}

# Ratios pair by pair (each hookd run against the baseline run just before it), else of medians.
ing_ratio=$(ratio "$ing_rate" "$pgb_tps")
drain_ratio=$(ratio "$drain_rate" "$pgb_tps")
if ((${#ing_ratio_l[@]} > 0)); then ing_ratio=$(median "${ing_ratio_l[@]}"); fi
if ((${#drain_ratio_l[@]} > 0)); then drain_ratio=$(median "${drain_ratio_l[@]}"); fi
recv_ratio=$(ratio "$recv_rate" "$pgb_tps")
if ((${#recv_ratio_l[@]} > 0)); then recv_ratio=$(median "${recv_ratio_l[@]}"); fi
first=${history_sizes[0]:-} last=${history_sizes[${#history_sizes[@]} - 1]:-}
r_first=${refresh_ms[$first]:--} r_last=${refresh_ms[$last]:--}
flat=$(ratio "$r_last" "$r_first")
hookd_mib=$(mib "${hookd_hwm/-/}") drain_mib=$(mib "${drain_hwm/-/}") hooktop_mib=$(mib "${hooktop_hwm/-/}")

{
    printf '\n%s==> results (median of %s run(s); concurrency %s)%s\n\n' "$bold" "$runs" "$conc" "$reset"
    printf '| figure | measured | target | verdict |\n|---|---|---|---|\n'
    printf '| pgbench single-row INSERT (baseline = 1; median of %s runs) | %s tps (p50 %s ms, p99 %s ms) | — | — |\n' \
        "${#pgb_all[@]}" "$(fmt "$pgb_tps")" "$pgb_p50" "$pgb_p99"
    printf "| pgbench INSERT into hookd's events table (its triggers; 1 run, for information) | %s tps | — | — |\n" \
        "$(fmt "$pgb_events_tps")"
    printf '| hookd ingest, closed loop (ratio: median of paired runs) | %s acks/s = **%s x** baseline (p50 %s ms, p99 %s ms, max %s ms) | >= 1.2 x | %s |\n' \
        "$(fmt "$ing_rate")" "$(fmt "$ing_ratio" 2)" "$(fmt "$ing_p50" 2)" "$(fmt "$ing_p99" 2)" \
        "$(fmt "$ing_max" 1)" "$(verdict "$ing_ratio" '>=' 1.2)"
    printf '| hookd ingest at half that rate, open loop | p99 **%s ms** (p50 %s ms, max %s ms) at %s acks/s | p99 <= 20 ms | %s |\n' \
        "$(fmt "$half_p99" 2)" "$(fmt "$half_p50" 2)" "$(fmt "$half_max" 1)" "$(fmt "$half_rate")" \
        "$(verdict "$half_p99" '<=' 20)"
    printf '| receive-only hookd (HOOKD_WORKERS=0), closed loop | %s acks/s = **%s x** baseline (p99 %s ms; missing %s) | >= 1.2 x | %s |\n' \
        "$(fmt "$recv_rate")" "$(fmt "$recv_ratio" 2)" "$(fmt "$recv_p99" 2)" "$recv_missing" \
        "$(verdict "$recv_ratio" '>=' 1.2)"
    printf '| non-2xx answers + errors at full load (all runs) | %s | 0 | %s |\n' \
        "$ing_non2xx" "$(verdict "$ing_non2xx" '==' 0)"
    printf '| acknowledged but not stored (all ingest runs) | %s | 0 | %s |\n' \
        "$( [[ $ing_missing == - ]] && echo - || echo $((ing_missing + ${half_missing/-/0})) )" \
        "$(verdict "$( [[ $ing_missing == - ]] && echo - || echo $((ing_missing + ${half_missing/-/0})) )" '==' 0)"
    printf '| failed processing attempts while ingest ran (deadlocks) | %s (%s) | 0 | %s |\n' \
        "$ing_failed" "$ing_deadlocks" "$(verdict "$ing_failed" '==' 0)"
    printf '| drain of %s backlog (ratio: median of paired runs) | %s events/s = **%s x** baseline (failed attempts: %s) | >= 0.6 x | %s |\n' \
        "$backlog" "$(fmt "$drain_rate")" "$(fmt "$drain_ratio" 2)" "$drain_failed" "$(verdict "$drain_ratio" '>=' 0.6)"
    for size in "${history_sizes[@]}"; do
        printf '| hooktop refresh at %s events | **%s ms** | <= 50 ms | %s |\n' \
            "$size" "$(fmt "${refresh_ms[$size]:--}" 2)" "$(verdict "${refresh_ms[$size]:--}" '<=' 50)"
    done
    printf '| refresh cost growth %s -> %s events | %s x | flat (~1 x) | %s |\n' \
        "$first" "$last" "$(fmt "$flat" 2)" "$(verdict "$flat" '<=' 1.5)"
    printf '| purge of %s dead events > 7 days | **%s s** | <= 2 s | %s |\n' \
        "$purge_n" "$(fmt "$purge_s" 2)" "$(verdict "$purge_s" '<=' 2)"
    printf '| ingest at %s req/s during the purge | p99 %s ms, max %s ms, non-2xx+errors %s | keeps answering | %s |\n' \
        "$purge_rate" "$(fmt "$purge_p99" 2)" "$(fmt "$purge_max" 1)" "$purge_non2xx" "$(verdict "$purge_non2xx" '==' 0)"
    printf '| hookd peak RSS under full load | **%s MiB** (drain: %s MiB) | <= 64 MiB | %s |\n' \
        "$hookd_mib" "$drain_mib" "$(verdict "$hookd_mib" '<=' 64)"
    printf '| hooktop peak RSS (dashboard, %s events) | **%s MiB** | <= 32 MiB | %s |\n' \
        "$first" "$hooktop_mib" "$(verdict "$hooktop_mib" '<=' 32)"
    printf '\nlogs and raw results: %s\n' "$out"
} | tee "$out/summary.md"

exit 0
}
