#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Exposition tests: hand-built snapshots rendered as Kepler's classic family and compared
//! byte for byte with golden files (`UPDATE_GOLDEN=1` rewrites them), checked with the real
//! `promtool check metrics`, checked against the metric names and label sets of
//! docs/metrics.md, and served through the axum router without a socket.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use kepler_rs::export::prometheus::{
    render_classic, BuildInfo, Format, RenderOptions, CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_TEXT,
    PIECE_BYTES,
};
use kepler_rs::power::units::{CpuNanos, Microjoules, Watts};
use kepler_rs::power::{ZoneId, ZoneKind};
use kepler_rs::selfmetrics::SelfMetrics;
use kepler_rs::server::{router, serve, AppState, MAX_PARALLEL_SCRAPES};
use kepler_rs::snapshot::{
    EnergyByKind, ModeSplit, NodeInfo, NodeZone, ProcessEnergy, Snapshot, State, WorkloadEnergy,
};
use kepler_rs::workload::{ContainerIdentity, Runtime, WorkloadKey};
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------------
// Snapshot builders

fn split(dynamic_uj: u64, idle_uj: u64) -> ModeSplit {
    ModeSplit {
        dynamic: Microjoules(dynamic_uj),
        idle: Microjoules(idle_uj),
    }
}

/// Energy by kind from `(kind, dynamic µJ, idle µJ)`; `other` as given.
fn energy(zones: &[(ZoneKind, u64, u64)], other: (u64, u64)) -> EnergyByKind {
    EnergyByKind {
        zones: zones
            .iter()
            .map(|&(kind, d, i)| (kind, split(d, i)))
            .collect(),
        other: split(other.0, other.1),
    }
}

/// Scales every value of `base` by `factor` (to give workloads different but related numbers).
fn scaled(base: &EnergyByKind, factor: f64) -> EnergyByKind {
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

fn container(
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

fn pseudo(key: WorkloadKey, energy: EnergyByKind, cpu_ms: u64) -> WorkloadEnergy {
    WorkloadEnergy {
        key,
        identity: None,
        pod_name: String::new(),
        container_name: String::new(),
        namespace: String::new(),
        energy,
        interval: EnergyByKind::default(),
        cpu_time: CpuNanos(cpu_ms * 1_000_000),
        counters: Default::default(),
        state: State::Running,
    }
}

fn process(pid: u32, comm: &str, workload: WorkloadKey, energy: EnergyByKind) -> ProcessEnergy {
    ProcessEnergy {
        pid,
        comm: comm.into(),
        workload,
        energy,
        interval: Default::default(),
        cpu_time: CpuNanos(u64::from(pid) * 1_000_500),
        counters: Default::default(),
        state: State::Running,
    }
}

/// Sets the node totals to the sum over workloads and spreads each kind over its sockets'
/// zones (socket 0 gets the remainder), so the snapshot conserves energy like a real one.
fn finish_node(s: &mut Snapshot, zones: &[(ZoneKind, u32)]) {
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

fn base_snapshot(node: &str, power_source: &'static str, platform: &str) -> Snapshot {
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
fn server_two_sockets() -> Snapshot {
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
/// scheduler CPU time, a container without pod names, and label values that need escaping.
fn client_all_zones() -> Snapshot {
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
        process(1, "systemd", WorkloadKey::System, scaled(&base, 3.0)),
    ];
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

fn build_info() -> BuildInfo {
    BuildInfo {
        branch: "main".into(),
        revision: "0123456789abcdef0123456789abcdef01234567".into(),
        version: "0.1.0".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        rust_version: "rustc 1.95.0".into(),
    }
}

fn errors() -> SelfMetrics {
    let m = SelfMetrics::new();
    m.record_n("procfs", "vanished", 17);
    m.record("rapl", "garbage");
    m.set_program_stats("kepler_sched_switch", Duration::from_micros(90), 1000);
    m
}

fn render(s: &Snapshot, metrics: &SelfMetrics, process_metrics: bool, format: Format) -> String {
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
fn cases() -> Vec<(&'static str, String, Format)> {
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

// ---------------------------------------------------------------------------------------------
// Golden files

#[test]
fn golden_outputs() {
    for (name, output, _) in cases() {
        common::check_golden(name, &output);
    }
}

#[test]
fn rendering_is_deterministic() {
    for ((name, a, _), (_, b, _)) in cases().into_iter().zip(cases()) {
        assert_eq!(a, b, "{name} changed between two renders");
    }
}

// ---------------------------------------------------------------------------------------------
// promtool

#[test]
fn promtool_accepts_text_outputs() {
    for (name, output, format) in cases() {
        // promtool 2.42 `check metrics` parses only the 0.0.4 text format.
        if format == Format::Text {
            common::assert_promtool_accepts(name, &output);
        }
    }
}

#[test]
fn promtool_catches_what_we_guard_against() {
    // The harness must fail on real problems: a bad escape and a counter without `_total`.
    let broken = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"\\q\"} 1\n";
    let Some((code, _)) = common::promtool_check(broken) else {
        return;
    };
    assert_eq!(code, 1, "a parse error must fail");
    let lint = "# HELP x X.\n# TYPE x counter\nx 1\n";
    let (code, printed) = common::promtool_check(lint).unwrap();
    assert_eq!(code, 3, "{printed}");
    assert!(!printed.lines().all(common::is_accepted_lint));
}

// ---------------------------------------------------------------------------------------------
// The metric contract (docs/metrics.md)

/// A parsed sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses one 0.0.4 sample line, unescaping label values.
fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap();
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    let mut chars = line[name_end..].chars().peekable();
    if chars.peek() == Some(&'{') {
        chars.next();
        loop {
            let label: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match chars.next().unwrap() {
                    '\\' => match chars.next().unwrap() {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => panic!("bad escape \\{other} in {line}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw line feed in {line}"),
                    c => value.push(c),
                }
            }
            labels.push((label, value));
            match chars.next() {
                Some(',') => {}
                Some('}') => break,
                other => panic!("unexpected {other:?} in {line}"),
            }
        }
    }
    let rest: String = chars.collect();
    let value = match rest.trim() {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap(),
    };
    Sample {
        name,
        labels,
        value,
    }
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(parse_sample)
        .collect()
}

/// Every metric name docs/metrics.md allows in the classic family, plus our
/// `kepler_exporter_*` self-metrics.
fn spec_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for level in ["container", "process", "vm", "node"] {
        for zone in [
            "package", "core", "uncore", "dram", "other", "platform", "gpu",
        ] {
            names.insert(format!("kepler_{level}_{zone}_joules_total"));
        }
    }
    for level in ["container", "process"] {
        names.insert(format!("kepler_{level}_joules_total"));
    }
    for level in ["container", "process", "vm"] {
        for usage in [
            "bpf_cpu_time_ms_total",
            "cpu_cycles_total",
            "cpu_instructions_total",
            "cache_miss_total",
        ] {
            names.insert(format!("kepler_{level}_{usage}"));
        }
    }
    for name in [
        "kepler_node_info",
        "kepler_exporter_build_info",
        "kepler_exporter_errors_total",
        "kepler_exporter_cpu_time_source",
        "kepler_exporter_power_source",
        "kepler_exporter_ebpf_program_run_seconds_total",
        "kepler_exporter_ebpf_program_runs_total",
        "kepler_exporter_snapshot_timestamp_seconds",
        "kepler_exporter_snapshot_sequence",
    ] {
        names.insert(name.to_string());
    }
    names
}

/// The exact label names (in order) of a classic metric.
fn expected_labels(name: &str) -> &'static [&'static str] {
    const CONTAINER: &[&str] = &[
        "container_id",
        "pod_name",
        "container_name",
        "container_namespace",
        "mode",
        "source",
    ];
    const PROCESS: &[&str] = &["pid", "container_id", "vm_id", "command", "mode", "source"];
    const NODE: &[&str] = &["package", "instance", "mode", "source"];
    match name {
        "kepler_container_bpf_cpu_time_ms_total" => &CONTAINER[..4],
        "kepler_process_bpf_cpu_time_ms_total" => &PROCESS[..4],
        "kepler_node_info" => &[
            "cpu_architecture",
            "components_power_source",
            "platform_power_source",
            "source",
        ],
        "kepler_exporter_build_info" => &["branch", "revision", "version", "os", "arch"],
        "kepler_exporter_errors_total" => &["component", "reason"],
        "kepler_exporter_ebpf_program_run_seconds_total"
        | "kepler_exporter_ebpf_program_runs_total" => &["program"],
        "kepler_exporter_cpu_time_source" | "kepler_exporter_power_source" => &["source"],
        "kepler_exporter_snapshot_timestamp_seconds" | "kepler_exporter_snapshot_sequence" => &[],
        n if n.starts_with("kepler_container_") => CONTAINER,
        n if n.starts_with("kepler_process_") => PROCESS,
        n if n.starts_with("kepler_node_") => NODE,
        n => panic!("no label set known for {n}"),
    }
}

#[test]
fn names_and_labels_follow_the_spec() {
    let allowed = spec_names();
    let mut seen = BTreeSet::new();
    for (case, output, format) in cases() {
        if format != Format::Text {
            continue;
        }
        for line in output.lines() {
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                let name = rest.split(' ').next().unwrap();
                assert!(allowed.contains(name), "{case}: stray family {name}");
            }
        }
        for sample in samples(&output) {
            assert!(
                allowed.contains(&sample.name),
                "{case}: stray metric {}",
                sample.name
            );
            let names: Vec<&str> = sample.labels.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names, expected_labels(&sample.name), "{case}: {sample:?}");
            if let Some((_, mode)) = sample.labels.iter().find(|(k, _)| k == "mode") {
                assert!(mode == "dynamic" || mode == "idle", "{case}: {sample:?}");
            }
            assert!(sample.value.is_finite() && sample.value >= 0.0);
            seen.insert(sample.name);
        }
    }
    assert!(!seen.contains("kepler_node_joules_total"));
    // Everything we can emit without a GPU, VMs or hardware counters is covered by the cases.
    let not_yet = |n: &&String| {
        n.contains("_gpu_")
            || n.starts_with("kepler_vm_")
            || n.contains("cpu_cycles")
            || n.contains("cpu_instructions")
            || n.contains("cache_miss")
    };
    let expected: BTreeSet<String> = allowed.iter().filter(|n| !not_yet(n)).cloned().collect();
    assert_eq!(seen, expected);
}

#[test]
fn values_are_joules_and_pseudo_containers_are_named() {
    let out = render(
        &server_two_sockets(),
        &SelfMetrics::new(),
        true,
        Format::Text,
    );
    let all = samples(&out);
    let find = |name: &str, labels: &[(&str, &str)]| -> f64 {
        all.iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
            .value
    };
    // 1_234_567_890 µJ package + 98_765_432 µJ dram (dynamic) for nginx.
    assert_eq!(
        find(
            "kepler_container_joules_total",
            &[("pod_name", "nginx-7c5d8b9f4-x2k8p"), ("mode", "dynamic")]
        ),
        1_333.333_322
    );
    let kernel = [
        ("container_id", "kernel_processes"),
        ("pod_name", "kernel_processes"),
        ("container_name", "kernel_processes"),
        ("container_namespace", "kernel"),
        ("mode", "idle"),
    ];
    assert_eq!(
        find("kepler_container_package_joules_total", &kernel),
        4.567_89
    );
    let system = [
        ("container_id", "system_processes"),
        ("container_name", "system_processes"),
        ("container_namespace", "system"),
    ];
    find("kepler_container_dram_joules_total", &system);
    // The terminated container is still served.
    find(
        "kepler_container_joules_total",
        &[
            ("container_name", "report"),
            ("container_namespace", "batch"),
        ],
    );
    // Node: per socket, sockets sum to the node total.
    let node: f64 = ["0", "1"]
        .iter()
        .map(|p| {
            find(
                "kepler_node_package_joules_total",
                &[
                    ("package", p),
                    ("instance", "worker-1"),
                    ("mode", "dynamic"),
                ],
            )
        })
        .sum();
    let containers: f64 = all
        .iter()
        .filter(|s| {
            s.name == "kepler_container_package_joules_total"
                && s.labels.iter().any(|(k, v)| k == "mode" && v == "dynamic")
        })
        .map(|s| s.value)
        .sum();
    assert!((node - containers).abs() < 1e-6, "{node} vs {containers}");
    // Process labels.
    find(
        "kepler_process_joules_total",
        &[
            ("pid", "4101"),
            ("command", "nginx"),
            ("vm_id", ""),
            ("source", "rapl-sysfs"),
        ],
    );
    // No platform zone: no platform or node other series, but container other exists.
    assert!(!out.contains("platform_joules_total"));
    assert!(!out.contains("kepler_node_other_joules_total"));
    assert!(out.contains("kepler_container_other_joules_total{"));
}

#[test]
fn node_other_uses_the_psys_socket() {
    let out = render(
        &client_all_zones(),
        &SelfMetrics::new(),
        false,
        Format::Text,
    );
    let other: Vec<Sample> = samples(&out)
        .into_iter()
        .filter(|s| s.name == "kepler_node_other_joules_total")
        .collect();
    assert_eq!(other.len(), 2);
    assert_eq!(other[0].labels[0], ("package".into(), "0".into()));
    assert_eq!(other[0].labels[1], ("instance".into(), "laptop".into()));
    // 3 + 0.333 + 1 (+ 0 for the kernel) times 10.000001 J of `other`, dynamic.
    assert!(
        (other[0].value - 43.330_004_333).abs() < 1e-6,
        "{}",
        other[0].value
    );
    // Escaped label values survive the round trip.
    let weird = samples(&out)
        .into_iter()
        .find(|s| s.labels.iter().any(|(_, v)| v == "line\nbreak"))
        .unwrap();
    assert!(weird
        .labels
        .iter()
        .any(|(k, v)| k == "pod_name" && v == "weird-\"pod\"\\name"));
}

#[test]
fn openmetrics_matches_text_but_for_counter_family_names_and_eof() {
    let s = client_all_zones();
    let m = errors();
    let text = render(&s, &m, true, Format::Text);
    let om = render(&s, &m, true, Format::OpenMetrics);
    assert!(om.ends_with("\n# EOF\n"));
    assert_eq!(om.matches("# EOF").count(), 1);
    let counters: BTreeSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    assert!(counters.contains("kepler_container_joules"));
    for line in om.lines().filter(|l| !l.starts_with('#')) {
        let name = parse_sample(line).name;
        if let Some(family) = name.strip_suffix("_total") {
            assert!(counters.contains(family), "{line}");
        }
    }
    let back: String = om
        .lines()
        .filter(|l| *l != "# EOF")
        .map(|line| {
            for prefix in ["# HELP ", "# TYPE "] {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let (name, tail) = rest.split_once(' ').unwrap();
                    if counters.contains(name) {
                        return format!("{prefix}{name}_total {tail}\n");
                    }
                }
            }
            format!("{line}\n")
        })
        .collect();
    assert_eq!(back, text);
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn state(snapshot: Snapshot, process_metrics: bool) -> AppState {
    AppState {
        snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
        self_metrics: Arc::new(errors()),
        render: RenderOptions {
            process_metrics,
            ..Default::default()
        },
        build: build_info(),
    }
}

async fn get(
    app: axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, BTreeMap<String, String>, Vec<u8>) {
    let mut request = Request::get(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

#[tokio::test]
async fn metrics_endpoint_serves_text_by_default() {
    let st = state(client_all_zones(), true);
    let expected = render(&client_all_zones(), &errors(), true, Format::Text);
    let (status, headers, body) = get(router(st), "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], CONTENT_TYPE_TEXT);
    assert!(!headers.contains_key("content-encoding"));
    assert_eq!(String::from_utf8(body).unwrap(), expected);
}

#[tokio::test]
async fn metrics_endpoint_negotiates_openmetrics() {
    let st = state(client_all_zones(), false);
    // What Prometheus 2.x sends.
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                  version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, headers, body) = get(router(st.clone()), "/metrics", &[("accept", accept)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], CONTENT_TYPE_OPENMETRICS);
    let body = String::from_utf8(body).unwrap();
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE kepler_container_joules counter\n"));

    let (_, headers, _) = get(router(st), "/metrics", &[("accept", "text/plain")]).await;
    assert_eq!(headers["content-type"], CONTENT_TYPE_TEXT);
}

/// The client snapshot with 2,000 more processes: a page of more than 20 pieces.
fn with_2000_processes() -> Snapshot {
    let mut s = client_all_zones();
    let template = s.processes[0].clone();
    for pid in 10_000..12_000 {
        s.processes.push(ProcessEnergy {
            pid,
            comm: format!("worker-{pid}"),
            ..template.clone()
        });
    }
    s
}

/// A node with 2,000 processes: `/metrics` is sent in pieces of about `PIECE_BYTES` (never one
/// buffer the size of the page) that join to exactly the rendered page.
#[tokio::test]
async fn large_pages_are_sent_in_pieces() {
    let s = with_2000_processes();
    let expected = render(&s, &errors(), true, Format::Text);
    assert!(expected.len() > 20 * PIECE_BYTES, "{}", expected.len());
    let response = router(state(s, true))
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut pieces = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            pieces.push(data);
        }
    }
    assert!(pieces.len() > 20, "{} pieces", pieces.len());
    let largest = pieces.iter().map(|p| p.len()).max().unwrap();
    assert!(largest < PIECE_BYTES + 1024, "a piece of {largest} bytes");
    assert_eq!(pieces.concat(), expected.as_bytes());
}

/// `/metrics` renders a page while it is sent: each piece goes out when it is cut, and the
/// render stops as soon as its reader is gone (a client that hangs up mid-page).
#[test]
fn a_render_hands_over_each_piece_and_stops_when_the_reader_is_gone() {
    let s = with_2000_processes();
    let options = RenderOptions {
        process_metrics: true,
        ..Default::default()
    };
    let each = |send: &mut dyn FnMut(String) -> bool| {
        kepler_rs::export::prometheus::render_each_piece(
            &s,
            &errors(),
            &options,
            &build_info(),
            Format::Text,
            send,
        )
    };
    let mut page = String::new();
    let mut pieces = 0;
    assert!(each(&mut |piece| {
        pieces += 1;
        page.push_str(&piece);
        true
    }));
    assert!(pieces > 20, "{pieces} pieces");
    assert_eq!(page, render(&s, &errors(), true, Format::Text));
    let mut taken = 0;
    assert!(!each(&mut |_| {
        taken += 1;
        taken < 3
    }));
    assert_eq!(taken, 3, "the render went on after its reader was gone");
}

/// At most `MAX_PARALLEL_SCRAPES` scrapes render at once: with that many unread (each render
/// waits with two pieces queued) one more is answered 503, and once one of them is dropped its
/// render stops and a scrape is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_scrapes_beyond_the_limit_are_answered_503() {
    let app = router(state(with_2000_processes(), true));
    let get = || {
        app.clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
    };
    let mut unread = Vec::new();
    for _ in 0..MAX_PARALLEL_SCRAPES {
        let response = get().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        unread.push(response);
    }
    let refused = get().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(unread.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = get().await.unwrap();
        if response.status() == StatusCode::OK {
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            // The whole page (its last series), and the refusals counted (one, or more while the
            // dropped render was still stopping).
            assert!(body.contains("kepler_process_uncore_joules_total{pid=\"11999\""));
            assert!(body.contains(
                "kepler_exporter_errors_total{component=\"server\",reason=\"too_many_scrapes\"} "
            ));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no place freed by the dropped scrape"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_endpoint_gzips_when_asked() {
    let st = state(server_two_sockets(), true);
    let expected = render(&server_two_sockets(), &errors(), true, Format::Text);
    let (status, headers, body) = get(router(st), "/metrics", &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["content-type"], CONTENT_TYPE_TEXT);
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, expected);
    assert!(
        body.len() < plain.len() / 4,
        "{} vs {}",
        body.len(),
        plain.len()
    );
}

#[tokio::test]
async fn scrapes_read_the_latest_published_snapshot() {
    let st = state(server_two_sockets(), false);
    let (_, _, before) = get(router(st.clone()), "/metrics", &[]).await;
    assert!(String::from_utf8(before)
        .unwrap()
        .contains("kepler_exporter_snapshot_sequence 4242\n"));
    let mut next = server_two_sockets();
    next.sequence = 4243;
    next.taken_at += Duration::from_secs(3);
    st.snapshot.store(Arc::new(next));
    let (_, _, after) = get(router(st.clone()), "/metrics", &[]).await;
    let after = String::from_utf8(after).unwrap();
    assert!(after.contains("kepler_exporter_snapshot_sequence 4243\n"));
    assert!(after.contains("kepler_exporter_snapshot_timestamp_seconds 1750000126.456\n"));
    // Scraping twice does not change anything: nothing is measured on a scrape.
    let (_, _, again) = get(router(st), "/metrics", &[]).await;
    assert_eq!(String::from_utf8(again).unwrap(), after);
}

#[tokio::test]
async fn healthz_index_and_unknown_paths() {
    let st = state(
        Snapshot::empty(NodeInfo::default(), "estimator", "procfs"),
        false,
    );
    let (status, _, body) = get(router(st.clone()), "/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"ok");
    for query in ["", "?verbose=0", "?x=1"] {
        let (_, _, body) = get(router(st.clone()), &format!("/healthz{query}"), &[]).await;
        assert_eq!(body, b"ok", "Kepler's exact answer for {query:?}");
    }
    let (status, _, body) = get(router(st.clone()), "/healthz?verbose=1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "ok\ncpu_time_source procfs\ncpu_time_exact false\npower_source estimator\nsnapshot_sequence 0\n"
    );
    let (status, headers, body) = get(router(st.clone()), "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].starts_with("text/html"));
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("href=\"metrics\""));
    for path in ["/nope", "/metrics/extra", "/metricsx"] {
        let (status, _, _) = get(router(st.clone()), path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let response = router(st)
        .oneshot(
            Request::post("/metrics")
                .header(header::CONTENT_LENGTH, "0")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn serve_answers_on_a_socket_and_shuts_down() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let st = state(server_two_sockets(), false);
    let server = tokio::spawn(serve(listener, st, async {
        let _ = stopped.await;
    }));
    // A hand-written HTTP/1.1 request over a plain blocking socket (no client crate needed).
    let response = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn render_time_is_reasonable_for_a_large_node() {
    // Not a benchmark (that comes with benches/); a guard against accidental quadratic work.
    let mut s = client_all_zones();
    let template = s.workloads[0].clone();
    let ptemplate = s.processes[0].clone();
    s.workloads = (0..100)
        .map(|i| {
            let mut w = template.clone();
            w.key = WorkloadKey::Container(format!("{i:064x}"));
            w.pod_name = format!("pod-{i}");
            w
        })
        .collect();
    s.processes = (0..1000)
        .map(|i| {
            let mut p = ptemplate.clone();
            p.pid = 1000 + i;
            p.workload = s.workloads[(i % 100) as usize].key.clone();
            p
        })
        .collect();
    let start = std::time::Instant::now();
    let out = render(&s, &SelfMetrics::new(), true, Format::Text);
    let elapsed = start.elapsed();
    assert!(out.lines().count() > 14_000);
    println!("rendered {} bytes in {elapsed:?}", out.len());
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

// ---------------------------------------------------------------------------------------------
// The metrics reference (docs/metrics.md) is generated from the code's families

/// One reference row per family: type, OTLP unit, label names, help.
fn reference_rows(
    s: &Snapshot,
    metrics: &SelfMetrics,
    schema: kepler_rs::config::Schema,
) -> BTreeMap<String, (String, String, String, String)> {
    let options = RenderOptions {
        process_metrics: true,
        schema,
    };
    let build = build_info();
    let mut rows = BTreeMap::new();
    for family in kepler_rs::export::prometheus::families(s, metrics, &options, &build) {
        let mut labels = Vec::new();
        family.for_each_sample(|l, _| {
            if labels.is_empty() {
                labels = l.iter().map(|(k, _)| format!("`{k}`")).collect();
            }
        });
        rows.insert(
            family.name.to_string(),
            (
                format!("{:?}", family.ty).to_lowercase(),
                family.unit.to_string(),
                labels.join(", "),
                family.help.replace('|', "\\|"),
            ),
        );
    }
    rows
}

fn reference_table(rows: &BTreeMap<String, (String, String, String, String)>) -> String {
    let mut out =
        String::from("| name | type | OTLP unit | labels | meaning |\n|---|---|---|---|---|\n");
    for (name, (ty, unit, labels, help)) in rows {
        out.push_str(&format!(
            "| `{name}` | {ty} | {unit} | {labels} | {help} |\n"
        ));
    }
    out
}

#[test]
fn metrics_reference_is_up_to_date() {
    use kepler_rs::config::Schema;
    let mut s = client_all_zones();
    s.info.cpus = vec![kepler_rs::host::CpuInfo {
        processor: "0".into(),
        vendor_id: "GenuineIntel".into(),
        model_name: "Reference CPU".into(),
        physical_id: "0".into(),
        core_id: "0".into(),
    }];
    s.hardware_counters = kepler_rs::workload::HardwareCounter::ALL
        .into_iter()
        .fold(kepler_rs::workload::HardwareCounterSet::NONE, |set, c| {
            set.with(c)
        });
    let metrics = errors();
    metrics.record_export("push", "sent", 1);
    let classic = reference_rows(&s, &metrics, Schema::Classic);
    let modern = reference_rows(&s, &metrics, Schema::Modern);
    let common_rows: BTreeMap<_, _> = classic
        .iter()
        .filter(|(k, _)| modern.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let only = |rows: &BTreeMap<String, (String, String, String, String)>| -> BTreeMap<_, _> {
        rows.iter()
            .filter(|(k, _)| !common_rows.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let doc = format!(
        "# Metrics reference\n\n\
         Generated from the exporter's metric families by `kepler-rs/tests/exposition.rs`\n\
         (`UPDATE_DOCS=1 cargo test -p kepler-rs --test exposition metrics_reference` rewrites it;\n\
         CI fails when it is stale). `metrics.schema` chooses the families: `classic` (default),\n\
         `modern` or `both`. Labels are listed in exposition order. Energy counters are in joules\n\
         and monotonic; process series appear only with `--metrics.processes`;\n\
         `*_bpf_cpu_time_ms_total` only with the eBPF CPU-time source, the hardware counter\n\
         families (`*_cpu_cycles_total`, `*_cpu_instructions_total`, `*_cache_miss_total`) only\n\
         for the counters the PMU offers (absent in most VMs). OTLP push sends the same\n\
         families with the unit shown, so a Collector's Prometheus exporter gives back these names.\n\n\
         ## Classic family (Kepler <= 0.9)\n\n{}\n\
         ## Modern family (Kepler >= 0.10)\n\n{}\n\
         ## Exporter self-metrics (every schema)\n\n{}",
        reference_table(&only(&classic)),
        reference_table(&only(&modern)),
        reference_table(&common_rows),
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let current = std::fs::read_to_string(path).unwrap_or_default();
    if current != doc {
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &doc).unwrap();
        } else {
            panic!("{path} is out of date: run `UPDATE_DOCS=1 cargo test -p kepler-rs --test exposition metrics_reference`");
        }
    }
}
