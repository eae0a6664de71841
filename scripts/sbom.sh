#!/usr/bin/env bash
# CycloneDX 1.5 SBOMs (JSON) of the two shipped binaries, from the workspace's Cargo.lock for the
# host target: OUT/kepler-rs.cdx.json and OUT/kepler-collector.cdx.json (OUT defaults to
# target/sbom). Each lists every crate linked into that binary (normal and build dependencies,
# not dev ones) with version, license, purl and, for crates.io crates, the SHA-256 of the crate
# file; path crates (the workspace, vendor/aya) appear with a file:// download URL. Installs
# cargo-cyclonedx at a pinned version when it is missing. scripts/package-deb.sh calls it;
# docs/supply-chain.md.
#
#   scripts/sbom.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-target/sbom}"
CARGO_CYCLONEDX_VERSION=0.5.9
if ! cargo cyclonedx --version >/dev/null 2>&1; then
  echo "sbom: installing cargo-cyclonedx $CARGO_CYCLONEDX_VERSION" >&2
  cargo install --quiet --locked cargo-cyclonedx --version "$CARGO_CYCLONEDX_VERSION"
fi

# cargo-cyclonedx has no output directory: it writes <bin>_bin.cdx.json beside the Cargo.toml of
# every workspace member. One run at a time (flock), and the files leave the source tree at once.
mkdir -p target "$out"
exec 9>target/sbom.lock
flock 9
mapfile -t members < <(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    print(os.path.dirname(p["manifest_path"]))')
cleanup() {
  for dir in "${members[@]}"; do
    rm -f "$dir"/*_bin.cdx.json
  done
}
trap cleanup EXIT
cleanup
cargo cyclonedx --quiet --format json --describe binaries --spec-version 1.5
# cargo-cyclonedx 0.5 also lists crates that only tests use (dev-dependencies, and what their
# features pull in through Cargo's workspace-wide metadata): keep the crates `cargo tree` shows
# in the package's normal and build graph for the host target, which is what the binary links.
host="$(rustc -vV | sed -n 's/^host: //p')"
for pair in kepler-rs:kepler-rs collector:kepler-collector; do
  dir="${pair%%:*}" bin="${pair#*:}"
  cargo tree --quiet -p "$bin" -e normal,build --target "$host" --prefix none -f '{p}' \
    >"target/sbom-$bin.tree"
  python3 - "$dir/${bin}_bin.cdx.json" "$out/$bin.cdx.json" "target/sbom-$bin.tree" <<'PY'
import json, sys

source, dest, tree = sys.argv[1:]
# Lines such as `tokio v1.54.1`, `kepler-prom-text v0.1.0 (/work/main/prom-text)`.
keep = set()
for line in open(tree):
    name, version = line.split()[:2]
    keep.add((name, version.lstrip("v")))
bom = json.load(open(source))
root = bom["metadata"]["component"]
keep.discard((root["name"], root["version"]))
components = [c for c in bom["components"] if (c["name"], c["version"]) in keep]
missing = keep - {(c["name"], c["version"]) for c in components}
if missing:
    sys.exit(f"sbom: {root['name']}: cargo-cyclonedx left out {sorted(missing)}")
refs = {c["bom-ref"] for c in components} | {root["bom-ref"]}
bom["components"] = components
bom["dependencies"] = [
    {**d, "dependsOn": [r for r in d.get("dependsOn", []) if r in refs]}
    for d in bom.get("dependencies", [])
    if d["ref"] in refs
]
json.dump(bom, open(dest, "w"), indent=2)
print(f"sbom: {dest}: {len(components)} crates", file=sys.stderr)
PY
done
