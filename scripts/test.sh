#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then format, lint and every test tier.
# Root-only tests (real cgroups, eBPF) run when this runs as root and skip with a message
# otherwise. KEPLER_REQUIRE_TOOLS=1 turns a missing external tool (promtool) into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export KEPLER_REQUIRE_TOOLS=1
export PATH="$PWD/.venv/bin:$PATH"

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
shellcheck scripts/*.sh .ci/run deploy/kind/*.sh
cargo test --workspace --all-targets
# Coverage-guided fuzzing of the hub decoders, 20 s per target (scripts/fuzz.sh).
bash scripts/fuzz.sh
