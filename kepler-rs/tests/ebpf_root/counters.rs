//! Hardware counters: perf events read by the sched_switch program, charged per process and
//! exported; absent where the PMU offers none.

use super::*;
use kepler_rs::export::prometheus::{render_classic, BuildInfo, Format, RenderOptions};

pub(crate) fn render(s: &kepler_rs::snapshot::Snapshot, metrics: &SelfMetrics) -> String {
    render_classic(
        s,
        metrics,
        &RenderOptions {
            process_metrics: true,
            ..Default::default()
        },
        &BuildInfo::current(),
        Format::Text,
    )
}

/// The value of the first sample of `name` whose labels contain `label`.
pub(crate) fn sample_value(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// With no PMU (this VM), hardware cycles cannot be counted, so the counter plumbing is proven
/// with the kernel's software CPU clock in place of cycles and instructions: counted per CPU
/// like a hardware event and read by the same BPF helper, it advances by the nanoseconds a CPU
/// ran, so each process's "cycles" must equal its on-CPU time. Cache misses stay a hardware
/// event: absent here (where a PMU exists, present).
#[test]
fn software_event_in_a_counters_place_is_charged_per_process_and_exported() {
    let Some(container) = ebpf_container() else {
        return;
    };
    let events = CounterEvents([
        PerfEventSpec::SOFTWARE_CPU_CLOCK,
        PerfEventSpec::SOFTWARE_CPU_CLOCK,
        PerfEventSpec::CACHE_MISSES,
    ]);
    let metrics = Arc::new(SelfMetrics::new());
    let src = EbpfSource::with_counter_events(
        "/proc".into(),
        Path::new(common::CGROUP_ROOT),
        metrics.clone(),
        &events,
    )
    .unwrap_or_else(|e| panic!("eBPF source failed to start: {e}"));
    let status: Vec<(HardwareCounter, Result<(), String>)> = src
        .counter_status()
        .map(|(c, r)| (c, r.map_err(str::to_string)))
        .collect();
    println!("counters: {status:?}");
    let set = src.hardware_counters();
    assert!(
        set.contains(HardwareCounter::Cycles) && set.contains(HardwareCounter::Instructions),
        "the software CPU clock must be readable by bpf_perf_event_read_value: {status:?}"
    );
    assert!(src.reads_counters(), "counters on: the build with counters");
    let cache_misses = status[HardwareCounter::CacheMisses.index()].1.is_ok();
    assert_eq!(set.contains(HardwareCounter::CacheMisses), cache_misses);

    let fake = FakeRapl::start(None, FakeRaplModel::default(), "/proc".into()).unwrap();
    let meter = RaplMeter::discover(fake.sysfs_root(), "fake-rapl").unwrap();
    let mut monitor = Monitor::new(
        Box::new(meter),
        Box::new(src),
        monitor_options(),
        NodeInfo::default(),
        metrics.clone(),
    );
    monitor.step(SystemTime::now());
    let busy = BusyProcess::spawn();
    busy.join(&container.dir);
    // Until the busy process has run for 1 s of CPU (not wall-clock: the machine may be busy).
    let key = WorkloadKey::Container(container.id.clone());
    let mut snapshot = None;
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(100));
        let s = monitor.step(SystemTime::now());
        let ran = s
            .processes
            .iter()
            .find(|p| p.pid == busy.pid())
            .map_or(CpuNanos::ZERO, |p| p.cpu_time);
        if ran >= CpuNanos(1_000_000_000) {
            snapshot = Some(s);
            break;
        }
    }
    let s = snapshot.expect("the busy process never reached 1 s of CPU");
    assert_eq!(s.hardware_counters, set);
    let p = s.processes.iter().find(|p| p.pid == busy.pid()).unwrap();
    let w = s.workloads.iter().find(|w| w.key == key).unwrap();
    for (what, cpu, counters) in [
        ("process", p.cpu_time, p.counters),
        ("container", w.cpu_time, w.counters),
    ] {
        for c in [HardwareCounter::Cycles, HardwareCounter::Instructions] {
            let ratio = counters.get(c) as f64 / cpu.0 as f64;
            println!(
                "{what}: on-CPU {cpu:?}, software clock in place of {} {} ns ({ratio:.4})",
                c.as_str(),
                counters.get(c)
            );
            assert!(
                (0.98..=1.02).contains(&ratio),
                "{what} {}: {} vs on-CPU {cpu:?}",
                c.as_str(),
                counters.get(c)
            );
        }
        if !cache_misses {
            assert_eq!(counters.get(HardwareCounter::CacheMisses), 0);
        }
    }

    let text = render(&s, &metrics);
    let id = format!("container_id=\"{}\"", container.id);
    let cycles = sample_value(&text, "kepler_container_cpu_cycles_total", &id)
        .expect("container cycles series");
    assert_eq!(cycles, w.counters.get(HardwareCounter::Cycles) as f64);
    let pid = format!("pid=\"{}\"", busy.pid());
    assert!(sample_value(&text, "kepler_process_cpu_instructions_total", &pid).is_some());
    assert_eq!(
        text.contains("kepler_container_cache_miss_total"),
        cache_misses,
        "cache-miss series present iff the counter is"
    );
    assert_eq!(super::unexpected_errors(&metrics), vec![]);
    drop(fake);
}

/// With the exporter's hardware events: where the PMU offers none (this VM), no counter is
/// collected, the series are absent (not zero), and `doctor` says why.
#[test]
fn hardware_counter_series_are_absent_where_the_pmu_offers_none() {
    if !common::require_ebpf("loading the BPF program") {
        return;
    }
    let metrics = Arc::new(SelfMetrics::new());
    let src = source(&metrics);
    let set = src.hardware_counters();
    let unavailable: Vec<HardwareCounter> = src
        .counter_status()
        .filter(|(_, r)| r.is_err())
        .map(|(c, _)| c)
        .collect();
    println!("hardware counters collected: {set:?}; unavailable: {unavailable:?}");
    for c in HardwareCounter::ALL {
        assert_eq!(set.contains(c), !unavailable.contains(&c), "{c:?}");
    }
    // No counter: the time-only build (no counter code, small map values) is loaded.
    let pmu = HardwareCounter::ALL.iter().any(|c| set.contains(*c));
    assert_eq!(src.reads_counters(), pmu);
    let fake = FakeRapl::start(None, FakeRaplModel::default(), "/proc".into()).unwrap();
    let meter = RaplMeter::discover(fake.sysfs_root(), "fake-rapl").unwrap();
    let mut monitor = Monitor::new(
        Box::new(meter),
        Box::new(src),
        monitor_options(),
        NodeInfo::default(),
        metrics.clone(),
    );
    monitor.step(SystemTime::now());
    std::thread::sleep(Duration::from_millis(100));
    let s = monitor.step(SystemTime::now());
    let text = render(&s, &metrics);
    assert!(text.contains("kepler_container_bpf_cpu_time_ms_total"));
    for (c, names) in [
        (
            HardwareCounter::Cycles,
            [
                "kepler_container_cpu_cycles_total",
                "kepler_process_cpu_cycles_total",
            ],
        ),
        (
            HardwareCounter::Instructions,
            [
                "kepler_container_cpu_instructions_total",
                "kepler_process_cpu_instructions_total",
            ],
        ),
        (
            HardwareCounter::CacheMisses,
            [
                "kepler_container_cache_miss_total",
                "kepler_process_cache_miss_total",
            ],
        ),
    ] {
        for name in names {
            assert_eq!(text.contains(name), set.contains(c), "{name}");
        }
    }
    drop(fake);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
        .arg("doctor")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("ebpf load"))
        .unwrap_or_else(|| panic!("no ebpf load line in {stdout}"));
    println!("{line}");
    if unavailable.is_empty() {
        assert!(line.contains("hardware counters (cycles"), "{line}");
    } else {
        assert!(line.contains("hardware counters unavailable"), "{line}");
        for c in unavailable {
            assert!(line.contains(c.as_str()), "{line}");
        }
    }
}
