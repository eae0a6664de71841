//! `-- known [requests] [rounds]`: in-process ingest (one thread, no gRPC) of requests shaped
//! as the side-by-side bench's load (`tests/benches/versus_collector/load.rs`): one node's push
//! per request, resource with 5 attributes, scope `kepler-rs`, 250 containers x 2 metrics (a
//! monotonic sum and a gauge) x 2 modes = 1,000 points, each with 7 string attributes
//! (`container_id` of 64 random-looking hex digits, `cluster` over 10 clusters). Fills
//! `requests` x 1,000 series, then re-sends them `rounds` times (later timestamps), and prints
//! points per CPU-second of this thread for the known series.

use kepler_collector::clock::SystemClock;
use kepler_collector::ingest::{Hub, Labeling};
use kepler_collector::store::{Limits, Store};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::sync::Arc;

const CONTAINERS: usize = 250;
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

fn container_id(c: usize) -> String {
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

/// Push `r` of round `round`, every point stamped `time`.
pub fn request(r: usize, round: u64, time: u64) -> ExportMetricsServiceRequest {
    let cluster = format!("cluster{}", r % CLUSTERS);
    let node = format!("node-{r:05}");
    let mut joules = Vec::with_capacity(CONTAINERS * 2);
    let mut watts = Vec::with_capacity(CONTAINERS * 2);
    for i in 0..CONTAINERS {
        let c = r * CONTAINERS + i;
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
            let energy = (round + 1) as f64 * (1.0 + (c % 13) as f64 * 0.25);
            let power = (c % 17) as f64 * 0.5 + (round % 3) as f64;
            joules.push(NumberDataPoint {
                attributes: attributes.clone(),
                start_time_unix_nano: 1,
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

/// CPU seconds of the calling thread.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

pub fn run(requests: usize, rounds: usize) {
    let hub = Hub::new(Store::new(
        Limits {
            max_series: 0,
            max_series_per_cluster: 0,
        },
        3_600_000,
        Arc::new(SystemClock),
    ));
    let labeling = Labeling {
        insert_cluster: Some("hub"),
        force_cluster: None,
    };
    let fill: Vec<Vec<u8>> = (0..requests)
        .map(|r| request(r, 0, 10).encode_to_vec())
        .collect();
    let cpu = thread_cpu_seconds();
    for body in &fill {
        assert_eq!(hub.ingest_protobuf(body, labeling).unwrap().rejected, 0);
    }
    let fill_cpu = thread_cpu_seconds() - cpu;
    drop(fill);
    let points = requests * CONTAINERS * 4;
    // Each round encoded before it is timed (one round's requests held at a time).
    let mut known_cpu = 0.0;
    for round in 1..=rounds {
        let bodies: Vec<Vec<u8>> = (0..requests)
            .map(|r| request(r, round as u64, 10 + round as u64).encode_to_vec())
            .collect();
        let cpu = thread_cpu_seconds();
        for body in &bodies {
            let outcome = hub.ingest_protobuf(body, labeling).unwrap();
            assert_eq!((outcome.accepted, outcome.rejected), (1_000, 0));
        }
        known_cpu += thread_cpu_seconds() - cpu;
    }
    assert_eq!(hub.store.len(), points);
    println!(
        "kepler-shaped requests, {points} series: new series {:.0} points per CPU-second \
         ({fill_cpu:.2} s); known series, {rounds} rounds: {:.0} points per CPU-second \
         ({known_cpu:.2} s)",
        points as f64 / fill_cpu,
        (points * rounds) as f64 / known_cpu,
    );
}
