//! Full CPU maps: refused inserts, the time counted as overflow and charged to the system.

use super::*;

/// A CPU map with room for 8 (process, cgroup) pairs while 100 short-lived processes run: the map
/// stays bounded (inserts are refused, nothing is evicted) and the time that found no room is in
/// the overflow counter, not lost without a trace.
#[test]
fn a_full_cpu_map_refuses_inserts_and_counts_the_time_as_overflow() {
    if !common::require_ebpf("loading the BPF program") {
        return;
    }
    for events in [
        CounterEvents::HARDWARE,
        CounterEvents([PerfEventSpec::SOFTWARE_CPU_CLOCK; 3]),
    ] {
        let mut program = EbpfProgram::load_with_capacity(&events, 8)
            .unwrap_or_else(|e| panic!("eBPF program failed to load: {e}"));
        program.drain();
        program.drain();
        run_short_lived_processes(100);
        // The generation the processes ran in, then the one after (a slice charged just
        // before the flip).
        let first = program.drain();
        let second = program.drain();
        println!(
            "counters build: {}; drained {} + {} pairs; overflow {} updates, {:.3} ms",
            program.reads_counters(),
            first.cpu.len(),
            second.cpu.len(),
            first.overflow.count + second.overflow.count,
            (first.overflow.cpu_ns + second.overflow.cpu_ns) as f64 / 1e6,
        );
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert!(
            first.cpu.len() <= 8,
            "{} pairs in a map of 8",
            first.cpu.len()
        );
        assert!(
            first.overflow.count >= 50,
            "100 new processes, room for 8: {} overflowed updates",
            first.overflow.count
        );
        assert!(first.overflow.cpu_ns > 0);
        // Deltas: the next drain reports only what overflowed since.
        let third = program.drain();
        assert!(third.overflow.count < first.overflow.count);
    }
}

/// The source with a full map: the overflowed time stays on the node as system time and is
/// counted as `map_full` errors.
#[test]
fn overflowed_time_is_system_time_and_counted() {
    if !common::require_ebpf("loading the BPF program") {
        return;
    }
    let metrics = Arc::new(SelfMetrics::new());
    let mut src = EbpfSource::with_map_capacity(
        "/proc".into(),
        Path::new(common::CGROUP_ROOT),
        metrics.clone(),
        &CounterEvents::HARDWARE,
        4,
    )
    .unwrap_or_else(|e| panic!("eBPF source failed to start: {e}"));
    src.sample();
    run_short_lived_processes(100);
    let sample = src.sample();
    let full = metrics
        .errors()
        .into_iter()
        .find(|(c, r, _)| (*c, *r) == ("ebpf", "map_full"))
        .map_or(0, |(_, _, n)| n);
    let system = sample.workloads[&WorkloadKey::System].cpu;
    let listed: CpuNanos = sample.processes.iter().map(|p| p.cpu).sum();
    let total: CpuNanos = sample.workloads.values().map(|w| w.cpu).sum();
    println!(
        "map_full {full}; {} processes with {:.3} ms; workloads {:.3} ms (system {:.3} ms)",
        sample.processes.len(),
        listed.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        system.as_secs_f64() * 1e3
    );
    assert!(full >= 50, "100 new processes, room for 4: {full} map_full");
    // The processes hold what fitted in the map; the workloads hold that and the overflow.
    assert!(
        sample
            .processes
            .iter()
            .filter(|p| p.cpu > CpuNanos::ZERO)
            .count()
            <= 4
    );
    assert!(
        total.as_secs_f64() > listed.as_secs_f64() + 0.005,
        "overflowed time missing from the workloads: {total:?} vs {listed:?}"
    );
}
