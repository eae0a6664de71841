//! Kepler's modern metric family (Kepler >= 0.10), built from one snapshot.
//!
//! Every power metric carries `node_name`; `zone` is the RAPL zone without its socket suffix
//! (`package`, `core`, `uncore`, `dram`, `psys`); `state` is `running` or `terminated`; there is
//! no `mode` and no `source`. Unlike modern Kepler, our node counters are monotonic (wraps
//! corrected), terminated workloads stay visible for the retention window to every scraper.
//! As in modern Kepler, workloads (processes, containers, VMs, pods) carry their share of the
//! active energy only, so they add up to the node's active energy. Containers are
//! real containers only: processes outside any container appear as `type="regular"` processes,
//! or `type="vm"` with their `vm_id` for QEMU guests, which also get `kepler_vm_cpu_*`.

use std::collections::BTreeMap;

use super::{BuildInfo, Family, MetricType, RenderOptions, Value};
use crate::power::units::{Microjoules, Watts};
use crate::power::ZoneKind;
use crate::snapshot::{EnergyByKind, NodeZone, ProcessEnergy, Snapshot, State, WorkloadEnergy};
use crate::workload::WorkloadKey;

const JOULES: &str = "J";
const WATTS: &str = "W";

fn state(s: State) -> &'static str {
    match s {
        State::Running => "running",
        State::Terminated(_) => "terminated",
    }
}

/// Average power of `energy` over the snapshot's interval (0 before the first interval).
fn watts(s: &Snapshot, energy: Microjoules) -> f64 {
    energy.over(s.interval).0
}

/// Zone kinds present on this node, in a stable order.
fn kinds(s: &Snapshot) -> Vec<ZoneKind> {
    let mut kinds: Vec<ZoneKind> = s.node_zones.keys().map(|z| z.kind).collect();
    kinds.dedup();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// A workload's active (dynamic) energy of one zone kind: as in Kepler, workloads share the
/// node's active energy only; their idle shares are served by the classic schema alone.
fn kind_active(e: &EnergyByKind, kind: ZoneKind) -> Microjoules {
    e.zones.get(&kind).map(|m| m.dynamic).unwrap_or_default()
}

/// Kepler's modern family from `snapshot` (unsorted; the caller sorts all families).
pub fn modern_families<'a>(
    s: &'a Snapshot,
    options: &RenderOptions,
    build: &'a BuildInfo,
) -> Vec<Family<'a>> {
    let mut out = Vec::with_capacity(24);
    node_families(s, &mut out);
    super::gpu::modern_gpu_families(s, &mut out);
    super::gpu::modern_workload_gpu_families(s, options.process_metrics, &mut out);
    container_families(s, &mut out);
    pod_families(s, &mut out);
    vm_families(s, &mut out);
    if options.process_metrics {
        process_families(s, &mut out);
    }
    out.push(Family::new(
        "kepler_build_info",
        "Build facts of this exporter (always 1): architecture, git branch and revision, \
         version, and in goversion (Kepler's label) the Rust compiler that built it.",
        MetricType::Gauge,
        "",
        move |out| {
            let labels = [
                ("arch", build.arch.as_str()),
                ("branch", build.branch.as_str()),
                ("revision", build.revision.as_str()),
                ("version", build.version.as_str()),
                // Kepler's label name; the value is the Rust compiler that built us.
                ("goversion", build.rust_version.as_str()),
            ];
            out(&labels, Value::Float(1.0));
        },
    ));
    out
}

/// The node's zones as Kepler serves them: one series per zone name. A name that several
/// sockets have (`package` on a two-socket server) is their sum, with
/// `path="aggregated-<zone>"`; a zone of one socket keeps its sysfs path. The classic schema's
/// `package` label keeps the sockets apart.
fn node_zones(s: &Snapshot) -> Vec<(ZoneKind, NodeZone)> {
    let mut zones: Vec<(ZoneKind, NodeZone, usize)> = Vec::new();
    for (id, zone) in &s.node_zones {
        match zones.iter_mut().find(|(kind, _, _)| *kind == id.kind) {
            Some((kind, sum, count)) => {
                *count += 1;
                sum.path = format!("aggregated-{}", kind.as_str());
                sum.energy += zone.energy;
                sum.watts = Watts(sum.watts.0 + zone.watts.0);
                sum.idle_watts = Watts(sum.idle_watts.0 + zone.idle_watts.0);
            }
            None => zones.push((id.kind, zone.clone(), 1)),
        }
    }
    zones
        .into_iter()
        .map(|(kind, zone, _)| (kind, zone))
        .collect()
}

fn node_families<'a>(s: &'a Snapshot, out: &mut Vec<Family<'a>>) {
    type Pick = fn(&Snapshot, &NodeZone) -> Value;
    let specs: [(&'static str, &'static str, MetricType, &'static str, Pick); 6] = [
        (
            "kepler_node_cpu_joules_total",
            "Energy of each RAPL zone in joules since the exporter started (monotonic: counter \
             wraps are corrected).",
            MetricType::Counter,
            JOULES,
            |_, z| Value::Millionths(z.energy.total().0),
        ),
        (
            "kepler_node_cpu_watts",
            "Power of each RAPL zone in watts over the last interval.",
            MetricType::Gauge,
            WATTS,
            |_, z| Value::Float(z.watts.0),
        ),
        (
            "kepler_node_cpu_active_joules_total",
            "Energy of each RAPL zone above its estimated idle power, in joules.",
            MetricType::Counter,
            JOULES,
            |_, z| Value::Millionths(z.energy.dynamic.0),
        ),
        (
            "kepler_node_cpu_active_watts",
            "Power of each RAPL zone above its estimated idle power, in watts, over the last \
             interval.",
            MetricType::Gauge,
            WATTS,
            |_, z| Value::Float((z.watts.0 - z.idle_watts.0.min(z.watts.0)).max(0.0)),
        ),
        (
            "kepler_node_cpu_idle_joules_total",
            "Energy of each RAPL zone attributed to idle, in joules.",
            MetricType::Counter,
            JOULES,
            |_, z| Value::Millionths(z.energy.idle.0),
        ),
        (
            "kepler_node_cpu_idle_watts",
            "Idle power of each RAPL zone in watts over the last interval (the estimate, capped \
             at the measured power).",
            MetricType::Gauge,
            WATTS,
            |_, z| Value::Float(z.idle_watts.0.min(z.watts.0).max(0.0)),
        ),
    ];
    let zones = std::rc::Rc::new(node_zones(s));
    for (name, help, ty, unit, pick) in specs {
        let zones = zones.clone();
        out.push(Family::new(name, help, ty, unit, move |out| {
            for (kind, zone) in zones.iter() {
                let labels = [
                    ("node_name", s.info.node_name.as_str()),
                    ("zone", kind.as_str()),
                    ("path", zone.path.as_str()),
                ];
                out(&labels, pick(s, zone));
            }
        }));
    }
    out.push(Family::new(
        "kepler_node_cpu_usage_ratio",
        "CPU utilisation of the node over the last interval (0 to 1).",
        MetricType::Gauge,
        "1",
        move |out| {
            out(
                &[("node_name", s.info.node_name.as_str())],
                Value::Float(s.node_cpu_usage_ratio),
            )
        },
    ));
    out.push(Family::new(
        "kepler_node_cpu_info",
        "One series per logical CPU (always 1) as /proc/cpuinfo describes it.",
        MetricType::Gauge,
        "",
        move |out| {
            for cpu in &s.info.cpus {
                // Upstream's labels exactly: no node_name (the scrape's instance tells nodes apart).
                let labels = [
                    ("processor", cpu.processor.as_str()),
                    ("vendor_id", cpu.vendor_id.as_str()),
                    ("model_name", cpu.model_name.as_str()),
                    ("physical_id", cpu.physical_id.as_str()),
                    ("core_id", cpu.core_id.as_str()),
                ];
                out(&labels, Value::Float(1.0));
            }
        },
    ));
}

fn containers(s: &Snapshot) -> impl Iterator<Item = (&str, &WorkloadEnergy)> {
    s.workloads.iter().filter_map(|w| match &w.key {
        WorkloadKey::Container(id) => Some((id.as_str(), w)),
        WorkloadKey::System | WorkloadKey::Kernel => None,
    })
}

fn container_families<'a>(s: &'a Snapshot, out: &mut Vec<Family<'a>>) {
    let kinds = kinds(s);
    for (name, help, ty, unit, is_power) in [
        (
            "kepler_container_cpu_joules_total",
            "Active energy attributed to the container per zone in joules: its CPU-time share of \
             the energy above the zone's idle power.",
            MetricType::Counter,
            JOULES,
            false,
        ),
        (
            "kepler_container_cpu_watts",
            "Active power attributed to the container per zone in watts over the last interval.",
            MetricType::Gauge,
            WATTS,
            true,
        ),
    ] {
        let kinds = kinds.clone();
        out.push(Family::new(name, help, ty, unit, move |out| {
            for (id, w) in containers(s) {
                let (runtime, pod_id) = w
                    .identity
                    .as_ref()
                    .map(|i| (i.runtime.as_str(), i.pod_uid.as_deref().unwrap_or("")))
                    .unwrap_or(("unknown", ""));
                for kind in &kinds {
                    let labels = [
                        ("node_name", s.info.node_name.as_str()),
                        ("container_id", id),
                        ("container_name", w.container_name.as_str()),
                        ("runtime", runtime),
                        ("state", state(w.state)),
                        ("zone", kind.as_str()),
                        ("pod_id", pod_id),
                    ];
                    let value = if is_power {
                        Value::Float(watts(s, kind_active(&w.interval, *kind)))
                    } else {
                        Value::Millionths(kind_active(&w.energy, *kind).0)
                    };
                    out(&labels, value);
                }
            }
        }));
    }
}

/// Containers summed per pod UID: (names, state, energy, last-interval energy).
struct PodAcc<'a> {
    name: &'a str,
    namespace: &'a str,
    running: bool,
    energy: EnergyByKind,
    interval: EnergyByKind,
}

fn pods(s: &Snapshot) -> BTreeMap<&str, PodAcc<'_>> {
    let mut pods: BTreeMap<&str, PodAcc<'_>> = BTreeMap::new();
    for (_, w) in containers(s) {
        let Some(uid) = w.identity.as_ref().and_then(|i| i.pod_uid.as_deref()) else {
            continue;
        };
        let acc = pods.entry(uid).or_insert_with(|| PodAcc {
            name: w.pod_name.as_str(),
            namespace: w.namespace.as_str(),
            running: false,
            energy: EnergyByKind::default(),
            interval: EnergyByKind::default(),
        });
        if acc.name.is_empty() {
            acc.name = w.pod_name.as_str();
            acc.namespace = w.namespace.as_str();
        }
        acc.running |= w.state == State::Running;
        acc.energy += &w.energy;
        acc.interval += &w.interval;
    }
    pods
}

fn pod_families<'a>(s: &'a Snapshot, out: &mut Vec<Family<'a>>) {
    let kinds = kinds(s);
    for (name, help, ty, unit, is_power) in [
        (
            "kepler_pod_cpu_joules_total",
            "Active energy attributed to the pod (its containers) per zone in joules.",
            MetricType::Counter,
            JOULES,
            false,
        ),
        (
            "kepler_pod_cpu_watts",
            "Active power attributed to the pod (its containers) per zone in watts over the last \
             interval.",
            MetricType::Gauge,
            WATTS,
            true,
        ),
    ] {
        let kinds = kinds.clone();
        out.push(Family::new(name, help, ty, unit, move |out| {
            for (uid, pod) in pods(s) {
                for kind in &kinds {
                    let labels = [
                        ("node_name", s.info.node_name.as_str()),
                        ("pod_id", uid),
                        ("pod_name", pod.name),
                        ("pod_namespace", pod.namespace),
                        ("state", if pod.running { "running" } else { "terminated" }),
                        ("zone", kind.as_str()),
                    ];
                    let value = if is_power {
                        Value::Float(watts(s, kind_active(&pod.interval, *kind)))
                    } else {
                        Value::Millionths(kind_active(&pod.energy, *kind).0)
                    };
                    out(&labels, value);
                }
            }
        }));
    }
}

/// Upstream's `kepler_vm_cpu_*`: one series per VM and zone.
fn vm_families<'a>(s: &'a Snapshot, out: &mut Vec<Family<'a>>) {
    let kinds = kinds(s);
    for (name, help, ty, unit, is_power) in [
        (
            "kepler_vm_cpu_joules_total",
            "Active energy attributed to the virtual machine (its QEMU processes) per zone in \
             joules.",
            MetricType::Counter,
            JOULES,
            false,
        ),
        (
            "kepler_vm_cpu_watts",
            "Active power attributed to the virtual machine (its QEMU processes) per zone in watts \
             over the last interval.",
            MetricType::Gauge,
            WATTS,
            true,
        ),
    ] {
        let kinds = kinds.clone();
        out.push(Family::new(name, help, ty, unit, move |out| {
            for vm in &s.vms {
                for kind in &kinds {
                    let labels = [
                        ("node_name", s.info.node_name.as_str()),
                        ("vm_id", vm.identity.id.as_str()),
                        ("vm_name", vm.identity.name.as_str()),
                        ("hypervisor", vm.identity.hypervisor),
                        ("state", state(vm.state)),
                        ("zone", kind.as_str()),
                    ];
                    let value = if is_power {
                        Value::Float(watts(s, kind_active(&vm.interval, *kind)))
                    } else {
                        Value::Millionths(kind_active(&vm.energy, *kind).0)
                    };
                    out(&labels, value);
                }
            }
        }));
    }
}

fn process_families<'a>(s: &'a Snapshot, out: &mut Vec<Family<'a>>) {
    let kinds = kinds(s);
    let pids: Vec<String> = s.processes.iter().map(|p| p.pid.to_string()).collect();
    let pids = std::rc::Rc::new(pids);
    // (type, container_id, vm_id); a container process is never a VM's.
    let typed = |p: &'a ProcessEnergy| match (&p.workload, &p.vm) {
        (WorkloadKey::Container(id), _) => ("container", id.as_str(), ""),
        (_, Some(vm)) => ("vm", "", vm.id.as_str()),
        (WorkloadKey::System | WorkloadKey::Kernel, None) => ("regular", "", ""),
    };
    let types: std::rc::Rc<Vec<(&'static str, &'a str, &'a str)>> =
        std::rc::Rc::new(s.processes.iter().map(typed).collect());
    for (name, help, ty, unit, is_power) in [
        (
            "kepler_process_cpu_joules_total",
            "Active energy attributed to the process per zone in joules: its CPU-time share of the \
             energy above the zone's idle power.",
            MetricType::Counter,
            JOULES,
            false,
        ),
        (
            "kepler_process_cpu_watts",
            "Active power attributed to the process per zone in watts over the last interval.",
            MetricType::Gauge,
            WATTS,
            true,
        ),
    ] {
        let (kinds, pids, types) = (kinds.clone(), pids.clone(), types.clone());
        out.push(Family::new(name, help, ty, unit, move |out| {
            for (i, p) in s.processes.iter().enumerate() {
                for kind in &kinds {
                    let labels = [
                        ("node_name", s.info.node_name.as_str()),
                        ("pid", pids[i].as_str()),
                        ("comm", p.comm.as_str()),
                        ("exe", ""),
                        ("type", types[i].0),
                        ("state", state(p.state)),
                        ("container_id", types[i].1),
                        ("vm_id", types[i].2),
                        ("zone", kind.as_str()),
                    ];
                    let value = if is_power {
                        Value::Float(watts(s, kind_active(&p.interval, *kind)))
                    } else {
                        Value::Millionths(kind_active(&p.energy, *kind).0)
                    };
                    out(&labels, value);
                }
            }
        }));
    }
    out.push(Family::new(
        "kepler_process_cpu_seconds_total",
        "CPU time of the process in seconds since it started (user and system, as \
         /proc/<pid>/stat counts it).",
        MetricType::Counter,
        "s",
        move |out| {
            for (i, p) in s.processes.iter().enumerate() {
                let labels = [
                    ("node_name", s.info.node_name.as_str()),
                    ("pid", pids[i].as_str()),
                    ("comm", p.comm.as_str()),
                    ("exe", ""),
                    ("type", types[i].0),
                    ("container_id", types[i].1),
                    ("vm_id", types[i].2),
                ];
                // Nanoseconds -> seconds would not be an exact decimal in millionths; use f64.
                out(&labels, Value::Float(p.cpu_time_since_start.as_secs_f64()));
            }
        },
    ));
}
