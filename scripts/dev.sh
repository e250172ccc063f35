#!/usr/bin/env bash
# scripts/dev.sh — run hookd locally for development.
#
#   ./scripts/dev.sh [hookd serve args...]
#
# 1. Database: if DATABASE_URL is unset, sets up (first run) or reuses a persistent
#    PostgreSQL cluster in .hookd-dev/pg (git-ignored), listening only on
#    127.0.0.1:${HOOKD_DEV_PG_PORT:-54329} with trust auth — a DEVELOPMENT setup, never
#    for production — and database `hookd`. Installs Debian's postgresql if needed.
#    The cluster keeps running after hookd exits (see the printed stop command).
#    If DATABASE_URL is set, that database is used and no cluster is touched.
# 2. Builds hookd (debug, the quick build; HOOKD_DEV_PROFILE=release for an optimised one).
# 3. Generates development secrets ONCE into .hookd-dev/secrets.env
#    (`hookd dev-secrets`) and sources them. Delete the file to get new ones.
# 4. Runs `hookd migrate`, then `exec hookd serve`.
#
# Environment: DATABASE_URL, HOOKD_DEV_PG_PORT (default 54329), HOOKD_DEV_PROFILE
# (debug|release, default debug), HOOKD_PG_BIN (PostgreSQL server bin dir).
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo"
# shellcheck source=SCRIPTDIR/pg.sh
source "$repo/scripts/pg.sh"

bold='' reset=''
if [[ -t 1 ]]; then bold=$'\e[1m' reset=$'\e[0m'; fi
heading() { printf '\n%s==> %s%s\n' "$bold" "$1" "$reset"; }
die() {
    printf '\nERROR (scripts/dev.sh): %s\n' "$*" >&2
    exit 1
}

dev_dir=$repo/.hookd-dev
mkdir -p "$dev_dir"
# As root the cluster runs as the postgres user, which must be able to traverse this.
[[ $EUID -ne 0 ]] || chmod 755 "$dev_dir"

local_db=
if [[ -z ${DATABASE_URL:-} ]]; then
    local_db=1
    heading "PostgreSQL development cluster (.hookd-dev/pg)"
    pg_dev_cluster_up "$dev_dir/pg" "${HOOKD_DEV_PG_PORT:-54329}"
else
    heading "Using DATABASE_URL from the environment (no local cluster)"
fi

profile=${HOOKD_DEV_PROFILE:-debug}
case $profile in
release) build=(cargo build --release -p hookd) ;;
debug) build=(cargo build -p hookd) ;;
*) die "HOOKD_DEV_PROFILE must be release or debug, not '$profile'" ;;
esac
heading "Build: ${build[*]}"
if [[ -n $local_db ]]; then
    # Keep compile-time tooling away from the (possibly not yet migrated) dev database.
    env -u DATABASE_URL "${build[@]}"
else
    "${build[@]}"
fi
target_dir=$(cargo metadata --no-deps --format-version 1 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p') || true
[[ -n $target_dir ]] || target_dir=${CARGO_TARGET_DIR:-$repo/target}
hookd=$target_dir/$profile/hookd
[[ -x $hookd ]] || die "built binary not found at $hookd"
hookd_show=${hookd#"$repo"/}
[[ $hookd_show == /* ]] || hookd_show=./$hookd_show

secrets=$dev_dir/secrets.env
if [[ ! -s $secrets ]]; then
    heading "Generating development secrets (once) into .hookd-dev/secrets.env"
    tmp=$(mktemp "$dev_dir/secrets.env.XXXXXX") # mode 600
    trap 'rm -f -- "$tmp"' EXIT
    "$hookd" dev-secrets >"$tmp" || die "'$hookd_show dev-secrets' failed"
    if ! grep -qE '^export [A-Za-z_][A-Za-z0-9_]*=' "$tmp" ||
        grep -vE '^(export [A-Za-z_][A-Za-z0-9_]*=.*|[[:space:]]*(#.*)?)$' "$tmp" >/dev/null; then
        printf -- '--- output of hookd dev-secrets ---\n' >&2
        cat -- "$tmp" >&2
        die "'$hookd_show dev-secrets' did not print 'export NAME=value' lines"
    fi
    mv -- "$tmp" "$secrets"
    trap - EXIT
fi
# shellcheck source=/dev/null
source "$secrets"
for v in STRIPE_WEBHOOK_SECRET TELNYX_PUBLIC_KEY TELNYX_SIGNING_KEY CUSTOM_WEBHOOK_SECRET HOOKD_ADMIN_TOKEN; do
    [[ -n ${!v:-} ]] || echo "warning: $v is not set by .hookd-dev/secrets.env" >&2
done

heading "Development setup — NOT for production"
echo "Secrets (.hookd-dev/secrets.env, generated once; delete the file to regenerate):"
sed 's/^/    /' "$secrets"
echo
echo "DATABASE_URL=$DATABASE_URL"
if [[ -n $local_db ]]; then
    echo "    private cluster in .hookd-dev/pg: trust auth on 127.0.0.1 only (development only)."
    printf '    stop it with: %s%q stop -D %q -m fast\n' \
        "${PG_OS_USER:+runuser -u $PG_OS_USER -- }" "$PG_BIN/pg_ctl" "$PG_DATA"
fi
echo
echo "In another terminal:"
printf '    cd %q && source .hookd-dev/secrets.env && %q send stripe customer.subscription.created\n' \
    "$repo" "$hookd_show"

heading "$hookd_show migrate"
"$hookd" migrate
if [[ -n $local_db ]]; then
    # A business for the samples `hookd send` posts (its Stripe customer and phone number),
    # so the demo events are applied instead of waiting for a business to be linked.
    psql=$(command -v "$PG_BIN/psql" || command -v psql) || die "psql not found"
    "$psql" -q "$DATABASE_URL" -c "INSERT INTO businesses (name, stripe_customer_id, phone_number)
        VALUES ('Demo Plumbing', 'cus_hookd_demo', '+15550100000') ON CONFLICT DO NOTHING"
fi

heading "$hookd_show serve $*"
exec "$hookd" serve "$@"
