//! The exposition behind `exposition.web_config_file` / `--web.config-file`: a real Prometheus 3
//! scrapes kepler-collector over TLS with basic auth and a client certificate
//! (RequireAndVerifyClientCert) and gets the points pushed over OTLP, while a rustls client
//! without a client certificate is refused and a wrong password gets 401; plain HTTP to the
//! TLS port is answered 400; a broken web config after start is counted and the last good one
//! stays; a bad one at start fails the start naming the file and the field. Certificates are
//! made by rcgen at test time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{gauge_request, http, string_kv, HubProcess, PATIENCE};
use kepler_test_support::net::free_port;
use kepler_test_support::peers::require_peer;
use kepler_test_support::promql;
use prost::Message as _;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-the-hub";

/// Writes a CA (`<name>-ca.crt`) and one leaf (`<name>.crt`, `<name>.key`) for `names`.
fn ca_and_leaf(dir: &Path, name: &str, names: &[&str]) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    std::fs::write(
        dir.join(format!("{name}-ca.crt")),
        ca.self_signed(&ca_key).unwrap().pem(),
    )
    .unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    std::fs::write(
        dir.join(format!("{name}.crt")),
        leaf.signed_by(&key, &issuer).unwrap().pem(),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

/// `web.yml` in `dir` for the server certificate, client CA `clients-ca.crt` and user
/// `prometheus`.
fn write_web_config(dir: &Path) {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients-ca.crt\n\
             basic_auth_users:\n  {USER}: '{hash}'\n"
        ),
    )
    .unwrap();
}

fn tls_client(dir: &Path, with_client_cert: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("server-ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(if with_client_cert {
        builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(dir.join("scraper.crt"))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(dir.join("scraper.key")).unwrap(),
            )
            .unwrap()
    } else {
        builder.with_no_client_auth()
    })
}

/// (status, head, body) of `GET path` over TLS, or `None` when the exchange failed.
fn get_tls(
    addr: SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Option<(u16, String, String)> {
    let tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let connection =
        rustls::ClientConnection::new(client.clone(), ServerName::try_from("127.0.0.1").unwrap())
            .ok()?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some((user, password)) = auth {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_string(), body.to_string()))
}

/// A real Prometheus with `scrape_configs`, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn plain_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_string(),
    ))
}

impl Prometheus {
    fn start(bin: &Path, scrape_configs: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n{scrape_configs}"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut prometheus = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + PATIENCE;
        while plain_get(port, "/-/ready").map(|(s, _)| s) != Some(200) {
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                panic!("prometheus exited: {status}");
            }
            assert!(Instant::now() < deadline, "prometheus not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// Polls `query` until one of its samples is accepted by `accept`.
    fn wait_for(
        &self,
        query: &str,
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some((200, body)) = plain_get(self.port, &promql::query_path(query)) {
                if let Some(found) = promql::results(query, &body).into_iter().find(&accept) {
                    return found;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{query}: nothing acceptable within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn scrape_job(job: &str, target: SocketAddr, dir: &Path, password: &str) -> String {
    format!(
        "  - job_name: {job}\n    scheme: https\n    honor_labels: true\n    tls_config:\n      \
         ca_file: '{ca}'\n      cert_file: '{cert}'\n      key_file: '{key}'\n    \
         basic_auth: {{username: {USER}, password: '{password}'}}\n    \
         static_configs: [{{targets: ['{target}']}}]\n",
        ca = dir.join("server-ca.crt").display(),
        cert = dir.join("scraper.crt").display(),
        key = dir.join("scraper.key").display(),
    )
}

#[test]
fn prometheus_scrapes_the_hub_over_tls_with_basic_auth_and_a_client_certificate() {
    let Some(prometheus_bin) = require_peer("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    ca_and_leaf(dir.path(), "server", &["127.0.0.1", "localhost"]);
    ca_and_leaf(dir.path(), "scraper", &["prometheus"]);
    std::fs::rename(
        dir.path().join("scraper-ca.crt"),
        dir.path().join("clients-ca.crt"),
    )
    .unwrap();
    write_web_config(dir.path());
    let web = dir.path().join("web.yml");
    // The file named in the hub's YAML (exposition.web_config_file).
    let hub = HubProcess::start(&format!(
        "listeners:\n  - {{name: spokes-http, protocol: http, address: \"127.0.0.1:0\"}}\n\
         exposition: {{address: \"127.0.0.1:0\", web_config_file: '{}', healthz_without_auth: true}}\n",
        web.display()
    ));
    let exposition = hub.addr("exposition");

    // One point from cluster1 over OTLP/HTTP.
    let request = gauge_request(
        "web_config_test_gauge",
        [vec![string_kv("cluster", "cluster1")]],
        42.0,
    );
    let (status, _, body) = http(
        hub.addr("spokes-http"),
        "POST",
        "/v1/metrics",
        &[("Content-Type", "application/x-protobuf")],
        &request.encode_to_vec(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let prometheus = Prometheus::start(
        &prometheus_bin,
        &(scrape_job("hub", exposition, dir.path(), PASSWORD)
            + &scrape_job("hub-wrong-password", exposition, dir.path(), "guess")),
    );
    let sample = prometheus.wait_for("web_config_test_gauge{cluster=\"cluster1\"}", |s| {
        promql::sample_value(s) == 42.0
    });
    assert_eq!(promql::sample_label(&sample, "cluster"), Some("cluster1"));
    prometheus.wait_for("up{job=\"hub\"}", |s| promql::sample_value(s) == 1.0);
    prometheus.wait_for("up{job=\"hub-wrong-password\"}", |s| {
        promql::sample_value(s) == 0.0
    });
    prometheus.wait_for(
        "kepler_collector_web_config_reload_failures_total{job=\"hub\"}",
        |s| promql::sample_value(s) == 0.0,
    );

    let with_cert = tls_client(dir.path(), true);
    let (status, head, body) =
        get_tls(exposition, &with_cert, "/metrics", Some((USER, PASSWORD))).unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("web_config_test_gauge"));
    let (status, head, _) =
        get_tls(exposition, &with_cert, "/metrics", Some((USER, "guess"))).unwrap();
    assert_eq!(status, 401, "{head}");
    let (status, _, body) = get_tls(exposition, &with_cert, "/healthz", None).unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"), "healthz_without_auth");

    // Without a client certificate: refused under RequireAndVerifyClientCert, password or not.
    let without_cert = tls_client(dir.path(), false);
    let refused = get_tls(
        exposition,
        &without_cert,
        "/metrics",
        Some((USER, PASSWORD)),
    );
    assert!(refused.is_none(), "{refused:?}");
    let refused = get_tls(exposition, &without_cert, "/healthz", None);
    assert!(refused.is_none(), "{refused:?}");

    // Plain HTTP to the TLS port.
    let (status, body) = plain_get(exposition.port(), "/metrics").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("HTTP request to an HTTPS server"), "{body}");

    // A broken file after start: counted, the last good config stays.
    std::fs::write(&web, "tls_server_config: {cert_file: server.crt}\n").unwrap();
    assert!(
        get_tls(exposition, &with_cert, "/metrics", Some((USER, PASSWORD)))
            .is_some_and(|(s, _, _)| s == 200)
    );
    prometheus.wait_for(
        "kepler_collector_web_config_reload_failures_total{job=\"hub\"}",
        |s| promql::sample_value(s) == 1.0,
    );
}

#[test]
fn a_bad_web_config_file_fails_the_start_before_anything_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("web.yml");
    std::fs::write(
        &bad,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS11\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kepler-collector"))
        .arg(format!("--exposition.address=127.0.0.1:{}", free_port()))
        .arg(format!("--web.config-file={}", bad.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("tls_server_config.min_version: TLS11 is not offered here"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "nothing was bound: {stderr}");
}
