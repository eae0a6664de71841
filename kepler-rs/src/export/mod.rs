//! Views over snapshots: Prometheus exposition, OTLP push, and the relay of local Prometheus
//! endpoints over OTLP. [`family`] is the one description of the metrics both views export.

pub mod family;
pub mod otlp;
pub mod prometheus;
pub mod relay;
