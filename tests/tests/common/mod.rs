//! The three-cluster harness: network namespaces `<prefix>-hub`, `<prefix>-c1`, `<prefix>-c2`
//! (prefix `kre2e-<pid>-<n>`, unique per run) whose veth links meet on a bridge in the hub
//! namespace (10.200.7.0/24: hub 10.200.7.1, cluster1 .11, cluster2 .12; these addresses exist
//! only inside the test's namespaces). Processes run in a namespace through `nsenter --net`
//! (only the network namespace changes: /proc, /sys and the cgroup tree stay the host's), and the
//! test talks to them with `curl` run the same way. Everything is torn down on drop (processes
//! killed, namespaces deleted), also when a test panics; namespaces left by a killed run (whose
//! pid is gone) are deleted at the next start.
//!
//! Binaries: `KEPLER_E2E_BIN_DIR` (a directory with `kepler-rs` and `kepler-collector`), else
//! the directory above this test executable (`target/<profile>/`, where `cargo test
//! --workspace` puts them). Not being root, lacking `ip netns`, the binaries or Prometheus
//! skips, or fails under CI (kepler_test_support::require).
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod cadvisor;
pub mod grpc;
mod netns;
mod pipeline;
mod prometheus;
mod text;
mod workload;

pub use netns::*;
pub use pipeline::*;
pub use prometheus::*;
pub use text::*;
pub use workload::*;

pub use kepler_test_support::cgroup::{v2_root, TestContainer, CGROUP_ROOT};
pub use kepler_test_support::process::ChildGuard;
use kepler_test_support::promql;
pub use kepler_test_support::require::{
    require_binary, require_root, require_tool, tool_missing, which,
};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const SUBNET_PREFIX: &str = "10.200.7";
pub const HUB_IP: &str = "10.200.7.1";
pub const SPOKES: [&str; 2] = ["cluster1", "cluster2"];
pub const CLUSTERS: [&str; 3] = ["hub", "cluster1", "cluster2"];

/// One test at a time in this binary: each starts several processes on shared CPUs.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// Preconditions

/// Root, `ip netns`, `nsenter` and `curl`; a skip line (a failure under CI) when not.
pub fn require_netns(what: &str) -> bool {
    if !require_root(&format!("{what} (network namespaces)")) {
        return false;
    }
    for tool in ["ip", "nsenter", "curl"] {
        if require_tool(tool).is_none() {
            return false;
        }
    }
    let ok = Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        tool_missing(&format!("{what}: `ip netns` is unavailable"));
    }
    ok
}

/// The workspace binaries: (kepler-rs, kepler-collector), or `None` with a skip line.
pub fn binaries() -> Option<(PathBuf, PathBuf)> {
    Some((
        require_binary("kepler-rs")?,
        require_binary("kepler-collector")?,
    ))
}

/// The Debian `prometheus`, or `None` with a skip line.
pub fn prometheus_binary() -> Option<PathBuf> {
    require_tool("prometheus")
}
