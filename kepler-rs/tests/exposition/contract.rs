//! The metric contract (docs/metrics.md): names, label sets and values of the rendered families.

use super::*;

/// A parsed sample line.
#[derive(Debug)]
pub(crate) struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one 0.0.4 sample line, unescaping label values.
pub(crate) fn parse_sample(line: &str) -> Sample {
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

pub(crate) fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(parse_sample)
        .collect()
}

/// Every metric name docs/metrics.md allows in the classic family, plus our
/// `kepler_exporter_*` self-metrics.
pub(crate) fn spec_names() -> BTreeSet<String> {
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

/// Whether Kepler labels a classic family `source="bpf"`: its eBPF software counters
/// (`*_bpf_*`) and the hardware counters.
pub(crate) fn measured_by_bpf(name: &str) -> bool {
    name.contains("_bpf_")
        || [
            "_cpu_cycles_total",
            "_cpu_instructions_total",
            "_cache_miss_total",
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// The exact label names (in order) of a classic metric.
pub(crate) fn expected_labels(name: &str) -> &'static [&'static str] {
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
    const VM: &[&str] = &["vm_id", "mode", "source"];
    // Scheduler time and hardware counters: the identifying labels, then `source="bpf"`.
    const CONTAINER_BPF: &[&str] = &[
        "container_id",
        "pod_name",
        "container_name",
        "container_namespace",
        "source",
    ];
    const PROCESS_BPF: &[&str] = &["pid", "container_id", "vm_id", "command", "source"];
    const VM_BPF: &[&str] = &["vm_id", "source"];
    if measured_by_bpf(name) {
        if name.starts_with("kepler_container_") {
            return CONTAINER_BPF;
        }
        if name.starts_with("kepler_process_") {
            return PROCESS_BPF;
        }
        if name.starts_with("kepler_vm_") {
            return VM_BPF;
        }
    }
    match name {
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
        n if n.starts_with("kepler_vm_") => VM,
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
            if measured_by_bpf(&sample.name) {
                // Scheduler time and hardware counters: measured by eBPF, as Kepler labels them.
                let source = sample.labels.last().map(|(_, v)| v.as_str());
                assert_eq!(source, Some("bpf"), "{case}: {sample:?}");
            }
            assert!(sample.value.is_finite() && sample.value >= 0.0);
            seen.insert(sample.name);
        }
    }
    assert!(!seen.contains("kepler_node_joules_total"));
    // Everything we can emit without a GPU or hardware counters is covered by the cases.
    let not_yet = |n: &&String| {
        n.contains("_gpu_")
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
            ("source", ""),
        ],
    );
    find(
        "kepler_process_package_joules_total",
        &[("pid", "4101"), ("source", "rapl-sysfs")],
    );
    // No platform zone: no node platform or other series; the workloads serve every zone, as
    // Kepler does, with 0 for the zones the node lacks.
    assert!(!out.contains("kepler_node_platform_joules_total"));
    assert!(!out.contains("kepler_node_other_joules_total"));
    assert!(out.contains("kepler_container_other_joules_total{"));
    for level in ["container", "process"] {
        for zone in ["package", "core", "uncore", "dram", "other", "platform"] {
            let name = format!("kepler_{level}_{zone}_joules_total");
            let series: Vec<&Sample> = all.iter().filter(|s| s.name == name).collect();
            assert!(!series.is_empty(), "{name} missing");
            if ["core", "uncore", "platform"].contains(&zone) {
                assert!(series.iter().all(|s| s.value == 0.0), "{name}: {series:?}");
            }
        }
    }
}

#[test]
fn node_other_and_platform_are_named_as_kepler_names_them() {
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
    // Kepler files `other` under its generic socket id, and the platform under its meter's id.
    assert_eq!(other[0].labels[0], ("package".into(), "socket0".into()));
    let platform: Vec<Sample> = samples(&out)
        .into_iter()
        .filter(|s| s.name == "kepler_node_platform_joules_total")
        .collect();
    assert_eq!(platform.len(), 2);
    assert_eq!(platform[0].labels[0], ("package".into(), "energy1".into()));
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
    // Kepler's `kepler_node_info` is a counter without `_total`: OpenMetrics keeps the family
    // name and gives its sample the suffix.
    let unsuffixed = "kepler_node_info";
    let back: String = om
        .lines()
        .filter(|l| *l != "# EOF")
        .map(|line| {
            for prefix in ["# HELP ", "# TYPE "] {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let (name, tail) = rest.split_once(' ').unwrap();
                    if counters.contains(name) && name != unsuffixed {
                        return format!("{prefix}{name}_total {tail}\n");
                    }
                }
            }
            if let Some(rest) = line.strip_prefix("kepler_node_info_total") {
                return format!("{unsuffixed}{rest}\n");
            }
            format!("{line}\n")
        })
        .collect();
    assert_eq!(back, text);
}

#[test]
fn idle_series_only_where_the_energy_is_measured() {
    // As Kepler: the zone families serve `mode="idle"` only with a power meter; the two sums
    // always serve both modes.
    let mut s = server_two_sockets();
    let measured = samples(&render(&s, &SelfMetrics::new(), true, Format::Text));
    assert!(measured
        .iter()
        .any(|x| x.name == "kepler_node_package_joules_total" && x.label("mode") == Some("idle")));
    s.power_source = "estimator";
    let estimated = samples(&render(&s, &SelfMetrics::new(), true, Format::Text));
    let sums = [
        "kepler_container_joules_total",
        "kepler_process_joules_total",
    ];
    for sample in &estimated {
        if sample.label("mode") == Some("idle") {
            assert!(sums.contains(&sample.name.as_str()), "{sample:?}");
        }
    }
    for sum in sums {
        assert!(estimated
            .iter()
            .any(|x| x.name == sum && x.label("mode") == Some("idle")));
    }
    assert!(estimated
        .iter()
        .any(|x| x.name == "kepler_container_dram_joules_total"));
}

#[test]
fn containers_of_unknown_pods_get_keplers_placeholders() {
    let out = render(
        &client_all_zones(),
        &SelfMetrics::new(),
        false,
        Format::Text,
    );
    let abc = samples(&out)
        .into_iter()
        .find(|x| {
            x.name == "kepler_container_joules_total"
                && x.label("container_id")
                    .is_some_and(|id| id.starts_with("abc123"))
        })
        .unwrap();
    assert_eq!(abc.label("pod_name"), Some("system_processes"));
    assert_eq!(abc.label("container_name"), Some("system_processes"));
    assert_eq!(abc.label("container_namespace"), Some("system"));
}
