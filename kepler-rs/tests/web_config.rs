//! `--web.config-file` on the real binary: a real Prometheus 3 scrapes kepler-rs over TLS with
//! basic auth (`tls_config.ca_file`, `basic_auth`) and gets its metrics, while a scrape job
//! with a wrong password is refused; a rustls client sees 401 for a wrong password and the
//! open `/healthz` (`--web.healthz-without-auth`); plain HTTP to the TLS port is answered 400
//! and closed; a bad web configuration file fails the start, naming the file and the field.
//! Certificates are made by rcgen at test time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kepler_test_support::https::{get_plain, get_tls, tls_client};
use kepler_test_support::net::free_port;
use kepler_test_support::peers::{require_peer, HttpsScrape, Prometheus};
use kepler_test_support::pki::{CertFiles, TestCa};
use kepler_test_support::promql;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const BIN: &str = env!("CARGO_BIN_EXE_kepler-rs");
const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-me";
const PATIENCE: Duration = Duration::from_secs(60);

/// A CA and a server certificate for 127.0.0.1 in `dir`: `web-ca.crt`, `web-server.crt`,
/// `web-server.key`. Called again: a new CA and certificate over the same files.
fn certificates(dir: &Path) -> (TestCa, CertFiles) {
    let ca = TestCa::new(dir, "web");
    let server = ca.server("server", &[]);
    (ca, server)
}

/// `web.yml` in `dir` (next to `server`'s files): TLS with `server`, user `prometheus`, a
/// header.
fn web_config(dir: &Path, server: &CertFiles) -> PathBuf {
    let name = |file: &Path| file.file_name().unwrap().to_string_lossy().into_owned();
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let path = dir.join("web.yml");
    std::fs::write(
        &path,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n\
             http_server_config:\n  headers: {{X-Frame-Options: deny}}\n\
             basic_auth_users:\n  {USER}: '{hash}'\n",
            name(&server.cert),
            name(&server.key),
        ),
    )
    .unwrap();
    path
}

/// kepler-rs on fake RAPL with `--web.config-file`; killed on drop.
struct Exporter {
    child: Child,
    addr: SocketAddr,
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
        let mut exporter = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = exporter.child.try_wait().unwrap() {
                panic!("kepler-rs exited at start-up: {status}");
            }
            // /healthz is open (--web.healthz-without-auth), over TLS.
            if get_tls(exporter.addr, client, "/healthz", None)
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

#[test]
fn prometheus_scrapes_kepler_rs_over_tls_with_basic_auth() {
    let Some(prometheus_bin) = require_peer("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca, server) = certificates(dir.path());
    let config = web_config(dir.path(), &server);
    let client = tls_client(&ca.ca_file, None);
    let exporter = Exporter::start(&config, &client);

    let scrape = HttpsScrape {
        ca_file: &ca.ca_file,
        client_cert: None,
        user: USER,
        honor_labels: false,
    };
    let prometheus = Prometheus::start(
        &prometheus_bin,
        &(scrape.job("kepler", exporter.addr, PASSWORD)
            + &scrape.job("kepler-wrong-password", exporter.addr, "guess")),
    );
    let sample = prometheus.wait_for("kepler_node_package_joules_total{job=\"kepler\"}", |_| true);
    assert!(promql::sample_value(&sample) >= 0.0, "{sample}");
    prometheus.wait_for("up{job=\"kepler\"}", |s| promql::sample_value(s) == 1.0);
    prometheus.wait_for("up{job=\"kepler-wrong-password\"}", |s| {
        promql::sample_value(s) == 0.0
    });
    let (status, body) = prometheus
        .query("count(kepler_node_package_joules_total{job=\"kepler-wrong-password\"})")
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        promql::results("count", &body).is_empty(),
        "no data through a wrong password: {body}"
    );

    // The same answers to a client of our own.
    let (status, head, body) =
        get_tls(exporter.addr, &client, "/metrics", Some((USER, PASSWORD))).unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("kepler_node_package_joules_total"));
    assert!(
        head.to_ascii_lowercase().contains("x-frame-options: deny"),
        "{head}"
    );
    let (status, head, _) =
        get_tls(exporter.addr, &client, "/metrics", Some((USER, "guess"))).unwrap();
    assert_eq!(status, 401, "{head}");
    assert!(
        head.contains("WWW-Authenticate: Basic") || head.contains("www-authenticate: Basic"),
        "{head}"
    );
    let (status, _, _) = get_tls(exporter.addr, &client, "/metrics", None).unwrap();
    assert_eq!(status, 401);

    // Plain HTTP to the TLS port: Go's 400, then the connection is closed.
    let (status, body) = get_plain(exporter.addr, "/metrics").unwrap();
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
fn served_certificate(addr: SocketAddr, client: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).unwrap();
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
    let (ca, server) = certificates(dir.path());
    let config = web_config(dir.path(), &server);
    let client = tls_client(&ca.ca_file, None);
    let exporter = Exporter::start(&config, &client);
    let first = served_certificate(exporter.addr, &client);
    assert_eq!(
        first,
        CertificateDer::from_pem_file(&server.cert)
            .unwrap()
            .to_vec()
    );

    // A new CA and certificate (as cert-manager renews them): the next connection gets it.
    let (ca, server) = certificates(dir.path());
    let client = tls_client(&ca.ca_file, None);
    let renewed = served_certificate(exporter.addr, &client);
    assert_ne!(renewed, first);
    assert_eq!(
        renewed,
        CertificateDer::from_pem_file(&server.cert)
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
            get_tls(exporter.addr, &client, "/metrics", Some((USER, PASSWORD))).unwrap();
        assert_eq!(status, 200);
    }
    let (_, _, body) = get_tls(exporter.addr, &client, "/metrics", Some((USER, PASSWORD))).unwrap();
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
