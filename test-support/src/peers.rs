//! The peer programs built from their published Go modules (`tests/peers/<name>/`, built by
//! `scripts/peers.sh`): the OpenTelemetry Collector, Prometheus 3, VictoriaMetrics; a
//! [`Prometheus`] started on loopback with the test's scrape jobs ([`HttpsScrape`] writes one
//! over TLS with basic auth).

use crate::https::get_plain;
use crate::net::free_port;
use crate::pki::CertFiles;
use crate::require::tool_missing;
use crate::{promql, workspace_root};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/peers.sh` puts the peers: `$KEPLER_PEERS_DIR` (relative paths from the
/// workspace root), else `target/peers`.
pub fn peers_dir() -> PathBuf {
    match std::env::var_os("KEPLER_PEERS_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target/peers"),
    }
}

/// The peer program `name` (`otelcol`, `prometheus`, `victoria-metrics`, `telemetrygen`), or `None` with a
/// skip line; a failure under CI or with `KEPLER_REQUIRE_TOOLS=1`, like a missing tool.
pub fn require_peer(name: &str) -> Option<PathBuf> {
    let bin = peers_dir().join(name);
    if bin.is_file() {
        return Some(bin);
    }
    tool_missing(&format!(
        "the peer program {name} is not built at {} (scripts/peers.sh builds it from \
         tests/peers/{name}; scripts/setup.sh runs that)",
        bin.display()
    ));
    None
}

/// Where the reference hub Collector listens: one host for every receiver, a port per
/// receiver and protocol (`None`: that protocol off), the prometheus exporter's port, and extra
/// settings of that exporter (`metric_expiration`, `write_timeout`...).
#[derive(Debug, Clone)]
pub struct OtelcolHub<'a> {
    pub host: &'a str,
    pub hub_grpc: u16,
    pub hub_http: Option<u16>,
    pub spokes_grpc: u16,
    pub spokes_http: Option<u16>,
    pub exposition: u16,
    pub exporter_settings: &'a [(&'a str, &'a str)],
}

/// The reference multi-cluster deployment's hub Collector: receiver `otlp/hub` whose pipeline
/// inserts `cluster=hub` with the `attributes` processor, receiver `otlp/spokes` whose pipeline
/// keeps the spokes' own `cluster`, both exported by `prometheus`.
pub fn otelcol_hub_config(h: &OtelcolHub<'_>) -> String {
    let protocols = |grpc: u16, http: Option<u16>| {
        let mut out = format!("      grpc: {{endpoint: \"{}:{grpc}\"}}\n", h.host);
        if let Some(http) = http {
            out.push_str(&format!(
                "      http: {{endpoint: \"{}:{http}\"}}\n",
                h.host
            ));
        }
        out
    };
    let mut exporter = format!("    endpoint: \"{}:{}\"\n", h.host, h.exposition);
    for (key, value) in h.exporter_settings {
        exporter.push_str(&format!("    {key}: {value}\n"));
    }
    format!(
        "receivers:
  otlp/hub:
    protocols:
{hub}  otlp/spokes:
    protocols:
{spokes}processors:
  attributes/hub:
    actions:
      - {{key: cluster, value: hub, action: insert}}
exporters:
  prometheus:
{exporter}service:
  telemetry:
    logs: {{level: warn}}
    metrics: {{level: none}}
  pipelines:
    metrics/hub:
      receivers: [otlp/hub]
      processors: [attributes/hub]
      exporters: [prometheus]
    metrics/spokes:
      receivers: [otlp/spokes]
      exporters: [prometheus]
",
        hub = protocols(h.hub_grpc, h.hub_http),
        spokes = protocols(h.spokes_grpc, h.spokes_http),
    )
}

/// How long [`Prometheus`] may take to be ready, and a query to find what it waits for.
const PROMETHEUS_PATIENCE: Duration = Duration::from_secs(60);

/// A real Prometheus (the peer program at `bin`, see [`require_peer`]) on a free port of
/// 127.0.0.1, scraping every second (timeout 1 s) with the test's `scrape_configs`, with a
/// temporary config and data folder; killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    /// The port of its web UI and query API on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts it with `scrape_configs` (YAML list entries, e.g. from [`HttpsScrape::job`]) and
    /// waits until `/-/ready` answers 200; panics when it exits or is not ready within 60 s.
    pub fn start(bin: &Path, scrape_configs: &str) -> Self {
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
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut prometheus = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + PROMETHEUS_PATIENCE;
        while get_plain(("127.0.0.1", port), "/-/ready").map(|(s, _)| s) != Some(200) {
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                panic!("prometheus exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within {PROMETHEUS_PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// (status, body) of the instant query `promql` (see [`promql::results`] for the body).
    pub fn query(&self, query: &str) -> Option<(u16, String)> {
        get_plain(("127.0.0.1", self.port), &promql::query_path(query))
    }

    /// Polls `query` until one of its samples is accepted by `accept`, and answers that sample;
    /// panics after 60 s.
    pub fn wait_for(
        &self,
        query: &str,
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PROMETHEUS_PATIENCE;
        loop {
            if let Some((200, body)) = self.query(query) {
                if let Some(found) = promql::results(query, &body).into_iter().find(&accept) {
                    return found;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{query}: nothing acceptable within {PROMETHEUS_PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Scrape jobs for [`Prometheus::start`] over HTTPS with basic auth: trusting `ca_file`,
/// presenting `client_cert` when given (targets that require client certificates), as `user`.
#[derive(Debug, Clone, Copy)]
pub struct HttpsScrape<'a> {
    pub ca_file: &'a Path,
    pub client_cert: Option<&'a CertFiles>,
    pub user: &'a str,
    /// `honor_labels: true`: the target's own `job` and `instance` labels win.
    pub honor_labels: bool,
}

impl HttpsScrape<'_> {
    /// One `scrape_configs` entry: job `job` scraping `target` (`host:port`) with `password`.
    pub fn job(&self, job: &str, target: impl Display, password: &str) -> String {
        let mut entry = format!("  - job_name: {job}\n    scheme: https\n");
        if self.honor_labels {
            entry.push_str("    honor_labels: true\n");
        }
        entry.push_str(&format!(
            "    tls_config:\n      ca_file: '{}'\n",
            self.ca_file.display()
        ));
        if let Some(files) = self.client_cert {
            entry.push_str(&format!(
                "      cert_file: '{}'\n      key_file: '{}'\n",
                files.cert.display(),
                files.key.display()
            ));
        }
        entry.push_str(&format!(
            "    basic_auth: {{username: {user}, password: '{password}'}}\n    \
             static_configs: [{{targets: ['{target}']}}]\n",
            user = self.user
        ));
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_https_scrape_job_trusts_the_ca_and_presents_the_client_certificate() {
        let client = CertFiles {
            cert: PathBuf::from("/t/c.crt"),
            key: PathBuf::from("/t/c.key"),
        };
        let scrape = HttpsScrape {
            ca_file: Path::new("/t/ca.crt"),
            client_cert: Some(&client),
            user: "prometheus",
            honor_labels: true,
        };
        assert_eq!(
            scrape.job("hub", "127.0.0.1:9", "pw"),
            "  - job_name: hub\n    scheme: https\n    honor_labels: true\n    tls_config:\n      \
             ca_file: '/t/ca.crt'\n      cert_file: '/t/c.crt'\n      key_file: '/t/c.key'\n    \
             basic_auth: {username: prometheus, password: 'pw'}\n    \
             static_configs: [{targets: ['127.0.0.1:9']}]\n"
        );
        let plain = HttpsScrape {
            client_cert: None,
            honor_labels: false,
            ..scrape
        };
        assert_eq!(
            plain.job("kepler", "127.0.0.1:9", "pw"),
            "  - job_name: kepler\n    scheme: https\n    tls_config:\n      \
             ca_file: '/t/ca.crt'\n    basic_auth: {username: prometheus, password: 'pw'}\n    \
             static_configs: [{targets: ['127.0.0.1:9']}]\n"
        );
    }
}
