#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Root test on this kernel: a busy process moved into a kubepods-shaped cgroup v2 is seen by
//! [`ProcfsSource`] as a containerd container of the right pod, with the cgroup's own CPU time.
//!
//! Skips (with a line saying so) when not root or when no cgroup v2 hierarchy is mounted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{BusyProcess, CreatedDirs};
use kepler_rs::power::units::CpuNanos;
use kepler_rs::selfmetrics::SelfMetrics;
use kepler_rs::workload::procfs::ProcfsSource;
use kepler_rs::workload::{CpuTimeSource, Runtime, WorkloadKey};

#[test]
fn busy_process_in_kubepods_cgroup_is_a_container() {
    if !common::require_root("creating cgroups") {
        return;
    }
    let Some(v2) = common::require_v2_root() else {
        return;
    };
    let (id, uid) = common::unique_ids();
    let mut dirs = CreatedDirs::default();
    let container_dir = dirs.create_path(&v2, &common::kubepods_segments(&id, &uid));
    // Declared after `dirs` so it dies before the cgroups are removed.
    let child = BusyProcess::spawn();
    let child_pid = child.pid();
    child.join(&container_dir);

    let metrics = Arc::new(SelfMetrics::new());
    let mut source = ProcfsSource::new("/proc".into(), common::CGROUP_ROOT.into(), metrics.clone());
    let key = WorkloadKey::Container(id.clone());

    let first = source.sample();
    let before = common::usage_usec(&container_dir);
    assert_eq!(
        first.workloads.get(&key).map(|w| w.cpu),
        Some(CpuNanos::ZERO),
        "first sample sees the container with zero CPU"
    );
    // Wait for CPU time rather than wall time: a loaded machine gives the loop less than a core.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while common::usage_usec(&container_dir) - before < 800_000
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = source.sample();
    let after = common::usage_usec(&container_dir);

    let w = second
        .workloads
        .get(&key)
        .unwrap_or_else(|| panic!("container {id} missing: {:?}", second.workloads.keys()));
    let identity = w.identity.clone().unwrap();
    assert_eq!(identity.runtime, Runtime::Containerd);
    assert_eq!(identity.pod_uid.as_deref(), Some(uid.as_str()));
    let proc = second
        .processes
        .iter()
        .find(|p| p.pid == child_pid)
        .unwrap();
    assert_eq!(proc.workload, key);

    let measured = w.cpu.as_secs_f64();
    let truth = CpuNanos::from_micros(after - before).as_secs_f64();
    println!(
        "container cpu {measured:.3}s, cgroup cpu.stat delta {truth:.3}s, process {:.3}s",
        proc.cpu.as_secs_f64()
    );
    assert!(measured > 0.5, "busy loop used only {measured}s");
    assert!(
        (measured - truth).abs() <= 0.1 * truth,
        "source {measured}s vs cgroup {truth}s"
    );
    assert!(
        !metrics.errors().iter().any(|e| e.1 == "cgroup_cpu"),
        "{:?}",
        metrics.errors()
    );
}
