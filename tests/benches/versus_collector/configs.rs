//! The configurations of the programs compared, on loopback ports chosen for the run.
//!
//! The hubs are the reference deployment's hub: the Collector's is
//! `tests/tests/common/pipeline.rs`'s `otelcol_hub_config` with 127.0.0.1 and free ports in
//! place of 0.0.0.0:4317/4318/4327/4328/9464 (that module lives with the namespace tests, so it
//! is written out here: keep the two alike); kepler-collector's has the same four listeners
//! (collector/README.md) and neither side has tokens on the spoke listeners. The spoke
//! Collector is `tests/tests/real_spoke_collector.rs`'s reference spoke with the kepler job
//! alone and no token.

/// The ports of one hub.
#[derive(Debug, Clone, Copy)]
pub struct HubPorts {
    pub hub_grpc: u16,
    pub hub_http: u16,
    pub spokes_grpc: u16,
    pub spokes_http: u16,
    pub exposition: u16,
}

impl HubPorts {
    pub fn pick() -> HubPorts {
        let free = kepler_test_support::net::free_port;
        HubPorts {
            hub_grpc: free(),
            hub_http: free(),
            spokes_grpc: free(),
            spokes_http: free(),
            exposition: free(),
        }
    }
}

/// kepler-collector as the reference hub: `cluster="hub"` inserted on 4317/4318-style
/// listeners, kept on the spokes', exposition on 9464-style.
pub fn kepler_hub(p: &HubPorts) -> String {
    format!(
        "listeners:
  - name: hub-grpc
    protocol: grpc
    address: 127.0.0.1:{hub_grpc}
    insert_cluster: hub
  - name: hub-http
    protocol: http
    address: 127.0.0.1:{hub_http}
    insert_cluster: hub
  - name: spokes-grpc
    protocol: grpc
    address: 127.0.0.1:{spokes_grpc}
  - name: spokes-http
    protocol: http
    address: 127.0.0.1:{spokes_http}
exposition:
  address: 127.0.0.1:{exposition}
",
        hub_grpc = p.hub_grpc,
        hub_http = p.hub_http,
        spokes_grpc = p.spokes_grpc,
        spokes_http = p.spokes_http,
        exposition = p.exposition,
    )
}

/// The prometheus exporter's `write_timeout` in [`otelcol_hub`]. The reference config leaves
/// confighttp's default, 30 s, which cuts off a `/metrics` answer that takes longer (on the
/// 2-core VM the page at 1,000,000 series does: the connection closes with no answer); the
/// bench raises it so that the page can be timed and its series counted, and says when the
/// answer took longer than the default allows.
pub const OTELCOL_WRITE_TIMEOUT: &str = "10m";

/// The real Collector as the reference hub (`otelcol_hub_config`), with
/// [`OTELCOL_WRITE_TIMEOUT`].
pub fn otelcol_hub(p: &HubPorts) -> String {
    kepler_test_support::peers::otelcol_hub_config(&kepler_test_support::peers::OtelcolHub {
        host: "127.0.0.1",
        hub_grpc: p.hub_grpc,
        hub_http: Some(p.hub_http),
        spokes_grpc: p.spokes_grpc,
        spokes_http: Some(p.spokes_http),
        exposition: p.exposition,
        exporter_settings: &[("write_timeout", OTELCOL_WRITE_TIMEOUT)],
    })
}

/// The reference spoke Collector: scrapes kepler-rs on `target` every second, inserts
/// `cluster`, pushes OTLP/gRPC (the exporter's default gzip) to the sink's spoke listener.
pub fn otelcol_spoke(target: u16, otlp_grpc: u16, otlp_http: u16, sink_grpc: u16) -> String {
    format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: kepler
          scrape_interval: 1s
          static_configs: [{{targets: [\"127.0.0.1:{target}\"]}}]
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{otlp_grpc}}}
      http: {{endpoint: 127.0.0.1:{otlp_http}}}
processors:
  attributes:
    actions:
      - {{key: cluster, value: cluster1, action: insert}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink_grpc}
    tls: {{insecure: true}}
service:
  telemetry:
    logs: {{level: warn}}
    metrics: {{level: none}}
  pipelines:
    metrics:
      receivers: [prometheus, otlp]
      processors: [attributes]
      exporters: [otlp]
"
    )
}

/// The spokes' sink: a kepler-collector with one spoke listener (OTLP/gRPC) and its exposition.
pub fn sink(grpc: u16, exposition: u16) -> String {
    format!(
        "listeners:
  - name: spokes-grpc
    protocol: grpc
    address: 127.0.0.1:{grpc}
exposition:
  address: 127.0.0.1:{exposition}
"
    )
}
