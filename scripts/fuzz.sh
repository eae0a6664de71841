#!/usr/bin/env bash
# Coverage-guided fuzzing of the hub's request decoders (collector/fuzz, cargo-fuzz + libFuzzer):
# OTLP/protobuf and OTLP/JSON bodies through decode + ingest + render, and gzip bodies through
# the bounded decompressor. Installs cargo-fuzz if missing. Runs on the stable toolchain with
# `--sanitizer none` (coverage instrumentation needs no nightly; AddressSanitizer would, and the
# hub has no unsafe code for it to check). Each target starts from the example requests in
# collector/fuzz/seeds and runs KEPLER_FUZZ_SECS seconds (default 20; CI uses the default).
#   scripts/fuzz.sh                 # every target
#   KEPLER_FUZZ_SECS=600 scripts/fuzz.sh otlp_json
# A crash leaves its input in collector/fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

secs="${KEPLER_FUZZ_SECS:-20}"
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(otlp_protobuf otlp_json gzip_body)
fi
# The fuzz crate is its own workspace with its own lock file and (instrumented) target directory.
export CARGO_TARGET_DIR="${KEPLER_FUZZ_TARGET_DIR:-$PWD/collector/fuzz/target}"
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
cargo fuzz build --fuzz-dir collector/fuzz --sanitizer none -O
for target in "${targets[@]}"; do
  mkdir -p "$corpus/$target"
  seeds=()
  if [ -d "collector/fuzz/seeds/$target" ]; then seeds=("collector/fuzz/seeds/$target"); fi
  echo "fuzz: $target for ${secs}s"
  status=0
  cargo fuzz run --fuzz-dir collector/fuzz --sanitizer none -O "$target" \
    "$corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 >"$corpus/$target.log" 2>&1 || status=$?
  grep -E '^(Done|SUMMARY)|panicked|ERROR' "$corpus/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$corpus/$target.log" >&2
    echo "fuzz: $target FAILED (input saved under collector/fuzz/artifacts/$target/)" >&2
    exit 1
  fi
done
echo "fuzz: ok"
