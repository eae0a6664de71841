//! OTLP test support: the Python receiver `tests/otlp_sink.py` (built from the official
//! `opentelemetry-proto` package and grpcio), the real exporter binary, and readers for what the
//! receiver recorded (JSON of each ExportMetricsServiceRequest).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use super::exporter::{Exporter, BIN};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A Python that can import the OTLP protos and grpcio, or `None` (skip; a failure under CI).
pub fn python() -> Option<PathBuf> {
    kepler_test_support::python::python_with(
        "import grpc; from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc",
        "opentelemetry-proto and grpcio",
    )
}

pub use kepler_test_support::net::free_port;

/// The Python receiver; killed on drop.
pub struct Sink {
    child: Child,
    _stdin: ChildStdin,
    pub grpc: u16,
    pub http: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sink {
    pub fn start(py: &Path, grpc: u16, http: u16, extra: &[&str]) -> Sink {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received.jsonl");
        let mut child = Command::new(py)
            .arg(repo_root().join("tests/otlp_sink.py"))
            .args([
                "--grpc-port",
                &grpc.to_string(),
                "--http-port",
                &http.to_string(),
            ])
            .arg("--out")
            .arg(&out)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: BTreeMap<&str, u16> = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("sink did not start: {line:?}"))
            .split(' ')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k, v.parse().unwrap())
            })
            .collect();
        Sink {
            child,
            _stdin: stdin,
            grpc: ports["grpc"],
            http: ports["http"],
            out,
            _dir: dir,
        }
    }

    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .split_inclusive('\n')
            // A line still being written has no newline yet.
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (bounded) until at least `n` requests arrived.
    pub fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} requests arrived",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The exporter on fake RAPL (every 300 ms, node `node-a`) with `extra` flags.
pub fn start_exporter(extra: &[&str]) -> Exporter {
    start_exporter_logging(extra, Stdio::inherit())
}

/// Like [`start_exporter`], with the exporter's log (stderr) going to `log`.
pub fn start_exporter_logging(extra: &[&str], log: impl Into<Stdio>) -> Exporter {
    let args: Vec<&str> = ["--kube.node-name", "node-a"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    Exporter::launch(Command::new(BIN), "300ms", &args, log)
}

/// GET /metrics over HTTP/1.0.
pub fn metrics(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

pub fn attrs(v: &Value) -> BTreeMap<String, String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    (
                        kv["key"].as_str().unwrap().to_string(),
                        kv["value"]["string_value"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One received metric.
pub struct Metric<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub kind: &'a str,
    pub body: &'a Value,
}

pub fn metrics_of(request: &Value) -> Vec<Metric<'_>> {
    let mut out = Vec::new();
    for rm in request["request"]["resource_metrics"].as_array().unwrap() {
        for sm in rm["scope_metrics"].as_array().unwrap() {
            for m in sm["metrics"].as_array().unwrap() {
                let kind = ["sum", "gauge", "histogram", "summary"]
                    .into_iter()
                    .find(|k| m.get(*k).is_some())
                    .unwrap();
                out.push(Metric {
                    name: m["name"].as_str().unwrap(),
                    unit: m.get("unit").and_then(Value::as_str).unwrap_or(""),
                    kind,
                    body: &m[kind],
                });
            }
        }
    }
    out
}

pub fn points<'a>(m: &Metric<'a>) -> &'a Vec<Value> {
    m.body["data_points"].as_array().unwrap()
}

pub fn num(v: &Value) -> u64 {
    v.as_str().unwrap().parse().unwrap()
}
