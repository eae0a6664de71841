//! kepler-rs: a Kepler-compatible node energy exporter.
//!
//! Layering (dependencies point one way only):
//! [`power`] (meters, zones, counters) and [`workload`] (processes, cgroups, containers)
//! -> [`attribution`] and [`monitor`] (interval loop, immutable [`snapshot::Snapshot`]s)
//! -> [`export`] and [`server`] (views that only read snapshots).
//! [`config`] is the one typed configuration tree; [`host`] reads host-wide facts.

pub mod app;
pub mod attribution;
pub mod config;
pub mod doctor;
pub mod export;
pub mod host;
pub mod monitor;
pub mod power;
pub mod selfmetrics;
pub mod server;
pub mod snapshot;
pub mod top;
pub mod workload;

/// What `--version` prints after the program name: the release, the git revision it was built
/// from and the compiler (`unknown` where the build had no git).
pub const VERSION: &str = env!("KEPLER_BUILD_VERSION_LINE");
