#!/usr/bin/env bash
# Build lantian's Debian packages with cargo-deb (installed when missing):
#   target/debian/lantian_<version>-1_<arch>.deb          the daemon
#   target/debian/lantian-dbgsym_<version>-1_<arch>.ddeb  its debug info (dpkg -i)
#
#   scripts/package-deb.sh                      release build, then package
#   scripts/package-deb.sh --profile dev --no-build --fast
#                                               package the dev build as it
#                                               is, compressed less (the
#                                               install test does)
#
# The package: /usr/bin/lantian (stripped), /etc/lantian/lantian.toml (a
# conffile), the systemd unit (enabled, not started), man pages, bash/zsh/
# fish completions, and deploy/'s broker, InfluxDB and Grafana files under
# /usr/share/lantian. Install: sudo apt install ./target/debian/lantian_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=yes
fast=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=no; shift ;;
    --fast) fast=(--fast); shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
dir="$profile"
[ "$profile" = dev ] && dir=debug
target="${CARGO_TARGET_DIR:-target}"

if ! cargo deb --version >/dev/null 2>&1; then
  echo "==> cargo install cargo-deb"
  cargo install --locked cargo-deb@3.7.0
fi
if [ "$build" = yes ]; then
  cargo build --locked --profile "$profile" --bin lantian
fi
bin="$target/$dir/lantian"
[ -x "$bin" ] || { echo "package-deb.sh: no $bin (build it, or drop --no-build)" >&2; exit 1; }

# What is generated from the binary or adapted from deploy/.
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions" "$assets/systemd"
"$bin" man --out "$assets/man" >/dev/null
"$bin" completions bash >"$assets/completions/lantian"
"$bin" completions zsh >"$assets/completions/_lantian"
"$bin" completions fish >"$assets/completions/lantian.fish"
sed -e '/^# By hand/,/^#$/d' -e 's#/usr/local/bin/lantian#/usr/bin/lantian#g' \
  deploy/systemd/lantian.service >"$assets/systemd/lantian.service"

cargo deb --no-build --locked --profile "$profile" --dbgsym "${fast[@]}" --output target/debian/
