//! Test support for the hub's integration tests: the real `kepler-collector` binary on loopback
//! (ports chosen by the kernel, read back from its log), the Python OpenTelemetry SDK sender, a
//! real Prometheus with a temporary config and data directory, a tiny HTTP/1.0 client, golden
//! files and promtool.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kepler_test_support::promql;

/// The property tests' settings: PROPTEST_CASES cases (256 by default), no regression files.
pub fn proptest_config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// How long to wait for something that should happen within a second or two.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Reports a missing tool: a failure under CI, a visible skip elsewhere.
pub fn tool_missing(what: &str) -> bool {
    kepler_test_support::require::tool_missing(what);
    true
}

/// A running hub binary, killed on drop.
#[derive(Debug)]
pub struct HubProcess {
    child: Child,
    pub addresses: HashMap<String, SocketAddr>,
    pub dir: tempfile::TempDir,
    pub log: mpsc::Receiver<String>,
}

impl HubProcess {
    /// Starts the hub with `yaml` as its config file; waits until every listener listens.
    pub fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hub.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kepler-collector"))
            .arg("--config.file")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("hub: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addresses = HashMap::new();
        let deadline = Instant::now() + PATIENCE;
        while !addresses.contains_key("exposition") {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("hub did not start listening");
            if let (Some(l), Some(a)) = (field(&line, "listener="), field(&line, "address=")) {
                if line.contains("listening") {
                    addresses.insert(l.to_string(), a.parse().unwrap());
                }
            }
        }
        Self {
            child,
            addresses,
            dir,
            log: rx,
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addresses[listener]
    }

    /// The exposition text.
    pub fn metrics(&self) -> String {
        let (status, _, body) = http(self.addr("exposition"), "GET", "/metrics", &[], b"");
        assert_eq!(status, 200);
        String::from_utf8(body).unwrap()
    }

    /// Log lines printed so far.
    pub fn drain_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(name)? + name.len();
    line[start..].split_whitespace().next()
}

/// A config with the hub's four listeners (hub and spokes, gRPC and HTTP) and the exposition on loopback, kernel-chosen ports,
/// plus `extra` YAML (top-level keys) appended.
pub fn loopback_config(spoke_extra: &str, extra: &str) -> String {
    format!(
        r#"listeners:
  - {{name: hub-grpc, protocol: grpc, address: "127.0.0.1:0", insert_cluster: hub}}
  - {{name: hub-http, protocol: http, address: "127.0.0.1:0", insert_cluster: hub}}
  - {{name: spokes-grpc, protocol: grpc, address: "127.0.0.1:0"{spoke_extra}}}
  - {{name: spokes-http, protocol: http, address: "127.0.0.1:0"{spoke_extra}}}
exposition: {{address: "127.0.0.1:0"}}
{extra}"#
    )
}

/// The venv's Python (scripts/setup.sh makes it), or `None` (skip; a failure under CI).
pub fn python() -> Option<PathBuf> {
    kepler_test_support::python::python_with(
        "import opentelemetry.sdk.metrics, opentelemetry.exporter.otlp.proto.grpc",
        "the OpenTelemetry SDK",
    )
}

/// Runs the SDK sender; returns (success, stdout+stderr).
pub fn python_send(
    python: &Path,
    transport: &str,
    endpoint: &str,
    service: &str,
    env: &[(&str, &str)],
) -> (bool, String) {
    python_send_as(python, transport, endpoint, service, None, env)
}

/// Like [`python_send`], with a `cluster` data-point attribute on every point.
pub fn python_send_as(
    python: &Path,
    transport: &str,
    endpoint: &str,
    service: &str,
    cluster_attribute: Option<&str>,
    env: &[(&str, &str)],
) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/otlp_send.py");
    let out = Command::new(python)
        .arg(script)
        .args([transport, endpoint, service])
        .args(cluster_attribute)
        // requests lets these override the exporter's session.verify (its CA file).
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .envs(env.iter().copied())
        .env("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "10")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// One HTTP/1.0 request; returns (status, headers lower-cased, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body; a reset then is fine.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no HTTP response head in {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

pub use kepler_test_support::net::free_port;

/// A real Prometheus scraping `target` every second, killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// `None` (skip) when the `prometheus` binary is not installed.
    pub fn start(target: SocketAddr, extra_flags: &[&str]) -> Option<Self> {
        Self::start_at(None, target, extra_flags)
    }

    /// Like [`Prometheus::start`], listening on `at` when given.
    pub fn start_at(
        at: Option<SocketAddr>,
        target: SocketAddr,
        extra_flags: &[&str],
    ) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: hub\n    static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .unwrap();
        for attempt in 0..5 {
            let addr: SocketAddr =
                at.unwrap_or_else(|| format!("127.0.0.1:{}", free_port()).parse().unwrap());
            let spawned = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join(format!("data{attempt}")).display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .args(extra_flags)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tool_missing("prometheus");
                    return None;
                }
                Err(e) => panic!("cannot start prometheus: {e}"),
            };
            let deadline = Instant::now() + PATIENCE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                if TcpStream::connect(addr).is_ok() {
                    let (status, _, _) = http(addr, "GET", "/-/ready", &[], b"");
                    if status == 200 {
                        return Some(Self {
                            child,
                            addr,
                            _dir: dir,
                        });
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("prometheus did not become ready");
    }

    /// An instant PromQL query: the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let (status, _, body) = http(self.addr, "GET", &promql::query_path(promql), &[], b"");
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "{promql}: {body}");
        promql::results(promql, &body)
    }

    /// Polls `promql` until `accept` holds for its result (Prometheus scrapes every second).
    pub fn wait_for(
        &self,
        promql: &str,
        accept: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let result = self.query(promql);
            if accept(&result) {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "PromQL {promql} never matched; last result {result:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use kepler_test_support::promql::{sample_label, sample_value};

/// Compares `actual` with `tests/golden/<name>`, or rewrites it when `UPDATE_GOLDEN=1`.
pub fn check_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    kepler_test_support::golden::check(&path, actual);
}

/// Asserts `promtool check metrics` parses `text`: exit 0, or exit 3 (lint findings only, such as
/// "no help text" or "use base unit seconds": those names come from the senders and the
/// Collector's rules, not from us). Skips when promtool is absent and not required.
pub fn assert_promtool_accepts(text: &str) {
    kepler_test_support::promtool::assert_accepts("the hub's exposition", text, |_| true);
}

// OTLP requests

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};

/// A string attribute.
pub fn string_kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

/// A request with one gauge `name` whose points carry `attributes` (one set per point), all with
/// value `value` at time 1 ns, in one resource and scope without attributes.
pub fn gauge_request(
    name: &str,
    attributes: impl IntoIterator<Item = Vec<KeyValue>>,
    value: f64,
) -> ExportMetricsServiceRequest {
    let data_points = attributes
        .into_iter()
        .map(|attributes| NumberDataPoint {
            attributes,
            time_unix_nano: 1,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
