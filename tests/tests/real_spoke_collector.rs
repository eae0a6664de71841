#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! kepler-collector as the hub of the reference deployment's spokes: in each spoke namespace of
//! the three-cluster harness (`common/mod.rs`), the real OpenTelemetry Collector built from its
//! Go modules (`tests/peers/otelcol`) configured as the reference spoke — receiver `prometheus`
//! scraping the spoke's `kepler-rs` `/metrics` (and in cluster1 a kubelet-shaped cAdvisor page
//! and a Prometheus server's own `/metrics`, real histograms and summaries), receiver `otlp`,
//! processor `attributes` inserting `cluster`, exporter `otlp` to the hub's spoke listener with
//! the cluster's bearer token. kepler-collector (per-cluster tokens) in the hub namespace, and
//! Debian's Prometheus scraping it.
//!
//! What a real Collector sends must be taken whole: prometheus-receiver start times, scope
//! attributes, `target_info` resources, histograms and summaries, and the staleness markers
//! (`NoRecordedValue` points) it sends when a target goes away, after which the target's series
//! leave the hub's page as they leave the Collector's own. Nothing may be rejected, the
//! reference queries answer, each spoke's node energy at the hub is what its exporter served at
//! the same snapshot, and the cAdvisor counters rate at the hub as they grow at the source.
//! Root only (namespaces); a missing peer fails under CI.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use common::cadvisor::{self, CadvisorServer};
use common::{
    close, http_get, hub_config, in_ns, parse_text, sample_value, series_of, spawn_exporter,
    start_collector, token, Proc, Prometheus, Topology, HUB_IP, SPOKES,
};
use kepler_test_support::peers::require_peer;

/// The port of the Prometheus server whose own metrics cluster1's Collector also scrapes.
const PROMETHEUS_TARGET_PORT: u16 = 9090;

/// The reference spoke Collector's configuration for `cluster`: scrape jobs `kepler` (and in
/// cluster1 `cadvisor` and `prometheus`) every second, OTLP receiver on 4317/4318, `cluster`
/// inserted, pushed to the hub's spoke listener with the cluster's token.
fn spoke_config(cluster: &str, with_extra_targets: bool) -> String {
    let mut jobs = String::from(
        "        - job_name: kepler\n          scrape_interval: 1s\n          static_configs: [{targets: [\"127.0.0.1:9102\"]}]\n",
    );
    if with_extra_targets {
        jobs.push_str(&format!(
            "        - job_name: cadvisor\n          scrape_interval: 1s\n          static_configs: [{{targets: [\"127.0.0.1:{}\"]}}]\n",
            cadvisor::PORT
        ));
        jobs.push_str(&format!(
            "        - job_name: prometheus\n          scrape_interval: 1s\n          static_configs: [{{targets: [\"127.0.0.1:{PROMETHEUS_TARGET_PORT}\"]}}]\n"
        ));
    }
    format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
{jobs}  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:4317}}
      http: {{endpoint: 127.0.0.1:4318}}
processors:
  attributes:
    actions:
      - {{key: cluster, value: {cluster}, action: insert}}
exporters:
  otlp:
    endpoint: {HUB_IP}:4327
    tls: {{insecure: true}}
    headers: {{authorization: \"Bearer {token}\"}}
service:
  telemetry:
    logs: {{level: warn}}
    metrics: {{level: none}}
  pipelines:
    metrics:
      receivers: [prometheus, otlp]
      processors: [attributes]
      exporters: [otlp]
",
        token = token(cluster)
    )
}

/// The hub's page, parsed (empty while it does not answer).
fn hub_page(topo: &Topology) -> BTreeMap<common::SeriesKey, f64> {
    match http_get(&topo.hub, "http://127.0.0.1:9464/metrics") {
        Some((200, body)) => parse_text(&body),
        _ => BTreeMap::new(),
    }
}

/// Polls (bounded) until the hub's node energy for `cluster` is what the exporter in `ns`
/// served at the same snapshot.
fn assert_node_energy_conserved(topo: &Topology, ns: &str, cluster: &str) {
    let family = "kepler_node_package_joules_total";
    let mut history: BTreeMap<u64, f64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Some((200, body)) = http_get(ns, "http://127.0.0.1:9102/metrics") {
            let m = parse_text(&body);
            if let Some(seq) = series_of(&m, "kepler_exporter_snapshot_sequence", None)
                .values()
                .next()
            {
                history.insert(*seq as u64, series_of(&m, family, None).values().sum());
            }
        }
        let hub = hub_page(topo);
        let seq = series_of(&hub, "kepler_exporter_snapshot_sequence", Some(cluster));
        let at_hub: f64 = series_of(&hub, family, Some(cluster)).values().sum();
        if let Some(seq) = seq.values().next().map(|s| *s as u64) {
            match history.get(&seq) {
                Some(served) if close(*served, at_hub, 1e-9) && *served > 0.0 => {
                    println!("{cluster}: snapshot {seq}: exporter {served} J, hub {at_hub} J");
                    return;
                }
                Some(served) => last = format!("snapshot {seq}: exporter {served}, hub {at_hub}"),
                None => last = format!("snapshot {seq} not seen at the exporter"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "{cluster}: the hub never held the exporter's node energy; last: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn real_spoke_collectors_feed_kepler_collector_and_everything_is_taken() {
    let _serial = common::serial();
    if !common::require_netns("real spoke Collectors into kepler-collector") {
        return;
    }
    let Some((exporter_bin, collector_bin)) = common::binaries() else {
        return;
    };
    let Some(prometheus_bin) = common::prometheus_binary() else {
        return;
    };
    let Some(otelcol) = require_peer("otelcol") else {
        return;
    };
    let topo = Topology::create();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("hub.yaml"), hub_config("5m", "")).unwrap();
    let mut procs: Vec<Proc> = vec![start_collector(&collector_bin, &topo.hub, dir.path())];
    let hub_prometheus = Prometheus::start(&prometheus_bin, &topo.hub, dir.path(), true);

    // cluster1 also serves a cAdvisor page and a Prometheus server's own metrics.
    let cadvisor = CadvisorServer::start(&topo.spokes[0]);
    let target_dir = dir.path().join("prometheus-target");
    fs::create_dir_all(&target_dir).unwrap();
    let prometheus_target = Prometheus::start(&prometheus_bin, &topo.spokes[0], &target_dir, true);
    for (i, cluster) in SPOKES.iter().enumerate() {
        let ns = &topo.spokes[i];
        // Scraped, not pushing.
        let args = ["--ebpf.enabled=false".to_string()];
        procs.push(spawn_exporter(
            &exporter_bin,
            ns,
            cluster,
            9102,
            &args,
            dir.path(),
        ));
        let config = dir.path().join(format!("otelcol-{cluster}.yaml"));
        fs::write(&config, spoke_config(cluster, i == 0)).unwrap();
        procs.push(Proc::spawn(
            &format!("otelcol ({cluster})"),
            in_ns(ns, &otelcol).arg(format!("--config={}", config.display())),
            &dir.path().join(format!("otelcol-{cluster}.log")),
        ));
    }
    let logs = || -> String {
        let mut out = String::new();
        for entry in fs::read_dir(dir.path()).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- {}\n", path.display()));
                for line in tail.into_iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    };

    // The reference queries for both spokes, with the scrape's identity.
    for cluster in SPOKES {
        let q = format!("rate(kepler_container_joules_total{{cluster=\"{cluster}\"}}[20s])");
        let result = hub_prometheus.wait_for(&q, 90, |r| r.iter().any(|s| sample_value(s) > 0.0));
        for s in &result {
            assert_eq!(s["metric"]["job"], "kepler", "{q}: {s}");
            assert_eq!(s["metric"]["instance"], "127.0.0.1:9102", "{q}: {s}");
            assert!(sample_value(s) >= 0.0, "{q}: {s}");
        }
    }
    for (i, cluster) in SPOKES.iter().enumerate() {
        assert_node_energy_conserved(&topo, &topo.spokes[i], cluster);
    }

    // The cAdvisor counters rate at the hub as they grow at the source.
    let q = "rate(container_cpu_usage_seconds_total{cluster=\"cluster1\", job=\"cadvisor\"}[20s])";
    let started = cadvisor.started;
    let rates = hub_prometheus.wait_for(q, 90, |r| {
        started.elapsed() > Duration::from_secs(25)
            && r.len() == 3
            && r.iter().all(|s| {
                let id = s["metric"]["id"].as_str().unwrap_or("");
                let v = sample_value(s);
                match cadvisor::expected_rate(id) {
                    Some(0.0) => v == 0.0,
                    Some(want) => (v - want).abs() <= 0.05 * want,
                    None => false,
                }
            })
    });
    assert_eq!(rates.len(), 3, "{q}: {rates:?}");

    // Histograms and summaries from a real Prometheus server's own page, typed at the hub.
    let page = match http_get(&topo.hub, "http://127.0.0.1:9464/metrics") {
        Some((200, body)) => body,
        other => panic!("hub page: {other:?}"),
    };
    assert!(
        page.contains("# TYPE prometheus_http_request_duration_seconds histogram"),
        "no histogram at the hub"
    );
    assert!(
        page.contains("# TYPE go_gc_duration_seconds summary"),
        "no summary at the hub"
    );
    let q = "sum(prometheus_http_request_duration_seconds_count{cluster=\"cluster1\"}) \
             - sum(prometheus_http_request_duration_seconds_bucket{cluster=\"cluster1\", le=\"+Inf\"})";
    let result = hub_prometheus.wait_for(q, 30, |r| r.len() == 1);
    assert_eq!(
        sample_value(&result[0]),
        0.0,
        "{q}: +Inf bucket is the count"
    );
    let q = "count(go_gc_duration_seconds{cluster=\"cluster1\", job=\"prometheus\", quantile=~\"0|0.25|0.5|0.75|1\"})";
    let result = hub_prometheus.wait_for(q, 30, |r| r.len() == 1 && sample_value(&r[0]) == 5.0);
    assert_eq!(result.len(), 1, "{q}");
    // Each scraped target's resource is a target_info series.
    let q = "count by (job, instance) (target_info)";
    hub_prometheus.wait_for(q, 30, |r| {
        ["kepler", "cadvisor", "prometheus"]
            .iter()
            .all(|job| r.iter().any(|s| s["metric"]["job"] == *job))
    });

    // A target that goes away: the receiver sends staleness markers for the series it scraped
    // without timestamps (Prometheus marks none for samples with their own timestamps, such as
    // cAdvisor's), and those series leave the hub's page, as the Collector's exporter deletes a
    // series on its NoRecordedValue point.
    drop(prometheus_target);
    let gone = |hub: &BTreeMap<common::SeriesKey, f64>| {
        !hub.keys().any(|(name, labels)| {
            name.starts_with("go_gc_duration_seconds")
                && labels.get("job").map(String::as_str) == Some("prometheus")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gone(&hub_page(&topo)) {
        assert!(
            Instant::now() < deadline,
            "the stopped Prometheus target's series stayed at the hub\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The other targets' series stay.
    let hub = hub_page(&topo);
    assert!(!series_of(&hub, "kepler_node_package_joules_total", Some("cluster1")).is_empty());
    assert!(!series_of(&hub, "container_cpu_usage_seconds_total", Some("cluster1")).is_empty());

    // Nothing was refused along the way.
    let hub = hub_page(&topo);
    let rejected: f64 = hub
        .iter()
        .filter(|((name, _), _)| name == "kepler_collector_points_rejected_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(rejected, 0.0, "points rejected at the hub\n{}", logs());
    let refused: Vec<_> = hub
        .iter()
        .filter(|((name, labels), v)| {
            name == "kepler_collector_requests_total"
                && labels.get("outcome").map(String::as_str) != Some("ok")
                && **v > 0.0
        })
        .collect();
    assert!(
        refused.is_empty(),
        "requests refused: {refused:?}\n{}",
        logs()
    );
    drop(cadvisor);
    drop(procs);
}
