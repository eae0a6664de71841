//! Views over snapshots: Prometheus exposition (and, with its issue, OTLP push).

pub mod prometheus;
