//! The peer programs built from their published Go modules (`tests/peers/<name>/`, built by
//! `scripts/peers.sh`): the OpenTelemetry Collector, Prometheus 3, VictoriaMetrics.

use crate::require::tool_missing;
use crate::workspace_root;
use std::path::PathBuf;

/// Where `scripts/peers.sh` puts the peers: `$KEPLER_PEERS_DIR` (relative paths from the
/// workspace root), else `target/peers`.
pub fn peers_dir() -> PathBuf {
    match std::env::var_os("KEPLER_PEERS_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target/peers"),
    }
}

/// The peer program `name` (`otelcol`, `prometheus`, `victoria-metrics`, `telemetrygen`), or `None` with a
/// skip line; a failure under CI or with `KEPLER_REQUIRE_TOOLS=1`, like a missing tool.
pub fn require_peer(name: &str) -> Option<PathBuf> {
    let bin = peers_dir().join(name);
    if bin.is_file() {
        return Some(bin);
    }
    tool_missing(&format!(
        "the peer program {name} is not built at {} (scripts/peers.sh builds it from \
         tests/peers/{name}; scripts/setup.sh runs that)",
        bin.display()
    ));
    None
}
