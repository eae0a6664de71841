use super::*;
use crate::power::ZoneKind;
use crate::snapshot::examples::node_with_system_processes;
use crate::workload::HardwareCounter;

fn snapshot() -> Snapshot {
    node_with_system_processes(&[ZoneKind::Package], "none")
}

fn render(s: &Snapshot, process_metrics: bool) -> String {
    render_with(s, &SelfMetrics::new(), process_metrics)
}

fn render_with(s: &Snapshot, metrics: &SelfMetrics, process_metrics: bool) -> String {
    let build = BuildInfo::default();
    render_classic(
        s,
        metrics,
        &RenderOptions {
            process_metrics,
            ..Default::default()
        },
        &build,
        Format::Text,
    )
}

#[test]
fn pseudo_container_and_node_samples() {
    let text = render(&snapshot(), false);
    assert!(text.contains(
        "kepler_container_package_joules_total{container_id=\"system_processes\",\
         pod_name=\"system_processes\",container_name=\"system_processes\",\
         container_namespace=\"system\",mode=\"dynamic\",source=\"rapl-sysfs\"} 2\n"
    ));
    assert!(text.contains(
        "kepler_node_package_joules_total{package=\"0\",instance=\"n1\",mode=\"idle\",\
         source=\"rapl-sysfs\"} 1.5\n"
    ));
    // Zones the node lacks: 0 for workloads (as Kepler), absent for the node; `other` of the
    // node without psys, exact CPU time: absent.
    assert!(text.contains(
        "kepler_container_dram_joules_total{container_id=\"system_processes\",\
         pod_name=\"system_processes\",container_name=\"system_processes\",\
         container_namespace=\"system\",mode=\"dynamic\",source=\"rapl-sysfs\"} 0\n"
    ));
    assert!(!text.contains("kepler_node_dram_joules_total"));
    assert!(!text.contains("kepler_node_other_joules_total"));
    assert!(!text.contains("bpf_cpu_time"));
    assert!(!text.contains("kepler_process_"));
    assert!(!text.contains("kepler_node_joules_total"));
    assert!(!text.contains("kepler_exporter_errors_total"));
    assert!(!text.contains("kepler_exporter_ebpf_program"));
}

#[test]
fn ebpf_program_statistics_are_rendered_per_program() {
    let s = snapshot();
    let metrics = SelfMetrics::new();
    metrics.set_program_stats(
        "kepler_sched_switch",
        std::time::Duration::from_micros(1500),
        20_000,
    );
    metrics.set_program_stats(
        "kepler_timer_flush",
        std::time::Duration::from_nanos(900),
        3,
    );
    let text = render_with(&s, &metrics, false);
    assert!(text.contains(
        "kepler_exporter_ebpf_program_run_seconds_total{program=\"kepler_sched_switch\"} 0.0015\n"
    ));
    assert!(text.contains(
        "kepler_exporter_ebpf_program_runs_total{program=\"kepler_sched_switch\"} 20000\n"
    ));
    assert!(text
        .contains("kepler_exporter_ebpf_program_runs_total{program=\"kepler_timer_flush\"} 3\n"));
    assert!(text.contains("# TYPE kepler_exporter_ebpf_program_run_seconds_total counter\n"));
}

#[test]
fn families_are_sorted() {
    let mut s = snapshot();
    s.cpu_time_exact = true;
    let text = render(&s, true);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(names, sorted);
    assert!(names.contains(&"kepler_container_bpf_cpu_time_ms_total"));
    // Process families exist as headers only when there are processes.
    assert!(!names.iter().any(|n| n.starts_with("kepler_process_")));
}

#[test]
fn hardware_counter_series_exist_only_for_measured_counters() {
    use crate::workload::{HardwareCounterSet, HardwareCounts};
    let mut s = snapshot();
    s.workloads[0].counters = HardwareCounts::new([1_000_000, 2_000, 30], [0; 4]);
    // Not measured: absent, not zero.
    let text = render(&s, false);
    assert!(!text.contains("cycles"), "{text}");
    assert!(!text.contains("instructions"));
    assert!(!text.contains("cache_miss"));
    s.hardware_counters = HardwareCounterSet::NONE
        .with(HardwareCounter::Cycles)
        .with(HardwareCounter::CacheMisses);
    let text = render(&s, false);
    let ids = "container_id=\"system_processes\",pod_name=\"system_processes\",\
               container_name=\"system_processes\",container_namespace=\"system\",\
               source=\"bpf\"";
    assert!(
        text.contains(&format!(
            "kepler_container_cpu_cycles_total{{{ids}}} 1000000\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("kepler_container_cache_miss_total{{{ids}}} 30\n")));
    assert!(text.contains("# TYPE kepler_container_cpu_cycles_total counter\n"));
    assert!(!text.contains("instructions"));
}
