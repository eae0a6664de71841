#!/usr/bin/env bash
# Builds the Debian package of kepler-rs (both binaries, the systemd units, default
# configuration as conffiles, man pages, shell completions) into target/debian/ with cargo-deb,
# installing cargo-deb first when it is missing, and beside it the CycloneDX SBOM of each binary
# (target/debian/kepler-rs.cdx.json, kepler-collector.cdx.json; scripts/sbom.sh). Prints the
# package's path on the last line.
#
#   scripts/package-deb.sh                  release build
#   scripts/package-deb.sh --profile dev    package the debug build (what the tests do: quick;
#                                           cargo-deb warns that dev is not for releases)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
while (($#)); do
  case "$1" in
    --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
    *) echo "usage: $0 [--profile release|dev]" >&2; exit 2 ;;
  esac
done
case "$profile" in
  dev) profile_dir=debug ;;
  *) profile_dir="$profile" ;;
esac

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package-deb: installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi

target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build --quiet --profile "$profile" -p kepler-rs -p kepler-collector -p kepler-packaging

# Staged beside the binaries of the profile: the package metadata (kepler-rs/Cargo.toml) names
# target/release/..., which cargo-deb reads from the profile's directory.
stage="$target_dir/$profile_dir/package"
rm -rf "$stage"
mkdir -p "$stage/systemd" "$stage/default"
"$target_dir/$profile_dir/kepler-package-docs" "$stage"
gzip -9n "$stage"/man/*.1
# The units as deploy/systemd has them, with the package's binary paths.
for unit in kepler-rs.service kepler-collector.service; do
  sed 's|/usr/local/bin/|/usr/bin/|g' "deploy/systemd/$unit" >"$stage/systemd/$unit"
done
# The example environment file, reading /etc/kepler-rs/config.yaml.
sed 's|^#KEPLER_CONFIG_ARGS=|KEPLER_CONFIG_ARGS=|' deploy/systemd/kepler-rs.env >"$stage/default/kepler-rs"

mkdir -p "$target_dir/debian"
# What the two binaries link, from the same Cargo.lock (its messages before the last line).
bash scripts/sbom.sh "$target_dir/debian" 2>&1
cargo deb -p kepler-rs --no-build --profile "$profile" --output "$target_dir/debian/" 2>&1 | tail -n 1
