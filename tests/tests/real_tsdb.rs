#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Straight into a time-series database, in the three-cluster namespace harness
//! (`common/mod.rs`), against peers built from their published Go modules (`tests/peers/`,
//! `scripts/peers.sh`):
//!
//! - no hub: every cluster's `kepler-rs` pushes OTLP/HTTP to Prometheus 3's OTLP receiver in the
//!   hub namespace (default translation, `UnderscoreEscapingWithSuffixes`): every classic name
//!   arrives unchanged, `job`/`instance` are the push's service name and node, the reference
//!   queries answer, and the node energy Prometheus holds is what each exporter served at the
//!   same snapshot;
//! - `kepler-collector` remote-writing to Prometheus 3 and to VictoriaMetrics: the reference
//!   queries answer from both, energy is conserved snapshot for snapshot, and counters stay
//!   continuous (no reset, still growing) across a hub restart.
//!
//! The exporters run on fake RAPL; root only (namespaces); a missing peer fails under CI.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    parse_text, sample_value, series_of, spawn_exporter, Pipeline, Proc, Prometheus, Topology,
    CLUSTERS, HUB_IP,
};
use kepler_test_support::peers::require_peer;

/// The TSDB's port in the hub namespace (the harness's Prometheus has 9090, the hub 9464).
const TSDB_PORT: u16 = 9091;

/// Polls until `tsdb`'s node energy for `cluster` equals what the exporter in `ns` served at
/// the snapshot the TSDB shows (`kepler_exporter_snapshot_sequence` travels with the data).
/// A thread records every snapshot the exporter serves meanwhile.
fn assert_tsdb_holds_the_exporters_energy(tsdb: &Prometheus, ns: &str, cluster: &str) {
    let family = "kepler_node_package_joules_total";
    let history = std::sync::Mutex::new(BTreeMap::<u64, f64>::new());
    let done = std::sync::atomic::AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(120);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((200, body)) = common::http_get(ns, "http://127.0.0.1:9102/metrics") {
                    let m = parse_text(&body);
                    let seq = series_of(&m, "kepler_exporter_snapshot_sequence", None);
                    let node: f64 = series_of(&m, family, None).values().sum();
                    if let Some(seq) = seq.values().next() {
                        let mut h = history.lock().unwrap();
                        h.insert(*seq as u64, node);
                        while h.len() > 128 {
                            h.pop_first();
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut last = String::new();
        loop {
            // One instant for both queries, so that they see the same push.
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let seq = tsdb.query_at(
                &format!("max(kepler_exporter_snapshot_sequence{{cluster=\"{cluster}\"}})"),
                at,
            );
            let node = tsdb.query_at(&format!("sum({family}{{cluster=\"{cluster}\"}})"), at);
            if let (Some([seq]), Some([node])) = (seq.as_deref(), node.as_deref()) {
                let (seq, at_tsdb) = (sample_value(seq) as u64, sample_value(node));
                match history.lock().unwrap().get(&seq) {
                    Some(served) if common::close(*served, at_tsdb, 1e-9) && *served > 0.0 => {
                        println!(
                            "{cluster}: snapshot {seq}: exporter {served} J, TSDB {at_tsdb} J"
                        );
                        break;
                    }
                    Some(served) => {
                        last = format!("snapshot {seq}: exporter {served} J, TSDB {at_tsdb} J")
                    }
                    None => last = format!("snapshot {seq} not seen at the exporter"),
                }
            }
            if Instant::now() >= deadline {
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("{cluster}: the TSDB never held the exporter's node energy; last: {last}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// The exporter of cluster `i` in `topo`'s namespaces pushing OTLP/HTTP to `url`, on fake RAPL
/// with CPU time from procfs.
fn push_exporter(bin: &Path, topo: &Topology, i: usize, url: &str, dir: &Path) -> Proc {
    let ns = if i == 0 {
        &topo.hub
    } else {
        &topo.spokes[i - 1]
    };
    let args = [
        format!("--cluster={}", CLUSTERS[i]),
        "--otlp.protocol=http/protobuf".to_string(),
        format!("--otlp.endpoint={url}"),
        "--ebpf.enabled=false".to_string(),
    ];
    spawn_exporter(bin, ns, CLUSTERS[i], 9102, &args, dir)
}

#[test]
fn kepler_rs_pushes_straight_into_prometheus_3_with_its_classic_names() {
    let _serial = common::serial();
    if !common::require_netns("kepler-rs into Prometheus 3") {
        return;
    }
    let Some((exporter_bin, _)) = common::binaries() else {
        return;
    };
    let Some(prometheus3) = require_peer("prometheus") else {
        return;
    };
    let topo = Topology::create();
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Prometheus::start_receiver(&prometheus3, &topo.hub, dir.path(), TSDB_PORT);
    let url = format!("http://{HUB_IP}:{TSDB_PORT}/api/v1/otlp/v1/metrics");
    let _exporters: Vec<Proc> = (0..CLUSTERS.len())
        .map(|i| push_exporter(&exporter_bin, &topo, i, &url, dir.path()))
        .collect();

    tsdb.assert_reference_queries();

    // Every family the exporter serves arrives under its own name, with the push's identity.
    let (_, page) = common::http_get(&topo.spokes[0], "http://127.0.0.1:9102/metrics").unwrap();
    let served: BTreeSet<String> = parse_text(&page)
        .keys()
        .map(|(name, _)| name.clone())
        .collect();
    let q = "count by (__name__, job, instance) ({cluster=\"cluster1\", __name__=~\"kepler_.+\"})";
    let result = tsdb.wait_for(q, 60, |r| {
        let names: BTreeSet<&str> = r
            .iter()
            .filter_map(|s| s["metric"]["__name__"].as_str())
            .collect();
        served.iter().all(|n| names.contains(n.as_str()))
    });
    for s in &result {
        assert_eq!(s["metric"]["job"], "kepler-pods", "{q}: {s}");
        assert_eq!(s["metric"]["instance"], "cluster1-node", "{q}: {s}");
    }
    let arrived: BTreeSet<String> = result
        .iter()
        .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        arrived, served,
        "Prometheus 3 holds other names than the exporter serves"
    );

    for (i, cluster) in CLUSTERS.iter().enumerate() {
        let ns = if i == 0 {
            &topo.hub
        } else {
            &topo.spokes[i - 1]
        };
        assert_tsdb_holds_the_exporters_energy(&tsdb, ns, cluster);
    }
}

/// The TSDBs the hub remote-writes to.
#[derive(Clone, Copy, Debug)]
enum Tsdb {
    Prometheus3,
    VictoriaMetrics,
}

/// The three-cluster pipeline with kepler-collector remote-writing every second to `kind` in
/// the hub namespace: the reference queries answer from it, node energy is conserved, and a hub
/// restart leaves every counter continuous.
fn remote_write_into(kind: Tsdb) {
    let _serial = common::serial();
    let what = format!("kepler-collector remote write into {kind:?}");
    let peer = match kind {
        Tsdb::Prometheus3 => "prometheus",
        Tsdb::VictoriaMetrics => "victoria-metrics",
    };
    // Checked first, so that a missing peer does not start the pipeline.
    if !common::require_netns(&what) {
        return;
    }
    let Some(bin) = require_peer(peer) else {
        return;
    };
    // Both serve the remote-write receiver at the same path.
    let remote_write = format!(
        "remote_write:\n  url: http://127.0.0.1:{TSDB_PORT}/api/v1/write\n  interval: 1s\n"
    );
    let Some(mut p) = Pipeline::start_with(&what, "5m", &remote_write) else {
        return;
    };
    let tsdb = match kind {
        Tsdb::Prometheus3 => Prometheus::start_receiver(&bin, &p.topo.hub, p.dir.path(), TSDB_PORT),
        Tsdb::VictoriaMetrics => {
            Prometheus::start_victoria_metrics(&bin, &p.topo.hub, p.dir.path(), TSDB_PORT)
        }
    };

    tsdb.assert_reference_queries();
    for (i, cluster) in CLUSTERS.iter().enumerate() {
        assert_tsdb_holds_the_exporters_energy(&tsdb, p.ns(i), cluster);
    }

    // A hub restart: the exporters' cumulative counters come back through the new hub, so the
    // TSDB sees them continue, never reset.
    let q = "sum by (cluster) (kepler_node_package_joules_total)";
    let before = tsdb.wait_for(q, 30, |r| r.len() == 3);
    let before: BTreeMap<String, f64> = before
        .iter()
        .map(|s| {
            (
                s["metric"]["cluster"].as_str().unwrap().to_string(),
                sample_value(s),
            )
        })
        .collect();
    p.collector.kill();
    std::thread::sleep(Duration::from_secs(3));
    p.restart_collector();
    let after = tsdb.wait_for(q, 60, |r| {
        r.len() == 3
            && r.iter().all(|s| {
                let cluster = s["metric"]["cluster"].as_str().unwrap_or("");
                before.get(cluster).is_some_and(|b| sample_value(s) > *b)
            })
    });
    assert_eq!(after.len(), 3, "{q}: {after:?}");
    let q = "sum by (cluster) (resets(kepler_node_package_joules_total[5m]))";
    let resets = tsdb.wait_for(q, 30, |r| r.len() == 3);
    for s in &resets {
        assert_eq!(
            sample_value(s),
            0.0,
            "{q}: a counter reset across the hub restart: {s}"
        );
    }
    let q = "sum by (cluster) (resets(kepler_container_joules_total[5m]))";
    for s in &tsdb.wait_for(q, 30, |r| r.len() == 3) {
        assert_eq!(
            sample_value(s),
            0.0,
            "{q}: a counter reset across the hub restart: {s}"
        );
    }
}

#[test]
fn kepler_collector_remote_writes_into_prometheus_3() {
    remote_write_into(Tsdb::Prometheus3);
}

#[test]
fn kepler_collector_remote_writes_into_victoria_metrics() {
    remote_write_into(Tsdb::VictoriaMetrics);
}
