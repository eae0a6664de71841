//! kepler-collector, the multi-cluster hub: OTLP gRPC/HTTP receivers for the hub and its spokes,
//! per-cluster identity, a bounded series store with expiry, and Prometheus exposition with the
//! OpenTelemetry Collector's translation rules (docs/otlp-to-prometheus.md).
//!
//! Data flows one way: [`receiver`] (transport) -> [`decode`] -> [`ingest`] (labels, types)
//! -> [`store`] -> [`exposition`] / [`server`]. [`app`] wires it; [`config`] is the one typed
//! configuration tree.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod exposition;
pub mod ingest;
pub mod intern;
pub mod labels;
pub mod receiver;
pub mod remote_write;
pub mod selfmetrics;
pub mod server;
pub mod store;
pub mod tls;
pub mod translate;
pub mod wire;

/// What `--version` prints after the program name: the release, the git revision it was built
/// from and the compiler (`unknown` where the build had no git).
pub const VERSION: &str = env!("KEPLER_BUILD_VERSION_LINE");
