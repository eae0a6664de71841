#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then format, lint and every test tier.
# Root-only tests (real cgroups, eBPF, network namespaces) run when this runs as root and print a
# SKIPPED line otherwise; under CI (CI=true) or with KEPLER_REQUIRE_ROOT=1 a test that cannot
# run fails instead. KEPLER_REQUIRE_TOOLS=1 (set here) does the same for a missing external
# tool (promtool, Prometheus, the Python packages) and makes the build demand clang.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export KEPLER_REQUIRE_TOOLS=1
export PATH="$PWD/.venv/bin:$PATH"

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
shellcheck scripts/*.sh .ci/run deploy/kind/*.sh
# Supply chain (deny.toml, docs/supply-chain.md): licenses, bans and sources on every run; the
# RustSec advisories too when their database, a GitHub repository, can be fetched. Where it
# cannot, that is said on the last line of this step instead of checking against no database.
if GIT_TERMINAL_PROMPT=0 timeout 30 git ls-remote --exit-code \
  https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  cargo deny --locked check
else
  cargo deny --locked check bans licenses sources
  echo "test: RustSec advisories NOT checked: github.com/rustsec/advisory-db is not reachable" >&2
fi
cargo test --workspace --all-targets
# Coverage-guided fuzzing of the hub decoders, 20 s per target (scripts/fuzz.sh).
bash scripts/fuzz.sh
