#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The hub dashboard (deploy/grafana/kepler-hub.json) against the real pipeline: three real
//! exporters on fake RAPL push OTLP to the real `kepler-collector` hub, configured with the hub
//! overlay's own config file (deploy/kustomize/overlays/hub/config.yaml, on loopback ports): the
//! "hub" exporter to the hub listener without a cluster name (the hub inserts cluster="hub"),
//! cluster1 and cluster2 to the spoke listener with their bearer tokens. A real Prometheus (the
//! Debian package, loopback, temporary config and data directory) scrapes the hub's exposition,
//! and every PromQL expression of every panel, with Grafana's variables filled in, must return
//! data; the `cluster` variable must list the three clusters. Where the hub binary is not built
//! (`cargo test -p kepler-rs` alone) Prometheus scrapes the exporters directly with `cluster` as
//! a target label instead. Missing tools skip, or fail under CI.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::exporter::{Exporter, BIN};
use serde_json::Value;

const CLUSTERS: [&str; 3] = ["hub", "cluster1", "cluster2"];

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use kepler_test_support::net::free_port;

use kepler_test_support::require::require_tool as tool;

/// GET on loopback; (status line, body).
fn get(port: u16, path_and_query: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((head.lines().next()?.to_string(), body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The `kepler-collector` binary of this workspace build, if built.
fn collector_binary() -> Option<PathBuf> {
    let found = kepler_test_support::require::require_binary("kepler-collector");
    if found.is_none() {
        println!("note: kepler-collector is not built; scraping the exporters directly");
    }
    found
}

/// The hub with the hub overlay's config on loopback: (process, hub gRPC port, spoke gRPC
/// port, exposition port, token per spoke).
fn start_hub(collector: &Path, dir: &Path) -> (Killed, u16, u16, u16, Vec<(String, String)>) {
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kustomize/overlays/hub/config.yaml");
    let mut text = fs::read_to_string(config).unwrap().replace(
        "/etc/kepler-collector/tokens",
        &dir.join("tokens").display().to_string(),
    );
    let mut ports = std::collections::BTreeMap::new();
    for port in ["4317", "4318", "4327", "4328", "9464"] {
        let free = free_port();
        ports.insert(port, free);
        text = text.replace(&format!("0.0.0.0:{port}"), &format!("127.0.0.1:{free}"));
    }
    let tokens: Vec<(String, String)> = ["cluster1", "cluster2"]
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), format!("{i:x}").repeat(64)))
        .collect();
    fs::create_dir_all(dir.join("tokens")).unwrap();
    for (cluster, token) in &tokens {
        fs::write(dir.join("tokens").join(cluster), token).unwrap();
    }
    fs::write(dir.join("hub.yaml"), text).unwrap();
    let child = Command::new(collector)
        .arg(format!("--config.file={}", dir.join("hub.yaml").display()))
        .args(["--log.level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(ports["9464"], "/metrics").is_none() {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("kepler-collector exited: {status}");
        }
        assert!(Instant::now() < deadline, "hub never served /metrics");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, ports["4317"], ports["4327"], ports["9464"], tokens)
}

fn start_exporter(dir: &Path, name: &str, push: &[String]) -> (Exporter, u16) {
    let mut args = vec![
        format!("--fake-rapl.dir={}", dir.join(name).display()),
        format!("--kube.node-name={name}-node"),
    ];
    args.extend(push.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let exporter = Exporter::launch(Command::new(BIN), "500ms", &args, Stdio::inherit());
    let port = exporter.port;
    (exporter, port)
}

/// Every PromQL expression in the dashboard: (panel title, expr).
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    p["title"].as_str().unwrap().to_string(),
                    t["expr"].as_str().unwrap().to_string(),
                ));
            }
            walk(&p["panels"], out);
        }
    }
    walk(&dashboard["panels"], &mut out);
    out
}

/// Grafana's variables as Grafana fills them for "All" over a short range.
fn fill(expr: &str) -> String {
    expr.replace("$__rate_interval", "5s")
        .replace("$__interval", "1s")
        .replace("$cluster", ".*")
}

fn query(port: u16, promql: &str) -> Value {
    let (_, body) = get(port, &kepler_test_support::promql::query_path(promql))
        .unwrap_or_else(|| panic!("Prometheus did not answer {promql}"));
    Value::Array(kepler_test_support::promql::results(promql, &body))
}

#[test]
fn every_dashboard_panel_returns_data_from_a_real_prometheus() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/kepler-hub.json");
    let dashboard: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 6, "{queries:?}");
    for title in [
        "Power per cluster",
        "Power per namespace",
        "Top pods",
        "Node power: idle vs dynamic",
    ] {
        assert!(
            queries.iter().any(|(t, _)| t == title),
            "no panel {title:?}"
        );
    }
    for (title, expr) in &queries {
        assert!(
            expr.contains("cluster=~\"$cluster\""),
            "{title}: every query follows the cluster variable"
        );
    }
    let Some(prometheus) = tool("prometheus") else {
        return;
    };

    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: kepler-pods\n    static_configs:\n",
    );
    let _hub;
    let _exporters: Vec<(Exporter, u16)>;
    if let Some(collector) = collector_binary() {
        let (hub, hub_grpc, spoke_grpc, exposition, tokens) = start_hub(&collector, dir.path());
        _hub = Some(hub);
        let mut exporters = vec![start_exporter(
            dir.path(),
            "hub",
            &[format!("--otlp.endpoint=http://127.0.0.1:{hub_grpc}")],
        )];
        for (cluster, token) in &tokens {
            exporters.push(start_exporter(
                dir.path(),
                cluster,
                &[
                    format!("--cluster={cluster}"),
                    format!("--otlp.endpoint=http://127.0.0.1:{spoke_grpc}"),
                    format!("--otlp.headers=authorization=Bearer%20{token}"),
                ],
            ));
        }
        _exporters = exporters;
        config.push_str(&format!("      - targets: [\"127.0.0.1:{exposition}\"]\n"));
    } else {
        _hub = None;
        _exporters = CLUSTERS
            .iter()
            .map(|c| start_exporter(dir.path(), c, &[]))
            .collect();
        for (cluster, (_, port)) in CLUSTERS.iter().zip(&_exporters) {
            config.push_str(&format!(
                "      - targets: [\"127.0.0.1:{port}\"]\n        labels:\n          cluster: {cluster}\n"
            ));
        }
    }
    fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let prom_port = free_port();
    let _prometheus = Killed(
        Command::new(prometheus)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Wait (bounded) until every panel has data: a rate needs two scrapes of every target.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut pending: Vec<(String, String)> = queries.clone();
    while !pending.is_empty() {
        pending.retain(|(title, expr)| {
            let answer = get(
                prom_port,
                &kepler_test_support::promql::query_path(&fill(expr)),
            )
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok());
            match answer {
                // Prometheus is not up yet.
                None => true,
                Some(v) if v["status"] == "error" => panic!("{title}: {expr}: {v}"),
                // Until every cluster has two scrapes, per-cluster rates miss some.
                Some(v) => {
                    let series = v["data"]["result"].as_array().cloned().unwrap_or_default();
                    let seen: std::collections::BTreeSet<&str> = series
                        .iter()
                        .filter_map(|s| s["metric"]["cluster"].as_str())
                        .collect();
                    series.is_empty()
                        || (expr.starts_with("sum by (cluster") && seen.len() < CLUSTERS.len())
                }
            }
        });
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels without data after 90 s: {pending:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Per-cluster panels show every cluster; idle and dynamic both appear.
    let per_cluster = query(
        prom_port,
        &fill(
            &queries
                .iter()
                .find(|(t, _)| t == "Power per cluster")
                .unwrap()
                .1,
        ),
    );
    let mut clusters: Vec<&str> = per_cluster
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"]["cluster"].as_str().unwrap())
        .collect();
    clusters.sort_unstable();
    assert_eq!(clusters, vec!["cluster1", "cluster2", "hub"]);
    let modes = query(
        prom_port,
        &fill(
            &queries
                .iter()
                .find(|(t, _)| t == "Node power: idle vs dynamic")
                .unwrap()
                .1,
        ),
    );
    for mode in ["idle", "dynamic"] {
        assert!(
            modes
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["metric"]["mode"] == mode),
            "{mode} missing: {modes}"
        );
    }
    // The `cluster` variable (label_values(kepler_container_joules_total, cluster)).
    let var = &dashboard["templating"]["list"][0];
    assert_eq!(var["name"], "cluster");
    let (_, body) = get(
        prom_port,
        &format!(
            "/api/v1/label/cluster/values?{}",
            kepler_test_support::promql::percent_encode("match[]=kepler_container_joules_total")
                .replace("%3D", "=")
        ),
    )
    .unwrap();
    let values: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        values["data"],
        serde_json::json!(["cluster1", "cluster2", "hub"])
    );
}
