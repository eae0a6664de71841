#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Root test on this kernel: two kubepods-shaped containers whose CPU is held at a 3:1 ratio by
//! the kernel's own CFS bandwidth control, measured by the real procfs/cgroup source, on fake
//! RAPL driven by the host's real /proc/stat, through the real monitor. Their attributed dynamic
//! energy must have the same 3:1 ratio within 3 %, and every zone must be conserved.
//!
//! Container A runs 3 busy processes limited to 0.3 CPU, B one limited to 0.1 CPU (quota per
//! 10 ms period), so the ratio holds whatever else the machine runs as long as 0.4 CPU is free.
//! Skips with a message when not root or when no CPU bandwidth controller is available.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{BusyProcess, CreatedDirs};
use kepler_rs::config::IdlePolicy;
use kepler_rs::monitor::{Monitor, MonitorOptions};
use kepler_rs::power::fake::{FakeRapl, FakeRaplModel};
use kepler_rs::power::rapl::RaplMeter;
use kepler_rs::power::ZoneKind;
use kepler_rs::selfmetrics::SelfMetrics;
use kepler_rs::snapshot::{NodeInfo, Snapshot};
use kepler_rs::workload::procfs::ProcfsSource;
use kepler_rs::workload::WorkloadKey;

const PERIOD_US: u64 = 10_000;

/// Where CPU bandwidth limits can be set: a v1 `cpu` hierarchy, or the v2 mount with the `cpu`
/// controller available.
enum Bandwidth {
    V1(PathBuf),
    V2,
}

fn bandwidth_controller(v2: &Path) -> Option<Bandwidth> {
    let v1 = Path::new(common::CGROUP_ROOT).join("cpu");
    if v1.join("cpu.cfs_quota_us").is_file() {
        return Some(Bandwidth::V1(v1));
    }
    let controllers = fs::read_to_string(v2.join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == "cpu")
        .then_some(Bandwidth::V2)
}

fn limit(
    bandwidth: &Bandwidth,
    dirs: &mut CreatedDirs,
    v2: &Path,
    v2_segments: &[String],
    name: &str,
    quota_us: u64,
) -> PathBuf {
    match bandwidth {
        Bandwidth::V1(root) => {
            let dir = dirs.create_path(
                root,
                &[
                    format!("kepler-rs-test-{}", std::process::id()),
                    name.to_string(),
                ],
            );
            fs::write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string()).unwrap();
            fs::write(dir.join("cpu.cfs_quota_us"), quota_us.to_string()).unwrap();
            dir
        }
        Bandwidth::V2 => {
            // Enable the cpu controller down to the container's parent, then limit the leaf.
            let mut dir = v2.to_path_buf();
            for seg in v2_segments {
                let _ = fs::write(dir.join("cgroup.subtree_control"), "+cpu");
                dir.push(seg);
            }
            fs::write(dir.join("cpu.max"), format!("{quota_us} {PERIOD_US}")).unwrap();
            dir
        }
    }
}

fn dynamic_package(s: &Snapshot, key: &WorkloadKey) -> f64 {
    let w = s
        .workloads
        .iter()
        .find(|w| &w.key == key)
        .unwrap_or_else(|| panic!("{key} missing"));
    w.energy.zones[&ZoneKind::Package].dynamic.0 as f64
}

#[test]
fn dynamic_energy_follows_a_three_to_one_cpu_ratio() {
    if !common::require_root("creating cgroups") {
        return;
    }
    let Some(v2) = common::require_v2_root() else {
        return;
    };
    let Some(bandwidth) = bandwidth_controller(&v2) else {
        common::tool_missing("no CPU bandwidth controller (v1 cpu or v2 cpu) to hold a 3:1 ratio");
        return;
    };

    let mut dirs = CreatedDirs::default();
    let (id_a, pod_a) = common::unique_ids();
    let (id_b, pod_b) = common::unique_ids();
    let seg_a = common::kubepods_segments(&id_a, &pod_a);
    let seg_b = common::kubepods_segments(&id_b, &pod_b);
    let container_a = dirs.create_path(&v2, &seg_a);
    let container_b = dirs.create_path(&v2, &seg_b);
    let limit_a = limit(&bandwidth, &mut dirs, &v2, &seg_a, "a", 3 * PERIOD_US / 10);
    let limit_b = limit(&bandwidth, &mut dirs, &v2, &seg_b, "b", PERIOD_US / 10);

    // Declared after `dirs` so they die before the cgroups are removed.
    let procs_a: Vec<BusyProcess> = (0..3).map(|_| BusyProcess::spawn()).collect();
    let proc_b = BusyProcess::spawn();
    for p in procs_a.iter().chain([&proc_b]) {
        p.signal(libc::SIGSTOP);
    }
    for p in &procs_a {
        p.join(&container_a);
        p.join(&limit_a);
    }
    proc_b.join(&container_b);
    proc_b.join(&limit_b);

    let metrics = Arc::new(SelfMetrics::new());
    let fake = FakeRapl::start(None, FakeRaplModel::default(), "/proc".into()).unwrap();
    let meter = RaplMeter::discover(fake.sysfs_root(), "fake-rapl").unwrap();
    let cpu = ProcfsSource::new("/proc".into(), common::CGROUP_ROOT.into(), metrics.clone());
    let options = MonitorOptions {
        procfs: "/proc".into(),
        terminated_retention: Duration::from_secs(60),
        // Other tests may churn containers on this host meanwhile: keep every terminated one so
        // the conservation check below sees all the energy.
        max_terminated: 100_000,
        process_metrics: true,
        idle_policy: IdlePolicy::CpuShare,
        idle_window: Duration::from_secs(60),
        idle_half_life: Duration::from_secs(3600),
    };
    let mut monitor = Monitor::new(
        Box::new(meter),
        Box::new(cpu),
        options,
        NodeInfo::default(),
        metrics.clone(),
    );

    // Quiet intervals first, then busy ones, so the idle estimator sees the load vary and
    // separates dynamic from idle energy.
    let interval = Duration::from_millis(750);
    monitor.step(SystemTime::now());
    for _ in 0..4 {
        std::thread::sleep(interval);
        monitor.step(SystemTime::now());
    }
    let start_a = common::usage_usec(&container_a);
    let start_b = common::usage_usec(&container_b);
    for p in procs_a.iter().chain([&proc_b]) {
        p.signal(libc::SIGCONT);
    }
    let mut last = None;
    for _ in 0..10 {
        std::thread::sleep(interval);
        last = Some(monitor.step(SystemTime::now()));
    }
    let s = last.unwrap();
    let kernel_ratio = (common::usage_usec(&container_a) - start_a) as f64
        / (common::usage_usec(&container_b) - start_b) as f64;

    let key_a = WorkloadKey::Container(id_a.clone());
    let key_b = WorkloadKey::Container(id_b.clone());
    let (dyn_a, dyn_b) = (dynamic_package(&s, &key_a), dynamic_package(&s, &key_b));
    let ratio = dyn_a / dyn_b;
    println!(
        "dynamic package energy A={:.3} J B={:.3} J ratio {ratio:.4}; kernel cpu.stat ratio {kernel_ratio:.4}; idle estimate {:?}",
        dyn_a / 1e6,
        dyn_b / 1e6,
        s.node_zones.values().map(|z| z.idle_watts.0).collect::<Vec<_>>()
    );
    assert!(dyn_b > 0.0, "container B got no dynamic energy");
    // The CPU bandwidth limits hold the kernel's own ratio at 3:1 on an idle machine; under
    // heavy load from other jobs CFS gives less than the quota (2.36 seen at load average 40),
    // so the attributed energy is checked against the ratio the kernel actually measured, and
    // that ratio only has to be clearly unequal for the check to mean something.
    assert!(
        (1.5..=3.3).contains(&kernel_ratio),
        "the cgroups did not run clearly unequal ({kernel_ratio}, limits 3:1): is the machine overloaded?"
    );
    assert!(
        (ratio / kernel_ratio - 1.0).abs() <= 0.03,
        "dynamic energy ratio {ratio}, kernel cpu.stat ratio {kernel_ratio}: want equal within 3 %"
    );

    // Conservation through the whole live pipeline, for every zone kind.
    for (kind, node) in &s.node.zones {
        assert_eq!(
            s.workloads_total(*kind),
            *node,
            "{kind}: workloads must add up to the node"
        );
    }
    // Each container is the sum of its processes.
    for key in [&key_a, &key_b] {
        let container = s
            .workloads
            .iter()
            .find(|w| &w.key == key)
            .unwrap()
            .energy
            .total()
            .total()
            .0;
        let procs: u64 = s
            .processes
            .iter()
            .filter(|p| &p.workload == key)
            .map(|p| p.energy.total().total().0)
            .sum();
        assert_eq!(
            procs, container,
            "{key}: processes must add up to the container"
        );
    }
    drop(fake);
}
