//! The load generator: OTLP/gRPC `ExportMetricsServiceRequest`s shaped like kepler-rs pushes.
//!
//! Request `r` is one node's push (resource `service.name=kepler-pods`, `service.instance.id`,
//! `host.name`, `k8s.node.name`, `k8s.cluster.name`; scope `kepler-rs`) with 250 containers,
//! each of them 4 points: the monotonic cumulative sum `kepler_container_joules_total` (unit `J`)
//! and the gauge `kepler_container_cpu_watts` (unit `W`), each with `mode="dynamic"` and
//! `mode="idle"`. Every point carries 7 string attributes: `container_id` (64 hex digits),
//! `pod_name`, `container_name`, `container_namespace`, `mode`, `source`, `cluster` (10
//! clusters: `r % 10`). So request `r` holds the live series `1000 r .. 1000 r + 999`, and a
//! round re-sends them with a later timestamp and grown values.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

/// Containers per request (one node's push).
pub const CONTAINERS_PER_REQUEST: usize = 250;
/// Points (= live series) per request: 2 metrics x 2 modes per container.
pub const POINTS_PER_REQUEST: usize = CONTAINERS_PER_REQUEST * 4;
/// Requests in flight at once on the one HTTP/2 connection.
const IN_FLIGHT: usize = 4;
/// Clusters the nodes are spread over (each under kepler-collector's default 500,000 series
/// per cluster up to 5,000,000 series).
const CLUSTERS: usize = 10;

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_else(|e| panic!("the clock is before 1970: {e}"))
}

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

/// Push `r` of round `round`: every point stamped `time`, sums starting at `start`.
pub fn request(r: usize, round: u64, start: u64, time: u64) -> ExportMetricsServiceRequest {
    let cluster = format!("cluster{}", r % CLUSTERS);
    let node = format!("node-{r:05}");
    let mut joules = Vec::with_capacity(CONTAINERS_PER_REQUEST * 2);
    let mut watts = Vec::with_capacity(CONTAINERS_PER_REQUEST * 2);
    for i in 0..CONTAINERS_PER_REQUEST {
        let c = r * CONTAINERS_PER_REQUEST + i;
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

/// What one [`send`] got acknowledged.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    /// Points in requests answered OK, less those the answers' partial success rejected.
    pub accepted: u64,
    /// Points rejected by partial success.
    pub rejected: u64,
    /// Wall time of the whole send.
    pub wall: Duration,
}

/// Sends pushes `requests` of round `round` to the OTLP/gRPC receiver at `addr`, a few at once
/// on one connection (tonic's client; gzipped when `gzip`). Panics with the status of the
/// first refused request.
pub fn send(addr: SocketAddr, requests: Range<usize>, round: u64, start: u64, gzip: bool) -> Sent {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    runtime.block_on(async move {
        let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap_or_else(|e| panic!("endpoint {addr}: {e}"))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the hub at {addr}: {e}"));
        let mut client = MetricsServiceClient::new(channel).max_encoding_message_size(64 << 20);
        if gzip {
            // A Go gRPC server answers in the request's encoding.
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        let began = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for lane in 0..IN_FLIGHT {
            let mut client = client.clone();
            let requests = requests.clone();
            tasks.spawn(async move {
                let mut sent = Sent::default();
                for r in requests.skip(lane).step_by(IN_FLIGHT) {
                    let req = request(r, round, start, now_ns());
                    let answer = client
                        .export(req)
                        .await
                        .unwrap_or_else(|s| panic!("push {r} of round {round} refused: {s}"))
                        .into_inner();
                    let rejected = answer
                        .partial_success
                        .map_or(0, |p| p.rejected_data_points.max(0) as u64);
                    sent.accepted += POINTS_PER_REQUEST as u64 - rejected;
                    sent.rejected += rejected;
                }
                sent
            });
        }
        let mut total = Sent::default();
        while let Some(lane) = tasks.join_next().await {
            let lane = lane.unwrap_or_else(|e| panic!("a sending task failed: {e}"));
            total.accepted += lane.accepted;
            total.rejected += lane.rejected;
        }
        total.wall = began.elapsed();
        total
    })
}
