#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The seed's verification on the seed's topology, as real processes in three network
//! namespaces (see `common/mod.rs`): in `hub` the real `kepler-collector` (default listeners,
//! per-cluster tokens on 4327/4328), a `kepler-rs --fake-rapl` pushing to 4317 and a real
//! Prometheus scraping :9464 every second; in `cluster1` and `cluster2` a `kepler-rs --fake-rapl
//! --cluster clusterN` pushing across its veth link to the hub's spoke port with its own token,
//! and a CPU-burning workload in a kubepods-shaped cgroup. PromQL must answer the seed's queries
//! with data for all three clusters, and energy is conserved through the pipeline: at the same
//! snapshot (matched by `kepler_exporter_snapshot_sequence`, which travels with the data) the
//! hub exposes exactly the joules each exporter's `/metrics` shows, and containers add up to
//! the node. Root only; skips otherwise.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{sample_value, series_of, Pipeline, SeriesKey, CLUSTERS};

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

/// Energy families (`kepler_{container,node}_*joules_total`) in an exporter's `/metrics`.
fn energy_families(metrics: &BTreeMap<SeriesKey, f64>) -> Vec<String> {
    let mut names: Vec<String> = metrics
        .keys()
        .map(|(n, _)| n.clone())
        .filter(|n| {
            (n.starts_with("kepler_container_") || n.starts_with("kepler_node_"))
                && n.ends_with("joules_total")
        })
        .collect();
    names.dedup();
    names
}

fn single(metrics: &BTreeMap<SeriesKey, f64>, name: &str, cluster: Option<&str>) -> Option<f64> {
    let s = series_of(metrics, name, cluster);
    (s.len() == 1).then(|| *s.values().next().unwrap())
}

/// Sum of `name` per `mode`.
fn by_mode(metrics: &BTreeMap<SeriesKey, f64>, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, v) in series_of(metrics, name, None) {
        *out.entry(labels.get("mode").cloned().unwrap_or_default())
            .or_insert(0.0) += v;
    }
    out
}

#[test]
fn prometheus_answers_the_seed_queries_for_three_clusters_and_energy_is_conserved() {
    let _serial = common::serial();
    let Some(pipeline) = Pipeline::start("the three-cluster pipeline", "5m") else {
        return;
    };
    let prom = &pipeline.prometheus;

    // The seed's verification: per-cluster container power, with data and above zero.
    for cluster in CLUSTERS {
        let q = format!("rate(kepler_container_joules_total{{cluster=\"{cluster}\"}}[1m])");
        let result = prom.wait_for(&q, 120, |r| r.iter().any(|s| sample_value(s) > 0.0));
        for s in &result {
            assert_eq!(s["metric"]["cluster"], cluster, "{q}: {s}");
            assert!(sample_value(s) >= 0.0, "{q}: negative rate {s}");
        }
    }
    let result = prom.wait_for(
        "sum by (cluster) (kepler_container_joules_total)",
        60,
        |r| r.len() == 3,
    );
    let mut clusters: Vec<&str> = result
        .iter()
        .map(|s| s["metric"]["cluster"].as_str().unwrap())
        .collect();
    clusters.sort_unstable();
    assert_eq!(clusters, ["cluster1", "cluster2", "hub"]);
    assert!(result.iter().all(|s| sample_value(s) > 0.0), "{result:?}");

    // Conservation: the hub holds what each exporter served, snapshot for snapshot.
    for (i, cluster) in CLUSTERS.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (exporter, hub) = loop {
            let exporter = pipeline.exporter_metrics(i).unwrap_or_default();
            let hub = pipeline.hub_metrics().unwrap_or_default();
            let seq = single(&exporter, "kepler_exporter_snapshot_sequence", None);
            let hub_seq = single(&hub, "kepler_exporter_snapshot_sequence", Some(cluster));
            if seq.is_some() && seq == hub_seq {
                break (exporter, hub);
            }
            assert!(
                Instant::now() < deadline,
                "{cluster}: never caught the hub and the exporter at the same snapshot (exporter {seq:?}, hub {hub_seq:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let families = energy_families(&exporter);
        assert!(
            families.contains(&"kepler_container_joules_total".to_string())
                && families.contains(&"kepler_node_package_joules_total".to_string()),
            "{cluster}: {families:?}"
        );
        for name in &families {
            let served = series_of(&exporter, name, None);
            let relayed = series_of(&hub, name, Some(cluster));
            assert_eq!(
                served.keys().collect::<Vec<_>>(),
                relayed.keys().collect::<Vec<_>>(),
                "{cluster} {name}: different series at the hub"
            );
            for (labels, v) in &served {
                assert!(
                    close(*v, relayed[labels], 1e-9),
                    "{cluster} {name}{labels:?}: exporter {v}, hub {}",
                    relayed[labels]
                );
            }
        }
        // Containers add up to the node, zone by zone and mode by mode.
        for zone in ["package", "dram"] {
            let containers = by_mode(&exporter, &format!("kepler_container_{zone}_joules_total"));
            let node = by_mode(&exporter, &format!("kepler_node_{zone}_joules_total"));
            assert_eq!(
                containers.keys().collect::<Vec<_>>(),
                node.keys().collect::<Vec<_>>(),
                "{cluster} {zone}: modes"
            );
            // Dynamic energy can still be 0 while the idle estimator learns.
            assert!(
                node.values().sum::<f64>() > 0.0,
                "{cluster} {zone}: no node energy"
            );
            for (mode, n) in &node {
                assert!(
                    close(containers[mode], *n, 1e-6),
                    "{cluster} {zone} {mode}: containers {} J, node {n} J",
                    containers[mode]
                );
            }
        }
    }
}
