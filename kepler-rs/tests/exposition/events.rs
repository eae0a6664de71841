//! Kepler's classic kernel event families (`*_bpf_net_tx_irq_total`, `*_bpf_net_rx_irq_total`,
//! `*_bpf_block_irq_total`, `*_bpf_page_cache_hit_total`): a golden file of just these families
//! (upstream's labels plus `source="bpf"`), present only for the events whose hook attached.

use kepler_rs::workload::{HardwareCounter, HardwareCounterSet, HardwareCounts};

use super::*;

/// The event families' lines of a classic rendering (their `# HELP`, `# TYPE` and samples).
fn event_lines(text: &str) -> String {
    const NAMES: [&str; 4] = [
        "_bpf_net_tx_irq_total",
        "_bpf_net_rx_irq_total",
        "_bpf_block_irq_total",
        "_bpf_page_cache_hit_total",
    ];
    text.lines()
        .filter(|l| NAMES.iter().any(|n| l.contains(n)))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The client snapshot with kernel events counted for each workload and process.
fn with_events(events: &[HardwareCounter]) -> Snapshot {
    let mut s = client_all_zones();
    s.hardware_counters = events
        .iter()
        .fold(HardwareCounterSet::NONE, |set, c| set.with(*c));
    for (i, w) in s.workloads.iter_mut().enumerate() {
        let i = i as u64;
        w.counters = HardwareCounts::new([0; 3], [i, 100 * i + 7, 3 * i, 1000 * i + 1]);
    }
    for (i, p) in s.processes.iter_mut().enumerate() {
        let i = i as u64;
        p.counters = HardwareCounts::new([0; 3], [i, 50 * i + 3, i, 400 * i]);
    }
    s
}

#[test]
fn kernel_event_families_golden() {
    let s = with_events(&HardwareCounter::KERNEL_EVENTS);
    let text = render(&s, &SelfMetrics::new(), true, Format::Text);
    let events = event_lines(&text);
    common::check_golden("classic_kernel_events.prom", &events);
    common::assert_promtool_accepts("classic_kernel_events.prom", &events);
    // Without process metrics: the container families only.
    let text = render(&s, &SelfMetrics::new(), false, Format::Text);
    assert!(!event_lines(&text).contains("kepler_process_"), "{text}");
    assert!(event_lines(&text).contains("kepler_container_bpf_net_rx_irq_total{"));
}

#[test]
fn kernel_event_families_only_for_attached_hooks() {
    // No hook attached (procfs, or a kernel without them): no family at all, not zeros.
    let text = render(&with_events(&[]), &SelfMetrics::new(), true, Format::Text);
    assert_eq!(event_lines(&text), "");
    // Softirqs only (a kernel without the page cache hooks).
    let softirqs = [
        HardwareCounter::NetTxIrq,
        HardwareCounter::NetRxIrq,
        HardwareCounter::BlockIrq,
    ];
    let text = render(
        &with_events(&softirqs),
        &SelfMetrics::new(),
        true,
        Format::Text,
    );
    let lines = event_lines(&text);
    assert!(lines.contains("# TYPE kepler_process_bpf_block_irq_total counter"));
    assert!(!lines.contains("page_cache"), "{lines}");
}
