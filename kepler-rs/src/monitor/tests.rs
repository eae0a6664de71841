//! Monitor tests on real-shaped host trees: the production RAPL reader over a copy of a fixture
//! powercap tree whose counters the test moves, a `/proc/stat` file the test writes, and a
//! scripted CPU-time source (the trait boundary; the procfs source has its own tests).

use super::*;
use crate::power::rapl::RaplMeter;
use crate::power::ZoneKind;
use crate::workload::testing::{container, sample_with_processes, Scripted};
use crate::workload::WorkloadSample;
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/powercap");

/// A copy of a fixture host: `<root>/class/powercap/...` and `<root>/proc/stat`.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new(fixture: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let powercap = dir.path().join("sys/class/powercap");
        std::fs::create_dir_all(&powercap).unwrap();
        for zone in std::fs::read_dir(Path::new(FIXTURES).join(fixture)).unwrap() {
            let zone = zone.unwrap();
            let target = powercap.join(zone.file_name());
            std::fs::create_dir_all(&target).unwrap();
            for file in std::fs::read_dir(zone.path()).unwrap() {
                let file = file.unwrap();
                std::fs::copy(file.path(), target.join(file.file_name())).unwrap();
            }
        }
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        let host = Self { dir };
        host.set_cpu(0, 1000);
        host
    }
    fn sysfs(&self) -> std::path::PathBuf {
        self.dir.path().join("sys")
    }
    fn set_energy(&self, zone: &str, uj: u64) {
        std::fs::write(
            self.sysfs()
                .join("class/powercap")
                .join(zone)
                .join("energy_uj"),
            format!("{uj}\n"),
        )
        .unwrap();
    }
    fn energy(&self, zone: &str) -> u64 {
        std::fs::read_to_string(
            self.sysfs()
                .join("class/powercap")
                .join(zone)
                .join("energy_uj"),
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
    }
    fn set_cpu(&self, busy: u64, idle: u64) {
        std::fs::write(
            self.dir.path().join("proc/stat"),
            format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n"),
        )
        .unwrap();
    }
    fn monitor(&self, script: Vec<WorkloadSample>, processes: bool) -> Monitor {
        let meter = RaplMeter::discover(&self.sysfs(), "rapl-sysfs").unwrap();
        let options = options(self.dir.path().join("proc"), processes);
        let info = NodeInfo {
            node_name: "worker-1".into(),
            ..Default::default()
        };
        Monitor::new(
            Box::new(meter),
            Box::new(Scripted(script.into())),
            options,
            info,
            Arc::new(SelfMetrics::new()),
        )
    }
}

fn options(procfs: PathBuf, process_metrics: bool) -> MonitorOptions {
    MonitorOptions {
        procfs,
        terminated_retention: Duration::from_secs(60),
        max_terminated: 10,
        process_metrics,
        idle_policy: IdlePolicy::CpuShare,
        idle_window: Duration::from_secs(60),
        idle_half_life: Duration::from_secs(3600),
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn kind_total(s: &Snapshot, kind: ZoneKind) -> u64 {
    s.node.zones.get(&kind).map_or(0, |m| m.total().0)
}

#[test]
fn wrap_on_a_two_socket_server_loses_no_energy() {
    let host = Host::new("intel-2socket-server");
    let pkg1_start = host.energy("intel-rapl:1"); // 261990001234, near the max 262143328850
    let max = 262_143_328_850u64;
    let script = (0..3)
        .map(|_| sample_with_processes(&[(container(1), 1_000_000_000)]))
        .collect();
    let mut m = host.monitor(script, false);
    let s0 = m.step(at(0));
    assert_eq!(s0.sequence, 0);
    assert_eq!(
        s0.node_zones.len(),
        4,
        "mmio package-0 loses to intel-rapl:0"
    );
    // Socket 1 package wraps: the rest of the range before the max, then 50 J after it.
    let to_max = max - pkg1_start;
    host.set_energy("intel-rapl:1", 50_000_000);
    let pkg0 = host.energy("intel-rapl:0");
    host.set_energy("intel-rapl:0", pkg0 + 30_000_000);
    let s1 = m.step(at(3));
    let socket1 = s1.node_zones[&ZoneId {
        kind: ZoneKind::Package,
        socket: 1,
    }]
        .energy
        .total();
    let socket0 = s1.node_zones[&ZoneId {
        kind: ZoneKind::Package,
        socket: 0,
    }]
        .energy
        .total();
    assert_eq!(
        socket1,
        Microjoules(to_max + 1 + 50_000_000),
        "wrapped delta = (max - prev) + 1 + new"
    );
    assert_eq!(socket0, Microjoules(30_000_000));
    assert_eq!(kind_total(&s1, ZoneKind::Package), socket0.0 + socket1.0);
}

#[test]
fn workloads_add_up_to_the_node_and_processes_to_containers() {
    let host = Host::new("intel-client-psys");
    let script = (0..6)
        .map(|i| {
            sample_with_processes(&[
                (container(1), 3_000_000_000 + i),
                (container(2), 1_000_000_000),
            ])
        })
        .collect();
    let mut m = host.monitor(script, true);
    m.step(at(0));
    let mut last = None;
    for i in 1..6u64 {
        for (zone, step) in [
            ("intel-rapl:0", 9_000_000),
            ("intel-rapl:0:0", 5_000_000),
            ("intel-rapl:0:1", 1_000_000),
            ("intel-rapl:0:2", 2_000_000),
            ("intel-rapl:1", 15_000_000),
        ] {
            host.set_energy(zone, host.energy(zone) + step * i);
        }
        host.set_cpu(100 * i * i, 1000 + 100 * i);
        last = Some(m.step(at(3 * i)));
    }
    let s = last.unwrap();
    assert_eq!(s.sequence, 5);
    for kind in [
        ZoneKind::Package,
        ZoneKind::Core,
        ZoneKind::Uncore,
        ZoneKind::Dram,
        ZoneKind::Psys,
    ] {
        assert_eq!(
            s.workloads_total(kind).total().0,
            kind_total(&s, kind),
            "{kind}"
        );
    }
    let other_sum: u64 = s.workloads.iter().map(|w| w.energy.other.total().0).sum();
    assert!(
        other_sum >= s.node.other.total().0,
        "per-workload other is at least the node's (clamping is per workload)"
    );
    let c1 = s.workloads.iter().find(|w| w.key == container(1)).unwrap();
    let procs: u64 = s
        .processes
        .iter()
        .filter(|p| p.workload == container(1))
        .map(|p| p.energy.total().total().0)
        .sum();
    assert_eq!(procs, c1.energy.total().total().0);
    assert!(s.node_zones.values().all(|z| z.watts.0 > 0.0));
}

#[test]
fn terminated_container_stays_for_the_retention_window() {
    let host = Host::new("intel-client-psys");
    let mut script = vec![
        sample_with_processes(&[(container(1), 1_000_000_000)]),
        sample_with_processes(&[(container(1), 1_000_000_000)]),
    ];
    script.extend((0..3).map(|_| sample_with_processes(&[])));
    let mut m = host.monitor(script, false);
    m.step(at(0));
    host.set_energy("intel-rapl:0", host.energy("intel-rapl:0") + 10_000_000);
    let s1 = m.step(at(3));
    let before = s1
        .workloads
        .iter()
        .find(|w| w.key == container(1))
        .unwrap()
        .energy
        .clone();
    let s2 = m.step(at(6));
    let gone = s2.workloads.iter().find(|w| w.key == container(1)).unwrap();
    assert_eq!(gone.state, crate::snapshot::State::Terminated(at(6)));
    assert_eq!(gone.energy, before, "final totals kept");
    let s3 = m.step(at(66));
    assert!(
        s3.workloads.iter().any(|w| w.key == container(1)),
        "still inside 60 s"
    );
    let s4 = m.step(at(67));
    assert!(
        !s4.workloads.iter().any(|w| w.key == container(1)),
        "gone after 60 s"
    );
}

#[test]
fn bad_zone_readings_are_counted_and_energy_arrives_later() {
    let host = Host::new("intel-client-psys");
    let script = (0..4)
        .map(|_| sample_with_processes(&[(container(1), 1_000_000_000)]))
        .collect();
    let mut m = host.monitor(script, false);
    let metrics = m.metrics.clone();
    let start = host.energy("intel-rapl:0");
    m.step(at(0));
    std::fs::write(
        host.sysfs().join("class/powercap/intel-rapl:0/energy_uj"),
        "12ab",
    )
    .unwrap();
    let s1 = m.step(at(3));
    assert_eq!(
        s1.node_zones[&ZoneId {
            kind: ZoneKind::Package,
            socket: 0
        }]
            .energy
            .total(),
        Microjoules::ZERO
    );
    host.set_energy("intel-rapl:0", start + 7_000_000);
    let s2 = m.step(at(6));
    assert_eq!(
        s2.node_zones[&ZoneId {
            kind: ZoneKind::Package,
            socket: 0
        }]
            .energy
            .total(),
        Microjoules(7_000_000)
    );
    assert!(
        metrics
            .errors()
            .iter()
            .any(|(c, r, n)| *c == "power" && *r == "garbage" && *n == 1),
        "{:?}",
        metrics.errors()
    );
}

/// The idle estimate converges to the fake-RAPL model's true idle power (spec: within 5 %),
/// driving the production reader over a fake tree with known utilisation, and the node's
/// counters equal the simulator's ground truth across wraps.
#[test]
fn idle_estimate_converges_on_fake_rapl() {
    use crate::power::fake::{FakeRaplModel, FakeRaplTree};
    let dir = tempfile::tempdir().unwrap();
    let model = FakeRaplModel {
        max_energy_range: Microjoules(500_000_000), // 500 J: wraps every few intervals, never twice in one
        ..FakeRaplModel::default()
    };
    let mut tree = FakeRaplTree::create(&dir.path().join("sys"), model.clone()).unwrap();
    let proc_dir = dir.path().join("proc");
    std::fs::create_dir_all(&proc_dir).unwrap();
    let write_stat = |busy: u64, idle: u64| {
        std::fs::write(
            proc_dir.join("stat"),
            format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n"),
        )
        .unwrap();
    };
    let (mut busy, mut idle) = (0u64, 0u64);
    write_stat(busy, idle);
    let options = options(proc_dir.clone(), false);
    let script = (0..41)
        .map(|_| sample_with_processes(&[(container(1), 1_000_000_000)]))
        .collect();
    let mut m = Monitor::new(
        Box::new(tree.meter().unwrap()),
        Box::new(Scripted(script)),
        options,
        NodeInfo::default(),
        Arc::new(SelfMetrics::new()),
    );
    m.step(at(0));
    let start: BTreeMap<ZoneId, Microjoules> = tree
        .zone_ids()
        .into_iter()
        .map(|z| (z, tree.true_total(z)))
        .collect();
    let mut last = None;
    for i in 1..=40u64 {
        // A load pattern that varies between 5 % and 95 %.
        let u = 0.05 + 0.9 * ((i * 7) % 10) as f64 / 9.0;
        let ticks = 300; // 3 s of one CPU at 100 Hz
        let b = (u * ticks as f64).round() as u64;
        busy += b;
        idle += ticks - b;
        write_stat(busy, idle);
        tree.advance(b as f64 / ticks as f64, Duration::from_secs(3))
            .unwrap();
        last = Some(m.step(at(3 * i)));
    }
    let s = last.unwrap();
    for zone in &model.zones {
        let id = ZoneId {
            kind: zone.kind,
            socket: 0,
        };
        let estimated = s.node_zones[&id].idle_watts.0;
        let truth = zone.idle.0;
        assert!(
            (estimated - truth).abs() <= 0.05 * truth,
            "{id}: idle {estimated} W, model {truth} W"
        );
        let counted = s.node_zones[&id].energy.total();
        assert_eq!(
            counted,
            Microjoules(tree.true_total(id).0 - start[&id].0),
            "{id}: energy across wraps"
        );
    }
}

/// A zone that disappears for a while and returns: the intervals in between are counted as
/// errors, and when it is back its counter carries the missed energy, so nothing is lost.
#[test]
fn vanished_zone_returns_without_losing_energy() {
    use crate::power::fake::{FakeRaplModel, FakeRaplTree};
    let dir = tempfile::tempdir().unwrap();
    let mut tree = FakeRaplTree::create(dir.path(), FakeRaplModel::default()).unwrap();
    let proc_dir = dir.path().join("proc");
    std::fs::create_dir_all(&proc_dir).unwrap();
    std::fs::write(proc_dir.join("stat"), "cpu  0 0 0 0 0 0 0 0 0 0\n").unwrap();
    let options = options(proc_dir, false);
    let metrics = Arc::new(SelfMetrics::new());
    let script = (0..8)
        .map(|_| sample_with_processes(&[(container(1), 1_000_000_000)]))
        .collect();
    let mut m = Monitor::new(
        Box::new(tree.meter().unwrap()),
        Box::new(Scripted(script)),
        options,
        NodeInfo::default(),
        metrics.clone(),
    );
    let dram = ZoneId {
        kind: ZoneKind::Dram,
        socket: 0,
    };
    m.step(at(0));
    let start = tree.true_total(dram);
    let mut last = None;
    for i in 1..=6u64 {
        if i == 2 {
            tree.remove_zone(dram).unwrap();
        }
        if i == 5 {
            tree.restore_zone(dram).unwrap();
        }
        tree.advance(0.5, Duration::from_secs(3)).unwrap();
        last = Some(m.step(at(3 * i)));
        if (2..5).contains(&i) {
            assert_eq!(
                last.as_ref().unwrap().node_zones.len(),
                3,
                "the zone stays known while gone"
            );
        }
    }
    let s = last.unwrap();
    assert_eq!(
        s.node_zones[&dram].energy.total().0,
        tree.true_total(dram).0 - start.0
    );
    let vanished = metrics
        .errors()
        .into_iter()
        .find(|(c, r, _)| *c == "power" && *r == "vanished");
    assert_eq!(
        vanished.map(|(_, _, n)| n),
        Some(3),
        "{:?}",
        metrics.errors()
    );
    assert_eq!(
        s.workloads_total(ZoneKind::Dram),
        s.node_zones[&dram].energy
    );
}

#[test]
fn node_share_splits_one_host_between_two_nodes_by_cpu_time() {
    let host = Host::new("intel-client-psys");
    // Two "kind nodes" on this host: each sees its own cgroup tree as the root.
    let nodes: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let usage = |node: &tempfile::TempDir, usec: u64| {
        std::fs::write(node.path().join("cgroup.controllers"), "cpu\n").unwrap();
        std::fs::write(
            node.path().join("cpu.stat"),
            format!("usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n"),
        )
        .unwrap();
    };
    for node in &nodes {
        usage(node, 0);
    }
    let mut monitors: Vec<Monitor> = nodes
        .iter()
        .map(|n| {
            host.monitor(vec![], false)
                .with_node_share(node_share::NodeShare::new(n.path()))
        })
        .collect();
    for m in &mut monitors {
        m.step(at(0));
    }
    // 3 s: the host was busy 300 ticks (3 CPU-seconds); node 0 used 2 s, node 1 used 0.5 s.
    host.set_cpu(300, 1300);
    usage(&nodes[0], 2_000_000);
    usage(&nodes[1], 500_000);
    let before = host.energy("intel-rapl:0");
    host.set_energy("intel-rapl:0", before + 60_000_000);
    let package: Vec<u64> = monitors
        .iter_mut()
        .map(|m| kind_total(&m.step(at(3)), ZoneKind::Package))
        .collect();
    assert_eq!(package, vec![40_000_000, 10_000_000]);
    // Without the option a node takes the whole host.
    let mut whole = host.monitor(vec![], false);
    whole.step(at(3));
    host.set_energy("intel-rapl:0", before + 120_000_000);
    assert_eq!(
        kind_total(&whole.step(at(6)), ZoneKind::Package),
        60_000_000
    );
}

/// The `requests` idle policy end to end: pod metadata from the kubelet fixture (nginx requests
/// 250m, job 1 CPU) on a 4-CPU node; the 2,750m nobody requested stays with the node.
#[test]
fn requests_idle_policy_splits_idle_by_the_pods_cpu_requests() {
    use crate::workload::kube::PodIndex;
    use crate::workload::{ContainerIdentity, Runtime};
    let host = Host::new("intel-client-psys");
    let stat = |busy: u64| {
        let cpus: String = (0..4).map(|n| format!("cpu{n} 0 0 0 0\n")).collect();
        std::fs::write(
            host.dir.path().join("proc/stat"),
            format!("cpu  {busy} 0 0 1000 0 0 0 0 0 0\n{cpus}"),
        )
        .unwrap();
    };
    stat(0);
    let pods = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/kubelet-pods.json"
    ))
    .unwrap();
    let pods = PodIndex::from_pod_list(&pods).unwrap();
    let (nginx, job) = ("9c".repeat(32), "7e".repeat(32));
    let script = (0..2)
        .map(|_| {
            let mut s = sample_with_processes(&[
                (WorkloadKey::Container(nginx.clone()), 1_000_000_000),
                (WorkloadKey::Container(job.clone()), 3_000_000_000),
            ]);
            for id in [&nginx, &job] {
                if let Some(w) = s.workloads.get_mut(&WorkloadKey::Container(id.clone())) {
                    w.identity = Some(ContainerIdentity {
                        id: id.clone(),
                        pod_uid: None,
                        runtime: Runtime::Containerd,
                    });
                }
            }
            s
        })
        .collect::<Vec<_>>();
    let meter = RaplMeter::discover(&host.sysfs(), "rapl-sysfs").unwrap();
    let mut options = options(host.dir.path().join("proc"), false);
    options.idle_policy = IdlePolicy::Requests;
    let mut m = Monitor::new(
        Box::new(meter),
        Box::new(Scripted(script.into())),
        options,
        NodeInfo::default(),
        Arc::new(SelfMetrics::new()),
    )
    .with_pods(Arc::new(arc_swap::ArcSwap::from_pointee(pods)));
    m.step(at(0));
    host.set_energy("intel-rapl:0", host.energy("intel-rapl:0") + 8_000_000);
    stat(100);
    let s = m.step(at(3));
    // One observation: the estimator takes all of it as idle.
    let idle = |key: &WorkloadKey| {
        s.workloads
            .iter()
            .find(|w| &w.key == key)
            .map_or(0, |w| w.energy.zones[&ZoneKind::Package].idle.0)
    };
    assert_eq!(idle(&WorkloadKey::Container(nginx.clone())), 500_000);
    assert_eq!(idle(&WorkloadKey::Container(job.clone())), 2_000_000);
    assert_eq!(idle(&WorkloadKey::System), 5_500_000);
    assert_eq!(idle(&WorkloadKey::Kernel), 0);
    let nginx_names = s
        .workloads
        .iter()
        .find(|w| w.key == WorkloadKey::Container(nginx.clone()))
        .unwrap();
    assert_eq!(nginx_names.container_name, "nginx");
}

/// Writes `<proc>/<pid>/cgroup` and `<proc>/<pid>/cmdline` on the fake host.
fn fake_process(host: &Host, pid: u32, cgroup: &str, cmdline: &[u8]) {
    let dir = host.dir.path().join("proc").join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cgroup"), format!("{cgroup}\n")).unwrap();
    std::fs::write(dir.join("cmdline"), cmdline).unwrap();
}

/// System processes 200 (a libvirt guest's QEMU), 201 (a helper in its scope), 202 (a plain
/// QEMU, `-name dev`) and 203 (sshd), and one container, for `n` intervals; from interval
/// `qemu_exits_at` on, process 202 is gone.
fn guests_script(n: u64, qemu_exits_at: u64) -> Vec<WorkloadSample> {
    (0..n)
        .map(|i| {
            let procs: Vec<(u32, &str, u64)> = [
                (200, "qemu-system-x86", 2_000_000_000 + i),
                (201, "virtiofsd", 100_000_000),
                (202, "qemu-system-x86", 700_000_000),
                (203, "sshd", 50_000_000),
            ]
            .into_iter()
            .filter(|(pid, _, _)| *pid != 202 || i < qemu_exits_at)
            .collect();
            let system: u64 = procs.iter().map(|p| p.2).sum();
            let mut s = crate::workload::testing::sample(&[
                (WorkloadKey::System, system),
                (container(1), 1_000_000_000),
            ]);
            for (pid, comm, ns) in procs {
                s.processes.push(crate::workload::ProcessUsage {
                    pid,
                    comm: comm.into(),
                    workload: WorkloadKey::System,
                    cpu: crate::power::units::CpuNanos(ns),
                    counters: Default::default(),
                });
            }
            s
        })
        .collect()
}

fn run_guests(host: &Host, processes: bool) -> Vec<Snapshot> {
    let mut m = host.monitor(guests_script(6, 4), processes);
    (0..6u64)
        .map(|i| {
            for (zone, step) in [
                ("intel-rapl:0", 9_000_000),
                ("intel-rapl:0:0", 5_000_000),
                ("intel-rapl:0:1", 1_000_000),
                ("intel-rapl:0:2", 2_000_000),
                ("intel-rapl:1", 15_000_000),
            ] {
                host.set_energy(zone, host.energy(zone) + step * (i + 1));
            }
            host.set_cpu(100 * i * i, 1000 + 100 * i);
            m.step(at(3 * i))
        })
        .collect()
}

#[test]
fn guests_are_the_sum_of_their_processes_and_inside_the_node() {
    let host = Host::new("intel-client-psys");
    let scope = "0::/machine.slice/machine-qemu\\x2d1\\x2dweb.scope";
    fake_process(
        &host,
        200,
        &format!("{scope}/libvirt/emulator"),
        b"/usr/bin/qemu-system-x86_64\0-name\0guest=web,debug-threads=on\0-uuid\x001b4e28ba-2fa1-4d3b-a3f5-8c5e6b7a9d01\0",
    );
    fake_process(
        &host,
        201,
        &format!("{scope}/libvirt"),
        b"/usr/libexec/virtiofsd\0--fd=3\0",
    );
    fake_process(
        &host,
        202,
        "0::/user.slice/user-1000.slice/session-2.scope",
        b"qemu-system-x86_64\0-name\0dev\0",
    );
    fake_process(
        &host,
        203,
        "0::/system.slice/sshd.service",
        b"/usr/sbin/sshd\0-D\0",
    );

    let with = run_guests(&host, true);
    let s = with.last().unwrap();
    let ids: Vec<&str> = s.vms.iter().map(|v| v.identity.id.as_str()).collect();
    assert_eq!(ids, ["1b4e28ba-2fa1-4d3b-a3f5-8c5e6b7a9d01", "dev"]);
    let web = &s.vms[0];
    assert_eq!(web.identity.name, "web");
    assert_eq!(web.identity.hypervisor, "kvm");
    assert_eq!(web.state, crate::snapshot::State::Running);
    assert!(matches!(
        s.vms[1].state,
        crate::snapshot::State::Terminated(_)
    ));
    assert!(web.energy.total().total().0 > 0);
    // Conservation: workloads add up to the node, whatever the VMs.
    for (kind, node) in &s.node.zones {
        assert_eq!(s.workloads_total(*kind), *node, "{kind}");
        // VMs are processes outside containers: inside system_processes + kernel_processes.
        let outside: u64 = s
            .workloads
            .iter()
            .filter(|w| !matches!(w.key, WorkloadKey::Container(_)))
            .map(|w| w.energy.zones.get(kind).map_or(0, |m| m.total().0))
            .sum();
        assert!(s.vms_total(*kind).total().0 <= outside, "{kind}");
    }
    // Each VM is exactly the sum of its processes (the helper belongs to the libvirt guest).
    for vm in &s.vms {
        let mut sum = crate::snapshot::EnergyByKind::default();
        let mut cpu = crate::power::units::CpuNanos::ZERO;
        for p in s
            .processes
            .iter()
            .filter(|p| p.vm.as_ref().map(|v| v.id.as_str()) == Some(vm.identity.id.as_str()))
        {
            sum += &p.energy;
            cpu += p.cpu_time;
        }
        assert_eq!(sum.zones, vm.energy.zones, "{}", vm.identity.id);
        assert_eq!(cpu, vm.cpu_time, "{}", vm.identity.id);
    }
    let helper = s.processes.iter().find(|p| p.pid == 201).unwrap();
    assert_eq!(helper.vm.as_ref().unwrap().id, web.identity.id);
    assert!(s
        .processes
        .iter()
        .find(|p| p.pid == 203)
        .unwrap()
        .vm
        .is_none());

    // Without process metrics the VMs are the same (processes are attributed for them anyway).
    let host2 = Host::new("intel-client-psys");
    for pid in [200, 201, 202, 203] {
        let from = host.dir.path().join("proc").join(pid.to_string());
        let to = host2.dir.path().join("proc").join(pid.to_string());
        std::fs::create_dir_all(&to).unwrap();
        for f in ["cgroup", "cmdline"] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
    let without = run_guests(&host2, false);
    let s2 = without.last().unwrap();
    assert!(s2.processes.is_empty());
    assert_eq!(s2.vms, s.vms);
}

#[test]
fn process_cpu_time_counts_from_the_process_start() {
    // sshd (203) had used 500 s (50,000 ticks) when the monitor first counted it; the first
    // interval's 50 ms are part of that reading, so nothing is counted twice.
    let host = Host::new("intel-client-psys");
    let dir = host.dir.path().join("proc/203");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stat"),
        "203 (sshd) S 1 203 203 0 -1 4194560 0 0 0 0 40000 10000 0 0 20 0 1 0 100 0 0\n",
    )
    .unwrap();
    let snapshots = run_guests(&host, true);
    let last = snapshots.last().unwrap();
    let sshd = last.processes.iter().find(|p| p.pid == 203).unwrap();
    let counted = sshd.cpu_time.0;
    assert!(counted > 0);
    assert_eq!(
        sshd.cpu_time_since_start.0,
        500_000_000_000 - 50_000_000 + counted,
        "stat at first sight (less that interval) plus what was counted since"
    );
    // A process whose stat cannot be read counts from when it was first seen.
    let virtiofsd = last.processes.iter().find(|p| p.pid == 201).unwrap();
    assert_eq!(virtiofsd.cpu_time_since_start, virtiofsd.cpu_time);
}
