#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! kepler-rs under the real OpenTelemetry Collector as the reference deployment's hub: a user
//! who keeps a Collector-based hub and only replaces Kepler. The three-cluster harness
//! (`common/mod.rs`, network namespaces) with the Collector built from its published Go modules
//! (`tests/peers/otelcol`, exactly the reference components, built by `scripts/peers.sh`) in
//! the hub's place, configured as the reference hub: receiver `otlp/hub` on 4317/4318 whose
//! pipeline inserts `cluster=hub` with the `attributes` processor, receiver `otlp/spokes` on
//! 4327/4328 keeping the spokes' `cluster`, exporter `prometheus` on :9464. The hub's
//! `kepler-rs` pushes to 4317 without a cluster name; cluster1 and cluster2 push across their
//! links to 4327. Debian's Prometheus scrapes :9464 with `honor_labels: false`, as a
//! ServiceMonitor does.
//!
//! Prometheus must answer the reference PromQL for all three clusters, the pushed service name
//! and node must come out as `exported_job` and `exported_instance`, and the Collector's page
//! must hold exactly the joules each exporter served at the same snapshot (matched by
//! `kepler_exporter_snapshot_sequence`, which travels with the data). Root only (namespaces,
//! eBPF); a missing peer fails under CI.

mod common;

use std::process::Command;

use common::{sample_value, HubProgram, Pipeline, CLUSTERS, SCRAPE_JOB};

#[test]
fn the_real_collector_as_hub_answers_the_reference_queries_and_conserves_energy() {
    let _serial = common::serial();
    let Some(pipeline) = Pipeline::start_otel_collector("the real Collector as the hub") else {
        return;
    };
    let HubProgram::OtelCollector(otelcol) = &pipeline.hub_program else {
        unreachable!("start_otel_collector runs the Collector");
    };

    // The distribution has the reference components.
    let out = Command::new(otelcol).arg("components").output().unwrap();
    assert!(out.status.success(), "otelcol components: {out:?}");
    let components = String::from_utf8_lossy(&out.stdout);
    for name in ["otlp", "prometheus", "attributes", "otlp_grpc"] {
        assert!(
            components.contains(&format!("name: {name}\n")),
            "the Collector lacks component {name}:\n{components}"
        );
    }

    let prom = &pipeline.prometheus;
    prom.assert_reference_queries();

    // The push's identity as the reference guide shows it: the pushed job and instance became
    // exported_job and exported_instance; job and instance are the scrape's own.
    let q = "count by (cluster, job, instance, exported_job, exported_instance) \
             (kepler_container_joules_total)";
    let result = prom.wait_for(q, 30, |r| r.len() == 3);
    for s in &result {
        let label = |name: &str| s["metric"][name].as_str().unwrap_or("").to_string();
        let cluster = label("cluster");
        assert_eq!(label("exported_job"), "kepler-pods", "{q}: {s}");
        assert_eq!(
            label("exported_instance"),
            format!("{cluster}-node"),
            "{q}: {s}"
        );
        assert_eq!(label("job"), SCRAPE_JOB, "{q}: {s}");
        assert_eq!(label("instance"), "127.0.0.1:9464", "{q}: {s}");
    }

    // Conservation through the Collector: its page holds what each exporter served, snapshot
    // for snapshot, and the node's energy at Prometheus is above zero for every cluster.
    for i in 0..CLUSTERS.len() {
        pipeline.assert_hub_holds_the_exporters_energy(i);
    }
    let q = "sum by (cluster) (kepler_node_package_joules_total)";
    let result = prom.wait_for(q, 30, |r| {
        r.len() == 3 && r.iter().all(|s| sample_value(s) > 0.0)
    });
    assert_eq!(result.len(), 3, "{q}: {result:?}");
}
