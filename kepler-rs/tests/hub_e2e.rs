#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Spoke -> hub on one machine: two real `kepler-rs` exporters push to the real
//! `kepler-collector` hub (built by `cargo test --workspace`), one as spoke `cluster1` on the
//! spoke listener, one without `--cluster` on the hub's own listener (which inserts
//! `cluster="hub"`). The hub's exposition must carry exactly the families `/metrics` serves,
//! with the same names, each series labelled with its cluster. Skips when the hub binary was not
//! built (e.g. `cargo test -p kepler-rs`) (a failure under CI).

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::otlp::{free_port, metrics, start_exporter};

struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(str::to_string)
        .filter(|l| l.starts_with("kepler_") && !l.starts_with("kepler_collector_"))
        .collect()
}

#[test]
fn spoke_and_hub_exporters_appear_at_the_hub_with_the_same_names_and_their_cluster() {
    let Some(hub_bin) = kepler_test_support::require::require_binary("kepler-collector") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (own, spokes, expo) = (free_port(), free_port(), free_port());
    let config = dir.path().join("hub.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - name: hub-grpc\n    protocol: grpc\n    address: 127.0.0.1:{own}\n    insert_cluster: hub\n  - name: spokes-grpc\n    protocol: grpc\n    address: 127.0.0.1:{spokes}\nexposition:\n  address: 127.0.0.1:{expo}\n"
        ),
    )
    .unwrap();
    let _hub = Hub(Command::new(hub_bin)
        .arg("--config.file")
        .arg(&config)
        .args(["--log.level", "error"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap());
    let spoke = start_exporter(&[
        "--cluster",
        "cluster1",
        "--otlp.endpoint",
        &format!("http://127.0.0.1:{spokes}"),
    ]);
    let _local = start_exporter(&["--otlp.endpoint", &format!("http://127.0.0.1:{own}")]);

    let deadline = Instant::now() + Duration::from_secs(60);
    let hub = loop {
        let text = metrics(expo).unwrap_or_default();
        if text.contains("cluster=\"cluster1\"")
            && text.contains("cluster=\"hub\"")
            && text.contains("kepler_exporter_otlp_exports_total{")
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the hub did not get both exporters:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let served = metrics(spoke.port).unwrap();
    // The same families with the same types, but for `kepler_node_info`: a counter on
    // /metrics, as Kepler declares it, and pushed as a gauge because its name lacks `_total`
    // (as a monotonic sum the hub, like the Collector, would serve `kepler_node_info_total`).
    let mut expected = families(&served);
    assert!(
        expected.remove("kepler_node_info counter"),
        "kepler_node_info is a counter on /metrics"
    );
    expected.insert("kepler_node_info gauge".to_string());
    assert_eq!(families(&hub), expected, "hub and /metrics families differ");
    for line in hub
        .lines()
        .filter(|l| l.starts_with("kepler_") && !l.starts_with("kepler_collector_"))
    {
        assert!(
            line.contains("cluster=\"cluster1\"") || line.contains("cluster=\"hub\""),
            "series without its cluster: {line}"
        );
    }
    assert!(hub.contains(
        "kepler_node_package_joules_total{cluster=\"cluster1\",instance=\"node-a\",job=\"kepler-pods\",mode=\"idle\""
    ), "{hub}");
}
