#!/usr/bin/env bash
# Run lantian's whole test suite on a fresh Debian machine.
#
# Installs what the tests need when it is missing (Debian packages: see
# below; cargo-deb; rustfmt/clippy components), then
# runs formatting and lint checks, the unit tests and the integration tests
# (which start their own Mosquitto, InfluxDB and VictoriaMetrics processes
# on free loopback ports in temp dirs — nothing needs to be running).
#
#   scripts/test.sh            everything
#   scripts/test.sh --quick    skip fmt/clippy
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
# Cluster mode runs against a three-node NATS JetStream cluster.
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
# The status page is rendered in headless Chromium (with a CJK font for
# the category names); webhook signatures are checked with Python's hmac;
# the unit file with systemd-analyze.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || need+=(fonts-wqy-zenhei)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# A daemon whose system clock steps: libfaketime (LD_PRELOAD).
compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null || need+=(libfaketime)
# HJ 212-2025's SM4 decryption is checked against OpenSSL's SM4.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The manual pages are rendered with groff.
command -v groff >/dev/null 2>&1 || need+=(groff-base)
# The Debian package is built (cargo-deb, dpkg-shlibdeps) and installed on
# a clean Debian root made by mmdebstrap.
command -v dpkg-shlibdeps >/dev/null 2>&1 || need+=(dpkg-dev)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
# The e2e bench's peer, Node-RED, is installed from npm (its smoke run
# included).
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # The packages may start their own services on the default ports; the
  # tests do not use them (they start their own instances on free ports).
  $sudo apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "${need[@]}" >/dev/null
fi

if [ "${1:-}" != "--quick" ]; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
  echo "==> cargo fmt --check"
  cargo fmt --all -- --check
  echo "==> cargo clippy"
  cargo clippy --all-targets --locked -- -D warnings
fi

if ! cargo deb --version >/dev/null 2>&1; then
  echo "==> cargo install cargo-deb"
  cargo install --locked --quiet cargo-deb@3.7.0
fi

echo "==> benchmarks, once each as smoke tests"
cargo test --locked --benches
echo "==> cargo test (unit and integration)"
cargo test --locked --lib --bins --tests
