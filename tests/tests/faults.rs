#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Faults on the three-cluster pipeline (see `common/mod.rs`), each its own test on a fresh
//! set of namespaces: the hub killed for 20 s and restarted (Prometheus sees the gap, counters
//! continue without a reset, the hub again holds every exporter's full cumulative energy); a
//! spoke's link cut (its series expire after the configured window, not before, while the other
//! clusters keep updating; back when the link returns); a spoke exporter restarted (its
//! counters reset, which `rate` absorbs; nobody else resets); a fake RAPL zone whose directory
//! disappears for several intervals and returns (counted as `vanished` errors, then its counter
//! carries the missed energy: nothing lost, no reset). Root only; skips otherwise.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{sample_value, series_of, single, Pipeline, CLUSTERS};

/// Waits until every cluster has a node package rate in Prometheus.
fn wait_for_data(p: &Pipeline) {
    for cluster in CLUSTERS {
        p.prometheus.wait_for(
            &format!("rate(kepler_node_package_joules_total{{cluster=\"{cluster}\"}}[1m])"),
            120,
            |r| !r.is_empty(),
        );
    }
}

/// `sum by (cluster) (kepler_node_package_joules_total)` as a map.
fn node_energy(p: &Pipeline) -> BTreeMap<String, f64> {
    p.prometheus
        .query("sum by (cluster) (kepler_node_package_joules_total)")
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["metric"]["cluster"].as_str().unwrap().to_string(),
                sample_value(s),
            )
        })
        .collect()
}

/// Whether the hub exposes any exporter series (not its own self-metrics) for `cluster`.
fn hub_has_cluster(p: &Pipeline, cluster: &str) -> bool {
    p.hub_metrics()
        .unwrap_or_default()
        .keys()
        .any(|(name, labels)| {
            name.starts_with("kepler_")
                && !name.starts_with("kepler_collector_")
                && labels.get("cluster").map(String::as_str) == Some(cluster)
        })
}

#[test]
fn hub_killed_for_20_s_and_restarted_loses_no_energy_and_resets_no_counter() {
    let _serial = common::serial();
    let Some(mut p) = Pipeline::start("hub restart", "5m") else {
        return;
    };
    wait_for_data(&p);
    let before = node_energy(&p);
    assert_eq!(before.len(), 3, "{before:?}");

    p.collector.kill();
    std::thread::sleep(Duration::from_secs(20));
    p.restart_collector();

    // Every exporter's cumulative energy, including what it measured while the hub was down,
    // is at the hub again.
    for i in 0..CLUSTERS.len() {
        p.assert_hub_holds_the_exporters_energy(i);
    }
    // Prometheus saw the hub down, then the counters carry on above where they were.
    p.prometheus
        .wait_for("min_over_time(up{job=\"kepler-hub\"}[5m])", 120, |r| {
            r.len() == 1 && sample_value(&r[0]) == 0.0
        });
    p.prometheus.wait_for(
        "sum by (cluster) (kepler_node_package_joules_total)",
        120,
        |r| {
            r.len() == 3
                && r.iter()
                    .all(|s| sample_value(s) > before[s["metric"]["cluster"].as_str().unwrap()])
        },
    );
    for family in [
        "kepler_node_package_joules_total",
        "kepler_container_joules_total",
    ] {
        let resets = p
            .prometheus
            .query(&format!("resets({family}[5m]) > 0"))
            .unwrap();
        assert!(
            resets.is_empty(),
            "{family} reset across the hub restart: {resets:?}"
        );
    }
    let rates = p
        .prometheus
        .query("rate(kepler_container_joules_total[5m]) < 0")
        .unwrap();
    assert!(rates.is_empty(), "negative rates: {rates:?}");
}

#[test]
fn a_cut_spoke_link_expires_that_spoke_after_the_window_and_leaves_the_others() {
    const EXPIRATION_S: u64 = 15;
    let _serial = common::serial();
    let Some(p) = Pipeline::start("spoke link cut", &format!("{EXPIRATION_S}s")) else {
        return;
    };
    wait_for_data(&p);
    p.assert_hub_holds_the_exporters_energy(1);
    let seq_of = |cluster: &str| {
        single(
            &p.hub_metrics().unwrap_or_default(),
            "kepler_exporter_snapshot_sequence",
            Some(cluster),
        )
        .unwrap_or(0.0)
    };
    let others_before = (seq_of("hub"), seq_of("cluster2"));

    p.topo.set_link(0, false);
    let cut = Instant::now();
    let deadline = cut + Duration::from_secs(EXPIRATION_S + 45);
    while hub_has_cluster(&p, "cluster1") {
        assert!(
            Instant::now() < deadline,
            "cluster1's series did not expire within {EXPIRATION_S} s + 45 s of the cut"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let gone_after = cut.elapsed();
    // The last push landed at most a push interval (1 s) plus a request before the cut.
    assert!(
        gone_after >= Duration::from_secs(EXPIRATION_S - 3),
        "cluster1 expired {gone_after:?} after the cut, before the {EXPIRATION_S} s window"
    );
    // The others kept updating and are whole.
    assert!(seq_of("hub") > others_before.0 && seq_of("cluster2") > others_before.1);
    p.assert_hub_holds_the_exporters_energy(0);
    p.assert_hub_holds_the_exporters_energy(2);
    p.prometheus.wait_for(
        "count by (cluster) (kepler_node_package_joules_total)",
        120,
        |r| {
            let mut c: Vec<&str> = r
                .iter()
                .map(|s| s["metric"]["cluster"].as_str().unwrap())
                .collect();
            c.sort_unstable();
            c == ["cluster2", "hub"]
        },
    );

    // Link back: cluster1 returns with all its energy.
    p.topo.set_link(0, true);
    p.assert_hub_holds_the_exporters_energy(1);
}

#[test]
fn a_restarted_spoke_resets_its_counters_and_rate_absorbs_it() {
    let _serial = common::serial();
    let Some(mut p) = Pipeline::start("spoke restart", "5m") else {
        return;
    };
    wait_for_data(&p);
    // Let the counters grow well above what a fresh exporter shows in its first seconds.
    p.prometheus.wait_for(
        "sum(kepler_node_package_joules_total{cluster=\"cluster2\"})",
        120,
        |r| r.len() == 1 && sample_value(&r[0]) > 0.0,
    );
    let exporter = p.exporter_metrics(2).unwrap();
    let before: f64 = series_of(&exporter, "kepler_node_package_joules_total", None)
        .values()
        .sum();

    p.exporters[2].kill();
    p.restart_exporter(2);
    let (exporter, _) = p.assert_hub_holds_the_exporters_energy(2);
    let after: f64 = series_of(&exporter, "kepler_node_package_joules_total", None)
        .values()
        .sum();
    assert!(
        after < before,
        "the restarted exporter starts from zero ({after} vs {before})"
    );

    p.prometheus.wait_for(
        "resets(kepler_node_package_joules_total{cluster=\"cluster2\"}[5m]) > 0",
        120,
        |r| !r.is_empty(),
    );
    p.prometheus.wait_for(
        "rate(kepler_node_package_joules_total{cluster=\"cluster2\"}[5m])",
        120,
        |r| !r.is_empty() && r.iter().all(|s| sample_value(s) >= 0.0),
    );
    let others = p
        .prometheus
        .query("resets(kepler_node_package_joules_total{cluster!=\"cluster2\"}[5m]) > 0")
        .unwrap();
    assert!(others.is_empty(), "other clusters reset: {others:?}");
    let negative = p
        .prometheus
        .query("rate(kepler_container_joules_total[5m]) < 0")
        .unwrap();
    assert!(negative.is_empty(), "negative rates: {negative:?}");
}

/// `(file - exporter)` for cluster `i`'s fake DRAM zone, in joules: the zone's `energy_uj` read
/// right after the exporter published a new snapshot, minus the exporter's node DRAM total.
/// Constant while no energy is lost (to within a tick or two of DRAM power).
fn dram_offset(p: &Pipeline, i: usize, zone: &std::path::Path) -> f64 {
    let seq = |m: &BTreeMap<common::SeriesKey, f64>| {
        single(m, "kepler_exporter_snapshot_sequence", None).unwrap_or(0.0)
    };
    let first = seq(&p.exporter_metrics(i).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = p.exporter_metrics(i).unwrap_or_default();
        // Two snapshots on, so the zone was read after anything the caller did.
        if seq(&m) >= first + 2.0 {
            let raw = std::fs::read_to_string(zone.join("energy_uj")).unwrap();
            let file = raw.trim().parse::<f64>().unwrap() / 1e6;
            let exporter: f64 = series_of(&m, "kepler_node_dram_joules_total", None)
                .values()
                .sum();
            return file - exporter;
        }
        assert!(Instant::now() < deadline, "exporter {i} stopped publishing");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn vanished_errors(p: &Pipeline, i: usize) -> f64 {
    p.exporter_metrics(i)
        .unwrap_or_default()
        .iter()
        .filter(|((name, labels), _)| {
            name == "kepler_exporter_errors_total"
                && labels.get("component").map(String::as_str) == Some("power")
                && labels.get("reason").map(String::as_str) == Some("vanished")
        })
        .map(|(_, v)| *v)
        .sum()
}

#[test]
fn a_fake_rapl_zone_that_disappears_and_returns_loses_no_energy() {
    const GONE_INTERVALS: f64 = 6.0;
    let _serial = common::serial();
    let Some(p) = Pipeline::start("vanishing RAPL zone", "5m") else {
        return;
    };
    wait_for_data(&p);
    let parent = p
        .dir
        .path()
        .join("rapl-cluster1/devices/virtual/powercap/intel-rapl/intel-rapl:0");
    let zone = parent.join("intel-rapl:0:1");
    assert_eq!(
        std::fs::read_to_string(zone.join("name")).unwrap().trim(),
        "dram"
    );
    let before = dram_offset(&p, 1, &zone);

    // The zone's directory goes away (its sysfs link dangles) for several intervals.
    let away = parent.join(".intel-rapl:0:1.away");
    std::fs::rename(&zone, &away).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while vanished_errors(&p, 1) < GONE_INTERVALS {
        assert!(
            Instant::now() < deadline,
            "the exporter did not count the vanished zone"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::rename(&away, &zone).unwrap();

    // Back: the counter carries the energy of the intervals it was away (at least 2 W each).
    let after = dram_offset(&p, 1, &zone);
    assert!(
        (after - before).abs() < 3.0,
        "DRAM energy lost while the zone was away: offset {before} J before, {after} J after"
    );
    p.assert_hub_holds_the_exporters_energy(1);
    p.prometheus.wait_for(
        "kepler_exporter_errors_total{cluster=\"cluster1\",component=\"power\",reason=\"vanished\"}",
        120,
        |r| r.iter().any(|s| sample_value(s) >= GONE_INTERVALS),
    );
    let resets = p
        .prometheus
        .query("resets(kepler_node_dram_joules_total[5m]) > 0")
        .unwrap();
    assert!(resets.is_empty(), "DRAM counters reset: {resets:?}");
}
