//! Mutual TLS on the spoke listeners of the real binary: the hub requires a client certificate
//! signed by its client CA and takes the sender's cluster from the certificate's name (subject
//! common name or DNS subject alternative name), so a spoke can never write as another
//! cluster. Senders: the OpenTelemetry Python SDK (gRPC and HTTP) and tonic / reqwest clients
//! for the refusals (no certificate, another CA, an unbound name, a token of another cluster).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use kepler_test_support::pki::{CertFiles, TestCa};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use std::path::Path;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const TOKEN_C1: &str = "token-of-cluster1-0123456789";

struct Pki {
    _dir: tempfile::TempDir,
    ca: TestCa,
    server: CertFiles,
    /// Common name `spoke-c1`: bound to cluster1.
    c1: CertFiles,
    /// DNS name `otel.c2.example`: bound to cluster2.
    c2: CertFiles,
    /// Signed by the client CA, but its names are bound to nothing.
    unbound: CertFiles,
    /// Named `spoke-c1`, but signed by another CA.
    foreign: CertFiles,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "hub");
    let other = TestCa::new(dir.path(), "other");
    Pki {
        server: ca.server("server", &[]),
        c1: ca.client("c1", "spoke-c1", &[]),
        c2: ca.client("c2", "otel-collector", &["otel.c2.example"]),
        unbound: ca.client("c3", "spoke-c3", &["otel.c3.example"]),
        foreign: other.client("c1", "spoke-c1", &[]),
        ca,
        _dir: dir,
    }
}

/// The spoke listeners with TLS requiring client certificates, two certificate names and one
/// token bound to clusters.
fn mtls_config(pki: &Pki) -> String {
    let spokes = format!(
        ", tls: {{cert_file: {}, key_file: {}, client_ca_file: {}}}, auth: {{certificates: [{{cluster: cluster1, common_name: spoke-c1}}, {{cluster: cluster2, dns_name: otel.c2.example}}], tokens: [{{cluster: cluster1, token: {TOKEN_C1}}}]}}",
        pki.server.cert.display(),
        pki.server.key.display(),
        pki.ca.ca_file.display(),
    );
    loopback_config(&spokes, "")
}

fn gauge(id: &str, cluster: Option<&str>) -> ExportMetricsServiceRequest {
    let mut attributes = vec![string_kv("id", id)];
    attributes.extend(cluster.map(|c| string_kv("cluster", c)));
    gauge_request("g", [attributes], 1.0)
}

async fn grpc_client(
    hub: &HubProcess,
    ca_file: &Path,
    identity: Option<&CertFiles>,
) -> Result<MetricsServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca_file).unwrap()))
        .domain_name("localhost");
    if let Some(files) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&files.cert).unwrap(),
            std::fs::read(&files.key).unwrap(),
        ));
    }
    let channel = Channel::from_shared(format!("https://{}", hub.addr("spokes-grpc")))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(MetricsServiceClient::new(channel))
}

/// POSTs `request` over HTTPS to the spoke HTTP listener; the status, or the error text when
/// no answer came (the handshake was refused).
async fn https_post(
    hub: &HubProcess,
    ca_file: &Path,
    identity: Option<&CertFiles>,
    token: Option<&str>,
    request: &ExportMetricsServiceRequest,
) -> Result<u16, String> {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(ca_file).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
        .no_proxy();
    if let Some(files) = identity {
        let mut pem = std::fs::read(&files.cert).unwrap();
        pem.extend(std::fs::read(&files.key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    let url = format!(
        "https://localhost:{}/v1/metrics",
        hub.addr("spokes-http").port()
    );
    let mut post = builder
        .build()
        .unwrap()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec());
    if let Some(token) = token {
        post = post.bearer_auth(token);
    }
    match post.send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[test]
fn python_sdk_with_a_client_certificate_writes_as_its_cluster() {
    let Some(python) = python() else { return };
    let pki = pki();
    let hub = HubProcess::start(&mtls_config(&pki));
    let ca = pki.ca.ca_file.display().to_string();
    let cert = pki.c1.cert.display().to_string();
    let key = pki.c1.key.display().to_string();
    let env = [
        ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", ca.as_str()),
        (
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            cert.as_str(),
        ),
        ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", key.as_str()),
    ];
    // The gRPC sender claims cluster2 in its points: the certificate says cluster1.
    let grpc = format!("https://localhost:{}", hub.addr("spokes-grpc").port());
    let (ok, out) = python_send_as(&python, "grpc", &grpc, "mtls-grpc", Some("cluster2"), &env);
    assert!(ok, "{out}");
    let https = format!(
        "https://localhost:{}/v1/metrics",
        hub.addr("spokes-http").port()
    );
    let (ok, out) = python_send_as(&python, "http-protobuf", &https, "mtls-http", None, &env);
    assert!(ok, "{out}");
    // Without the client certificate the SDK's export fails.
    let (ok, _) = python_send(&python, "http-protobuf", &https, "no-cert", &env[..1]);
    assert!(!ok);
    let text = hub.metrics();
    let energy: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("interop_energy_joules_total{"))
        .collect();
    assert_eq!(energy.len(), 2, "{text}");
    assert!(
        energy.iter().all(|l| l.contains("cluster=\"cluster1\"")),
        "{energy:?}"
    );
    assert!(!text.contains("no-cert"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_certificate_names_the_cluster_and_nothing_else_gets_in() {
    let pki = pki();
    let hub = tokio::task::block_in_place(|| HubProcess::start(&mtls_config(&pki)));
    let ca = pki.ca.ca_file.as_path();

    // gRPC: cluster1's certificate writes as cluster1 whatever the points say; cluster2's
    // certificate (by DNS name) as cluster2.
    let mut c1 = grpc_client(&hub, ca, Some(&pki.c1)).await.unwrap();
    c1.export(gauge("grpc-a", Some("cluster2"))).await.unwrap();
    let mut c2 = grpc_client(&hub, ca, Some(&pki.c2)).await.unwrap();
    c2.export(gauge("grpc-b", None)).await.unwrap();
    // A certificate of the right CA whose names are bound to nothing: UNAUTHENTICATED.
    let mut unbound = grpc_client(&hub, ca, Some(&pki.unbound)).await.unwrap();
    let err = unbound.export(gauge("grpc-c", None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // cluster2's certificate with cluster1's token: refused, not mixed.
    let mut request = tonic::Request::new(gauge("grpc-d", None));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN_C1}").parse().unwrap(),
    );
    let err = c2.export(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("different clusters"), "{err:?}");
    // No client certificate, or one from another CA: the handshake fails, nothing is sent.
    for identity in [None, Some(&pki.foreign)] {
        let refused = match grpc_client(&hub, ca, identity).await {
            Err(_) => true,
            Ok(mut client) => client.export(gauge("grpc-e", None)).await.is_err(),
        };
        assert!(refused, "{identity:?}");
    }

    // HTTP: the same rules.
    let request = gauge("http-a", Some("cluster2"));
    assert_eq!(
        https_post(&hub, ca, Some(&pki.c1), None, &request).await,
        Ok(200)
    );
    let request = gauge("http-b", None);
    assert_eq!(
        https_post(&hub, ca, Some(&pki.c2), None, &request).await,
        Ok(200)
    );
    let request = gauge("http-c", None);
    assert_eq!(
        https_post(&hub, ca, Some(&pki.unbound), None, &request).await,
        Ok(401)
    );
    let request = gauge("http-d", None);
    assert_eq!(
        https_post(&hub, ca, Some(&pki.c2), Some(TOKEN_C1), &request).await,
        Ok(401)
    );
    // A token alone still works on a listener that has tokens (the TLS layer still wants a
    // certificate of the client CA: the unbound one).
    let request = gauge("http-f", Some("cluster2"));
    assert_eq!(
        https_post(&hub, ca, Some(&pki.unbound), Some(TOKEN_C1), &request).await,
        Ok(200)
    );
    for identity in [None, Some(&pki.foreign)] {
        let request = gauge("http-e", None);
        let answer = https_post(&hub, ca, identity, None, &request).await;
        assert!(answer.is_err(), "{identity:?}: {answer:?}");
    }

    let text = tokio::task::block_in_place(|| hub.metrics());
    let series: Vec<&str> = text.lines().filter(|l| l.starts_with("g{")).collect();
    let mut series = series;
    series.sort_unstable();
    assert_eq!(
        series,
        [
            "g{cluster=\"cluster1\",id=\"grpc-a\"} 1",
            "g{cluster=\"cluster1\",id=\"http-a\"} 1",
            "g{cluster=\"cluster1\",id=\"http-f\"} 1",
            "g{cluster=\"cluster2\",id=\"grpc-b\"} 1",
            "g{cluster=\"cluster2\",id=\"http-b\"} 1",
        ],
        "{text}"
    );
    assert!(
        text.contains(
            "kepler_collector_requests_total{listener=\"spokes-grpc\",outcome=\"unauthenticated\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "kepler_collector_requests_total{listener=\"spokes-http\",outcome=\"unauthenticated\"} 2"
        ),
        "{text}"
    );
}

#[test]
fn certificate_names_need_a_client_ca_and_one_name_each() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "hub");
    let server = ca.server("server", &[]);
    let yaml = format!(
        r#"listeners:
  - name: spokes
    protocol: grpc
    address: "127.0.0.1:0"
    tls: {{cert_file: {}, key_file: {}}}
    auth:
      certificates:
        - {{cluster: c1, common_name: a}}
        - {{cluster: c2, common_name: b, dns_name: b.example}}
        - {{cluster: c3, common_name: a}}
"#,
        server.cert.display(),
        server.key.display()
    );
    let config = dir.path().join("hub.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kepler-collector"))
        .arg("--config.file")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "listeners[0].auth.certificates: needs tls.client_ca_file",
        "listeners[0].auth.certificates[1]: set exactly one of common_name and dns_name",
        "listeners[0].auth.certificates[2]: the same certificate name is given twice",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
}
