#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Attacks on the three-cluster pipeline (see `common/mod.rs`), from a fourth, rogue namespace
//! on the same bridge: real exporters that call themselves cluster1 with no token or an unknown
//! one (refused, nothing stored, cluster1's data exactly its own exporter's); garbage bytes and
//! oversized bodies to every listener (refused with 400/413/401, the hub keeps serving; on the
//! gRPC listeners, through a real gRPC client, exactly INVALID_ARGUMENT for garbage and truncated
//! messages, RESOURCE_EXHAUSTED for oversized ones, UNAUTHENTICATED without a valid token); a client with a valid token creating series until its cluster's limit (partial
//! success with the rejected count, existing series still update). In every case the three
//! clusters' energy at the hub stays exactly what their exporters serve and the hub's resident
//! memory stays under a bound. Root only; skips otherwise.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{grpc, http_post, single, spawn_exporter, token, Pipeline, FLOOD, HUB_IP};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tonic::Code;

/// Resident memory the hub may use in these tests (debug build, 20,000 flood series).
const RSS_BOUND_KIB: u64 = 512 * 1024;

fn assert_others_whole(p: &mut Pipeline) {
    p.collector.assert_running();
    for i in 0..common::CLUSTERS.len() {
        p.assert_hub_holds_the_exporters_energy(i);
    }
    let rss = p.collector_rss_kib();
    println!("hub RSS: {rss} KiB");
    assert!(
        rss < RSS_BOUND_KIB,
        "hub RSS {rss} KiB over {RSS_BOUND_KIB} KiB"
    );
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// Pseudo-random bytes (xorshift), reproducible.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sum of the hub's `kepler_collector_requests_total{listener, outcome}`.
fn requests(p: &Pipeline, listener: &str, outcome: &str) -> f64 {
    p.hub_metrics()
        .unwrap_or_default()
        .iter()
        .filter(|((name, l), _)| {
            name == "kepler_collector_requests_total"
                && l.get("listener").map(String::as_str) == Some(listener)
                && l.get("outcome").map(String::as_str) == Some(outcome)
        })
        .map(|(_, v)| *v)
        .sum()
}

/// One OTLP/JSON request: gauge `flood_gauge` with one point per `i` in `range`.
fn flood_body(range: std::ops::Range<usize>, value: f64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let points: Vec<serde_json::Value> = range
        .map(|i| {
            serde_json::json!({
                "asDouble": value,
                "timeUnixNano": now.to_string(),
                "attributes": [{"key": "i", "value": {"stringValue": i.to_string()}}]
            })
        })
        .collect();
    serde_json::json!({"resourceMetrics": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "flood"}}]},
        "scopeMetrics": [{"metrics": [{"name": "flood_gauge", "gauge": {"dataPoints": points}}]}]}]})
    .to_string()
}

fn rejected(body: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let r = &v["partialSuccess"]["rejectedDataPoints"];
    r.as_u64()
        .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn a_rogue_namespace_sending_as_cluster1_without_its_token_stores_nothing() {
    let _serial = common::serial();
    let Some(mut p) = Pipeline::start("rogue sender", "5m") else {
        return;
    };
    let rogue = p.topo.add_ns("rg", 66);
    let spoke = format!("http://{HUB_IP}:4327");
    let _no_token = spawn_exporter(
        &p.exporter_bin,
        &rogue,
        "rogue-a",
        9102,
        &[
            "--cluster=cluster1".to_string(),
            format!("--otlp.endpoint={spoke}"),
            "--ebpf.enabled=false".to_string(),
        ],
        p.dir.path(),
    );
    let _bad_token = spawn_exporter(
        &p.exporter_bin,
        &rogue,
        "rogue-b",
        9103,
        &[
            "--cluster=cluster1".to_string(),
            format!("--otlp.endpoint={spoke}"),
            "--ebpf.enabled=false".to_string(),
            "--otlp.headers=authorization=Bearer%20not-a-token-of-this-hub-0000".to_string(),
        ],
        p.dir.path(),
    );
    // OTLP/HTTP too: a cluster1 point with no token, an unknown one, and cluster2's token.
    let body = p.dir.path().join("rogue.json");
    std::fs::write(&body, flood_body(0..1, 1.0).replace("\"i\"", "\"cluster\"")).unwrap();
    let url = format!("http://{HUB_IP}:4328/v1/metrics");
    let json = "content-type: application/json";
    assert_eq!(http_post(&rogue, &url, &body, &[json]).0, 401);
    assert_eq!(
        http_post(
            &rogue,
            &url,
            &body,
            &[json, "authorization: Bearer not-a-token-000000"]
        )
        .0,
        401
    );

    // Both rogue exporters keep trying and keep being refused.
    let deadline = Instant::now() + Duration::from_secs(120);
    while requests(&p, "spokes-grpc", "unauthenticated") < 6.0 {
        assert!(
            Instant::now() < deadline,
            "the rogue exporters were not refused"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(requests(&p, "spokes-http", "unauthenticated") >= 2.0);
    let hub = p.hub_metrics().unwrap();
    let leaked: Vec<_> = hub
        .keys()
        .filter(|(_, l)| {
            l.values()
                .any(|v| v.starts_with("rogue") || v.contains("not-a-token"))
        })
        .collect();
    assert!(leaked.is_empty(), "rogue data at the hub: {leaked:?}");
    for (name, labels) in hub.keys() {
        assert_ne!(name, "flood_gauge", "{labels:?}");
    }
    assert_others_whole(&mut p);
}

/// A real-shaped request: one gauge point labelled `cluster="cluster1"`, `extra` bytes of
/// attribute value on it.
fn rogue_request(extra: usize) -> ExportMetricsServiceRequest {
    let kv = |k: &str, v: String| KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "rogue".to_string())],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "rogue_gauge".to_string(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![
                                kv("cluster", "cluster1".to_string()),
                                kv("padding", "p".repeat(extra)),
                            ],
                            value: Some(number_data_point::Value::AsDouble(1.0)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The exact gRPC status of bad input from the rogue namespace to the gRPC listener on `port`
/// (`authed`: the spoke listener, where bodies are sent with cluster2's valid token so that only
/// the body is wrong), with tonic's client: garbage and a truncated request INVALID_ARGUMENT,
/// a 6 MiB request (cap 4 MiB) RESOURCE_EXHAUSTED plain or gzipped (small on the wire, too
/// big once inflated), a well-formed request or garbage without a token, or with an unknown
/// one, UNAUTHENTICATED; and an empty request OK, so the client is sound.
fn assert_grpc_statuses(rogue: &str, port: u16, authed: bool) {
    let garbage = garbage(64 * 1024, 13);
    let garbage_again = garbage.clone();
    assert!(ExportMetricsServiceRequest::decode(&garbage[..]).is_err());
    let whole = rogue_request(1024).encode_to_vec();
    let truncated = whole[..whole.len() * 2 / 3].to_vec();
    assert!(ExportMetricsServiceRequest::decode(&truncated[..]).is_err());
    let oversized = rogue_request(6 << 20).encode_to_vec();
    let valid = token("cluster2");
    let call = |what, message: Vec<u8>, token: Option<String>, gzip| grpc::Call {
        what,
        message,
        token,
        gzip,
    };
    let body_token = authed.then(|| valid.clone());
    let mut calls = vec![
        call("empty", Vec::new(), body_token.clone(), false),
        call("garbage", garbage, body_token.clone(), false),
        call("truncated", truncated, body_token.clone(), false),
        call("oversized", oversized.clone(), body_token.clone(), false),
        call("oversized gzip", oversized, body_token.clone(), true),
    ];
    if authed {
        calls.push(call("no token", whole.clone(), None, false));
        // The token is checked before the message is decoded.
        calls.push(call("garbage, no token", garbage_again, None, false));
        let wrong = Some("not-a-token-of-this-hub-0000".to_string());
        calls.push(call("unknown token", whole.clone(), wrong, false));
    }
    let answers = grpc::export_from(rogue, format!("{HUB_IP}:{port}"), calls);
    for (what, code, message) in &answers {
        println!("gRPC :{port} {what}: {code:?} {message}");
        let want = match *what {
            "empty" => Code::Ok,
            "garbage" | "truncated" => Code::InvalidArgument,
            "oversized" | "oversized gzip" => Code::ResourceExhausted,
            _ => Code::Unauthenticated,
        };
        assert_eq!(*code, want, ":{port} {what}: {message}");
    }
}

#[test]
fn garbage_and_oversized_bodies_to_every_listener_leave_the_hub_serving() {
    let _serial = common::serial();
    let Some(mut p) = Pipeline::start("garbage to every listener", "5m") else {
        return;
    };
    let rogue = p.topo.add_ns("rg", 66);
    let dir = p.dir.path().to_path_buf();
    let small = dir.join("garbage");
    write(&small, &garbage(64 * 1024, 7));
    let big = dir.join("big");
    write(&big, &garbage(25 * 1024 * 1024, 11));
    let auth = format!("authorization: Bearer {}", token("cluster2"));

    for (port, authed) in [(4318, false), (4328, true)] {
        let url = format!("http://{HUB_IP}:{port}/v1/metrics");
        let mut headers = vec!["content-type: application/x-protobuf"];
        if authed {
            headers.push(&auth);
            let (code, _) = http_post(
                &rogue,
                &url,
                &small,
                &["content-type: application/x-protobuf"],
            );
            assert_eq!(code, 401, "{port}: garbage without a token");
        }
        let (code, body) = http_post(&rogue, &url, &small, &headers);
        assert_eq!(code, 400, "{port}: garbage protobuf: {body}");
        let mut json = headers.clone();
        json[0] = "content-type: application/json";
        let (code, body) = http_post(&rogue, &url, &small, &json);
        assert_eq!(code, 400, "{port}: garbage JSON: {body}");
        // 413, or (under load) the hub's answer races curl's upload and the connection is
        // reset first; the too_large counters below show the hub refused it either way.
        let (code, body) = http_post(&rogue, &url, &big, &headers);
        assert!(
            code == 413 || code == 0,
            "{port}: 25 MiB body: {code} {body}"
        );
    }
    for (port, authed) in [(4317, false), (4327, true)] {
        assert_grpc_statuses(&rogue, port, authed);
        let url = format!(
            "http://{HUB_IP}:{port}/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
        );
        let mut headers = vec!["content-type: application/grpc", "te: trailers"];
        if authed {
            headers.push(&auth);
        }
        // A body that is not even gRPC-framed (what the framing says is up to the garbage).
        {
            let body = &small;
            let mut cmd = common::in_ns(&rogue, Path::new("curl"));
            cmd.args(["-s", "-o", "/dev/null", "--http2-prior-knowledge"]);
            cmd.args(["--max-time", "30"]);
            for h in &headers {
                cmd.args(["-H", h]);
            }
            cmd.arg("--data-binary")
                .arg(format!("@{}", body.display()))
                .arg(&url);
            let _ = cmd.status().unwrap();
        }
        // Raw bytes that are not HTTP/2 at all.
        let status = common::in_ns(&rogue, Path::new("sh"))
            .arg("-c")
            .arg(format!(
                "cat '{}' > /dev/tcp/{HUB_IP}/{port}",
                small.display()
            ))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        let _ = status;
    }
    // Raw garbage with bash's /dev/tcp where sh lacks it, and garbage to the exposition.
    for port in [4317, 4318, 4327, 4328, 9464] {
        let _ = common::in_ns(&rogue, Path::new("bash"))
            .arg("-c")
            .arg(format!(
                "cat '{}' > /dev/tcp/{HUB_IP}/{port}",
                small.display()
            ))
            .stderr(std::process::Stdio::null())
            .status();
    }
    let (code, _) = http_post(
        &rogue,
        &format!("http://{HUB_IP}:9464/metrics"),
        &small,
        &[],
    );
    assert!(code == 405 || code == 404, "POST to the exposition: {code}");

    assert!(requests(&p, "hub-http", "invalid") >= 2.0);
    assert!(requests(&p, "spokes-http", "invalid") >= 2.0);
    assert!(requests(&p, "hub-http", "too_large") >= 1.0);
    assert!(requests(&p, "spokes-http", "too_large") >= 1.0);
    let hub = p.hub_metrics().unwrap();
    assert!(
        !hub.keys().any(|(name, _)| name == "rogue_gauge"),
        "a refused gRPC request was stored"
    );
    assert_eq!(
        common::http_get(&p.topo.hub, "http://127.0.0.1:9464/healthz").map(|(c, _)| c),
        Some(200)
    );
    assert_others_whole(&mut p);
    // And the pipeline still flows into Prometheus for all three.
    p.prometheus.wait_for(
        "count by (cluster) (rate(kepler_container_joules_total[1m]))",
        120,
        |r| r.len() == 3,
    );
}

#[test]
fn a_client_creating_series_stops_at_its_clusters_limit_and_others_are_unaffected() {
    // The limit is every cluster's, and each exporter reports every container on the host: well
    // above what an exporter sends on a host where other tests churn containers (about 3,000
    // points per push seen), so only the flood reaches it.
    const LIMIT: usize = 20_000;
    const BATCH: usize = 5_000;
    let _serial = common::serial();
    let limits = format!("limits:\n  max_series: 200000\n  max_series_per_cluster: {LIMIT}\n");
    let Some(mut p) = Pipeline::start_with("series flood", "5m", &limits) else {
        return;
    };
    let rogue = p.topo.add_ns("rg", 66);
    let url = format!("http://{HUB_IP}:4328/v1/metrics");
    let auth = format!("authorization: Bearer {}", token(FLOOD));
    let headers = ["content-type: application/json", auth.as_str()];
    let file = p.dir.path().join("flood.json");
    let mut total_rejected = 0;
    for b in 0..(LIMIT / BATCH + 2) {
        std::fs::write(&file, flood_body(b * BATCH..(b + 1) * BATCH, 1.0)).unwrap();
        let (code, body) = http_post(&rogue, &url, &file, &headers);
        assert_eq!(code, 200, "batch {b}: {body}");
        let r = rejected(&body);
        if (b + 1) * BATCH <= LIMIT {
            assert_eq!(r, 0, "batch {b} within the limit: {body}");
        }
        total_rejected += r;
    }
    assert_eq!(
        total_rejected,
        2 * BATCH as u64,
        "rejected beyond the limit"
    );
    // Series that exist keep updating.
    std::fs::write(&file, flood_body(0..BATCH, 2.0)).unwrap();
    let (code, body) = http_post(&rogue, &url, &file, &headers);
    assert_eq!((code, rejected(&body)), (200, 0), "{body}");

    let hub = p.hub_metrics().unwrap();
    let flood_series = hub.keys().filter(|(n, _)| n == "flood_gauge").count();
    assert_eq!(flood_series, LIMIT);
    assert_eq!(
        single(&hub, "kepler_collector_series_active", Some(FLOOD)),
        Some(LIMIT as f64)
    );
    let updated = hub
        .iter()
        .filter(|((n, _), v)| n == "flood_gauge" && **v == 2.0)
        .count();
    assert_eq!(updated, BATCH);
    assert_others_whole(&mut p);
}
