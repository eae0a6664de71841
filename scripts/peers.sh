#!/usr/bin/env bash
# Builds the peer programs the interop tests run against (tests/peers/<name>/, each a Go module
# with its go.mod and go.sum committed) into target/peers/<name>, or $KEPLER_PEERS_DIR/<name>.
# A module builds its own main package when it has *.go files, else the one program its go.mod
# names with a `tool` line (a published command built at the pinned version). Build tags, if
# any, are the words of the module's build.tags file. A binary newer than its module's files is
# kept as it is. Needs Go (the version in each go.mod or newer; no toolchain is downloaded) and
# the Go module proxy; module downloads and the build cache are Go's own (GOMODCACHE, GOCACHE),
# so a fresh clone on a machine that built them before only links. Prints where each binary is.
#
#   scripts/peers.sh            build what is missing or stale
#   scripts/peers.sh --force    rebuild everything
set -euo pipefail
cd "$(dirname "$0")/.."

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

if ! command -v go >/dev/null 2>&1; then
  echo "peers: go is not installed; the interop tests need it to build tests/peers/*" >&2
  exit 1
fi

out_dir="${KEPLER_PEERS_DIR:-target/peers}"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"

# The module's version pins are the whole truth: go.sum is committed and never rewritten here,
# and the local Go builds it (GOTOOLCHAIN=local).
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"

# Whether $1 is newer than every file that goes into it.
up_to_date() {
  local bin="$1" module="$2" src
  [ -x "$bin" ] || return 1
  for src in "$module"/*; do
    [ "$bin" -nt "$src" ] || return 1
  done
}

for module in tests/peers/*/; do
  module="${module%/}"
  [ -f "$module/go.mod" ] || continue
  name="$(basename "$module")"
  bin="$out_dir/$name"
  if [ "$force" -eq 0 ] && up_to_date "$bin" "$module"; then
    echo "peers: $name: $bin (up to date)"
    continue
  fi
  echo "peers: building $name from $module (a cold build downloads and compiles the modules: minutes)"
  start=$SECONDS
  # Built beside the target and renamed into place, so a test never runs a half-written binary.
  tmp="$bin.tmp.$$"
  package=.
  if ! compgen -G "$module/*.go" >/dev/null; then
    package="$(awk '$1 == "tool" { print $2; exit }' "$module/go.mod")"
    if [ -z "$package" ]; then
      echo "peers: $module has neither *.go files nor a tool line in go.mod" >&2
      exit 1
    fi
  fi
  tags=""
  if [ -f "$module/build.tags" ]; then
    tags="$(tr -s '[:space:]' ',' <"$module/build.tags" | sed 's/^,//; s/,$//')"
  fi
  if ! (cd "$module" && go build -trimpath -tags "$tags" -o "$tmp" "$package"); then
    rm -f "$tmp"
    echo "peers: building $name failed" >&2
    exit 1
  fi
  mv -f "$tmp" "$bin"
  echo "peers: $name: $bin (built in $((SECONDS - start)) s)"
done
