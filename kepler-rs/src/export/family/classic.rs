//! Kepler's classic metric family (Kepler <= 0.9), built from one snapshot.
//!
//! Names and label sets are fixed by compatibility with Kepler (docs/metrics.md lists them):
//! container, process, VM and node energy counters in joules with `mode` (`dynamic`/`idle`) and
//! `source` (the VM families only while the node has VMs), `kepler_container_bpf_cpu_time_ms_total`
//! when CPU time is exact scheduler time, the hardware counter families (`*_cpu_cycles_total`, ...)
//! only for the counters measured (both labelled `source="bpf"`, as Kepler labels them), the node and build info gauges, plus our own `kepler_exporter_*`
//! self-metrics. Families come out sorted by name and samples in snapshot order, so the output is
//! stable for golden tests and diffs.

use std::rc::Rc;

use super::exporter::exporter_families;
use super::{BuildInfo, Family, MetricType, RenderOptions, Value, Visit};
use crate::power::{estimator, ZoneId, ZoneKind};
use crate::selfmetrics::SelfMetrics;
use crate::snapshot::{EnergyByKind, ModeSplit, ProcessEnergy, Snapshot, WorkloadEnergy};
use crate::workload::{HardwareCounter, WorkloadKey};

/// Per zone kind: the classic metric name at each level and what the zone measures.
struct ZoneNames {
    kind: ZoneKind,
    container: &'static str,
    process: &'static str,
    vm: &'static str,
    node: &'static str,
    what: &'static str,
}

const ZONES: [ZoneNames; 5] = [
    ZoneNames {
        kind: ZoneKind::Package,
        container: "kepler_container_package_joules_total",
        process: "kepler_process_package_joules_total",
        vm: "kepler_vm_package_joules_total",
        node: "kepler_node_package_joules_total",
        what: "the CPU package (RAPL package zone, cores and uncore included)",
    },
    ZoneNames {
        kind: ZoneKind::Core,
        container: "kepler_container_core_joules_total",
        process: "kepler_process_core_joules_total",
        vm: "kepler_vm_core_joules_total",
        node: "kepler_node_core_joules_total",
        what: "the CPU cores (RAPL core zone, part of package)",
    },
    ZoneNames {
        kind: ZoneKind::Uncore,
        container: "kepler_container_uncore_joules_total",
        process: "kepler_process_uncore_joules_total",
        vm: "kepler_vm_uncore_joules_total",
        node: "kepler_node_uncore_joules_total",
        what: "the CPU uncore, e.g. integrated GPU (RAPL uncore zone, part of package)",
    },
    ZoneNames {
        kind: ZoneKind::Dram,
        container: "kepler_container_dram_joules_total",
        process: "kepler_process_dram_joules_total",
        vm: "kepler_vm_dram_joules_total",
        node: "kepler_node_dram_joules_total",
        what: "memory (RAPL dram zone)",
    },
    ZoneNames {
        kind: ZoneKind::Psys,
        container: "kepler_container_platform_joules_total",
        process: "kepler_process_platform_joules_total",
        vm: "kepler_vm_platform_joules_total",
        node: "kepler_node_platform_joules_total",
        what: "the whole platform (RAPL psys zone)",
    },
];

const MODES: &str = "split by mode: dynamic (above idle) and idle";

/// Per hardware counter: the classic container and process names and what it counts.
const COUNTER_FAMILIES: [(HardwareCounter, &str, &str, &str); 3] = [
    (
        HardwareCounter::Cycles,
        "kepler_container_cpu_cycles_total",
        "kepler_process_cpu_cycles_total",
        "CPU cycles",
    ),
    (
        HardwareCounter::Instructions,
        "kepler_container_cpu_instructions_total",
        "kepler_process_cpu_instructions_total",
        "instructions retired",
    ),
    (
        HardwareCounter::CacheMisses,
        "kepler_container_cache_miss_total",
        "kepler_process_cache_miss_total",
        "cache misses (last-level cache)",
    ),
];

/// The VM names of [`COUNTER_FAMILIES`], in the same order.
const VM_COUNTER_FAMILIES: [&str; 3] = [
    "kepler_vm_cpu_cycles_total",
    "kepler_vm_cpu_instructions_total",
    "kepler_vm_cache_miss_total",
];

/// Where the counter families' values come from, for their help texts.
const COUNTER_ORIGIN: &str = "counted by the CPU's PMU while they ran (perf events read at \
     every context switch); absent where the PMU offers no such counter";

/// OTLP unit of the energy families (the Collector's suffix for `J` is `joules`, already in the
/// names).
const JOULES: &str = "J";
/// The `*_bpf_cpu_time_ms_total` counters are in milliseconds, but unit `ms` would make the
/// Collector append `_milliseconds`; without a unit the name comes through unchanged.
const NO_UNIT_MS: &str = "";

/// The `source` of the scheduler-time and hardware-counter families: Kepler measures both
/// with eBPF and labels them `source="bpf"`, whatever the CPU-time source.
const BPF_SOURCE: (&str, &str) = ("source", "bpf");

/// The `source` of `kepler_container_joules_total` and `kepler_process_joules_total`: Kepler
/// declares these sums with an empty source.
const TOTAL_SOURCE: &str = "";

/// `ids` followed by `source="bpf"` (at most 4 identifying labels).
fn with_bpf_source<'l>(ids: &[(&'l str, &'l str)]) -> ([(&'l str, &'l str); 5], usize) {
    let mut labels = [("", ""); 5];
    let n = ids.len().min(4);
    labels[..n].copy_from_slice(&ids[..n]);
    labels[n] = BPF_SOURCE;
    (labels, n + 1)
}

/// Visits one scheduler-time or hardware-counter sample: `ids`, then `source="bpf"`.
fn write_bpf(out: &mut Visit<'_>, ids: &[(&str, &str)], value: Value) {
    let (labels, n) = with_bpf_source(ids);
    out(&labels[..n], value);
}

/// Kepler's classic family (plus our self-metrics) from `snapshot`, sorted by name: what
/// `/metrics` serves and OTLP pushes.
pub fn classic_families<'a>(
    snapshot: &'a Snapshot,
    self_metrics: &SelfMetrics,
    options: &RenderOptions,
    build: &'a BuildInfo,
) -> Vec<Family<'a>> {
    let mut families = Vec::with_capacity(40);
    container_families(snapshot, &mut families);
    vm_families(snapshot, &mut families);
    node_families(snapshot, &mut families);
    if options.schema == super::Schema::Classic {
        // With `both`, the modern family of the same name serves GPU energy.
        super::gpu::classic_gpu_families(snapshot, &mut families);
    }
    event_families(snapshot, options.process_metrics, &mut families);
    super::gpu::classic_workload_gpu_families(
        snapshot,
        options.process_metrics,
        options.schema == super::Schema::Classic,
        &mut families,
    );
    if options.process_metrics {
        let pids: Rc<[String]> = snapshot
            .processes
            .iter()
            .map(|p| p.pid.to_string())
            .collect();
        process_families(snapshot, pids, &mut families);
    }
    info_and_self_families(snapshot, build, self_metrics, &mut families);
    families.sort_by_key(|f| f.name);
    families
}

/// Whether the node has a zone of `kind` (the classic zone families exist only then).
fn node_has(snapshot: &Snapshot, kind: ZoneKind) -> bool {
    snapshot.node_zones.keys().any(|id| id.kind == kind)
}

/// Visits the `dynamic` and `idle` samples of one series: `ids`, then `mode`, then `source`.
/// `idle: false` visits the `dynamic` sample only.
pub(super) fn write_modes(
    out: &mut Visit<'_>,
    ids: &[(&str, &str)],
    split: ModeSplit,
    source: &str,
    idle: bool,
) {
    let mut labels: [(&str, &str); 8] = [("", ""); 8];
    let n = ids.len().min(6);
    labels[..n].copy_from_slice(&ids[..n]);
    labels[n + 1] = ("source", source);
    let modes = [("dynamic", split.dynamic), ("idle", split.idle)];
    for (mode, value) in &modes[..if idle { 2 } else { 1 }] {
        labels[n] = ("mode", mode);
        // Microjoules -> joules, exactly.
        out(&labels[..n + 2], Value::Millionths(value.0));
    }
}

/// Whether the zone families serve `mode="idle"`: as in Kepler, only where the energy is
/// measured (a power meter such as RAPL), not where it is estimated. The two sums
/// (`kepler_container_joules_total`, `kepler_process_joules_total`) always serve both modes.
fn idle_series(s: &Snapshot) -> bool {
    s.power_source != estimator::SOURCE
}

/// The classic container labels (without `mode`) of a container or pseudo container.
pub(super) fn container_ids(w: &WorkloadEnergy) -> [(&'static str, &str); 4] {
    let (id, pod, name, namespace) = match &w.key {
        WorkloadKey::System => (
            WorkloadKey::SYSTEM_PROCESSES,
            WorkloadKey::SYSTEM_PROCESSES,
            WorkloadKey::SYSTEM_PROCESSES,
            "system",
        ),
        WorkloadKey::Kernel => (
            WorkloadKey::KERNEL_PROCESSES,
            WorkloadKey::KERNEL_PROCESSES,
            WorkloadKey::KERNEL_PROCESSES,
            "kernel",
        ),
        // A pod not known (yet): Kepler's placeholders until its pod watcher knows it.
        WorkloadKey::Container(id) if w.pod_name.is_empty() => (
            id.as_str(),
            WorkloadKey::SYSTEM_PROCESSES,
            WorkloadKey::SYSTEM_PROCESSES,
            "system",
        ),
        WorkloadKey::Container(id) => (
            id.as_str(),
            w.pod_name.as_str(),
            w.container_name.as_str(),
            w.namespace.as_str(),
        ),
    };
    [
        ("container_id", id),
        ("pod_name", pod),
        ("container_name", name),
        ("container_namespace", namespace),
    ]
}

fn zone_split(energy: &EnergyByKind, kind: ZoneKind) -> ModeSplit {
    energy.zones.get(&kind).copied().unwrap_or_default()
}

fn container_families<'a>(s: &'a Snapshot, out: &mut Vec<Family<'a>>) {
    let source = s.power_source;
    let idle = idle_series(s);
    out.push(Family::new(
        "kepler_container_joules_total",
        format!(
            "Cumulative energy attributed to the container in joules: package + dram + other \
             (core and uncore are inside package), {MODES}."
        ),
        MetricType::Counter,
        JOULES,
        move |out| {
            for w in &s.workloads {
                write_modes(out, &container_ids(w), w.energy.total(), TOTAL_SOURCE, true);
            }
        },
    ));
    // Every zone, 0 where the node lacks it, as Kepler serves them.
    for zone in &ZONES {
        let kind = zone.kind;
        out.push(Family::new(
            zone.container,
            format!(
                "Cumulative energy of {} attributed to the container in joules, {MODES}.",
                zone.what
            ),
            MetricType::Counter,
            JOULES,
            move |out| {
                for w in &s.workloads {
                    write_modes(
                        out,
                        &container_ids(w),
                        zone_split(&w.energy, kind),
                        source,
                        idle,
                    );
                }
            },
        ));
    }
    out.push(Family::new(
        "kepler_container_other_joules_total",
        format!(
            "Cumulative platform energy outside package and dram (platform - package - dram, \
             never negative) attributed to the container in joules, {MODES}."
        ),
        MetricType::Counter,
        JOULES,
        move |out| {
            for w in &s.workloads {
                write_modes(out, &container_ids(w), w.energy.other, source, idle);
            }
        },
    ));
    if s.cpu_time_exact {
        out.push(Family::new(
            "kepler_container_bpf_cpu_time_ms_total",
            "Cumulative on-CPU time of the container's processes in milliseconds, measured by \
             the scheduler.",
            MetricType::Counter,
            NO_UNIT_MS,
            move |out| {
                for w in &s.workloads {
                    // Nanoseconds -> milliseconds, exactly.
                    write_bpf(out, &container_ids(w), Value::Millionths(w.cpu_time.0));
                }
            },
        ));
    }
    for (counter, name, _, what) in COUNTER_FAMILIES {
        if !s.hardware_counters.contains(counter) {
            continue;
        }
        out.push(Family::new(
            name,
            format!("Cumulative {what} of the container's processes, {COUNTER_ORIGIN}."),
            MetricType::Counter,
            "",
            move |out| {
                for w in &s.workloads {
                    let value = Value::Float(w.counters.get(counter) as f64);
                    write_bpf(out, &container_ids(w), value);
                }
            },
        ));
    }
}

/// Kepler's classic VM families (upstream has no `kepler_vm_joules_total`): one series per VM
/// and mode, labelled `vm_id`; present only while the node has VMs.
fn vm_families<'a>(s: &'a Snapshot, out: &mut Vec<Family<'a>>) {
    if s.vms.is_empty() {
        return;
    }
    let source = s.power_source;
    let idle = idle_series(s);
    let what = "attributed to the virtual machine (its QEMU processes) in joules";
    // Every zone, 0 where the node lacks it, as Kepler serves them.
    for zone in &ZONES {
        let kind = zone.kind;
        out.push(Family::new(
            zone.vm,
            format!("Cumulative energy of {} {what}, {MODES}.", zone.what),
            MetricType::Counter,
            JOULES,
            move |out| {
                for vm in &s.vms {
                    let ids = [("vm_id", vm.identity.id.as_str())];
                    write_modes(out, &ids, zone_split(&vm.energy, kind), source, idle);
                }
            },
        ));
    }
    out.push(Family::new(
        "kepler_vm_other_joules_total",
        format!(
            "Cumulative platform energy outside package and dram (platform - package - dram, \
             never negative) {what}, {MODES}."
        ),
        MetricType::Counter,
        JOULES,
        move |out| {
            for vm in &s.vms {
                let ids = [("vm_id", vm.identity.id.as_str())];
                write_modes(out, &ids, vm.energy.other, source, idle);
            }
        },
    ));
    if s.cpu_time_exact {
        out.push(Family::new(
            "kepler_vm_bpf_cpu_time_ms_total",
            "Cumulative on-CPU time of the virtual machine's processes in milliseconds, \
             measured by the scheduler.",
            MetricType::Counter,
            NO_UNIT_MS,
            move |out| {
                for vm in &s.vms {
                    let ids = [("vm_id", vm.identity.id.as_str())];
                    write_bpf(out, &ids, Value::Millionths(vm.cpu_time.0));
                }
            },
        ));
    }
    for ((counter, _, _, what), name) in COUNTER_FAMILIES.into_iter().zip(VM_COUNTER_FAMILIES) {
        if !s.hardware_counters.contains(counter) {
            continue;
        }
        out.push(Family::new(
            name,
            format!("Cumulative {what} of the virtual machine's processes, {COUNTER_ORIGIN}."),
            MetricType::Counter,
            "",
            move |out| {
                for vm in &s.vms {
                    let ids = [("vm_id", vm.identity.id.as_str())];
                    write_bpf(out, &ids, Value::Float(vm.counters.get(counter) as f64));
                }
            },
        ));
    }
}

/// The `package` of the node's `other` series: Kepler computes `other` for the whole node and
/// files it under its generic socket id.
const OTHER_PACKAGE: &str = "socket0";

/// The `package` label of a node zone series as Kepler names it: the socket number for the CPU
/// zones; for the platform (psys) zone the id of a platform power meter, `energy<N>` as Kepler
/// numbers its ACPI meters (from 1), or `estimator<N>` (from 0) where the power is estimated.
fn node_package(s: &Snapshot, id: ZoneId) -> String {
    match id.kind {
        ZoneKind::Psys if s.power_source == estimator::SOURCE => format!("estimator{}", id.socket),
        ZoneKind::Psys => format!("energy{}", u64::from(id.socket) + 1),
        _ => id.socket.to_string(),
    }
}

fn node_families<'a>(s: &'a Snapshot, out: &mut Vec<Family<'a>>) {
    let source = s.power_source;
    let idle = idle_series(s);
    let instance = s.info.node_name.as_str();
    for zone in ZONES.iter().filter(|z| node_has(s, z.kind)) {
        let kind = zone.kind;
        out.push(Family::new(
            zone.node,
            format!(
                "Cumulative energy of {} on the node in joules, per socket (package label), \
                 {MODES}.",
                zone.what
            ),
            MetricType::Counter,
            JOULES,
            move |out| {
                for (id, z) in s.node_zones.iter().filter(|(id, _)| id.kind == kind) {
                    let socket = node_package(s, *id);
                    let ids = [("package", socket.as_str()), ("instance", instance)];
                    write_modes(out, &ids, z.energy, source, idle);
                }
            },
        ));
    }
    if s.node_zones.keys().any(|id| id.kind == ZoneKind::Psys) {
        out.push(Family::new(
            "kepler_node_other_joules_total",
            format!(
                "Cumulative platform energy of the node outside package and dram (platform - \
                 package - dram, never negative) in joules, {MODES}."
            ),
            MetricType::Counter,
            JOULES,
            move |out| {
                let ids = [("package", OTHER_PACKAGE), ("instance", instance)];
                write_modes(out, &ids, s.node.other, source, idle);
            },
        ));
    }
}

/// The classic process labels (without `mode`); `pid` is passed in as text.
pub(super) fn process_ids<'p>(p: &'p ProcessEnergy, pid: &'p str) -> [(&'static str, &'p str); 4] {
    [
        ("pid", pid),
        ("container_id", p.workload.container_id()),
        ("vm_id", p.vm.as_ref().map_or("", |vm| vm.id.as_str())),
        ("command", p.comm.as_str()),
    ]
}

fn process_families<'a>(s: &'a Snapshot, pids: Rc<[String]>, out: &mut Vec<Family<'a>>) {
    let source = s.power_source;
    let idle = idle_series(s);
    let pids_ = pids.clone();
    out.push(Family::new(
        "kepler_process_joules_total",
        format!(
            "Cumulative energy attributed to the process in joules: package + dram + other \
             (core and uncore are inside package), {MODES}."
        ),
        MetricType::Counter,
        JOULES,
        move |out| {
            for (p, pid) in s.processes.iter().zip(pids_.iter()) {
                write_modes(
                    out,
                    &process_ids(p, pid),
                    p.energy.total(),
                    TOTAL_SOURCE,
                    true,
                );
            }
        },
    ));
    // Every zone, 0 where the node lacks it, as Kepler serves them.
    for zone in &ZONES {
        let kind = zone.kind;
        let pids_ = pids.clone();
        out.push(Family::new(
            zone.process,
            format!(
                "Cumulative energy of {} attributed to the process in joules, {MODES}.",
                zone.what
            ),
            MetricType::Counter,
            JOULES,
            move |out| {
                for (p, pid) in s.processes.iter().zip(pids_.iter()) {
                    let split = zone_split(&p.energy, kind);
                    write_modes(out, &process_ids(p, pid), split, source, idle);
                }
            },
        ));
    }
    let pids_ = pids.clone();
    out.push(Family::new(
        "kepler_process_other_joules_total",
        format!(
            "Cumulative platform energy outside package and dram (platform - package - dram, \
             never negative) attributed to the process in joules, {MODES}."
        ),
        MetricType::Counter,
        JOULES,
        move |out| {
            for (p, pid) in s.processes.iter().zip(pids_.iter()) {
                write_modes(out, &process_ids(p, pid), p.energy.other, source, idle);
            }
        },
    ));
    if s.cpu_time_exact {
        let pids_ = pids.clone();
        out.push(Family::new(
            "kepler_process_bpf_cpu_time_ms_total",
            "Cumulative on-CPU time of the process in milliseconds, measured by the scheduler.",
            MetricType::Counter,
            NO_UNIT_MS,
            move |out| {
                for (p, pid) in s.processes.iter().zip(pids_.iter()) {
                    write_bpf(out, &process_ids(p, pid), Value::Millionths(p.cpu_time.0));
                }
            },
        ));
    }
    for (counter, _, name, what) in COUNTER_FAMILIES {
        if !s.hardware_counters.contains(counter) {
            continue;
        }
        let pids_ = pids.clone();
        out.push(Family::new(
            name,
            format!("Cumulative {what} of the process, {COUNTER_ORIGIN}."),
            MetricType::Counter,
            "",
            move |out| {
                for (p, pid) in s.processes.iter().zip(pids_.iter()) {
                    let value = Value::Float(p.counters.get(counter) as f64);
                    write_bpf(out, &process_ids(p, pid), value);
                }
            },
        ));
    }
}

fn info_and_self_families<'a>(
    s: &'a Snapshot,
    build: &'a BuildInfo,
    self_metrics: &SelfMetrics,
    out: &mut Vec<Family<'a>>,
) {
    classic_info_families(s, build, out);
    exporter_families(s, self_metrics, out);
}

/// Kepler's classic info gauges.
fn classic_info_families<'a>(s: &'a Snapshot, build: &'a BuildInfo, out: &mut Vec<Family<'a>>) {
    out.push(Family::new(
        "kepler_node_info",
        "Facts about the node (always 1): CPU architecture and the sources of the component \
         and platform energy counters.",
        // Kepler declares it a counter (without `_total`); OTLP sends it as a gauge.
        MetricType::Counter,
        "",
        move |out| {
            let labels = [
                ("cpu_architecture", s.info.cpu_architecture.as_str()),
                (
                    "components_power_source",
                    s.info.components_power_source.as_str(),
                ),
                (
                    "platform_power_source",
                    s.info.platform_power_source.as_str(),
                ),
                ("source", "os"),
            ];
            out(&labels, Value::Float(1.0));
        },
    ));
    out.push(Family::new(
        "kepler_exporter_build_info",
        "Build facts of this exporter (always 1): git branch and revision, version, OS and \
         architecture.",
        MetricType::Gauge,
        "",
        move |out| {
            let labels = [
                ("branch", build.branch.as_str()),
                ("revision", build.revision.as_str()),
                ("version", build.version.as_str()),
                ("os", build.os.as_str()),
                ("arch", build.arch.as_str()),
            ];
            out(&labels, Value::Float(1.0));
        },
    ));
}

/// Per kernel event: the classic container and process names and what it counts.
const EVENT_FAMILIES: [(HardwareCounter, &str, &str, &str); 4] = [
    (
        HardwareCounter::NetTxIrq,
        "kepler_container_bpf_net_tx_irq_total",
        "kepler_process_bpf_net_tx_irq_total",
        "softirqs of the NET_TX vector (network transmit)",
    ),
    (
        HardwareCounter::NetRxIrq,
        "kepler_container_bpf_net_rx_irq_total",
        "kepler_process_bpf_net_rx_irq_total",
        "softirqs of the NET_RX vector (network receive)",
    ),
    (
        HardwareCounter::BlockIrq,
        "kepler_container_bpf_block_irq_total",
        "kepler_process_bpf_block_irq_total",
        "softirqs of the BLOCK vector (block I/O completion)",
    ),
    (
        HardwareCounter::PageCacheHit,
        "kepler_container_bpf_page_cache_hit_total",
        "kepler_process_bpf_page_cache_hit_total",
        "page cache hits (folios dirtied in the page cache, and cached folios read where the \
         kernel has kprobes)",
    ),
];

/// Where the kernel event families' values come from, for their help texts.
const EVENT_ORIGIN: &str = "counted by eBPF and charged to the task running when the event \
     happened; absent where the kernel offers no hook for it";

/// Kepler's classic kernel event families (`*_bpf_net_tx_irq_total`, `*_bpf_net_rx_irq_total`,
/// `*_bpf_block_irq_total`, `*_bpf_page_cache_hit_total`) with upstream's labels and
/// `source="bpf"`: the container ones, and the process ones with `processes`; only for the
/// events whose hook attached.
fn event_families<'a>(s: &'a Snapshot, processes: bool, out: &mut Vec<Family<'a>>) {
    let pids: Rc<[String]> = if processes {
        s.processes.iter().map(|p| p.pid.to_string()).collect()
    } else {
        Rc::from(Vec::new())
    };
    for (counter, container, process, what) in EVENT_FAMILIES {
        if !s.hardware_counters.contains(counter) {
            continue;
        }
        out.push(Family::new(
            container,
            format!("Cumulative {what} of the container's processes, {EVENT_ORIGIN}."),
            MetricType::Counter,
            "",
            move |out| {
                for w in &s.workloads {
                    let value = Value::Float(w.counters.get(counter) as f64);
                    write_bpf(out, &container_ids(w), value);
                }
            },
        ));
        if !processes {
            continue;
        }
        let pids = pids.clone();
        out.push(Family::new(
            process,
            format!("Cumulative {what} of the process, {EVENT_ORIGIN}."),
            MetricType::Counter,
            "",
            move |out| {
                for (p, pid) in s.processes.iter().zip(pids.iter()) {
                    let value = Value::Float(p.counters.get(counter) as f64);
                    write_bpf(out, &process_ids(p, pid), value);
                }
            },
        ));
    }
}
