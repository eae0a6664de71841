//! Hand-built snapshots: a two-socket server and a client CPU with every zone, and the
//! renders of each golden case.

use super::*;

pub(crate) fn split(dynamic_uj: u64, idle_uj: u64) -> ModeSplit {
    ModeSplit::new(Microjoules(dynamic_uj), Microjoules(idle_uj))
}

/// Energy by kind from `(kind, dynamic µJ, idle µJ)`; `other` as given.
pub(crate) fn energy(zones: &[(ZoneKind, u64, u64)], other: (u64, u64)) -> EnergyByKind {
    EnergyByKind {
        zones: zones
            .iter()
            .map(|&(kind, d, i)| (kind, split(d, i)))
            .collect(),
        other: split(other.0, other.1),
    }
}

/// Scales every value of `base` by `factor` (to give workloads different but related numbers).
pub(crate) fn scaled(base: &EnergyByKind, factor: f64) -> EnergyByKind {
    let scale = |m: ModeSplit| {
        split(
            (m.dynamic.0 as f64 * factor).round() as u64,
            (m.idle.0 as f64 * factor).round() as u64,
        )
    };
    EnergyByKind {
        zones: base.zones.iter().map(|(k, m)| (*k, scale(*m))).collect(),
        other: scale(base.other),
    }
}

pub(crate) fn container(
    id_prefix: &str,
    pod: &str,
    name: &str,
    namespace: &str,
    energy: EnergyByKind,
    cpu_ms: u64,
    state: State,
) -> WorkloadEnergy {
    let id = format!("{id_prefix:0<64}");
    WorkloadEnergy {
        key: WorkloadKey::Container(id.clone()),
        identity: Some(ContainerIdentity {
            id,
            pod_uid: Some("6b2d2c5e-5f0a-4c1e-9d7a-0e4f5a6b7c8d".into()),
            runtime: Runtime::Containerd,
        }),
        pod_name: pod.into(),
        container_name: name.into(),
        namespace: namespace.into(),
        energy,
        interval: EnergyByKind::default(),
        cpu_time: CpuNanos(cpu_ms * 1_000_000 + 250_000),
        counters: Default::default(),
        state,
    }
}

pub(crate) fn pseudo(key: WorkloadKey, energy: EnergyByKind, cpu_ms: u64) -> WorkloadEnergy {
    WorkloadEnergy::running(key, energy, CpuNanos(cpu_ms * 1_000_000))
}

pub(crate) fn process(
    pid: u32,
    comm: &str,
    workload: WorkloadKey,
    energy: EnergyByKind,
) -> ProcessEnergy {
    ProcessEnergy {
        pid,
        comm: comm.into(),
        workload,
        vm: None,
        energy,
        interval: Default::default(),
        cpu_time: CpuNanos(u64::from(pid) * 1_000_500),
        cpu_time_since_start: CpuNanos(u64::from(pid) * 2_000_500),
        counters: Default::default(),
        state: State::Running,
    }
}

/// Sets the node totals to the sum over workloads and spreads each kind over its sockets'
/// zones (socket 0 gets the remainder), so the snapshot conserves energy like a real one.
pub(crate) fn finish_node(s: &mut Snapshot, zones: &[(ZoneKind, u32)]) {
    let mut node = EnergyByKind::default();
    for w in &s.workloads {
        for (kind, m) in &w.energy.zones {
            *node.zones.entry(*kind).or_default() += *m;
        }
        node.other += w.energy.other;
    }
    for &(kind, socket) in zones {
        let sockets = zones.iter().filter(|(k, _)| *k == kind).count() as u64;
        let total = node.zones.get(&kind).copied().unwrap_or_default();
        let share = |v: Microjoules| {
            let part = v.0 / sockets;
            Microjoules(if socket == 0 {
                v.0 - part * (sockets - 1)
            } else {
                part
            })
        };
        s.node_zones.insert(
            ZoneId { kind, socket },
            NodeZone {
                path: format!("/sys/class/powercap/intel-rapl:{socket}"),
                energy: ModeSplit {
                    dynamic: share(total.dynamic),
                    idle: share(total.idle),
                },
                watts: Watts(40.0),
                idle_watts: Watts(12.5),
            },
        );
    }
    s.node = node;
}

pub(crate) fn base_snapshot(node: &str, power_source: &'static str, platform: &str) -> Snapshot {
    let mut s = Snapshot::empty(
        NodeInfo {
            node_name: node.into(),
            cpu_architecture: "x86_64".into(),
            components_power_source: power_source.into(),
            platform_power_source: platform.into(),
            cpus: Vec::new(),
        },
        power_source,
        "procfs",
    );
    s.taken_at = UNIX_EPOCH + Duration::from_millis(1_750_000_123_456);
    s.interval = Duration::from_secs(3);
    s.sequence = 4242;
    s
}

/// A two-socket server with package and dram per socket, pods, pseudo containers and one
/// terminated container still inside the terminated-workload window.
pub(crate) fn server_two_sockets() -> Snapshot {
    let mut s = base_snapshot("worker-1", "rapl-sysfs", "none");
    let base = energy(
        &[
            (ZoneKind::Package, 1_234_567_890, 456_789_012),
            (ZoneKind::Dram, 98_765_432, 54_321_098),
        ],
        (0, 0),
    );
    let gone = UNIX_EPOCH + Duration::from_secs(1_750_000_100);
    s.workloads = vec![
        container(
            "4f2a9c",
            "nginx-7c5d8b9f4-x2k8p",
            "nginx",
            "default",
            scaled(&base, 1.0),
            812_345,
            State::Running,
        ),
        container(
            "9b1e77",
            "postgres-0",
            "postgres",
            "db",
            scaled(&base, 2.5),
            2_003_004,
            State::Running,
        ),
        container(
            "c0ffee",
            "report-28913370-abcde",
            "report",
            "batch",
            scaled(&base, 0.125),
            64_000,
            State::Terminated(gone),
        ),
        pseudo(WorkloadKey::System, scaled(&base, 0.5), 301_000),
        pseudo(WorkloadKey::Kernel, scaled(&base, 0.01), 12_000),
    ];
    s.processes = vec![
        process(
            4101,
            "nginx",
            s.workloads[0].key.clone(),
            scaled(&base, 0.75),
        ),
        process(
            4102,
            "nginx",
            s.workloads[0].key.clone(),
            scaled(&base, 0.25),
        ),
        process(
            5001,
            "postgres",
            s.workloads[1].key.clone(),
            scaled(&base, 2.5),
        ),
        process(1, "systemd", WorkloadKey::System, scaled(&base, 0.5)),
        process(2, "kthreadd", WorkloadKey::Kernel, scaled(&base, 0.01)),
    ];
    finish_node(
        &mut s,
        &[
            (ZoneKind::Package, 0),
            (ZoneKind::Package, 1),
            (ZoneKind::Dram, 0),
            (ZoneKind::Dram, 1),
        ],
    );
    s
}

/// A laptop-like client with every RAPL zone (package, core, uncore, dram, psys), exact
/// scheduler CPU time, a container without pod names, label values that need escaping, and a
/// libvirt guest (its QEMU process is one of the system processes).
pub(crate) fn client_all_zones() -> Snapshot {
    let mut s = base_snapshot("laptop", "fake-rapl", "fake-rapl");
    s.cpu_time_source = "ebpf";
    s.cpu_time_exact = true;
    let base = energy(
        &[
            (ZoneKind::Package, 20_000_000, 10_000_000),
            (ZoneKind::Core, 12_000_000, 4_000_000),
            (ZoneKind::Uncore, 1_000_000, 500_000),
            (ZoneKind::Dram, 3_000_000, 1_500_000),
            (ZoneKind::Psys, 33_000_001, 16_000_000),
        ],
        (10_000_001, 4_500_000),
    );
    s.workloads = vec![
        container(
            "abc123",
            "",
            "",
            "",
            scaled(&base, 1.0),
            1_500,
            State::Running,
        ),
        container(
            "def456",
            "weird-\"pod\"\\name",
            "line\nbreak",
            "ns",
            scaled(&base, 0.333),
            7,
            State::Running,
        ),
        pseudo(WorkloadKey::System, scaled(&base, 3.0), 99_999),
        pseudo(WorkloadKey::Kernel, EnergyByKind::default(), 0),
    ];
    s.processes = vec![
        process(
            31337,
            "my \"tool\"",
            s.workloads[0].key.clone(),
            scaled(&base, 1.0),
        ),
        process(
            777,
            "back\\slash",
            s.workloads[1].key.clone(),
            scaled(&base, 0.333),
        ),
        process(1, "systemd", WorkloadKey::System, scaled(&base, 2.5)),
        process(
            4242,
            "qemu-system-x86",
            WorkloadKey::System,
            scaled(&base, 0.5),
        ),
    ];
    let guest = VmIdentity {
        id: "1b4e28ba-2fa1-4d3b-a3f5-8c5e6b7a9d01".into(),
        name: "web-01".into(),
        hypervisor: "kvm",
    };
    s.processes[3].vm = Some(std::sync::Arc::new(guest.clone()));
    s.vms = vec![VmEnergy {
        identity: guest,
        energy: scaled(&base, 0.5),
        interval: EnergyByKind::default(),
        cpu_time: s.processes[3].cpu_time,
        counters: Default::default(),
        state: State::Running,
    }];
    finish_node(
        &mut s,
        &[
            (ZoneKind::Package, 0),
            (ZoneKind::Core, 0),
            (ZoneKind::Uncore, 0),
            (ZoneKind::Dram, 0),
            (ZoneKind::Psys, 0),
        ],
    );
    s
}

pub(crate) fn build_info() -> BuildInfo {
    BuildInfo {
        branch: "main".into(),
        revision: "0123456789abcdef0123456789abcdef01234567".into(),
        version: "0.1.0".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        rust_version: "rustc 1.95.0".into(),
    }
}

pub(crate) fn errors() -> SelfMetrics {
    let m = SelfMetrics::new();
    m.record_n("procfs", "vanished", 17);
    m.record("rapl", "garbage");
    m.set_program_stats("kepler_sched_switch", Duration::from_micros(90), 1000);
    m
}

pub(crate) fn render(
    s: &Snapshot,
    metrics: &SelfMetrics,
    process_metrics: bool,
    format: Format,
) -> String {
    render_classic(
        s,
        metrics,
        &RenderOptions {
            process_metrics,
            ..Default::default()
        },
        &build_info(),
        format,
    )
}

/// Every golden case: file name, rendered output, whether it is 0.0.4 text.
pub(crate) fn cases() -> Vec<(&'static str, String, Format)> {
    let none = SelfMetrics::new();
    let some = errors();
    let before_first = Snapshot::empty(
        NodeInfo {
            node_name: "fresh".into(),
            cpu_architecture: "aarch64".into(),
            components_power_source: "estimator".into(),
            platform_power_source: "none".into(),
            cpus: Vec::new(),
        },
        "estimator",
        "procfs",
    );
    vec![
        (
            "server_two_sockets.prom",
            render(&server_two_sockets(), &none, false, Format::Text),
            Format::Text,
        ),
        (
            "server_two_sockets_processes.prom",
            render(&server_two_sockets(), &none, true, Format::Text),
            Format::Text,
        ),
        (
            "client_all_zones_processes_exact.prom",
            render(&client_all_zones(), &some, true, Format::Text),
            Format::Text,
        ),
        (
            "client_all_zones_exact.prom",
            render(&client_all_zones(), &some, false, Format::Text),
            Format::Text,
        ),
        (
            "client_all_zones_openmetrics.prom",
            render(&client_all_zones(), &some, true, Format::OpenMetrics),
            Format::OpenMetrics,
        ),
        (
            "empty_snapshot.prom",
            render(&before_first, &none, false, Format::Text),
            Format::Text,
        ),
    ]
}
