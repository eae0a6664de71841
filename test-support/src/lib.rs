//! Test support shared by every test crate of the workspace (a dev-dependency only).
//!
//! - [`require`]: whether a test that needs root or an external tool can run; under CI a test
//!   that cannot run fails instead of passing, elsewhere it prints a visible skip line.
//! - [`net`]: loopback ports for servers that a test starts.
//! - [`cgroup`]: kubepods-shaped container cgroups on the real cgroup v2 tree, freezing, CPU time.
//! - [`process`]: child processes that die with the test.
//! - [`golden`]: golden-file comparison with `UPDATE_GOLDEN=1`.
//! - [`promql`]: queries to a real Prometheus and the samples of its answers.
//! - [`peers`]: the OpenTelemetry Collector, Prometheus 3 and VictoriaMetrics built from Go; a
//!   Prometheus started with given scrape jobs.
//! - [`promtool`]: `promtool check metrics` on rendered text.
//! - [`text`]: Prometheus text pages parsed back into samples and families.
//! - [`version`]: what `--version` must print.
//! - [`python`]: the workspace's Python venv with the OpenTelemetry packages.
//! - [`pki`]: a throwaway CA issuing server and client certificates for TLS tests.
//! - [`https`]: a rustls client trusting such a CA, `GET` over TLS with basic auth, plain `GET`.
//! - [`kepler_push`]: an OTLP push shaped like kepler-rs's, the hub benchmarks' load.
//!
//! Helpers panic with a message that names what failed: they run inside tests only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cgroup;
pub mod golden;
pub mod https;
pub mod kepler_push;
pub mod net;
pub mod peers;
pub mod pki;
pub mod process;
pub mod promql;
pub mod promtool;
pub mod python;
pub mod require;
pub mod text;
pub mod version;

use std::path::PathBuf;

/// The workspace root (the folder with the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ sits in the workspace root")
        .to_path_buf()
}
