#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent): Debian packages
# (promtool/prometheus, clang and bpftool for the eBPF build, iproute2 and curl for the
# namespace end-to-end tests, iputils-ping for the eBPF softirq test, man-db for the package
# test, util-linux for setpriv in the least-privilege test, qemu-system-x86 for the guest of the
# VM root test), a Python venv in .venv with the packages in tests/requirements.txt, cargo-deny
# and cargo-cyclonedx at pinned
# versions (supply-chain checks and SBOMs, docs/supply-chain.md), and the peer programs (the
# OpenTelemetry Collector, Prometheus 3, VictoriaMetrics, telemetrygen) built from their pinned
# Go modules by scripts/peers.sh (needs Go and the Go module proxy; a warm Go build cache makes
# that a link of seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(prometheus clang bpftool iproute2 iputils-ping curl python3-venv shellcheck tmux
  systemd man-db util-linux qemu-system-x86)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if grep -qv '^\s*\(#\|$\)' tests/requirements.txt 2>/dev/null; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
# Cargo tools from crates.io, built from their own Cargo.lock (--locked) at a pinned version.
CARGO_DENY_VERSION=0.20.2
CARGO_CYCLONEDX_VERSION=0.5.9
cargo_tool() {
  local crate="$1" version="$2" installed
  installed="$(cargo "${crate#cargo-}" --version 2>/dev/null | awk '{print $NF}')" || true
  if [ "$installed" != "$version" ]; then
    echo "setup: installing $crate $version"
    cargo install --quiet --locked "$crate" --version "$version"
  fi
}
cargo_tool cargo-deny "$CARGO_DENY_VERSION"
cargo_tool cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION"

bash scripts/peers.sh
echo "setup: ok"
