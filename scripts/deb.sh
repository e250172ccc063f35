#!/usr/bin/env bash
# scripts/deb.sh — the Debian package, target/debian/hookd_<version>_<arch>.deb, with cargo-deb
# (`cargo install --locked cargo-deb`). What goes in it: daemon/Cargo.toml, [package.metadata.deb].
#
# cargo-deb only packages files that exist, so this builds the binaries and has them write their
# man pages and shell completions, from their own clap definitions, into
# target/<profile>/deb-assets/ before it runs `cargo deb --no-build`. The packaged unit is
# systemd/hookd.service as it is.
#
# Usage:
#   ./scripts/deb.sh                               # release build, then the package
#   ./scripts/deb.sh --profile dev --no-build ...  # package binaries already built (the test)
# Every other argument goes to `cargo deb` (e.g. --fast, -o DIR).
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo"

profile=release build=1 deb_args=()
while (($#)); do
    case $1 in
    --profile) profile=$2 && shift ;;
    --profile=*) profile=${1#*=} ;;
    --no-build) build= ;;
    *) deb_args+=("$1") ;;
    esac
    shift
done

command -v cargo-deb >/dev/null || {
    echo "cargo deb is not installed; run: cargo install --locked cargo-deb" >&2
    exit 1
}
[[ -z $build ]] || cargo build --locked --profile "$profile" -p hookd -p hooktop

# Wherever CARGO_TARGET_DIR or a cargo config puts it; the dev profile's directory is "debug".
target=$(cargo metadata --format-version 1 --no-deps --locked |
    grep -o '"target_directory":"[^"]*"' | cut -d '"' -f 4)
bin=$target/$([[ $profile == dev ]] && echo debug || echo "$profile")
assets=$bin/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
for b in hookd hooktop; do
    "$bin/$b" man "$assets/man"
    "$bin/$b" completions bash >"$assets/completions/$b.bash"
    "$bin/$b" completions zsh >"$assets/completions/_$b"
    "$bin/$b" completions fish >"$assets/completions/$b.fish"
done
# Debian's man pages are gzipped, and cargo-deb leaves files from target/ as they are.
gzip -9n "$assets"/man/*.1

cargo deb -p hookd --locked --no-build --profile "$profile" "${deb_args[@]}"
