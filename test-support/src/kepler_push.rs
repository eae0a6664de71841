//! One node's OTLP push shaped like kepler-rs's, for the hub benchmarks (the in-process `hub`
//! bench and the side-by-side bench against the real Collector) so that both send the same load.
//!
//! Push `r` (resource `service.name=kepler-pods`, `service.instance.id`, `host.name`,
//! `k8s.node.name`, `k8s.cluster.name`; scope `kepler-rs`) holds 250 containers, each of them 4
//! points: the monotonic cumulative sum `kepler_container_joules_total` (unit `J`) and the gauge
//! `kepler_container_cpu_watts` (unit `W`), each with `mode="dynamic"` and `mode="idle"`. Every
//! point carries 7 string attributes: `container_id` (64 random-looking hex digits),
//! `pod_name`, `container_name`, `container_namespace`, `mode`, `source`, `cluster` (10
//! clusters: `r % 10`). So push `r` holds the series `1000 r .. 1000 r + 999`, and a later
//! round re-sends them with grown values.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// Containers per push.
pub const CONTAINERS_PER_PUSH: usize = 250;
/// Points (= series) per push: 2 metrics x 2 modes per container.
pub const POINTS_PER_PUSH: usize = CONTAINERS_PER_PUSH * 4;
/// Clusters the nodes are spread over.
const CLUSTERS: usize = 10;

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

/// A container id as runtimes write them: 64 hex digits, different for every `c`.
fn container_id(c: usize) -> String {
    // splitmix64 of c, 4 ways: a bijection per word, so ids never collide.
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let c = c as u64;
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        mix(c),
        mix(c ^ (1 << 40)),
        mix(c ^ (2 << 40)),
        mix(c ^ (3 << 40))
    )
}

/// Push `r` of round `round` (see the module head): every point stamped `time`, sums starting at `start`.
pub fn push(r: usize, round: u64, start: u64, time: u64) -> ExportMetricsServiceRequest {
    let cluster = format!("cluster{}", r % CLUSTERS);
    let node = format!("node-{r:05}");
    let mut joules = Vec::with_capacity(CONTAINERS_PER_PUSH * 2);
    let mut watts = Vec::with_capacity(CONTAINERS_PER_PUSH * 2);
    for i in 0..CONTAINERS_PER_PUSH {
        let c = r * CONTAINERS_PER_PUSH + i;
        for mode in ["dynamic", "idle"] {
            let attributes = vec![
                kv("container_id", container_id(c)),
                kv("pod_name", format!("pod-{}-7d9f8b6c5d-x2k4q", c / 2)),
                kv("container_name", format!("container-{}", c % 2)),
                kv("container_namespace", format!("namespace-{}", c / 100)),
                kv("mode", mode.into()),
                kv("source", "rapl-sysfs".into()),
                kv("cluster", cluster.clone()),
            ];
            // Energy grows every round; power moves around.
            let energy = (round + 1) as f64 * (1.0 + (c % 13) as f64 * 0.25);
            let power = (c % 17) as f64 * 0.5 + (round % 3) as f64;
            joules.push(NumberDataPoint {
                attributes: attributes.clone(),
                start_time_unix_nano: start,
                time_unix_nano: time,
                value: Some(number_data_point::Value::AsDouble(energy)),
                ..Default::default()
            });
            watts.push(NumberDataPoint {
                attributes,
                time_unix_nano: time,
                value: Some(number_data_point::Value::AsDouble(power)),
                ..Default::default()
            });
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "kepler-pods".into()),
                    kv("service.instance.id", node.clone()),
                    kv("host.name", node.clone()),
                    kv("k8s.node.name", node),
                    kv("k8s.cluster.name", cluster),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "kepler-rs".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                metrics: vec![
                    Metric {
                        name: "kepler_container_joules_total".into(),
                        unit: "J".into(),
                        description: "Energy consumption of cpu at container level in joules."
                            .into(),
                        data: Some(Data::Sum(Sum {
                            data_points: joules,
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "kepler_container_cpu_watts".into(),
                        unit: "W".into(),
                        description: "Power attributed to the container in watts.".into(),
                        data: Some(Data::Gauge(Gauge { data_points: watts })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
