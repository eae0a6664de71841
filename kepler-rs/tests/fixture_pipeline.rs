#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The whole exporter pipeline over real-shaped host trees, with no root and no hardware:
//! the shared powercap fixture (a client CPU with psys) read by the production RAPL reader,
//! a `/proc` tree whose processes sit in the cgroups of the shared `cgroup-paths.tsv` fixture
//! read by the production procfs/cgroup source (and a libvirt guest's QEMU process with its
//! command line), the real monitor on an injected clock, and the real classic renderer. The output is compared with a golden file and checked by promtool.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::host_tree::HostTree;
use kepler_rs::config::IdlePolicy;
use kepler_rs::config::Schema;
use kepler_rs::export::prometheus::{render, render_classic, BuildInfo, Format, RenderOptions};
use kepler_rs::monitor::{Monitor, MonitorOptions};
use kepler_rs::power::rapl::RaplMeter;
use kepler_rs::power::ZoneKind;
use kepler_rs::selfmetrics::SelfMetrics;
use kepler_rs::snapshot::{NodeInfo, Snapshot};
use kepler_rs::workload::procfs::ProcfsSource;
use kepler_rs::workload::WorkloadKey;
use std::collections::{BTreeMap, BTreeSet};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
const PF_KTHREAD: u64 = 0x0020_0000;
/// The guest's command line as libvirt writes it (arguments joined by NUL).
const GUEST_CMDLINE: &str = "/usr/bin/qemu-system-x86_64\0-name\0guest=web-01,debug-threads=on\0-S\0-machine\0pc-q35-7.2,usb=off\0-accel\0kvm\0-m\0size=2097152k\0-uuid\x001b4e28ba-2fa1-4d3b-a3f5-8c5e6b7a9d01\0-no-user-config\0-nodefaults";
const GUEST_UUID: &str = "1b4e28ba-2fa1-4d3b-a3f5-8c5e6b7a9d01";

/// One fixture process: pid, comm, `/proc/<pid>/cgroup` content, CPU ticks per interval, and the
/// v2 container cgroup whose `cpu.stat` the test advances (None: no readable cgroup).
struct Proc {
    pid: u32,
    comm: &'static str,
    flags: u64,
    cgroup: String,
    ticks_per_interval: u64,
    container_cgroup: Option<&'static str>,
}

fn fixture_rows() -> Vec<(String, String)> {
    let tsv = fs::read_to_string(Path::new(TESTDATA).join("cgroup-paths.tsv")).unwrap();
    tsv.lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[0].to_string(), cols[1].replace("\\n", "\n"))
        })
        .collect()
}

fn row(rows: &[(String, String)], case: &str) -> String {
    rows.iter()
        .find(|(c, _)| c.starts_with(case))
        .unwrap_or_else(|| panic!("no fixture row {case}"))
        .1
        .clone()
}

struct FakeHost {
    tree: HostTree,
    procs: Vec<Proc>,
    interval: u64,
}

impl FakeHost {
    fn new() -> Self {
        let rows = fixture_rows();
        let procs = vec![
            Proc { pid: 2, comm: "kthreadd", flags: PF_KTHREAD, cgroup: row(&rows, "kernel thread"), ticks_per_interval: 2, container_cgroup: None },
            Proc { pid: 811, comm: "sshd", flags: 0, cgroup: row(&rows, "plain systemd service"), ticks_per_interval: 4, container_cgroup: None },
            Proc { pid: 1200, comm: "bash", flags: 0, cgroup: row(&rows, "user session"), ticks_per_interval: 2, container_cgroup: None },
            Proc { pid: 2001, comm: "dockerd-app", flags: 0, cgroup: row(&rows, "docker, cgroup v2"), ticks_per_interval: 30,
                   container_cgroup: Some("system.slice/docker-3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f.scope") },
            Proc { pid: 3001, comm: "nginx", flags: 0, cgroup: row(&rows, "kubernetes + containerd, cgroup v2, systemd driver, burstable"), ticks_per_interval: 90,
                   container_cgroup: Some("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b2d2c5e_5f0a_4d3b_9c1e_8a7f6e5d4c3b.slice/cri-containerd-9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c.scope") },
            Proc { pid: 3002, comm: "job (batch)", flags: 0, cgroup: row(&rows, "kubernetes + containerd, cgroup v2, guaranteed"), ticks_per_interval: 60,
                   container_cgroup: Some("kubepods.slice/kubepods-pod0f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/cri-containerd-7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e.scope") },
            Proc { pid: 3003, comm: "etl", flags: 0, cgroup: row(&rows, "kubernetes + containerd, cgroup v1"), ticks_per_interval: 10, container_cgroup: None },
            Proc { pid: 4001, comm: "kind-app", flags: 0, cgroup: row(&rows, "kind node"), ticks_per_interval: 20,
                   container_cgroup: Some("kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod2c3d4e5f_6a7b_8c9d_0e1f_2a3b4c5d6e7f.slice/cri-containerd-b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4.scope") },
            Proc { pid: 5001, comm: "podman-app", flags: 0, cgroup: row(&rows, "podman rootful"), ticks_per_interval: 5,
                   container_cgroup: Some("machine.slice/libpod-e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2.scope") },
            Proc { pid: 6001, comm: "qemu-system-x86", flags: 0, cgroup: row(&rows, "libvirt guest"), ticks_per_interval: 40, container_cgroup: None },
        ];
        let tree = HostTree::new("intel-client-psys", "cpuset cpu io memory pids");
        for p in &procs {
            tree.add_process(p.pid, &p.cgroup, p.container_cgroup);
        }
        fs::write(
            tree.procfs().join("6001/cmdline"),
            format!("{GUEST_CMDLINE}\0"),
        )
        .unwrap();
        let host = Self {
            tree,
            procs,
            interval: 0,
        };
        host.write_counters();
        host
    }

    fn sysfs(&self) -> PathBuf {
        self.tree.sysfs()
    }

    fn procfs(&self) -> PathBuf {
        self.tree.procfs()
    }

    /// Writes every CPU counter for the current interval number.
    fn write_counters(&self) {
        let n = self.interval;
        let mut busy = 0;
        for p in &self.procs {
            let utime = 1000 + p.ticks_per_interval * n;
            busy += p.ticks_per_interval * n;
            self.tree.write_process_ticks(p.pid, p.comm, p.flags, utime);
            if let Some(cg) = p.container_cgroup {
                // The cgroup saw 10 % more than the live process: a short-lived child that exited.
                self.tree.write_cgroup_usage(cg, (utime * 10_000) * 11 / 10);
            }
        }
        // Two CPUs at 100 Hz over 3 s intervals: 600 ticks per interval.
        self.tree.write_node_ticks(busy, 600 * n - busy);
    }

    /// Advances every zone by `watts` for 3 s and every process by its ticks.
    fn advance(&mut self, watts: &[(&str, u64)]) {
        self.interval += 1;
        for (zone, w) in watts {
            self.tree.add_energy(zone, w * 3_000_000);
        }
        self.write_counters();
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000 + secs)
}

fn run_pipeline() -> (Snapshot, Arc<SelfMetrics>) {
    let mut host = FakeHost::new();
    let metrics = Arc::new(SelfMetrics::new());
    let meter = RaplMeter::discover(&host.sysfs(), "rapl-sysfs").unwrap();
    let cpu = ProcfsSource::new(
        host.procfs(),
        host.sysfs().join("fs/cgroup"),
        metrics.clone(),
    );
    let options = MonitorOptions {
        procfs: host.procfs(),
        terminated_retention: Duration::from_secs(300),
        max_terminated: 500,
        process_metrics: true,
        idle_policy: IdlePolicy::CpuShare,
        idle_window: Duration::from_secs(60),
        idle_half_life: Duration::from_secs(3600),
    };
    let info = NodeInfo {
        node_name: "worker-1".into(),
        cpu_architecture: "Fixture CPU".into(),
        components_power_source: "rapl-sysfs".into(),
        platform_power_source: "rapl-sysfs".into(),
        cpus: (0..2)
            .map(|n| kepler_rs::host::CpuInfo {
                processor: n.to_string(),
                vendor_id: "GenuineIntel".into(),
                model_name: "Fixture CPU".into(),
                physical_id: "0".into(),
                core_id: n.to_string(),
            })
            .collect(),
    };
    let mut monitor = Monitor::new(
        Box::new(meter),
        Box::new(cpu),
        options,
        info,
        metrics.clone(),
    );
    monitor.step(at(0));
    let mut last = None;
    // package, core, uncore, dram, psys watts per interval.
    for (i, pkg) in [12u64, 30, 20, 45].into_iter().enumerate() {
        host.advance(&[
            ("intel-rapl:0", pkg),
            ("intel-rapl:0:0", pkg / 2),
            ("intel-rapl:0:1", 1),
            ("intel-rapl:0:2", 3),
            ("intel-rapl:1", pkg + 10),
        ]);
        last = Some(monitor.step(at(3 * (i as u64 + 1))));
    }
    (last.unwrap(), metrics)
}

fn build_info() -> BuildInfo {
    BuildInfo {
        branch: "main".into(),
        revision: "0000000".into(),
        version: "0.0.0-test".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        rust_version: "rustc".into(),
    }
}

#[test]
fn fixture_host_renders_the_golden_metrics() {
    let (snapshot, metrics) = run_pipeline();
    let text = render_classic(
        &snapshot,
        &metrics,
        &RenderOptions {
            process_metrics: true,
            ..Default::default()
        },
        &build_info(),
        Format::Text,
    );
    common::check_golden("fixture-client-psys-pipeline.prom", &text);
    common::assert_promtool_accepts("fixture pipeline", &text);
}

#[test]
fn fixture_host_resolves_every_container_and_conserves_energy() {
    let (s, metrics) = run_pipeline();
    let ids: Vec<&str> = s.workloads.iter().map(|w| w.key.container_id()).collect();
    for prefix in [
        "3f3f",
        "9c9c",
        "7e7e",
        "5d5d",
        "b4b4",
        "e2e2",
        "system_processes",
        "kernel_processes",
    ] {
        assert!(
            ids.iter().any(|id| id.starts_with(prefix)),
            "{prefix} missing from {ids:?}"
        );
    }
    for (kind, node) in &s.node.zones {
        assert_eq!(s.workloads_total(*kind), *node, "{kind}");
    }
    assert!(s.node.zones.contains_key(&ZoneKind::Psys));
    assert!(
        s.node.other.total().0 > 0,
        "psys exceeds package + dram, so other > 0"
    );
    // The v1 container's cgroup is not readable on this pure-v2 tree: its processes' sum is
    // used instead, and the fallback is counted.
    let v1 = s
        .workloads
        .iter()
        .find(|w| w.key.container_id().starts_with("5d5d"))
        .unwrap();
    assert!(v1.cpu_time.0 > 0);
    assert!(
        metrics
            .errors()
            .iter()
            .any(|(c, r, _)| *c == "procfs" && *r == "cgroup_cpu"),
        "{:?}",
        metrics.errors()
    );
    // Kernel threads are kernel_processes; user processes in the root or system slices are not.
    let kernel = s
        .workloads
        .iter()
        .find(|w| w.key == WorkloadKey::Kernel)
        .unwrap();
    let system = s
        .workloads
        .iter()
        .find(|w| w.key == WorkloadKey::System)
        .unwrap();
    assert_eq!(kernel.cpu_time.0, 4 * 2 * 10_000_000);
    assert_eq!(system.cpu_time.0, 4 * (4 + 2 + 40) * 10_000_000);

    // The libvirt guest: found by its scope and command line, exactly its QEMU process, and
    // inside system_processes.
    assert_eq!(s.vms.len(), 1, "{:?}", s.vms);
    let vm = &s.vms[0];
    assert_eq!(vm.identity.id, GUEST_UUID);
    assert_eq!(vm.identity.name, "web-01");
    assert_eq!(vm.identity.hypervisor, "kvm");
    assert_eq!(vm.cpu_time.0, 4 * 40 * 10_000_000);
    let qemu = s.processes.iter().find(|p| p.pid == 6001).unwrap();
    assert_eq!(qemu.vm.as_ref().map(|v| v.id.as_str()), Some(GUEST_UUID));
    assert_eq!(qemu.energy, vm.energy);
    for (kind, split) in &vm.energy.zones {
        assert!(split.total().0 > 0, "{kind}");
        assert!(
            s.vms_total(*kind).total() <= system.energy.zones[kind].total(),
            "{kind}"
        );
    }
    assert!(
        s.processes.iter().filter(|p| p.vm.is_some()).count() == 1,
        "only the QEMU process is the guest's"
    );
    assert!(metrics.errors().iter().all(|(c, _, _)| *c != "vm"));
}

/// Modern label sets from docs/metrics.md, each plus the constant `node_name`.
fn modern_spec() -> BTreeMap<&'static str, &'static [&'static str]> {
    const NODE_ZONE: &[&str] = &["node_name", "zone", "path"];
    const PROCESS: &[&str] = &[
        "node_name",
        "pid",
        "comm",
        "exe",
        "type",
        "state",
        "container_id",
        "vm_id",
        "zone",
    ];
    const CONTAINER: &[&str] = &[
        "node_name",
        "container_id",
        "container_name",
        "runtime",
        "state",
        "zone",
        "pod_id",
    ];
    const VM: &[&str] = &[
        "node_name",
        "vm_id",
        "vm_name",
        "hypervisor",
        "state",
        "zone",
    ];
    const POD: &[&str] = &[
        "node_name",
        "pod_id",
        "pod_name",
        "pod_namespace",
        "state",
        "zone",
    ];
    BTreeMap::from([
        ("kepler_node_cpu_joules_total", NODE_ZONE),
        ("kepler_node_cpu_watts", NODE_ZONE),
        ("kepler_node_cpu_active_joules_total", NODE_ZONE),
        ("kepler_node_cpu_active_watts", NODE_ZONE),
        ("kepler_node_cpu_idle_joules_total", NODE_ZONE),
        ("kepler_node_cpu_idle_watts", NODE_ZONE),
        ("kepler_node_cpu_usage_ratio", &["node_name"][..]),
        (
            "kepler_node_cpu_info",
            &[
                "processor",
                "vendor_id",
                "model_name",
                "physical_id",
                "core_id",
            ][..],
        ),
        ("kepler_process_cpu_joules_total", PROCESS),
        ("kepler_process_cpu_watts", PROCESS),
        (
            "kepler_process_cpu_seconds_total",
            &[
                "node_name",
                "pid",
                "comm",
                "exe",
                "type",
                "container_id",
                "vm_id",
            ][..],
        ),
        ("kepler_container_cpu_joules_total", CONTAINER),
        ("kepler_container_cpu_watts", CONTAINER),
        ("kepler_pod_cpu_joules_total", POD),
        ("kepler_pod_cpu_watts", POD),
        ("kepler_vm_cpu_joules_total", VM),
        ("kepler_vm_cpu_watts", VM),
        (
            "kepler_build_info",
            &["arch", "branch", "revision", "version", "goversion"][..],
        ),
    ])
}

/// One sample line: name, label names in order, label values, value.
type Sample = (String, Vec<String>, BTreeMap<String, String>, f64);

/// Every sample line of an exposition.
fn samples(text: &str) -> Vec<Sample> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap().to_string();
        let names: Vec<String> = line
            .split_once('{')
            .map(|(_, rest)| rest.rsplit_once('}').unwrap().0)
            .unwrap_or("")
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| p.split('=').next().unwrap().to_string())
            .collect();
        out.push((name, names, BTreeMap::new(), 0.0));
    }
    // Values and label values from a real parser.
    for (i, sample) in scrape.samples.iter().enumerate() {
        let labels: BTreeMap<String, String> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        };
        out[i].2 = labels;
        out[i].3 = value;
    }
    out
}

#[test]
fn fixture_host_renders_the_modern_schema() {
    let (snapshot, metrics) = run_pipeline();
    let options = RenderOptions {
        process_metrics: true,
        schema: Schema::Modern,
    };
    let text = render(&snapshot, &metrics, &options, &build_info(), Format::Text);
    // Zone paths point into this run's temporary host tree: show them as on a host.
    let tmp_sysfs = snapshot
        .node_zones
        .values()
        .next()
        .and_then(|z| z.path.split_once("/sys/class/powercap"))
        .map(|(prefix, _)| format!("{prefix}/sys/"))
        .unwrap();
    let text = text.replace(&tmp_sysfs, "/sys/");
    common::check_golden("fixture-client-psys-pipeline-modern.prom", &text);
    common::assert_promtool_accepts("modern fixture pipeline", &text);

    let spec = modern_spec();
    let mut seen = BTreeSet::new();
    let all = samples(&text);
    for (name, labels, values, value) in &all {
        if name.starts_with("kepler_exporter_") {
            continue;
        }
        let expected = spec
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} is not in the modern spec"));
        assert_eq!(labels, &expected.to_vec(), "{name} label names");
        assert!(
            value.is_finite() && *value >= 0.0,
            "{name} {values:?} = {value}"
        );
        if let Some(zone) = values.get("zone") {
            assert!(
                ["package", "core", "uncore", "dram", "psys"].contains(&zone.as_str()),
                "{zone}"
            );
        }
        if let Some(state) = values.get("state") {
            assert!(state == "running" || state == "terminated");
        }
        seen.insert(name.clone());
    }
    for name in spec.keys() {
        assert!(
            seen.contains(*name),
            "{name} missing from the modern output"
        );
    }
    assert!(
        !text.contains("kepler_container_joules_total"),
        "modern only"
    );

    // Pods are the sum of their containers, zone by zone.
    let sum = |metric: &str, key: &str, id: &str, zone: &str| -> f64 {
        all.iter()
            .filter(|(n, _, v, _)| {
                n == metric
                    && v.get(key).map(String::as_str) == Some(id)
                    && v.get("zone").map(String::as_str) == Some(zone)
            })
            .map(|s| s.3)
            .sum()
    };
    let pod = "6b2d2c5e-5f0a-4d3b-9c1e-8a7f6e5d4c3b";
    let pod_joules = sum("kepler_pod_cpu_joules_total", "pod_id", pod, "package");
    let container_joules = sum(
        "kepler_container_cpu_joules_total",
        "pod_id",
        pod,
        "package",
    );
    assert!(
        pod_joules > 0.0 && (pod_joules - container_joules).abs() < 1e-6,
        "{pod_joules} vs {container_joules}"
    );
    // The node's package counter is active + idle.
    let node = sum(
        "kepler_node_cpu_joules_total",
        "node_name",
        "worker-1",
        "package",
    );
    let active = sum(
        "kepler_node_cpu_active_joules_total",
        "node_name",
        "worker-1",
        "package",
    );
    let idle = sum(
        "kepler_node_cpu_idle_joules_total",
        "node_name",
        "worker-1",
        "package",
    );
    assert!((node - active - idle).abs() < 1e-6 && node > 0.0);
    // As in Kepler, workloads share the node's active energy only: every process (in and
    // outside containers, terminated ones included) adds up to the active energy, and the
    // containers and pods are part of it.
    let zone_sum = |metric: &str, zone: &str| -> f64 {
        all.iter()
            .filter(|(n, _, v, _)| n == metric && v.get("zone").map(String::as_str) == Some(zone))
            .map(|s| s.3)
            .sum()
    };
    for zone in ["package", "core", "uncore", "dram", "psys"] {
        let active = zone_sum("kepler_node_cpu_active_joules_total", zone);
        let processes = zone_sum("kepler_process_cpu_joules_total", zone);
        let containers = zone_sum("kepler_container_cpu_joules_total", zone);
        assert!(
            zone != "package" || active > 0.0,
            "no active package energy"
        );
        assert!(
            (processes - active).abs() < 1e-5,
            "{zone}: processes {processes} J, node active {active} J"
        );
        assert!(
            containers <= active + 1e-6,
            "{zone}: containers {containers} J"
        );
    }
}

#[test]
fn both_schemas_together() {
    let (snapshot, metrics) = run_pipeline();
    let options = RenderOptions {
        process_metrics: false,
        schema: Schema::Both,
    };
    let text = render(&snapshot, &metrics, &options, &build_info(), Format::Text);
    assert!(text.contains("\nkepler_container_joules_total{"));
    assert!(text.contains("\nkepler_container_cpu_joules_total{"));
    assert!(
        !text.contains("kepler_process_"),
        "process metrics stay opt-in"
    );
    common::assert_promtool_accepts("both schemas", &text);
    let classic = render(
        &snapshot,
        &metrics,
        &RenderOptions::default(),
        &build_info(),
        Format::Text,
    );
    let only_classic = render_classic(
        &snapshot,
        &metrics,
        &RenderOptions::default(),
        &build_info(),
        Format::Text,
    );
    assert_eq!(
        classic, only_classic,
        "the default schema is classic, byte for byte"
    );
}
