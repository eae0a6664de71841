#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Hub benchmark (not a test): OTLP requests of 1,000 points, each point carrying 6 string
//! attributes (the shape of a Kepler container series: container_id, pod_name, container_name,
//! container_namespace, mode, source) on the monotonic sum `kepler_container_joules_total`.
//!
//! Reports, on one thread (so per core):
//! - bare decode: `prost` decoding the encoded requests, points/s;
//! - hub ingest: decode + ingest (translation, cluster insert, store update) of the same
//!   requests when the series are already known (steady state), points/s, and the ratio;
//!   through `Hub::ingest_protobuf` (read in place), and through prost + `Hub::ingest` (the
//!   reference path that JSON and unusual requests take);
//! - hub ingest of new series (first sight);
//! - memory per active series at 1,000,000 series (RSS growth / series);
//! - `/metrics` at 1,000,000 series (all in the one family `kepler_container_joules_total`):
//!   render time and the memory a scrape needs beyond the stored state (peak heap, counted by
//!   a counting allocator, and peak RSS), for one scrape and for 4 at once, rendered while sent
//!   (in process, and through the real server over loopback) and collected first (the former
//!   render, `render_collected`).
//!
//! Run: `cargo bench -p kepler-collector --bench hub` (or `-- 200000` for fewer series; `-- grpc`
//! for the gRPC part alone, with 40 rounds; `gzip` too for gzipped gRPC requests; `-- scrape`
//! for the memory and `/metrics` part alone; `-- known [requests] [rounds]` for in-process ingest
//! of requests shaped as the side-by-side bench's load, see `hub/kepler_shape.rs`).
//! Then over gRPC: the hub started in process (`app::start`, tokio) and a tonic client in the
//! same process sending the same requests (no compression) one after another on loopback;
//! points/s of wall time and points per CPU-second of the whole process (client encoding
//! included, so the hub's own cost per point is lower). Then the same from a client in another
//! process (this binary run with `--grpc-client`): points per CPU-second of the hub's process.

#[path = "hub/heap.rs"]
mod heap;
#[path = "hub/kepler_shape.rs"]
mod kepler_shape;
#[path = "hub/scrape.rs"]
mod scrape;

use kepler_collector::clock::SystemClock;
use kepler_collector::decode;
use kepler_collector::ingest::{Hub, Labeling};
use kepler_collector::store::{Limits, Store};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::sync::Arc;
use std::time::Instant;

const POINTS: usize = 1_000;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
    }
}

/// Request `r` of the series space: points `r*1000 .. r*1000+999`, value `v`.
fn request(r: usize, v: f64, time: u64) -> ExportMetricsServiceRequest {
    let points = (0..POINTS)
        .map(|i| {
            let n = r * POINTS + i;
            NumberDataPoint {
                attributes: vec![
                    kv("container_id", format!("{n:064x}")),
                    kv("pod_name", format!("pod-{}-7d9f8b6c5d-x2k4q", n / 4)),
                    kv("container_name", format!("container-{}", n % 4)),
                    kv("container_namespace", format!("namespace-{}", n / 400)),
                    kv("mode", if n % 2 == 0 { "dynamic" } else { "idle" }.into()),
                    kv("source", "rapl-sysfs".into()),
                ],
                start_time_unix_nano: 1,
                time_unix_nano: time,
                value: Some(number_data_point::Value::AsDouble(v + n as f64)),
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "kepler".into()),
                    kv("service.instance.id", format!("node-{}", r % 100)),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "kepler_container_joules_total".into(),
                    unit: "J".into(),
                    description: "Energy consumption of containers.".into(),
                    data: Some(Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn rate(points: usize, seconds: f64) -> String {
    format!("{:.0}", points as f64 / seconds)
}

fn main() {
    // The separate-process gRPC client of `grpc` (this binary run again).
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, addr, working, rounds] = args.as_slice() {
        if flag == "--grpc-client" {
            grpc_client(addr, working.parse().unwrap(), rounds.parse().unwrap());
            return;
        }
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("hub benchmark: not run (use `cargo bench -p kepler-collector --bench hub`)");
        return;
    }
    if std::env::args().any(|a| a == "known") {
        let numbers: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
        let requests = numbers.first().copied().unwrap_or(100);
        let rounds = numbers.get(1).copied().unwrap_or(10);
        kepler_shape::run(requests, rounds);
        return;
    }
    let series: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    // Throughput on a working set of 100 requests (100,000 series), several rounds.
    let working = 100;
    let rounds = 10;
    // `-- grpc`: only the gRPC part, with more rounds (for profiling the hub's process and
    // repeated A/B runs).
    // `gzip`: the gRPC clients gzip their requests (the OpenTelemetry Collector's default).
    let gzip = std::env::args().any(|a| a == "gzip");
    if std::env::args().any(|a| a == "grpc") {
        grpc(working, 4 * rounds, false, gzip);
        return;
    }
    memory_and_render(series);
    if std::env::args().any(|a| a == "scrape") {
        return;
    }

    let encoded: Vec<Vec<Vec<u8>>> = (0..rounds)
        .map(|round| {
            (0..working)
                .map(|r| request(r, round as f64, 10 + round as u64).encode_to_vec())
                .collect()
        })
        .collect();
    let bytes_per_request = encoded[0][0].len();

    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut n = 0;
    for round in &encoded {
        for body in round {
            n += decode::protobuf(body).unwrap().resource_metrics.len();
        }
    }
    let bare = start.elapsed().as_secs_f64();
    let bare_cpu = cpu_seconds() - cpu0;
    assert_eq!(n, working * rounds);
    let points_total = working * rounds * POINTS;

    let hub = Hub::new(Store::new(
        Limits::default(),
        300_000,
        Arc::new(SystemClock),
    ));
    let labeling = Labeling {
        insert_cluster: Some("hub"),
        force_cluster: None,
    };
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    for body in &encoded[0] {
        hub.ingest_protobuf(body, labeling).unwrap();
    }
    let first = start.elapsed().as_secs_f64();
    let first_cpu = cpu_seconds() - cpu0;
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    for round in &encoded[1..] {
        for body in round {
            let outcome = hub.ingest_protobuf(body, labeling).unwrap();
            assert_eq!(outcome.rejected, 0);
        }
    }
    let steady = start.elapsed().as_secs_f64();
    let steady_cpu = cpu_seconds() - cpu0;
    let steady_points = (rounds - 1) * working * POINTS;
    // The reference path (what JSON and unusual protobuf requests take): prost, then ingest.
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    for round in &encoded[1..] {
        for body in round {
            let outcome = hub.ingest(&decode::protobuf(body).unwrap(), labeling);
            assert_eq!(outcome.rejected, 0);
        }
    }
    let prost_path = start.elapsed().as_secs_f64();
    let prost_cpu = cpu_seconds() - cpu0;
    drop(encoded);
    drop(hub);

    println!("request: {POINTS} points x 6 string attributes, {bytes_per_request} bytes encoded");
    println!("| measure (1 thread) | points/s (wall) | points per CPU-second | CPU s |");
    println!("|---|---:|---:|---:|");
    println!(
        "| bare prost decode | {} | {} | {bare_cpu:.2} |",
        rate(points_total, bare),
        rate(points_total, bare_cpu)
    );
    println!(
        "| hub decode + ingest, known series | {} | {} | {steady_cpu:.2} |",
        rate(steady_points, steady),
        rate(steady_points, steady_cpu)
    );
    println!(
        "| hub decode + ingest, new series | {} | {} | {first_cpu:.2} |",
        rate(working * POINTS, first),
        rate(working * POINTS, first_cpu)
    );
    println!(
        "| hub prost decode + ingest (reference path), known series | {} | {} | {prost_cpu:.2} |",
        rate(steady_points, prost_path),
        rate(steady_points, prost_cpu)
    );
    println!(
        "hub ingest cost / bare decode cost (known series, CPU): {:.2}",
        (steady_cpu / steady_points as f64) / (bare_cpu / points_total as f64)
    );

    grpc(working, rounds, true, gzip);
}

/// Memory and render at `series` series, first, in a fresh process (so that the RSS growth is
/// not hidden by memory freed by earlier phases).
fn memory_and_render(series: usize) {
    let requests = series / POINTS;
    let labeling = Labeling {
        insert_cluster: Some("hub"),
        force_cluster: None,
    };
    let before = rss_bytes();
    let hub = Hub::new(Store::new(
        Limits {
            max_series: 0,
            max_series_per_cluster: 0,
        },
        3_600_000,
        Arc::new(SystemClock),
    ));
    let start = Instant::now();
    for r in 0..requests {
        let body = request(r, 1.0, 10).encode_to_vec();
        hub.ingest_protobuf(&body, labeling).unwrap();
    }
    let fill = start.elapsed().as_secs_f64();
    let after = rss_bytes();
    let stored = hub.store.len();
    println!("| at {stored} series | value |");
    println!("|---|---:|");
    println!(
        "| RSS growth per series | {} bytes |",
        (after.saturating_sub(before)) / stored.max(1) as u64
    );
    println!("| fill (build + encode + decode + ingest) | {fill:.1} s |");
    // Streamed first: the collected render leaves freed memory in the allocator, which would
    // hide the streamed render's own growth in RSS.
    let hub = Arc::new(hub);
    let first = scrape::measure(|| scrape::streamed(&hub));
    let one = scrape::measure(|| scrape::streamed(&hub));
    let four = scrape::measure(|| scrape::concurrent(4, || scrape::streamed(&hub)));
    let server = scrape::Server::start(hub.clone());
    server.scrape();
    let http_one = scrape::measure(|| server.scrape());
    let http_four = scrape::measure(|| scrape::concurrent(4, || server.scrape()));
    server.stop();
    let old_one = scrape::measure(|| scrape::collected(&hub));
    let old_four = scrape::measure(|| scrape::concurrent(4, || scrape::collected(&hub)));
    println!();
    println!("| /metrics at {stored} series | wall | CPU | peak heap above the store | peak RSS above the store | text |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (what, cost) in [
        (
            "streamed, first render after the fill (sorts the family indexes)",
            &first,
        ),
        ("streamed, 1 scrape (`render_each`)", &one),
        ("streamed, 4 scrapes at once", &four),
        ("streamed over HTTP (server, loopback), 1 scrape", &http_one),
        (
            "streamed over HTTP (server, loopback), 4 scrapes at once",
            &http_four,
        ),
        ("collected (the former render), 1 scrape", &old_one),
        (
            "collected (the former render), 4 scrapes at once",
            &old_four,
        ),
    ] {
        println!("{}", cost.row(what));
    }
}

/// The process's peak RSS (`VmHWM`), in bytes.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kib * 1024
}

/// CPU seconds (user + system) used by this process so far.
fn cpu_seconds() -> f64 {
    cpu_seconds_in("/proc/self/stat")
}

/// CPU seconds (user + system) a `/proc/.../stat` file reports (a process's or a thread's).
fn cpu_seconds_in(stat_file: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_file).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// `in_process`: also time the client in this process (otherwise only the first round, which
/// inserts the series, is sent from here).
fn grpc(working: usize, rounds: usize, in_process: bool, gzip: bool) {
    use kepler_collector::config::RawConfig;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    let yaml = r#"
listeners:
  - {name: hub-grpc, protocol: grpc, address: "127.0.0.1:0", insert_cluster: hub, max_request_size: 16MiB}
exposition: {address: "127.0.0.1:0"}
"#;
    let config = RawConfig::from_yaml(yaml, "bench")
        .unwrap()
        .validate()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let running = kepler_collector::app::start(&config, Arc::new(SystemClock)).await.unwrap();
        let addr = running.address("hub-grpc").unwrap();
        let mut client = MetricsServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_encoding_message_size(16 << 20);
        if gzip {
            client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        let compression = if gzip { "gzip" } else { "no compression" };
        let timed = if in_process { rounds } else { 0 };
        let batches: Vec<Vec<ExportMetricsServiceRequest>> = (0..timed)
            .map(|round| (0..working).map(|r| request(r, round as f64, 10 + round as u64)).collect())
            .collect();
        // First round inserts the series; the rest update them. Without the in-process
        // client, another process inserts them (so that this process's profile is the hub's).
        if in_process {
            for req in &batches[0] {
                client.export(req.clone()).await.unwrap();
            }
        } else {
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--grpc-client", &addr.to_string(), &working.to_string(), "2"])
                .env("HUB_BENCH_GZIP", if gzip { "1" } else { "0" })
                .status()
                .unwrap();
            assert!(status.success());
        }
        let start = Instant::now();
        let cpu = cpu_seconds();
        let mut points = 0;
        for round in batches.into_iter().skip(1) {
            for req in round {
                let r = client.export(req).await.unwrap().into_inner();
                assert!(r.partial_success.is_none());
                points += POINTS;
            }
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        if in_process {
            println!("| over gRPC, known series (client in process) | points/s wall | points per CPU-second |");
            println!("|---|---:|---:|");
            println!("| tonic unary Export, {compression} | {} | {} |", rate(points, wall), rate(points, cpu));
        }
        // The same rounds from a client in another process: this process's CPU is then the
        // hub's own (receiving, HTTP/2, decode, ingest), with the client on the other core.
        let cpu = cpu_seconds();
        let start = Instant::now();
        // Blocking here is fine: `block_on` runs on this thread, the hub on the workers.
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--grpc-client", &addr.to_string(), &working.to_string(), &rounds.to_string()])
            .env("HUB_BENCH_GZIP", if gzip { "1" } else { "0" })
            .status()
            .unwrap();
        assert!(status.success());
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let points = (rounds - 1) * working * POINTS;
        println!("| over gRPC, known series, client in another process | points/s wall (client building requests included) | points per hub CPU-second |");
        println!("|---|---:|---:|");
        println!("| tonic unary Export, {compression} | {} | {} |", rate(points, wall), rate(points, cpu));
        running.run_until(async {}).await.unwrap();
    });
}

/// The client of the separate-process gRPC measurement: rounds 1.. of the working set (all
/// series known to the hub), with later timestamps than the in-process run's.
fn grpc_client(addr: &str, working: usize, rounds: usize) {
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = MetricsServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_encoding_message_size(16 << 20);
        if std::env::var("HUB_BENCH_GZIP").as_deref() == Ok("1") {
            client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        for round in 1..rounds {
            for r in 0..working {
                let req = request(r, round as f64, 100 + round as u64);
                let response = client.export(req).await.unwrap().into_inner();
                assert!(response.partial_success.is_none());
            }
        }
    });
}
