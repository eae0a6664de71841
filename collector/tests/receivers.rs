//! Transport rules of the OTLP receivers on the real binary: status codes (405, 415, 413, 400,
//! 200 for an empty request), answers in the request's content type, the size cap after
//! decompression (gzip bombs stop at the cap) on HTTP and gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use flate2::write::GzEncoder;
use kepler_collector::receiver::http::RpcStatus;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use std::io::Write;

const PROTO: (&str, &str) = ("Content-Type", "application/x-protobuf");
const JSON: (&str, &str) = ("Content-Type", "application/json; charset=utf-8");

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// 64 MiB of zeros, gzipped to about 64 kB.
fn gzip_bomb() -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

/// A request whose protobuf encoding is about `bytes` long (one metric with a long name).
fn big_request(bytes: usize) -> ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "x".repeat(bytes),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn capped_hub() -> HubProcess {
    HubProcess::start(&loopback_config(", max_request_size: 64KiB", ""))
}

#[test]
fn http_status_codes_and_content_types() {
    let hub = capped_hub();
    let addr = hub.addr("spokes-http");

    let (status, headers, _) = http(addr, "GET", "/v1/metrics", &[], b"");
    assert_eq!(status, 405);
    assert!(
        headers.get("allow").is_some_and(|a| a.contains("POST")),
        "{headers:?}"
    );

    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/metrics",
        &[("Content-Type", "text/plain")],
        b"x",
    );
    assert_eq!(status, 415, "{}", String::from_utf8_lossy(&body));

    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/metrics",
        &[PROTO, ("Content-Encoding", "br")],
        b"",
    );
    assert_eq!(status, 415);

    // An empty request succeeds, answered in the request's content type.
    let (status, headers, body) = http(addr, "POST", "/v1/metrics", &[PROTO], b"");
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(
        ExportMetricsServiceResponse::decode(&body[..])
            .unwrap()
            .partial_success,
        None
    );
    let (status, headers, body) = http(addr, "POST", "/v1/metrics", &[JSON], b"{}");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v.get("partialSuccess").is_none_or(|p| p.is_null()), "{v}");

    // Garbage protobuf: 400 with a google.rpc.Status in protobuf.
    let (status, headers, body) = http(addr, "POST", "/v1/metrics", &[PROTO], b"\x0a\xff\xff\xff");
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let rpc = RpcStatus::decode(&body[..]).unwrap();
    assert_eq!(rpc.code, 3);
    assert!(
        rpc.message.contains("invalid OTLP protobuf"),
        "{}",
        rpc.message
    );

    // JSON with an enum given by name: a clear 400 in JSON, not a silently dropped metric.
    let enum_names = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"e",
        "sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE","isMonotonic":true,
        "dataPoints":[{"asInt":"1"}]}}]}]}]}"#;
    let (status, headers, body) = http(addr, "POST", "/v1/metrics", &[JSON], enum_names);
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("metrics[0].sum")
            && message.contains("AGGREGATION_TEMPORALITY_CUMULATIVE"),
        "{message}"
    );
    assert!(
        !hub.metrics().contains("\ne"),
        "the bad metric must not appear"
    );
}

#[test]
fn http_size_cap_applies_before_and_after_decompression() {
    let hub = capped_hub();
    let addr = hub.addr("spokes-http");
    let big = big_request(100 << 10).encode_to_vec();
    let (status, _, body) = http(addr, "POST", "/v1/metrics", &[PROTO], &big);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    // Compressed it is small, but the cap counts decompressed bytes.
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/metrics",
        &[PROTO, ("Content-Encoding", "gzip")],
        &gzip(&big),
    );
    assert_eq!(status, 413);
    assert!(RpcStatus::decode(&body[..])
        .unwrap()
        .message
        .contains("after decompression"));
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/metrics",
        &[PROTO, ("Content-Encoding", "gzip")],
        &gzip_bomb(),
    );
    assert_eq!(status, 413);
    // Under the cap, gzip works.
    let small = big_request(1 << 10).encode_to_vec();
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/metrics",
        &[PROTO, ("Content-Encoding", "gzip")],
        &gzip(&small),
    );
    assert_eq!(status, 200);
    // The hub still serves.
    assert!(hub.metrics().contains(
        "kepler_collector_requests_total{listener=\"spokes-http\",outcome=\"too_large\"} 3"
    ));
}

#[tokio::test]
async fn grpc_gzip_empty_request_and_size_cap() {
    let hub = capped_hub();
    let endpoint = format!("http://{}", hub.addr("spokes-grpc"));
    let mut client = MetricsServiceClient::connect(endpoint)
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let response = client
        .export(ExportMetricsServiceRequest::default())
        .await
        .unwrap();
    assert_eq!(response.into_inner().partial_success, None);
    // Over the cap after decompression: RESOURCE_EXHAUSTED (permanent, no RetryInfo).
    let err = client.export(big_request(100 << 10)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // Uncompressed over the cap: tonic says OUT_OF_RANGE (retryable); the hub rewrites it.
    let mut plain = MetricsServiceClient::connect(format!("http://{}", hub.addr("spokes-grpc")))
        .await
        .unwrap();
    let err = plain.export(big_request(100 << 10)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let ok = plain.export(big_request(1 << 10)).await.unwrap();
    assert_eq!(ok.into_inner().partial_success, None);
}

/// The official protobuf runtime (Python `google.protobuf.json_format` with the OTLP protos)
/// parses `body` as an `ExportMetricsServiceResponse` and writes it back in the proto3 JSON
/// mapping; `None` when the venv is missing.
fn proto3_json_round_trip(body: &[u8]) -> Option<serde_json::Value> {
    let python = python()?;
    let script = "import json, sys\n\
        from google.protobuf import json_format\n\
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import \
        ExportMetricsServiceResponse\n\
        m = json_format.Parse(sys.stdin.read(), ExportMetricsServiceResponse())\n\
        print(json.dumps(json_format.MessageToDict(m)))\n";
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn json_answers_are_what_the_official_protobuf_runtime_writes() {
    let hub = HubProcess::start(&loopback_config("", ""));
    let addr = hub.addr("spokes-http");
    // Two points of which one has a value of the wrong type: a partial success.
    let request = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"v","gauge":
        {"dataPoints":[{"asDouble":"abc"},{"asDouble":2}]}}]}]}]}"#;
    let (status, _, body) = http(addr, "POST", "/v1/metrics", &[JSON], request);
    assert_eq!(status, 200);
    let ours: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ours["partialSuccess"]["rejectedDataPoints"], "1", "{ours}");
    assert!(
        ours["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("1 of 2")),
        "{ours}"
    );
    let Some(official) = proto3_json_round_trip(&body) else {
        return;
    };
    assert_eq!(ours, official);
    // Full success: an empty answer, the same in both.
    let (status, _, body) = http(addr, "POST", "/v1/metrics", &[JSON], b"{}");
    assert_eq!(status, 200);
    let ours: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ours, proto3_json_round_trip(&body).unwrap());
}

#[test]
fn bad_input_gets_a_clear_error_and_leaves_other_clients_data_alone() {
    // Default caps (20 MiB for HTTP).
    let hub = HubProcess::start(&loopback_config("", ""));
    let addr = hub.addr("spokes-http");
    let good = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"good","gauge":
        {"dataPoints":[{"asDouble":1.5,"attributes":[{"key":"cluster","value":{"stringValue":"c1"}}]}]}}]}]}]}"#;
    let (status, _, _) = http(addr, "POST", "/v1/metrics", &[JSON], good);
    assert_eq!(status, 200);

    // 100 MB body: 413 without buffering it all.
    let huge = vec![b'x'; 100 << 20];
    let (status, _, _) = http(addr, "POST", "/v1/metrics", &[PROTO], &huge);
    assert_eq!(status, 413);
    // Wrong types inside a metric's data: 400 naming the metric.
    let wrong = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"w","sum":
        {"isMonotonic":"yes","aggregationTemporality":2,"dataPoints":[]}}]}]}]}"#;
    let (status, _, body) = http(addr, "POST", "/v1/metrics", &[JSON], wrong);
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("metrics[0].sum (metric \\\"w\\\")"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // Random bytes as protobuf; truncated JSON.
    let (status, _, _) = http(addr, "POST", "/v1/metrics", &[PROTO], &[0xff; 64]);
    assert_eq!(status, 400);
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/metrics",
        &[JSON],
        &good[..good.len() / 2],
    );
    assert_eq!(status, 400);
    // A value of the wrong type inside a point: that point is rejected (partial success).
    let bad_value = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"v","gauge":
        {"dataPoints":[{"asDouble":"abc"}]}}]}]}]}"#;
    let (status, _, body) = http(addr, "POST", "/v1/metrics", &[JSON], bad_value);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // int64 in the proto3 JSON mapping: a decimal string.
    assert_eq!(
        v["partialSuccess"]["rejectedDataPoints"],
        serde_json::json!("1"),
        "{v}"
    );

    let text = hub.metrics();
    assert!(text.contains("good{cluster=\"c1\"} 1.5"), "{text}");
    assert!(
        text.contains(
            "kepler_collector_requests_total{listener=\"spokes-http\",outcome=\"invalid\"} 3"
        ),
        "{text}"
    );
}
