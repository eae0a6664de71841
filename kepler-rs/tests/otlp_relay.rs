#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The relay end to end: the real `kepler-rs` binary scrapes a fixture cAdvisor page of the
//! kubelet's real shape, served locally (plain HTTP, and HTTPS with a bearer token and a
//! generated CA like the kubelet's), and pushes it to `tests/otlp_sink.py` (official protos).
//! Checks that the receiver gets the relayed series with `cluster` set, counters as cumulative
//! Sums whose start is the first scrape and moves on a reset, gauges as Gauges, the allow-list
//! and dropped labels applied; and that a garbage-serving and an unreachable target are logged,
//! counted and skipped while `/metrics` keeps serving.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::otlp::{
    attrs, free_port, metrics, metrics_of, num, points, python, start_exporter, Sink,
};
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/cadvisor.prom");

/// The fixture page for the n-th scrape: the app container's CPU counter grows for four scrapes,
/// then the container restarts (the counter starts again near 0).
fn page(n: u64) -> String {
    let app = if n < 4 {
        100.0 + n as f64
    } else {
        (n - 3) as f64 * 0.5
    };
    FIXTURE
        .replace("{ROOT_CPU}", &format!("{}", 80_000 + n * 10))
        .replace("{APP_CPU}", &format!("{app}"))
}

/// What a fake endpoint answers.
#[derive(Clone, Copy)]
enum Serve {
    Cadvisor,
    Garbage,
    /// Accepts and never answers in time (a hung endpoint).
    Hang,
}

/// A tiny HTTP/1.0 server on a thread: answers every GET with the page (counting scrapes), or
/// 401 when `token` is set and the request lacks `Authorization: Bearer <token>`. With `tls`,
/// speaks HTTPS through rustls (synchronous `StreamOwned`).
fn serve(
    serve: Serve,
    token: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let scrapes = Arc::new(AtomicU64::new(0));
    let count = scrapes.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let result = match &tls {
                Some(config) => {
                    let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                    let mut tls_stream = rustls::StreamOwned::new(conn, stream);
                    answer(&mut tls_stream, serve, token.as_deref(), &count)
                }
                None => {
                    let mut stream = stream;
                    answer(&mut stream, serve, token.as_deref(), &count)
                }
            };
            let _ = result;
        }
    });
    (port, scrapes)
}

fn answer(
    stream: &mut (impl Read + Write),
    serve: Serve,
    token: Option<&str>,
    count: &AtomicU64,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if let Some(token) = token {
        if !head.contains(&format!(
            "authorization: bearer {}",
            token.to_ascii_lowercase()
        )) {
            let body = "Unauthorized";
            write!(
                stream,
                "HTTP/1.0 401 Unauthorized\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            return stream.flush();
        }
    }
    let body = match serve {
        Serve::Hang => {
            std::thread::sleep(Duration::from_secs(3));
            return Ok(());
        }
        Serve::Cadvisor => page(count.fetch_add(1, Ordering::SeqCst)),
        Serve::Garbage => "<html><body><h1>502 Bad Gateway</h1></body></html>\n".to_string(),
    };
    write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// (series key -> [(start, time, value)]) of one relayed counter, over all requests.
fn counter_history(received: &[Value], name: &str) -> BTreeMap<String, Vec<(u64, u64, f64)>> {
    let mut out: BTreeMap<String, Vec<(u64, u64, f64)>> = BTreeMap::new();
    for request in received {
        for m in metrics_of(request).iter().filter(|m| m.name == name) {
            assert_eq!(m.kind, "sum", "{name}");
            assert_eq!(m.body["is_monotonic"], true);
            assert_eq!(m.body["aggregation_temporality"], 2);
            for p in points(m) {
                out.entry(format!("{:?}", attrs(&p["attributes"])))
                    .or_default()
                    .push((
                        num(&p["start_time_unix_nano"]),
                        num(&p["time_unix_nano"]),
                        p["as_double"].as_f64().unwrap_or(0.0),
                    ));
            }
        }
    }
    out
}

fn relayed(received: &[Value], job: &str) -> Vec<Value> {
    received
        .iter()
        .filter(|r| {
            r["request"]["resource_metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|rm| {
                    attrs(&rm["resource"]["attributes"])
                        .get("service.name")
                        .map(String::as_str)
                        == Some(job)
                })
        })
        .cloned()
        .collect()
}

#[test]
fn cadvisor_page_reaches_the_receiver_with_cluster_and_counter_semantics() {
    let Some(py) = python() else { return };
    let sink = Sink::start(&py, 0, 0, &[]);
    let (port, scrapes) = serve(Serve::Cadvisor, None, None);
    let (garbage, _) = serve(Serve::Garbage, None, None);
    let (hung, _) = serve(Serve::Hang, None, None);
    let unreachable = free_port();
    let targets = format!(
        "cadvisor=http://127.0.0.1:{port}/metrics/cadvisor,junk=http://127.0.0.1:{garbage}/metrics,gone=http://127.0.0.1:{unreachable}/metrics,slow=http://127.0.0.1:{hung}/metrics"
    );
    let endpoint = format!("http://127.0.0.1:{}", sink.grpc);
    let exporter = start_exporter(&[
        "--cluster",
        "cluster1",
        "--otlp.endpoint",
        &endpoint,
        "--otlp.interval",
        "1h",
        "--relay.targets",
        &targets,
        "--relay.interval",
        "300ms",
        "--relay.drop-labels",
        "id,name",
    ]);
    // Wait for eight relayed scrapes: four before the restart, four after.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let received = loop {
        let got = relayed(&sink.received(), "cadvisor");
        if got.len() >= 8 {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} relayed requests (scrapes {})",
            got.len(),
            scrapes.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    for request in &received {
        for rm in request["request"]["resource_metrics"].as_array().unwrap() {
            let resource = attrs(&rm["resource"]["attributes"]);
            assert_eq!(
                resource["service.name"], "cadvisor",
                "junk and gone targets are never relayed"
            );
            assert_eq!(resource["service.instance.id"], format!("127.0.0.1:{port}"));
            assert_eq!(resource["k8s.cluster.name"], "cluster1");
            assert_eq!(resource["k8s.node.name"], "node-a");
        }
        let names: Vec<&str> = metrics_of(request).iter().map(|m| m.name).collect();
        // The default allow-list: container_cpu_*, container_memory_*, container_network_*,
        // container_fs_*, machine_*.
        for absent in [
            "cadvisor_version_info",
            "container_tasks_state",
            "container_scrape_error",
        ] {
            assert!(
                !names.contains(&absent),
                "{absent} is not on the allow-list: {names:?}"
            );
        }
        for present in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_network_receive_bytes_total",
            "machine_cpu_cores",
        ] {
            assert!(names.contains(&present), "{present} missing: {names:?}");
        }
        for m in metrics_of(request) {
            let expected = if m.name.ends_with("_total") {
                "sum"
            } else {
                "gauge"
            };
            assert_eq!(m.kind, expected, "{}", m.name);
            for p in points(&m) {
                let a = attrs(&p["attributes"]);
                assert_eq!(
                    a.get("cluster").map(String::as_str),
                    Some("cluster1"),
                    "{}",
                    m.name
                );
                assert!(
                    !a.contains_key("id") && !a.contains_key("name"),
                    "dropped labels: {a:?}"
                );
                assert!(
                    a.values().all(|v| !v.is_empty()),
                    "empty labels are no labels: {a:?}"
                );
            }
        }
    }

    let cpu = counter_history(&received, "container_cpu_usage_seconds_total");
    assert_eq!(cpu.len(), 3, "{cpu:?}");
    let app = cpu
        .iter()
        .find(|(k, _)| k.contains("\"container\": \"coredns\""))
        .map(|(_, v)| v)
        .unwrap();
    let root = cpu
        .iter()
        .find(|(k, _)| !k.contains("\"pod\""))
        .map(|(_, v)| v)
        .unwrap();
    // The node's counter only grows: one start, the first scrape's time.
    let first = root[0];
    assert_eq!(first.0, first.1, "start = first seen");
    for w in root.windows(2) {
        assert_eq!(w[1].0, first.0, "stable start");
        assert!(w[1].2 >= w[0].2, "never backwards");
    }
    // The app container restarted after the fourth scrape: its start moved to the scrape
    // before the drop, and stays there.
    let drop = app
        .windows(2)
        .position(|w| w[1].2 < w[0].2)
        .expect("a reset");
    let before = app[drop];
    let after = app[drop + 1];
    assert!(app[..=drop].iter().all(|p| p.0 == app[0].0), "{app:?}");
    assert_eq!(after.0, before.1, "reset start = previous scrape: {app:?}");
    assert!(app[drop + 1..].iter().all(|p| p.0 == after.0), "{app:?}");

    // Bad targets: counted and logged, /metrics still served.
    let text = metrics(exporter.port).unwrap();
    assert!(
        text.contains("kepler_exporter_errors_total{component=\"relay\",reason=\"garbage\"}"),
        "{text}"
    );
    assert!(
        text.contains("kepler_exporter_errors_total{component=\"relay\",reason=\"unreachable\"}"),
        "{text}"
    );
    assert!(
        text.contains("kepler_exporter_errors_total{component=\"relay\",reason=\"timeout\"}"),
        "{text}"
    );
    assert!(
        text.contains("kepler_exporter_otlp_exports_total{pipeline=\"relay\",result=\"sent\"}"),
        "{text}"
    );
    assert!(text.contains("kepler_node_package_joules_total{"));
}

fn tls_server(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test kubelet CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .unwrap();
    (Arc::new(config), ca_file)
}

#[test]
fn kubelet_mode_uses_token_and_ca_over_https() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca_file) = tls_server(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let (port, _) = serve(Serve::Cadvisor, Some("s3cret-token".to_string()), Some(tls));
    let sink = Sink::start(&py, 0, 0, &[]);
    let endpoint = format!("http://127.0.0.1:{}", sink.http);
    let kubelet = format!("https://127.0.0.1:{port}");
    let _exporter = start_exporter(&[
        "--otlp.endpoint",
        &endpoint,
        "--otlp.protocol",
        "http/protobuf",
        "--otlp.interval",
        "1h",
        "--relay.kubelet.enabled",
        "--kube.kubelet-url",
        &kubelet,
        "--kube.token-file",
        token_file.to_str().unwrap(),
        "--kube.ca-file",
        ca_file.to_str().unwrap(),
        "--relay.interval",
        "300ms",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let received = loop {
        let got = relayed(&sink.received(), "kubelet");
        if got.len() >= 2 {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing relayed from the HTTPS kubelet"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let rm = &received[0]["request"]["resource_metrics"][0];
    let resource = attrs(&rm["resource"]["attributes"]);
    assert_eq!(resource["service.instance.id"], format!("127.0.0.1:{port}"));
    assert!(
        !resource.contains_key("k8s.cluster.name"),
        "no --cluster, no cluster"
    );
    let names: Vec<&str> = metrics_of(&received[0]).iter().map(|m| m.name).collect();
    assert!(
        names.contains(&"container_cpu_usage_seconds_total"),
        "{names:?}"
    );
    assert!(!received[0].to_string().contains("\"cluster\""));
}

#[test]
fn a_page_over_the_series_cap_is_skipped_and_counted() {
    let Some(py) = python() else { return };
    let sink = Sink::start(&py, 0, 0, &[]);
    let (port, _) = serve(Serve::Cadvisor, None, None);
    let exporter = start_exporter(&[
        "--otlp.endpoint",
        &format!("http://127.0.0.1:{}", sink.grpc),
        "--relay.targets",
        &format!("cadvisor=http://127.0.0.1:{port}/metrics/cadvisor"),
        "--relay.interval",
        "200ms",
        // The fixture has 8 allowed series.
        "--relay.max-series",
        "7",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics(exporter.port).unwrap();
        if text.contains(
            "kepler_exporter_errors_total{component=\"relay\",reason=\"too_many_series\"}",
        ) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cap not applied:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sink.wait_for(1);
    assert!(relayed(&sink.received(), "cadvisor").is_empty());
}

#[test]
fn kubelet_with_a_wrong_token_is_logged_and_counted() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca_file) = tls_server(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "wrong").unwrap();
    let (port, _) = serve(Serve::Cadvisor, Some("right".to_string()), Some(tls));
    let sink = Sink::start(&py, 0, 0, &[]);
    let endpoint = format!("http://127.0.0.1:{}", sink.grpc);
    let kubelet = format!("https://127.0.0.1:{port}");
    let exporter = start_exporter(&[
        "--otlp.endpoint",
        &endpoint,
        "--relay.kubelet.enabled",
        "--kube.kubelet-url",
        &kubelet,
        "--kube.token-file",
        token_file.to_str().unwrap(),
        "--kube.ca-file",
        ca_file.to_str().unwrap(),
        "--relay.interval",
        "200ms",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics(exporter.port).unwrap();
        if text
            .contains("kepler_exporter_errors_total{component=\"relay\",reason=\"unauthorized\"}")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "401 not counted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Our own metrics are still pushed.
    sink.wait_for(1);
    assert!(relayed(&sink.received(), "kubelet").is_empty());
}
