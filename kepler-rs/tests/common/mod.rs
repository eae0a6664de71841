//! Test support for the exporter's integration tests: what only these tests need (fake
//! `/proc` and powercap trees, the eBPF precondition, the exporter's golden files and accepted
//! lints) on top of the workspace's shared helpers, re-exported here.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod exporter;
pub mod fake_nvml;
pub mod host_tree;
pub mod otlp;
pub mod qemu;

pub use kepler_test_support::cgroup::{
    kubepods_segments, require_v2_root, spawn_in_cgroup, unique_ids, usage_usec, v2_root,
    CreatedDirs, TestContainer, CGROUP_ROOT,
};
pub use kepler_test_support::process::{BusyProcess, ChildGuard};
pub use kepler_test_support::require::{require_root, tool_missing};

use std::fs;
use std::path::{Path, PathBuf};

/// Copies a powercap tree of the test data (e.g. `intel-2socket-server`) to `<sysfs>/class/powercap`.
pub fn copy_powercap_fixture(host: &str, sysfs: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/powercap")
        .join(host);
    let powercap = sysfs.join("class/powercap");
    for zone in fs::read_dir(&fixture).unwrap_or_else(|e| panic!("{}: {e}", fixture.display())) {
        let zone = zone.unwrap();
        fs::create_dir_all(powercap.join(zone.file_name())).unwrap();
        for file in fs::read_dir(zone.path()).unwrap() {
            let file = file.unwrap();
            fs::copy(
                file.path(),
                powercap.join(zone.file_name()).join(file.file_name()),
            )
            .unwrap();
        }
    }
}

/// A real-shaped `/proc/<pid>/stat` line (all 52 fields): parent 1, `flags`, `utime` ticks, no
/// system time, and a start time derived from the pid (so a pid is one process per test).
pub fn proc_stat_line(pid: u32, comm: &str, flags: u64, utime: u64) -> String {
    format!(
        "{pid} ({comm}) S 1 {pid} {pid} 0 -1 {flags} 100 0 0 0 {utime} 0 0 0 20 0 1 0 {} 1000000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        5000 + pid
    )
}

// Golden files

pub fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(name)
}

/// Compares `actual` with `tests/golden/<name>`, or rewrites it when `UPDATE_GOLDEN=1`.
pub fn check_golden(name: &str, actual: &str) {
    kepler_test_support::golden::check(&golden_path(name), actual);
}

// promtool

pub use kepler_test_support::promtool::check as promtool_check;

/// promtool lint messages we accept, each for a name fixed by Kepler compatibility.
pub fn is_accepted_lint(line: &str) -> bool {
    // Kepler's classic `*_bpf_cpu_time_ms_total` counters carry the abbreviated unit `ms`;
    // dashboards and runbooks query these exact names, so we cannot rename them.
    const MS_NAMES: [&str; 3] = [
        "kepler_container_bpf_cpu_time_ms_total",
        "kepler_process_bpf_cpu_time_ms_total",
        "kepler_vm_bpf_cpu_time_ms_total",
    ];
    // Kepler declares `kepler_node_info` a counter without `_total`; we keep its type.
    MS_NAMES.iter().any(|name| {
        line.trim() == format!("{name} metric names should not contain abbreviated units")
    }) || line.trim() == "kepler_node_info counter metrics should have \"_total\" suffix"
}

/// Asserts that `promtool check metrics` accepts `text`: clean, or only lint findings listed in
/// [`is_accepted_lint`]. Returns without asserting when promtool is missing and not required.
pub fn assert_promtool_accepts(name: &str, text: &str) {
    kepler_test_support::promtool::assert_accepts(name, text, is_accepted_lint);
}

// eBPF

/// Whether the eBPF root tests can run: root, and the BPF object built in. Fails under CI when
/// either is missing; prints the skip line elsewhere.
pub fn require_ebpf(what: &str) -> bool {
    if !require_root(what) {
        return false;
    }
    if kepler_ebpf::cpu_object().is_none() {
        tool_missing(&format!(
            "{what} needs the BPF object, which this build lacks"
        ));
        return false;
    }
    true
}
