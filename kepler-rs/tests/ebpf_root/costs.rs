//! The program's own cost as self-metrics, while the kernel counts BPF run time.

use super::counters::render;
use super::*;

/// What the programs cost is a self-metric where the kernel counts it
/// (`kernel.bpf_stats_enabled`, here switched on through a `BPF_ENABLE_STATS` fd), and absent
/// while it does not: an operator can read the cost per context switch on their own nodes.
#[test]
fn program_costs_are_self_metrics_while_the_kernel_counts_them() {
    if !common::require_ebpf("loading the BPF program") {
        return;
    }
    let metrics = Arc::new(SelfMetrics::new());
    let mut src = source(&metrics);
    let switches = || {
        for _ in 0..200 {
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    let served = || {
        render(
            &kepler_rs::snapshot::Snapshot::empty(NodeInfo::default(), "fake-rapl", "ebpf"),
            &metrics,
        )
    };
    src.sample();
    switches();
    src.sample();
    // Whether the kernel counted meanwhile (kernel.bpf_stats_enabled, or another process's
    // BPF_ENABLE_STATS fd): only where it did not can the series be checked absent.
    if src.program_stats().iter().any(|p| p.run_count > 0) {
        println!("the kernel already counts BPF run time: the part without statistics is skipped");
    } else {
        assert_eq!(metrics.program_stats(), vec![]);
        assert!(!served().contains("kepler_exporter_ebpf_program"));
    }
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).unwrap();
    switches();
    src.sample();
    drop(stats);
    let published = metrics.program_stats();
    let (_, time, runs) = published
        .iter()
        .find(|(p, _, _)| *p == kepler_ebpf::SCHED_SWITCH_PROGRAM)
        .unwrap_or_else(|| panic!("no statistics for the switch program: {published:?}"));
    println!(
        "kepler_sched_switch: {runs} runs, {:.1} ns per run",
        time.as_nanos() as f64 / *runs as f64
    );
    assert!(*runs >= 200, "{runs} runs over 200 sleeps");
    assert!(*time > Duration::ZERO);
    let text = served();
    assert!(
        text.contains(&format!(
            "kepler_exporter_ebpf_program_runs_total{{program=\"kepler_sched_switch\"}} {runs}\n"
        )),
        "{text}"
    );
    assert!(text.contains(
        "kepler_exporter_ebpf_program_run_seconds_total{program=\"kepler_sched_switch\"}"
    ));
}
