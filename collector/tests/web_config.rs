//! The exposition behind `exposition.web_config_file` / `--web.config-file`: a real Prometheus 3
//! scrapes kepler-collector over TLS with basic auth and a client certificate
//! (RequireAndVerifyClientCert) and gets the points pushed over OTLP, while a rustls client
//! without a client certificate is refused and a wrong password gets 401; plain HTTP to the
//! TLS port is answered 400; a broken web config after start is counted and the last good one
//! stays; a bad one at start fails the start naming the file and the field. Certificates are
//! made by rcgen at test time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{gauge_request, http, string_kv, HubProcess};
use kepler_test_support::https::{get_plain, get_tls, tls_client};
use kepler_test_support::net::free_port;
use kepler_test_support::peers::{require_peer, HttpsScrape, Prometheus};
use kepler_test_support::pki::{CertFiles, TestCa};
use kepler_test_support::promql;
use prost::Message as _;

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-the-hub";

/// `web.yml` in `dir` (next to the certificate files) for the `server` certificate, client CA
/// `client_ca_file` and user `prometheus`.
fn write_web_config(dir: &Path, server: &CertFiles, client_ca_file: &Path) {
    let name = |file: &Path| file.file_name().unwrap().to_string_lossy().into_owned();
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n\
             basic_auth_users:\n  {USER}: '{hash}'\n",
            name(&server.cert),
            name(&server.key),
            name(client_ca_file),
        ),
    )
    .unwrap();
}

#[test]
fn prometheus_scrapes_the_hub_over_tls_with_basic_auth_and_a_client_certificate() {
    let Some(prometheus_bin) = require_peer("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // One CA for the server's certificate, another for the scraper's client certificate.
    let server_ca = TestCa::new(dir.path(), "servers");
    let server = server_ca.server("server", &[]);
    let client_ca = TestCa::new(dir.path(), "clients");
    let scraper = client_ca.client("scraper", "prometheus", &["prometheus"]);
    write_web_config(dir.path(), &server, &client_ca.ca_file);
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

    let scrape = HttpsScrape {
        ca_file: &server_ca.ca_file,
        client_cert: Some(&scraper),
        user: USER,
        honor_labels: true,
    };
    let prometheus = Prometheus::start(
        &prometheus_bin,
        &(scrape.job("hub", exposition, PASSWORD)
            + &scrape.job("hub-wrong-password", exposition, "guess")),
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

    let with_cert = tls_client(&server_ca.ca_file, Some(&scraper));
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
    let without_cert = tls_client(&server_ca.ca_file, None);
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
    let (status, body) = get_plain(exposition, "/metrics").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("HTTP request to an HTTPS server"), "{body}");

    // A broken file after start: counted, the last good config stays.
    std::fs::write(
        &web,
        format!(
            "tls_server_config: {{cert_file: {}}}\n",
            server.cert.file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
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
