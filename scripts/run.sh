#!/usr/bin/env bash
# Builds and runs the exporter on :9102. Where this host has no RAPL powercap zones (a VM, a
# cloud instance, a kind node), it runs on fake RAPL, whose energy follows the real CPU load.
# Extra arguments are passed to kepler-rs (e.g. --web.listen-address 127.0.0.1:9102).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin kepler-rs
args=()
if ! compgen -G "/sys/class/powercap/intel-rapl:*" >/dev/null; then
  echo "run: no RAPL zones under /sys/class/powercap: using --fake-rapl" >&2
  args+=(--fake-rapl)
fi
SUDO=""
if [ "$(id -u)" -ne 0 ] && [ ${#args[@]} -eq 0 ]; then
  echo "run: energy_uj is readable by root only; running with sudo" >&2
  SUDO="sudo"
fi
exec $SUDO ./target/release/kepler-rs "${args[@]}" "$@"
