//! The GPU families, classic and modern, built from the snapshot's NVIDIA GPUs.
//!
//! Modern (Kepler >= 0.10): `kepler_node_gpu_{joules_total,watts,active_joules_total,
//! active_watts,idle_joules_total,idle_watts}` and `kepler_node_gpu_info`, one series per GPU
//! device labelled `node_name`, `gpu` (NVML's index), `gpu_uuid`, `gpu_name` and `vendor`.
//! Classic (Kepler <= 0.9): `kepler_node_gpu_joules_total` with `package` (the GPU's index, as
//! classic Kepler labels it), `instance`, `mode` and `source="NVML"`; with
//! `metrics.schema=both` the modern family of the same name is served alone (one name, one
//! label set). Without GPUs no family is built, so nodes without NVML serve exactly what they
//! served before.
//!
//! A GPU in MIG mode is served as its MIG instances, each a device of its own, and not itself
//! (its energy is the sum of theirs, so it is never counted twice): `gpu`, `package` and
//! `gpu_id` are `<index>:<gpu instance id>:<compute instance id>` (`0:1:0`), `gpu_uuid` the
//! MIG UUID (`MIG-...`) and `gpu_name` NVML's name for the instance. Upstream Kepler never
//! served MIG instances as devices (classic v0.7 folded them into their GPU through DCGM), so
//! there is no upstream name to follow; the index-and-ids value keeps every family's label set
//! unchanged and names each instance uniquely (one GPU instance may hold several compute
//! instances, and the classic family has no UUID label).
//!
//! Workloads: modern `kepler_{process,container,pod}_gpu_{joules_total,watts}` with the labels
//! of their CPU families less `zone`, active energy only and only where it is above 0, as
//! upstream; classic `kepler_{container,process}_gpu_joules_total` for every workload (0 where
//! it used no GPU) with `mode` and `source="NVML"`, and classic
//! `kepler_{container,process}_gpu_{compute,mem}_util_total` per GPU (`gpu_id`).

use std::collections::BTreeMap;

use super::classic::{container_ids, process_ids, write_modes};
use super::{Family, MetricType, Value};
use crate::power::gpu::{SOURCE, VENDOR};
use crate::snapshot::{GpuId, GpuShare, ModeSplit, NodeGpu, Snapshot, State};
use crate::workload::WorkloadKey;

const JOULES: &str = "J";
const WATTS: &str = "W";

/// The modern GPU families (none without GPUs).
pub fn modern_gpu_families<'a>(s: &'a Snapshot, out: &mut Vec<Family<'a>>) {
    if s.gpus.is_empty() {
        return;
    }
    type Pick = fn(&NodeGpu) -> Value;
    let specs: [(&'static str, &'static str, MetricType, &'static str, Pick); 7] = [
        (
            "kepler_node_gpu_joules_total",
            "Energy of each GPU in joules since the exporter started (the driver's total-energy \
             counter, else its power samples integrated over each interval).",
            MetricType::Counter,
            JOULES,
            |g| Value::Millionths(g.energy.total().0),
        ),
        (
            "kepler_node_gpu_watts",
            "Power of each GPU in watts over the last interval.",
            MetricType::Gauge,
            WATTS,
            |g| Value::Float(g.watts.0),
        ),
        (
            "kepler_node_gpu_active_joules_total",
            "Energy of each GPU above its estimated idle power, in joules.",
            MetricType::Counter,
            JOULES,
            |g| Value::Millionths(g.energy.dynamic.0),
        ),
        (
            "kepler_node_gpu_active_watts",
            "Power of each GPU above its estimated idle power, in watts, over the last interval.",
            MetricType::Gauge,
            WATTS,
            |g| Value::Float((g.watts.0 - g.idle_watts.0.min(g.watts.0)).max(0.0)),
        ),
        (
            "kepler_node_gpu_idle_joules_total",
            "Energy of each GPU attributed to idle, in joules.",
            MetricType::Counter,
            JOULES,
            |g| Value::Millionths(g.energy.idle.0),
        ),
        (
            "kepler_node_gpu_idle_watts",
            "Idle power of each GPU in watts over the last interval (the estimate, capped at the \
             measured power).",
            MetricType::Gauge,
            WATTS,
            |g| Value::Float(g.idle_watts.0.min(g.watts.0).max(0.0)),
        ),
        (
            "kepler_node_gpu_info",
            "One series per GPU device (always 1): its index (index:gpu-instance:compute-instance \
             for a MIG instance), UUID, name and vendor.",
            MetricType::Gauge,
            "",
            |_| Value::Float(1.0),
        ),
    ];
    for (name, help, ty, unit, pick) in specs {
        out.push(Family::new(name, help, ty, unit, move |out| {
            for g in &s.gpus {
                let index = g.id().to_string();
                let labels = [
                    ("node_name", s.info.node_name.as_str()),
                    ("gpu", index.as_str()),
                    ("gpu_uuid", g.uuid.as_str()),
                    ("gpu_name", g.name.as_str()),
                    ("vendor", VENDOR),
                ];
                out(&labels, pick(g));
            }
        }));
    }
}

/// The classic GPU family (none without GPUs).
pub fn classic_gpu_families<'a>(s: &'a Snapshot, out: &mut Vec<Family<'a>>) {
    if s.gpus.is_empty() {
        return;
    }
    out.push(Family::new(
        "kepler_node_gpu_joules_total",
        "Cumulative energy of each GPU on the node in joules, per GPU device (package label: the \
         GPU's index, index:gpu-instance:compute-instance for a MIG instance), \
         mode=\"dynamic\" above its estimated idle power and mode=\"idle\" the rest.",
        MetricType::Counter,
        JOULES,
        move |out| {
            for g in &s.gpus {
                let index = g.id().to_string();
                for (mode, value) in [("dynamic", g.energy.dynamic), ("idle", g.energy.idle)] {
                    let labels = [
                        ("package", index.as_str()),
                        ("instance", s.info.node_name.as_str()),
                        ("mode", mode),
                        ("source", SOURCE),
                    ];
                    out(&labels, Value::Millionths(value.0));
                }
            }
        },
    ));
}

/// The sum over GPUs of a workload's or process's shares: (cumulative, last interval).
fn summed(shares: Option<&BTreeMap<GpuId, GpuShare>>) -> (ModeSplit, ModeSplit) {
    let mut energy = ModeSplit::default();
    let mut interval = ModeSplit::default();
    for share in shares.into_iter().flat_map(BTreeMap::values) {
        energy += share.energy;
        interval += share.interval;
    }
    (energy, interval)
}

fn state(s: State) -> &'static str {
    match s {
        State::Running => "running",
        State::Terminated(_) => "terminated",
    }
}

/// Active joules (cumulative) and watts (last interval) of a sum of shares.
fn active_values(s: &Snapshot, energy: ModeSplit, interval: ModeSplit, power: bool) -> Value {
    if power {
        Value::Float(interval.dynamic.over(s.interval).0)
    } else {
        Value::Millionths(energy.dynamic.0)
    }
}

/// The modern workload GPU families (none without GPUs).
pub fn modern_workload_gpu_families<'a>(
    s: &'a Snapshot,
    process_metrics: bool,
    out: &mut Vec<Family<'a>>,
) {
    if s.gpus.is_empty() {
        return;
    }
    const JOULES_HELP: &str = "in joules: its share (by its GPU utilisation) of the energy above \
                               the GPUs' idle power; only where above 0.";
    const WATTS_HELP: &str = "in watts over the last interval: its share of the power above the \
                              GPUs' idle power; only where above 0.";
    for (power, name, help, ty, unit) in [
        (
            false,
            "kepler_container_gpu_joules_total",
            JOULES_HELP,
            MetricType::Counter,
            JOULES,
        ),
        (
            true,
            "kepler_container_gpu_watts",
            WATTS_HELP,
            MetricType::Gauge,
            WATTS,
        ),
    ] {
        let help = format!(
            "Active GPU {} attributed to the container {help}",
            if power { "power" } else { "energy" }
        );
        out.push(Family::new(name, help, ty, unit, move |out| {
            for w in &s.workloads {
                let WorkloadKey::Container(id) = &w.key else {
                    continue;
                };
                let (energy, interval) = summed(s.gpu_workloads.get(&w.key));
                if energy.dynamic.0 == 0 {
                    continue;
                }
                let (runtime, pod_id) = w
                    .identity
                    .as_ref()
                    .map(|i| (i.runtime.as_str(), i.pod_uid.as_deref().unwrap_or("")))
                    .unwrap_or(("unknown", ""));
                let labels = [
                    ("node_name", s.info.node_name.as_str()),
                    ("container_id", id.as_str()),
                    ("container_name", w.container_name.as_str()),
                    ("runtime", runtime),
                    ("state", state(w.state)),
                    ("pod_id", pod_id),
                ];
                out(&labels, active_values(s, energy, interval, power));
            }
        }));
    }
    for (power, name, help, ty, unit) in [
        (
            false,
            "kepler_pod_gpu_joules_total",
            JOULES_HELP,
            MetricType::Counter,
            JOULES,
        ),
        (
            true,
            "kepler_pod_gpu_watts",
            WATTS_HELP,
            MetricType::Gauge,
            WATTS,
        ),
    ] {
        let help = format!(
            "Active GPU {} attributed to the pod (its containers) {help}",
            if power { "power" } else { "energy" }
        );
        out.push(Family::new(name, help, ty, unit, move |out| {
            // Containers summed per pod UID: names, running, energy, interval energy.
            let mut pods: BTreeMap<&str, (&str, &str, bool, ModeSplit, ModeSplit)> =
                BTreeMap::new();
            for w in &s.workloads {
                let Some(uid) = w.identity.as_ref().and_then(|i| i.pod_uid.as_deref()) else {
                    continue;
                };
                let (energy, interval) = summed(s.gpu_workloads.get(&w.key));
                let pod = pods.entry(uid).or_insert((
                    w.pod_name.as_str(),
                    w.namespace.as_str(),
                    false,
                    ModeSplit::default(),
                    ModeSplit::default(),
                ));
                if pod.0.is_empty() {
                    pod.0 = w.pod_name.as_str();
                    pod.1 = w.namespace.as_str();
                }
                pod.2 |= w.state == State::Running;
                pod.3 += energy;
                pod.4 += interval;
            }
            for (uid, (pod_name, namespace, running, energy, interval)) in pods {
                if energy.dynamic.0 == 0 {
                    continue;
                }
                let labels = [
                    ("node_name", s.info.node_name.as_str()),
                    ("pod_id", uid),
                    ("pod_name", pod_name),
                    ("pod_namespace", namespace),
                    ("state", if running { "running" } else { "terminated" }),
                ];
                out(&labels, active_values(s, energy, interval, power));
            }
        }));
    }
    if !process_metrics {
        return;
    }
    for (power, name, help, ty, unit) in [
        (
            false,
            "kepler_process_gpu_joules_total",
            JOULES_HELP,
            MetricType::Counter,
            JOULES,
        ),
        (
            true,
            "kepler_process_gpu_watts",
            WATTS_HELP,
            MetricType::Gauge,
            WATTS,
        ),
    ] {
        let help = format!(
            "Active GPU {} attributed to the process {help}",
            if power { "power" } else { "energy" }
        );
        out.push(Family::new(name, help, ty, unit, move |out| {
            for p in &s.processes {
                let (energy, interval) = summed(s.gpu_processes.get(&p.pid));
                if energy.dynamic.0 == 0 {
                    continue;
                }
                let (ty, container_id, vm_id) = match (&p.workload, &p.vm) {
                    (WorkloadKey::Container(id), _) => ("container", id.as_str(), ""),
                    (_, Some(vm)) => ("vm", "", vm.id.as_str()),
                    (WorkloadKey::System | WorkloadKey::Kernel, None) => ("regular", "", ""),
                };
                let pid = p.pid.to_string();
                let labels = [
                    ("node_name", s.info.node_name.as_str()),
                    ("pid", pid.as_str()),
                    ("comm", p.comm.as_str()),
                    ("exe", ""),
                    ("type", ty),
                    ("state", state(p.state)),
                    ("container_id", container_id),
                    ("vm_id", vm_id),
                ];
                out(&labels, active_values(s, energy, interval, power));
            }
        }));
    }
}

/// The classic workload GPU families (none without GPUs): energy with modes (only with
/// `energy`: with `metrics.schema=both` the modern families of the same names serve it), and
/// the utilisation sums per GPU.
pub fn classic_workload_gpu_families<'a>(
    s: &'a Snapshot,
    process_metrics: bool,
    energy: bool,
    out: &mut Vec<Family<'a>>,
) {
    if s.gpus.is_empty() {
        return;
    }
    if energy {
        out.push(Family::new(
            "kepler_container_gpu_joules_total",
            "Cumulative GPU energy attributed to the container in joules, by its GPU utilisation, \
         split by mode: dynamic (above idle) and idle.",
            MetricType::Counter,
            JOULES,
            move |out| {
                for w in &s.workloads {
                    let (energy, _) = summed(s.gpu_workloads.get(&w.key));
                    write_modes(out, &container_ids(w), energy, SOURCE, true);
                }
            },
        ));
    }
    type Pick = fn(&GpuShare) -> u64;
    let utils: [(&'static str, &'static str, &'static str, &'static str, Pick); 2] = [
        (
            "kepler_container_gpu_compute_util_total",
            "kepler_process_gpu_compute_util_total",
            "compute (SM) utilisation",
            "",
            |g| g.compute_util,
        ),
        (
            "kepler_container_gpu_mem_util_total",
            "kepler_process_gpu_mem_util_total",
            "memory utilisation",
            "",
            |g| g.memory_util,
        ),
    ];
    for (container, _, what, unit, pick) in utils {
        out.push(Family::new(
            container,
            format!(
                "Cumulative sum of the container's GPU {what} samples (percent) per GPU (gpu_id)."
            ),
            MetricType::Counter,
            unit,
            move |out| {
                for w in &s.workloads {
                    let Some(shares) = s.gpu_workloads.get(&w.key) else {
                        continue;
                    };
                    for (gpu, share) in shares {
                        let gpu = gpu.to_string();
                        let ids = container_ids(w);
                        let labels = [
                            ids[0],
                            ids[1],
                            ids[2],
                            ids[3],
                            ("gpu_id", gpu.as_str()),
                            ("source", SOURCE),
                        ];
                        out(&labels, Value::Float(pick(share) as f64));
                    }
                }
            },
        ));
    }
    if !process_metrics {
        return;
    }
    if energy {
        out.push(Family::new(
            "kepler_process_gpu_joules_total",
            "Cumulative GPU energy attributed to the process in joules, by its GPU utilisation, \
         split by mode: dynamic (above idle) and idle.",
            MetricType::Counter,
            JOULES,
            move |out| {
                for p in &s.processes {
                    let (energy, _) = summed(s.gpu_processes.get(&p.pid));
                    let pid = p.pid.to_string();
                    write_modes(out, &process_ids(p, &pid), energy, SOURCE, true);
                }
            },
        ));
    }
    for (_, process, what, unit, pick) in utils {
        out.push(Family::new(
            process,
            format!(
                "Cumulative sum of the process's GPU {what} samples (percent) per GPU (gpu_id)."
            ),
            MetricType::Counter,
            unit,
            move |out| {
                for p in &s.processes {
                    let Some(shares) = s.gpu_processes.get(&p.pid) else {
                        continue;
                    };
                    let pid = p.pid.to_string();
                    for (gpu, share) in shares {
                        let gpu = gpu.to_string();
                        let ids = process_ids(p, &pid);
                        let labels = [
                            ids[0],
                            ids[1],
                            ids[2],
                            ids[3],
                            ("gpu_id", gpu.as_str()),
                            ("source", SOURCE),
                        ];
                        out(&labels, Value::Float(pick(share) as f64));
                    }
                }
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::units::Watts;
    use crate::snapshot::examples::{node_with_system_processes, split};

    fn with_gpu() -> Snapshot {
        let mut s = node_with_system_processes(&[], "none");
        s.gpus.push(NodeGpu {
            index: 0,
            mig: None,
            uuid: "GPU-1".into(),
            name: "Fake GPU".into(),
            energy: split(7_000_000, 3_000_000),
            watts: Watts(50.0),
            idle_watts: Watts(20.0),
        });
        s
    }

    fn rows(families: &[Family<'_>]) -> Vec<String> {
        let mut rows = Vec::new();
        for f in families {
            f.for_each_sample(|labels, value| {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                rows.push(format!(
                    "{} {} {}",
                    f.name,
                    labels.join(","),
                    value.as_f64()
                ));
            });
        }
        rows
    }

    #[test]
    fn modern_series_per_gpu() {
        let s = with_gpu();
        let mut out = Vec::new();
        modern_gpu_families(&s, &mut out);
        let rows = rows(&out);
        let labels = "node_name=n1,gpu=0,gpu_uuid=GPU-1,gpu_name=Fake GPU,vendor=nvidia";
        for want in [
            format!("kepler_node_gpu_joules_total {labels} 10"),
            format!("kepler_node_gpu_active_joules_total {labels} 7"),
            format!("kepler_node_gpu_idle_joules_total {labels} 3"),
            format!("kepler_node_gpu_watts {labels} 50"),
            format!("kepler_node_gpu_active_watts {labels} 30"),
            format!("kepler_node_gpu_idle_watts {labels} 20"),
            format!("kepler_node_gpu_info {labels} 1"),
        ] {
            assert!(rows.contains(&want), "{want} not in {rows:#?}");
        }
    }

    #[test]
    fn classic_modes_with_upstream_labels() {
        let s = with_gpu();
        let mut out = Vec::new();
        classic_gpu_families(&s, &mut out);
        assert_eq!(
            rows(&out),
            [
                "kepler_node_gpu_joules_total package=0,instance=n1,mode=dynamic,source=NVML 7",
                "kepler_node_gpu_joules_total package=0,instance=n1,mode=idle,source=NVML 3",
            ]
        );
    }

    #[test]
    fn mig_instances_are_devices_named_by_index_and_instance_ids() {
        let mut s = node_with_system_processes(&[], "none");
        for (gi, uuid, name, (d, i)) in [
            (1, "MIG-a", "Fake MIG 4g", (4_000_000, 0)),
            (2, "MIG-b", "Fake MIG 3g", (3_000_000, 1_000_000)),
        ] {
            s.gpus.push(NodeGpu {
                index: 0,
                mig: Some(crate::snapshot::MigId {
                    gpu_instance: gi,
                    compute_instance: 0,
                }),
                uuid: uuid.into(),
                name: name.into(),
                energy: split(d, i),
                watts: Watts(0.0),
                idle_watts: Watts(0.0),
            });
        }
        let mut out = Vec::new();
        modern_gpu_families(&s, &mut out);
        let modern = rows(&out);
        for want in [
            "kepler_node_gpu_joules_total node_name=n1,gpu=0:1:0,gpu_uuid=MIG-a,gpu_name=Fake MIG 4g,vendor=nvidia 4",
            "kepler_node_gpu_joules_total node_name=n1,gpu=0:2:0,gpu_uuid=MIG-b,gpu_name=Fake MIG 3g,vendor=nvidia 4",
            "kepler_node_gpu_info node_name=n1,gpu=0:2:0,gpu_uuid=MIG-b,gpu_name=Fake MIG 3g,vendor=nvidia 1",
        ] {
            assert!(modern.iter().any(|r| r == want), "{want} not in {modern:#?}");
        }
        assert!(!modern.iter().any(|r| r.contains("gpu=0,")), "{modern:#?}");
        let mut out = Vec::new();
        classic_gpu_families(&s, &mut out);
        assert_eq!(
            rows(&out),
            [
                "kepler_node_gpu_joules_total package=0:1:0,instance=n1,mode=dynamic,source=NVML 4",
                "kepler_node_gpu_joules_total package=0:1:0,instance=n1,mode=idle,source=NVML 0",
                "kepler_node_gpu_joules_total package=0:2:0,instance=n1,mode=dynamic,source=NVML 3",
                "kepler_node_gpu_joules_total package=0:2:0,instance=n1,mode=idle,source=NVML 1",
            ]
        );
    }

    #[test]
    fn no_gpu_no_family() {
        let s = node_with_system_processes(&[], "none");
        let mut out = Vec::new();
        modern_gpu_families(&s, &mut out);
        classic_gpu_families(&s, &mut out);
        assert!(out.is_empty());
    }
}
