//! `--web.config-file` on the real binary: a real Prometheus 3 scrapes kepler-rs over TLS with
//! basic auth (`tls_config.ca_file`, `basic_auth`) and gets its metrics, while a scrape job
//! with a wrong password is refused; a rustls client sees 401 for a wrong password and the
//! open `/healthz` (`--web.healthz-without-auth`); plain HTTP to the TLS port is answered 400
//! and closed; a bad web configuration file fails the start, naming the file and the field.
//! Certificates are made by rcgen at test time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kepler_test_support::net::free_port;
use kepler_test_support::peers::require_peer;
use kepler_test_support::promql;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const BIN: &str = env!("CARGO_BIN_EXE_kepler-rs");
const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-me";
const PATIENCE: Duration = Duration::from_secs(60);

/// A CA and a server certificate for 127.0.0.1 in `dir`: `ca.crt`, `server.crt`, `server.key`.
fn certificates(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "kepler-rs web test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    std::fs::write(dir.join("ca.crt"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    std::fs::write(
        dir.join("server.crt"),
        leaf.signed_by(&key, &issuer).unwrap().pem(),
    )
    .unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// `web.yml` in `dir`: TLS with the files of [`certificates`], user `prometheus`, a header.
fn web_config(dir: &Path) -> PathBuf {
    certificates(dir);
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let path = dir.join("web.yml");
    std::fs::write(
        &path,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             http_server_config:\n  headers: {{X-Frame-Options: deny}}\n\
             basic_auth_users:\n  {USER}: '{hash}'\n"
        ),
    )
    .unwrap();
    path
}

fn tls_client(ca_file: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// (status, raw head, body) of `GET path` over TLS, or `None` when the exchange failed.
fn get_tls(
    port: u16,
    client: &Arc<rustls::ClientConfig>,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Option<(u16, String, String)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
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

/// kepler-rs on fake RAPL with `--web.config-file`; killed on drop.
struct Exporter {
    child: Child,
    port: u16,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Exporter {
    fn start(config: &Path, client: &Arc<rustls::ClientConfig>) -> Self {
        let port = free_port();
        let child = Command::new(BIN)
            .args([
                "--fake-rapl",
                "--log.level",
                "warn",
                "--monitor.interval",
                "500ms",
            ])
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--web.config-file={}", config.display()))
            .arg("--web.healthz-without-auth")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut exporter = Self { child, port };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = exporter.child.try_wait().unwrap() {
                panic!("kepler-rs exited at start-up: {status}");
            }
            // /healthz is open (--web.healthz-without-auth), over TLS.
            if get_tls(port, client, "/healthz", None)
                .is_some_and(|(s, _, b)| s == 200 && b == "ok")
            {
                return exporter;
            }
            assert!(
                Instant::now() < deadline,
                "no /healthz over TLS within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
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

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
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
            format!("global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n{scrape_configs}"),
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
        while http_get(port, "/-/ready").map(|(s, _)| s) != Some(200) {
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                panic!("prometheus exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// Polls `query` until its result has at least one sample accepted by `accept`.
    fn wait_for(
        &mut self,
        query: &str,
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some((200, body)) = http_get(self.port, &promql::query_path(query)) {
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

fn scrape_job(job: &str, port: u16, ca: &Path, password: &str) -> String {
    format!(
        "  - job_name: {job}\n    scheme: https\n    tls_config: {{ca_file: '{}'}}\n    \
         basic_auth: {{username: {USER}, password: '{password}'}}\n    \
         static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n",
        ca.display()
    )
}

#[test]
fn prometheus_scrapes_kepler_rs_over_tls_with_basic_auth() {
    let Some(prometheus_bin) = require_peer("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = web_config(dir.path());
    let ca = dir.path().join("ca.crt");
    let client = tls_client(&ca);
    let exporter = Exporter::start(&config, &client);

    let mut prometheus = Prometheus::start(
        &prometheus_bin,
        &(scrape_job("kepler", exporter.port, &ca, PASSWORD)
            + &scrape_job("kepler-wrong-password", exporter.port, &ca, "guess")),
    );
    let sample = prometheus.wait_for("kepler_node_package_joules_total{job=\"kepler\"}", |_| true);
    assert!(promql::sample_value(&sample) >= 0.0, "{sample}");
    prometheus.wait_for("up{job=\"kepler\"}", |s| promql::sample_value(s) == 1.0);
    prometheus.wait_for("up{job=\"kepler-wrong-password\"}", |s| {
        promql::sample_value(s) == 0.0
    });
    let (status, body) = http_get(
        prometheus.port,
        &promql::query_path(
            "count(kepler_node_package_joules_total{job=\"kepler-wrong-password\"})",
        ),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        promql::results("count", &body).is_empty(),
        "no data through a wrong password: {body}"
    );

    // The same answers to a client of our own.
    let (status, head, body) =
        get_tls(exporter.port, &client, "/metrics", Some((USER, PASSWORD))).unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("kepler_node_package_joules_total"));
    assert!(
        head.to_ascii_lowercase().contains("x-frame-options: deny"),
        "{head}"
    );
    let (status, head, _) =
        get_tls(exporter.port, &client, "/metrics", Some((USER, "guess"))).unwrap();
    assert_eq!(status, 401, "{head}");
    assert!(
        head.contains("WWW-Authenticate: Basic") || head.contains("www-authenticate: Basic"),
        "{head}"
    );
    let (status, _, _) = get_tls(exporter.port, &client, "/metrics", None).unwrap();
    assert_eq!(status, 401);

    // Plain HTTP to the TLS port: Go's 400, then the connection is closed.
    let (status, body) = http_get(exporter.port, "/metrics").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("HTTP request to an HTTPS server"), "{body}");
    assert!(!body.contains("kepler_"));
}

#[test]
fn a_bad_web_config_fails_the_start_naming_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("web.yml");
    std::fs::write(
        &config,
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    )
    .unwrap();
    let port = free_port();
    let out = Command::new(BIN)
        .args(["--fake-rapl", "--log.level", "error"])
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--web.config-file={}", config.display()))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
    assert!(stderr.contains("tls_server_config.cert_file"), "{stderr}");
    assert!(stderr.contains("missing.crt"), "{stderr}");
}

/// The leaf certificate a TLS connection to `port` is served with.
fn served_certificate(port: u16, client: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut connection =
        rustls::ClientConnection::new(client.clone(), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).unwrap();
    }
    connection.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn certificates_and_the_file_are_reloaded_and_a_broken_file_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = web_config(dir.path());
    let client = tls_client(&dir.path().join("ca.crt"));
    let exporter = Exporter::start(&config, &client);
    let first = served_certificate(exporter.port, &client);
    assert_eq!(
        first,
        CertificateDer::from_pem_file(dir.path().join("server.crt"))
            .unwrap()
            .to_vec()
    );

    // A new CA and certificate (as cert-manager renews them): the next connection gets it.
    certificates(dir.path());
    let client = tls_client(&dir.path().join("ca.crt"));
    let renewed = served_certificate(exporter.port, &client);
    assert_ne!(renewed, first);
    assert_eq!(
        renewed,
        CertificateDer::from_pem_file(dir.path().join("server.crt"))
            .unwrap()
            .to_vec()
    );

    // A broken file: the last good config stays, the failure is counted once.
    std::fs::write(
        &config,
        "basic_auth_users: {prometheus: not-a-bcrypt-hash}\n",
    )
    .unwrap();
    for _ in 0..3 {
        let (status, _, _) =
            get_tls(exporter.port, &client, "/metrics", Some((USER, PASSWORD))).unwrap();
        assert_eq!(status, 200);
    }
    let (_, _, body) = get_tls(exporter.port, &client, "/metrics", Some((USER, PASSWORD))).unwrap();
    assert!(
        body.lines().any(|l| l
            == "kepler_exporter_errors_total{component=\"web\",reason=\"config_reload_failed\"} 1"),
        "{}",
        body.lines()
            .filter(|l| l.starts_with("kepler_exporter_errors_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
