#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Mutual TLS across the namespace harness (see `common/mod.rs`): the hub's spoke listeners
//! require client certificates of the hub's client CA and take each sender's cluster from its
//! certificate's name. cluster1's real exporter pushes over gRPC with its certificate while it
//! calls itself `cluster2` (`--cluster=cluster2`): everything it sends lands as cluster1.
//! cluster2's exporter pushes over HTTP with a certificate of another CA: its handshakes are
//! refused, nothing of it is stored, and its own self-metrics count the failed exports. Root
//! only; skips otherwise.

mod common;

use std::time::{Duration, Instant};

use common::{
    binaries, http_get, require_netns, serial, spawn_exporter, start_collector, Topology, HUB_IP,
};
use kepler_test_support::pki::{CertFiles, TestCa};

fn hub_yaml(server: &CertFiles, client_ca: &std::path::Path) -> String {
    let tls = format!(
        "    tls: {{cert_file: {}, key_file: {}, client_ca_file: {}}}\n    auth:\n      certificates:\n        - {{cluster: cluster1, common_name: spoke-cluster1}}\n        - {{cluster: cluster2, dns_name: otel.cluster2.example}}\n",
        server.cert.display(),
        server.key.display(),
        client_ca.display()
    );
    format!(
        "listeners:\n  - name: hub-grpc\n    protocol: grpc\n    address: 127.0.0.1:4317\n    insert_cluster: hub\n  - name: spokes-grpc\n    protocol: grpc\n    address: 0.0.0.0:4327\n{tls}  - name: spokes-http\n    protocol: http\n    address: 0.0.0.0:4328\n{tls}exposition:\n  address: 0.0.0.0:9464\n"
    )
}

fn push_args(endpoint: String, ca: &std::path::Path, client: &CertFiles) -> Vec<String> {
    vec![
        format!("--otlp.endpoint={endpoint}"),
        format!("--otlp.ca-file={}", ca.display()),
        format!("--otlp.client-cert-file={}", client.cert.display()),
        format!("--otlp.client-key-file={}", client.key.display()),
        "--ebpf.enabled=false".to_string(),
    ]
}

#[test]
fn spokes_push_with_client_certificates_and_cannot_claim_another_cluster() {
    let _serial = serial();
    if !require_netns("mutual TLS between spokes and hub") {
        return;
    }
    let Some((exporter_bin, collector_bin)) = binaries() else {
        return;
    };
    let topo = Topology::create();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "hub");
    let server = ca.server("hub", &[HUB_IP]);
    let cluster1 = ca.client("cluster1", "spoke-cluster1", &[]);
    // cluster2's certificate carries cluster2's name but comes from a CA the hub does not trust.
    let rogue = TestCa::new(dir.path(), "rogue").client(
        "cluster2",
        "spoke-cluster2",
        &["otel.cluster2.example"],
    );
    std::fs::write(dir.path().join("hub.yaml"), hub_yaml(&server, &ca.ca_file)).unwrap();
    let mut collector = start_collector(&collector_bin, &topo.hub, dir.path());

    let mut args = push_args(format!("https://{HUB_IP}:4327"), &ca.ca_file, &cluster1);
    args.push("--cluster=cluster2".to_string());
    let _exporter1 = spawn_exporter(
        &exporter_bin,
        &topo.spokes[0],
        "cluster1",
        9102,
        &args,
        dir.path(),
    );
    let mut args = push_args(
        format!("https://{HUB_IP}:4328/v1/metrics"),
        &ca.ca_file,
        &rogue,
    );
    args.extend([
        "--otlp.protocol=http/protobuf".to_string(),
        "--cluster=cluster2".to_string(),
    ]);
    let _exporter2 = spawn_exporter(
        &exporter_bin,
        &topo.spokes[1],
        "cluster2",
        9102,
        &args,
        dir.path(),
    );

    // Wait until cluster1's node is at the hub and cluster2's exporter has failed a few times.
    let failed = "kepler_exporter_otlp_exports_total{pipeline=\"push\",result=\"failed\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    let (hub_page, exporter2_page) = loop {
        collector.assert_running();
        let hub_page = http_get(&topo.hub, "http://127.0.0.1:9464/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        let exporter2_page = http_get(&topo.spokes[1], "http://127.0.0.1:9102/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        let failures = exporter2_page
            .lines()
            .find_map(|l| l.strip_prefix(failed))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let arrived = hub_page.lines().any(|l| {
            l.starts_with("kepler_node_package_joules_total{") && l.contains("cluster1-node")
        });
        if arrived && failures >= 2.0 {
            break (hub_page, exporter2_page);
        }
        assert!(
            Instant::now() < deadline,
            "cluster1 never arrived or cluster2 never failed\nhub:\n{hub_page}\nexporter2:\n{exporter2_page}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    let series: Vec<&str> = hub_page
        .lines()
        .filter(|l| l.starts_with("kepler_") && !l.starts_with("kepler_collector_"))
        .collect();
    assert!(!series.is_empty());
    for line in &series {
        assert!(line.contains("cluster=\"cluster1\""), "{line}");
        assert!(!line.contains("cluster2-node"), "{line}");
    }
    assert!(
        !exporter2_page
            .contains("kepler_exporter_otlp_exports_total{pipeline=\"push\",result=\"sent\"}"),
        "{exporter2_page}"
    );
}
