#!/usr/bin/env bash
# Compiles ebpf/src/cpu.bpf.c with clang and writes the objects (and the clang version) into
# ebpf/prebuilt/, the copies a build without clang embeds. Run it after changing the BPF source
# and commit the result; the test suite fails while the committed objects are stale.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v "${KEPLER_BPF_CLANG:-clang}" >/dev/null || {
  echo "update-bpf-objects: ${KEPLER_BPF_CLANG:-clang} not found (scripts/setup.sh installs clang)" >&2
  exit 1
}
KEPLER_REQUIRE_TOOLS=1 KEPLER_BPF_UPDATE_PREBUILT=1 cargo build --quiet -p kepler-ebpf
echo "update-bpf-objects: ebpf/prebuilt/ now holds the objects of $(cat ebpf/prebuilt/clang-version)"
git status --short ebpf/prebuilt
