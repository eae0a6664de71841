use super::*;
use crate::export::family::{classic_families, BuildInfo, RenderOptions};
use crate::power::units::CpuNanos;
use crate::power::ZoneKind;
use crate::selfmetrics::SelfMetrics;
use crate::snapshot::examples::node_with_system_processes;
use crate::snapshot::{Snapshot, State};
use crate::workload::WorkloadKey;
use std::time::Duration;

/// The OpenTelemetry Collector's default Prometheus name translation (with suffixes), as
/// docs/otlp-to-prometheus.md states it: split on every character outside `[a-zA-Z0-9:]`, add
/// the unit's suffix unless a token already is it, monotonic sums drop every `total` token and
/// end in `total`, gauges with unit `1` do the same with `ratio`.
/// The identity of the example snapshot's node (`n1`), in `cluster` when one is given.
fn identity(cluster: Option<&str>) -> Identity {
    Identity {
        service_name: "kepler-pods".into(),
        node_name: "n1".into(),
        cluster: cluster.map(str::to_string),
    }
}

fn collector_name(name: &str, unit: &str, monotonic_sum: bool, gauge: bool) -> String {
    let mut tokens: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let suffix = match unit {
        "J" => Some("joules"),
        "W" => Some("watts"),
        "s" => Some("seconds"),
        "By" => Some("bytes"),
        "ms" => Some("milliseconds"),
        "%" => Some("percent"),
        _ => None,
    };
    if let Some(suffix) = suffix {
        if !tokens.iter().any(|t| t == suffix) {
            tokens.push(suffix.to_string());
        }
    }
    if monotonic_sum {
        tokens.retain(|t| t != "total");
        tokens.push("total".to_string());
    }
    if gauge && unit == "1" {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".to_string());
    }
    tokens.join("_")
}

fn snapshot() -> Snapshot {
    let mut s = node_with_system_processes(
        &[
            ZoneKind::Package,
            ZoneKind::Core,
            ZoneKind::Dram,
            ZoneKind::Psys,
        ],
        "rapl-sysfs",
    );
    s.taken_at = UNIX_EPOCH + Duration::from_secs(1_000);
    s.cpu_time_exact = true;
    let energy = s.workloads[0].energy.clone();
    s.processes.push(crate::snapshot::ProcessEnergy {
        pid: 42,
        comm: "sh".into(),
        workload: WorkloadKey::System,
        vm: None,
        energy,
        interval: Default::default(),
        cpu_time: CpuNanos(7),
        cpu_time_since_start: CpuNanos(9),
        counters: Default::default(),
        state: State::Running,
    });
    s
}

fn build() -> BuildInfo {
    BuildInfo {
        branch: "main".into(),
        revision: "abc".into(),
        version: "0.1.0".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        rust_version: "rustc".into(),
    }
}

#[test]
fn collector_translation_gives_back_every_metrics_name() {
    let s = snapshot();
    let metrics = SelfMetrics::new();
    metrics.record("rapl", "garbage");
    metrics.record_export("push", "sent", 1);
    let b = build();
    // Both schemas: every family /metrics can serve.
    let families = crate::export::family::families(
        &s,
        &metrics,
        &RenderOptions {
            process_metrics: true,
            schema: crate::export::family::Schema::Both,
        },
        &b,
    );
    assert!(families.len() > 35, "{}", families.len());
    for f in &families {
        let counter = f.ty == MetricType::Counter && f.name.ends_with("_total");
        assert_eq!(
            collector_name(f.name, f.unit, counter, !counter),
            f.name,
            "unit {:?}",
            f.unit
        );
        if f.name.ends_with("_joules_total") {
            assert_eq!(f.unit, "J", "{}", f.name);
        }
    }
    // The rule itself, on the spec's own examples.
    assert_eq!(
        collector_name("http.requests", "s", false, true),
        "http_requests_seconds"
    );
    assert_eq!(
        collector_name("kepler_node_bpf_ms_total", "ms", true, false),
        "kepler_node_bpf_ms_milliseconds_total"
    );
    assert_eq!(
        collector_name("utilisation", "1", false, true),
        "utilisation_ratio"
    );
}

#[test]
fn counters_are_cumulative_monotonic_sums_with_stable_start_and_cluster() {
    let s = snapshot();
    let b = build();
    let families = classic_families(&s, &SelfMetrics::new(), &RenderOptions::default(), &b);
    let start = UNIX_EPOCH + Duration::from_secs(900);
    let metrics = families_to_metrics(&families, start, s.taken_at, &identity(Some("cluster1")));
    // Families without samples (no errors, no exports yet) are left out, as in the text.
    let with_samples = families
        .iter()
        .filter(|f| {
            let mut n = 0;
            f.for_each_sample(|_, _| n += 1);
            n > 0
        })
        .count();
    assert_eq!(metrics.len(), with_samples);
    assert!(with_samples < families.len());
    let energy = metrics
        .iter()
        .find(|m| m.name == "kepler_container_package_joules_total")
        .unwrap();
    assert_eq!(energy.unit, "J");
    let Some(metric::Data::Sum(sum)) = &energy.data else {
        panic!("not a sum: {energy:?}");
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    assert_eq!(sum.data_points.len(), 2);
    let p = &sum.data_points[0];
    assert_eq!(p.start_time_unix_nano, 900_000_000_000);
    assert_eq!(p.time_unix_nano, 1_000_000_000_000);
    assert_eq!(p.value, Some(number_data_point::Value::AsDouble(2.0)));
    let keys: Vec<&str> = p.attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "container_id",
            "pod_name",
            "container_name",
            "container_namespace",
            "mode",
            "source",
            "cluster"
        ]
    );
    assert_eq!(p.attributes[6], kv("cluster", "cluster1"));
    let info = metrics
        .iter()
        .find(|m| m.name == "kepler_node_info")
        .unwrap();
    let Some(metric::Data::Gauge(g)) = &info.data else {
        panic!("not a gauge: {info:?}");
    };
    assert_eq!(g.data_points[0].start_time_unix_nano, 0);
    assert!(g.data_points[0]
        .attributes
        .contains(&kv("cluster", "cluster1")));
    // Every point, gauge or sum, has the cluster.
    for m in &metrics {
        let points = match &m.data {
            Some(metric::Data::Sum(s)) => &s.data_points,
            Some(metric::Data::Gauge(g)) => &g.data_points,
            other => panic!("{other:?}"),
        };
        for p in points {
            assert_eq!(
                p.attributes.iter().filter(|a| a.key == "cluster").count(),
                1
            );
        }
    }
}

#[test]
fn without_cluster_no_cluster_attribute_at_all() {
    let s = snapshot();
    let b = build();
    let families = classic_families(&s, &SelfMetrics::new(), &RenderOptions::default(), &b);
    let metrics = families_to_metrics(&families, s.taken_at, s.taken_at, &identity(None));
    let text = format!("{metrics:?}");
    assert!(!text.contains("\"cluster\""), "{text}");
    let identity = identity(None);
    let keys: Vec<String> = identity
        .resource()
        .attributes
        .into_iter()
        .map(|a| a.key)
        .collect();
    assert_eq!(
        keys,
        [
            "service.name",
            "service.instance.id",
            "host.name",
            "k8s.node.name"
        ]
    );
    let with = Identity {
        cluster: Some("c1".into()),
        ..identity
    };
    assert!(with
        .resource()
        .attributes
        .contains(&kv("k8s.cluster.name", "c1")));
}

#[test]
fn text_and_otlp_carry_the_same_samples() {
    let s = snapshot();
    let b = build();
    let options = RenderOptions {
        process_metrics: true,
        ..Default::default()
    };
    let text = crate::export::prometheus::render_classic(
        &s,
        &SelfMetrics::new(),
        &options,
        &b,
        crate::export::prometheus::Format::Text,
    );
    let families = classic_families(&s, &SelfMetrics::new(), &options, &b);
    let metrics = families_to_metrics(&families, s.taken_at, s.taken_at, &identity(None));
    let points: usize = metrics
        .iter()
        .map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            _ => 0,
        })
        .sum();
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(points, samples);
    // Kepler's `instance` label is the node name, which the resource carries as
    // `service.instance.id`: the points leave it out (the Collector's prometheus exporter drops
    // a metric whose points repeat it), and nothing else is left out.
    let labels = |line: &str| line.matches("=\"").count();
    let text_labels: usize = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(labels)
        .sum();
    let instance_labels = text.matches("instance=\"n1\"").count();
    assert!(
        instance_labels > 0,
        "the classic node families carry instance"
    );
    let attributes: usize = metrics
        .iter()
        .flat_map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s.data_points.iter(),
            Some(metric::Data::Gauge(g)) => g.data_points.iter(),
            _ => [].iter(),
        })
        .map(|p| {
            assert!(!p.attributes.iter().any(|a| a.key == "instance"), "{p:?}");
            p.attributes.len()
        })
        .sum();
    assert_eq!(attributes, text_labels - instance_labels);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let otlp: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, otlp);
}

#[test]
fn vm_families_are_pushed_like_the_others() {
    use crate::export::family::Schema;
    use crate::snapshot::VmEnergy;
    use crate::workload::vm::VmIdentity;
    let mut s = snapshot();
    let guest = VmIdentity {
        id: "1b4e28ba-2fa1-4d3b-a3f5-8c5e6b7a9d01".into(),
        name: "web-01".into(),
        hypervisor: "kvm",
    };
    s.processes[0].vm = Some(std::sync::Arc::new(guest.clone()));
    s.vms.push(VmEnergy {
        identity: guest,
        energy: s.processes[0].energy.clone(),
        interval: Default::default(),
        cpu_time: CpuNanos(7),
        counters: Default::default(),
        state: State::Running,
    });
    let build = build();
    let options = RenderOptions {
        process_metrics: true,
        schema: Schema::Both,
    };
    let families = crate::export::family::families(&s, &SelfMetrics::new(), &options, &build);
    for f in families.iter().filter(|f| f.name.starts_with("kepler_vm_")) {
        let counter = f.ty == MetricType::Counter && f.name.ends_with("_total");
        assert_eq!(collector_name(f.name, f.unit, counter, !counter), f.name);
    }
    let start = s.taken_at - Duration::from_secs(100);
    let metrics = families_to_metrics(&families, start, s.taken_at, &identity(None));
    let by_name = |name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} not pushed"))
    };
    let attrs = |m: &Metric| -> Vec<Vec<KeyValue>> {
        match &m.data {
            Some(metric::Data::Sum(sum)) => sum
                .data_points
                .iter()
                .map(|p| p.attributes.clone())
                .collect(),
            Some(metric::Data::Gauge(g)) => {
                g.data_points.iter().map(|p| p.attributes.clone()).collect()
            }
            other => panic!("{other:?}"),
        }
    };
    let classic = by_name("kepler_vm_package_joules_total");
    assert_eq!(classic.unit, "J");
    let first = &attrs(classic)[0];
    assert_eq!(
        first[0],
        kv("vm_id", "1b4e28ba-2fa1-4d3b-a3f5-8c5e6b7a9d01")
    );
    let modern = by_name("kepler_vm_cpu_joules_total");
    let labels = &attrs(modern)[0];
    for (k, v) in [
        ("vm_id", "1b4e28ba-2fa1-4d3b-a3f5-8c5e6b7a9d01"),
        ("vm_name", "web-01"),
        ("hypervisor", "kvm"),
        ("state", "running"),
    ] {
        assert!(labels.contains(&kv(k, v)), "{k}={v} missing: {labels:?}");
    }
    by_name("kepler_vm_cpu_watts");
    by_name("kepler_vm_bpf_cpu_time_ms_total");
}
