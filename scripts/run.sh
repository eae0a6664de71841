#!/usr/bin/env bash
# Builds and runs the exporter on :9102. Where this host has no RAPL powercap zones (a VM, a
# cloud instance, a kind node), it runs on fake RAPL, whose energy follows the real CPU load.
# Extra arguments are passed to kepler-rs (e.g. --web.listen-address 127.0.0.1:9102).
# KEPLER_RUN_PROFILE picks the cargo profile (default release; dev builds faster).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${KEPLER_RUN_PROFILE:-release}"
cargo build --profile "$profile" --bin kepler-rs
profile_dir="$profile"
if [ "$profile" = dev ]; then profile_dir=debug; fi
binary="${CARGO_TARGET_DIR:-target}/$profile_dir/kepler-rs"

if command -v "${KEPLER_BPF_CLANG:-clang}" >/dev/null; then
  echo "run: eBPF program compiled from ebpf/src/cpu.bpf.c" >&2
else
  echo "run: no clang here: eBPF program taken from the objects committed in ebpf/prebuilt/" >&2
fi

args=()
if ! compgen -G "/sys/class/powercap/intel-rapl:*" >/dev/null; then
  echo "run: no RAPL zones under /sys/class/powercap: using --fake-rapl" >&2
  args+=(--fake-rapl)
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if [ ${#args[@]} -eq 0 ]; then
    echo "run: energy_uj and eBPF need root; running with sudo" >&2
    SUDO="sudo"
  else
    echo "run: not root: CPU time from procfs (eBPF needs root, or CAP_BPF and CAP_PERFMON)" >&2
  fi
fi
exec $SUDO "$binary" "${args[@]}" "$@"
