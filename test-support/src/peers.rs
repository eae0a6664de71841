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

/// Where the reference hub Collector listens: one host for every receiver, a port per
/// receiver and protocol (`None`: that protocol off), the prometheus exporter's port, and extra
/// settings of that exporter (`metric_expiration`, `write_timeout`...).
#[derive(Debug, Clone)]
pub struct OtelcolHub<'a> {
    pub host: &'a str,
    pub hub_grpc: u16,
    pub hub_http: Option<u16>,
    pub spokes_grpc: u16,
    pub spokes_http: Option<u16>,
    pub exposition: u16,
    pub exporter_settings: &'a [(&'a str, &'a str)],
}

/// The reference multi-cluster deployment's hub Collector: receiver `otlp/hub` whose pipeline
/// inserts `cluster=hub` with the `attributes` processor, receiver `otlp/spokes` whose pipeline
/// keeps the spokes' own `cluster`, both exported by `prometheus`.
pub fn otelcol_hub_config(h: &OtelcolHub<'_>) -> String {
    let protocols = |grpc: u16, http: Option<u16>| {
        let mut out = format!("      grpc: {{endpoint: \"{}:{grpc}\"}}\n", h.host);
        if let Some(http) = http {
            out.push_str(&format!(
                "      http: {{endpoint: \"{}:{http}\"}}\n",
                h.host
            ));
        }
        out
    };
    let mut exporter = format!("    endpoint: \"{}:{}\"\n", h.host, h.exposition);
    for (key, value) in h.exporter_settings {
        exporter.push_str(&format!("    {key}: {value}\n"));
    }
    format!(
        "receivers:
  otlp/hub:
    protocols:
{hub}  otlp/spokes:
    protocols:
{spokes}processors:
  attributes/hub:
    actions:
      - {{key: cluster, value: hub, action: insert}}
exporters:
  prometheus:
{exporter}service:
  telemetry:
    logs: {{level: warn}}
    metrics: {{level: none}}
  pipelines:
    metrics/hub:
      receivers: [otlp/hub]
      processors: [attributes/hub]
      exporters: [prometheus]
    metrics/spokes:
      receivers: [otlp/spokes]
      exporters: [prometheus]
",
        hub = protocols(h.hub_grpc, h.hub_http),
        spokes = protocols(h.spokes_grpc, h.spokes_http),
    )
}
