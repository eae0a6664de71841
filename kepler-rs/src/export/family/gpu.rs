//! The GPU families, classic and modern, built from the snapshot's NVIDIA GPUs.
//!
//! Modern (Kepler >= 0.10): `kepler_node_gpu_{joules_total,watts,active_joules_total,
//! active_watts,idle_joules_total,idle_watts}` and `kepler_node_gpu_info`, one series per GPU
//! labelled `node_name`, `gpu` (NVML's index), `gpu_uuid`, `gpu_name` and `vendor`. Classic
//! (Kepler <= 0.9): `kepler_node_gpu_joules_total` with `package` (the GPU's index, as classic
//! Kepler labels it), `instance`, `mode` and `source="NVML"`; with `metrics.schema=both` the
//! modern family of the same name is served alone (one name, one label set). Without GPUs no
//! family is built, so nodes without NVML serve exactly what they served before.

use super::{Family, MetricType, Value};
use crate::power::gpu::{SOURCE, VENDOR};
use crate::snapshot::{NodeGpu, Snapshot};

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
            "One series per GPU (always 1): its index, UUID, name and vendor.",
            MetricType::Gauge,
            "",
            |_| Value::Float(1.0),
        ),
    ];
    for (name, help, ty, unit, pick) in specs {
        out.push(Family::new(name, help, ty, unit, move |out| {
            for g in &s.gpus {
                let index = g.index.to_string();
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
        "Cumulative energy of each GPU on the node in joules, per GPU (package label: the GPU's \
         index), mode=\"dynamic\" above its estimated idle power and mode=\"idle\" the rest.",
        MetricType::Counter,
        JOULES,
        move |out| {
            for g in &s.gpus {
                let index = g.index.to_string();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::units::Watts;
    use crate::snapshot::examples::{node_with_system_processes, split};

    fn with_gpu() -> Snapshot {
        let mut s = node_with_system_processes(&[], "none");
        s.gpus.push(NodeGpu {
            index: 0,
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
    fn no_gpu_no_family() {
        let s = node_with_system_processes(&[], "none");
        let mut out = Vec::new();
        modern_gpu_families(&s, &mut out);
        classic_gpu_families(&s, &mut out);
        assert!(out.is_empty());
    }
}
