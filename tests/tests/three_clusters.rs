#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The seed's verification on the seed's topology, as real processes in three network
//! namespaces (see `common/mod.rs`): in `hub` the real `kepler-collector` (default listeners,
//! per-cluster tokens on 4327/4328), a `kepler-rs --fake-rapl` pushing to 4317 and a real
//! Prometheus scraping :9464 every 2 s; in `cluster1` and `cluster2` a `kepler-rs --fake-rapl
//! --cluster clusterN` pushing across its veth link to the hub's spoke port with its own token,
//! and a CPU-burning workload in a kubepods-shaped cgroup. PromQL must answer the seed's queries
//! with data for all three clusters, and energy is conserved through the pipeline: at the same
//! snapshot (matched by `kepler_exporter_snapshot_sequence`, which travels with the data) the
//! hub exposes exactly the joules each exporter's `/metrics` shows, and containers add up to
//! the node. Root only; skips otherwise.

mod common;

use common::{by_mode, close, sample_value, Pipeline, CLUSTERS};

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
        let (exporter, _hub) = pipeline.assert_hub_holds_the_exporters_energy(i);
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
