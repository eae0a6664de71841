//! Cluster identity and limits on the real binary: bearer tokens bound to cluster names on the
//! spoke listeners (the hub sets `cluster` from the token, so cluster1 cannot write as
//! cluster2; no or a wrong token is 401 / UNAUTHENTICATED), and series limits (new series over
//! the limit rejected with a partial success, existing series keep updating, other clusters
//! unaffected), with the per-cluster self-metrics; and what `--version` tells an operator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;

const TOKEN_C1: &str = "token-of-cluster1-0123456789";
const TOKEN_C2: &str = "token-of-cluster2-9876543210";

fn auth_config() -> String {
    let tokens = format!(
        ", auth: {{tokens: [{{cluster: cluster1, token: {TOKEN_C1}}}, {{cluster: cluster2, token: {TOKEN_C2}}}]}}"
    );
    loopback_config(&tokens, "")
}

/// One gauge `g` with one point per `(series, cluster attribute)` pair, value `value`.
fn cluster_gauges(series: &[(&str, Option<&str>)], value: f64) -> ExportMetricsServiceRequest {
    let attributes = series.iter().map(|(id, cluster)| {
        let mut attributes = vec![string_kv("id", *id)];
        attributes.extend(cluster.map(|c| string_kv("cluster", c)));
        attributes
    });
    gauge_request("g", attributes, value)
}

/// The exposition holds the two energy series the Python SDK sent (one per transport), both
/// under `cluster="cluster1"`.
fn assert_two_energy_series_of_cluster1(text: &str) {
    let energy: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("interop_energy_joules_total{"))
        .collect();
    assert_eq!(energy.len(), 2, "{text}");
    assert!(
        energy.iter().all(|l| l.contains("cluster=\"cluster1\"")),
        "{energy:?}"
    );
}

/// `--version` names the release, the git revision it was built from and the compiler, so an
/// operator can tell which hub runs.
#[test]
fn version_names_the_release_revision_and_compiler() {
    kepler_test_support::version::assert_version(
        std::path::Path::new(env!("CARGO_BIN_EXE_kepler-collector")),
        "kepler-collector",
    );
}

#[test]
fn python_sdk_with_a_token_cannot_write_as_another_cluster() {
    let Some(python) = python() else { return };
    let hub = HubProcess::start(&auth_config());
    let header = format!("authorization=Bearer {TOKEN_C1}");
    let env = [("OTEL_EXPORTER_OTLP_METRICS_HEADERS", header.as_str())];
    // cluster1's token, data claiming cluster2: stored as cluster1.
    let grpc = format!("http://{}", hub.addr("spokes-grpc"));
    let (ok, out) = python_send_as(&python, "grpc", &grpc, "spoof-grpc", Some("cluster2"), &env);
    assert!(ok, "{out}");
    let http_ep = format!("http://{}/v1/metrics", hub.addr("spokes-http"));
    let (ok, out) = python_send_as(
        &python,
        "http-protobuf",
        &http_ep,
        "spoof-http",
        Some("cluster2"),
        &env,
    );
    assert!(ok, "{out}");
    let text = hub.metrics();
    assert_two_energy_series_of_cluster1(&text);
    assert!(!text.contains("cluster=\"cluster2\""), "{text}");

    // Without a token, or with a wrong one: refused, nothing stored.
    let (ok, out) = python_send(&python, "grpc", &grpc, "anonymous", &[]);
    assert!(!ok, "{out}");
    let bad = [(
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        "authorization=Bearer not-a-valid-token-at-all",
    )];
    let (ok, out) = python_send(&python, "http-protobuf", &http_ep, "anonymous", &bad);
    assert!(!ok, "{out}");
    assert!(!hub.metrics().contains("anonymous"));
}

#[test]
fn requests_without_a_valid_token_are_401_and_unauthenticated() {
    let hub = HubProcess::start(&auth_config());
    let body = cluster_gauges(&[("a", None)], 1.0).encode_to_vec();
    let ct = ("Content-Type", "application/x-protobuf");
    let addr = hub.addr("spokes-http");
    let (status, headers, _) = http(addr, "POST", "/v1/metrics", &[ct], &body);
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/metrics",
        &[ct, ("Authorization", "Bearer wrong-token-0123456789")],
        &body,
    );
    assert_eq!(status, 401);
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/metrics",
        &[ct, ("Authorization", &format!("Basic {TOKEN_C1}"))],
        &body,
    );
    assert_eq!(status, 401);
    let c2 = format!("Bearer {TOKEN_C2}");
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1/metrics",
        &[ct, ("Authorization", &c2)],
        &body,
    );
    assert_eq!(status, 200);
    // The hub's own listeners stay open (they insert cluster="hub").
    let (status, _, _) = http(hub.addr("hub-http"), "POST", "/v1/metrics", &[ct], &body);
    assert_eq!(status, 200);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client =
            MetricsServiceClient::connect(format!("http://{}", hub.addr("spokes-grpc")))
                .await
                .unwrap();
        let err = client
            .export(cluster_gauges(&[("a", None)], 1.0))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let mut request = tonic::Request::new(cluster_gauges(&[("b", Some("cluster2"))], 1.0));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {TOKEN_C1}").parse().unwrap(),
        );
        client.export(request).await.unwrap();
    });
    let text = hub.metrics();
    assert!(
        text.contains("g{cluster=\"cluster2\",id=\"a\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("g{cluster=\"cluster1\",id=\"b\"} 1"),
        "{text}"
    );
    assert!(text.contains("g{cluster=\"hub\",id=\"a\"} 1"), "{text}");
    assert!(text.contains("kepler_collector_requests_total{listener=\"spokes-http\",outcome=\"unauthenticated\"} 3"), "{text}");
    assert!(text.contains("kepler_collector_requests_total{listener=\"spokes-grpc\",outcome=\"unauthenticated\"} 1"), "{text}");
}

#[tokio::test]
async fn series_limits_reject_new_series_and_keep_updating_existing_ones() {
    let hub = HubProcess::start(&loopback_config(
        "",
        "limits: {max_series: 5, max_series_per_cluster: 3}\n",
    ));
    let mut client = MetricsServiceClient::connect(format!("http://{}", hub.addr("spokes-grpc")))
        .await
        .unwrap();
    let c1: Vec<(&str, Option<&str>)> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|id| (*id, Some("c1")))
        .collect();
    let response = client
        .export(cluster_gauges(&c1, 1.0))
        .await
        .unwrap()
        .into_inner();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_data_points, 2);
    assert!(
        partial.error_message.contains("max_series_per_cluster"),
        "{}",
        partial.error_message
    );
    // Existing series keep updating; the rejected ones are still rejected.
    let response = client
        .export(cluster_gauges(&c1, 2.0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.partial_success.unwrap().rejected_data_points, 2);
    // Another cluster is not affected by c1's limit, only by the overall one (5).
    let c2: Vec<(&str, Option<&str>)> =
        ["a", "b", "c"].iter().map(|id| (*id, Some("c2"))).collect();
    let response = client
        .export(cluster_gauges(&c2, 7.0))
        .await
        .unwrap()
        .into_inner();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial.error_message.contains("max_series limit"),
        "{}",
        partial.error_message
    );

    let text = hub.metrics();
    for id in ["a", "b", "c"] {
        assert!(
            text.contains(&format!("g{{cluster=\"c1\",id=\"{id}\"}} 2\n")),
            "{text}"
        );
    }
    assert!(!text.contains("id=\"d\""), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("g{cluster=\"c2\""))
            .count(),
        2,
        "{text}"
    );
    for line in [
        "kepler_collector_points_received_total{cluster=\"c1\"} 10",
        "kepler_collector_points_rejected_total{cluster=\"c1\",reason=\"cluster_series_limit\"} 4",
        "kepler_collector_points_rejected_total{cluster=\"c2\",reason=\"series_limit\"} 1",
        "kepler_collector_series_active{cluster=\"c1\"} 3",
        "kepler_collector_series_active{cluster=\"c2\"} 2",
        "kepler_collector_requests_total{listener=\"spokes-grpc\",outcome=\"partial\"} 3",
    ] {
        assert!(text.contains(line), "missing {line}:\n{text}");
    }
    assert!(text.contains("kepler_collector_cluster_last_seen_timestamp_seconds{cluster=\"c2\"}"));
}

#[test]
fn tls_with_tokens_on_the_spoke_listeners_python_sdk() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // A CA and a leaf for 127.0.0.1 signed by it (Python's ssl refuses a self-signed leaf).
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kepler-collector test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    leaf_params.distinguished_name = rcgen::DistinguishedName::new();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let cert_file = dir.path().join("hub.crt");
    let key_file = dir.path().join("hub.key");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let extra = format!(
        ", auth: {{tokens: [{{cluster: cluster1, token: {TOKEN_C1}}}]}}, tls: {{cert_file: {}, key_file: {}}}",
        cert_file.display(),
        key_file.display()
    );
    let hub = HubProcess::start(&loopback_config(&extra, ""));
    let header = format!("authorization=Bearer {TOKEN_C1}");
    let ca = ca_file.display().to_string();
    let env = [
        ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", header.as_str()),
        ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", ca.as_str()),
        ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip"),
    ];
    let grpc = format!("https://{}", hub.addr("spokes-grpc"));
    let (ok, out) = python_send_as(&python, "grpc", &grpc, "tls-grpc", Some("cluster2"), &env);
    assert!(ok, "{out}");
    let https = format!("https://{}/v1/metrics", hub.addr("spokes-http"));
    let (ok, out) = python_send_as(&python, "http-protobuf", &https, "tls-http", None, &env);
    assert!(ok, "{out}");
    // Plain text to a TLS listener does not get through.
    let (ok, _) = python_send(
        &python,
        "http-protobuf",
        &format!("http://{}/v1/metrics", hub.addr("spokes-http")),
        "plain",
        &env[..1],
    );
    assert!(!ok);
    let text = hub.metrics();
    assert_two_energy_series_of_cluster1(&text);
    assert!(!text.contains("plain"), "{text}");
}
