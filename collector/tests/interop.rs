//! The real hub binary receives from the OpenTelemetry Python SDK over gRPC (gzip),
//! HTTP/protobuf (gzip) and HTTP/JSON; a real Prometheus scrapes its `/metrics` and PromQL
//! returns the series with the Collector's names, labels and values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[test]
fn python_sdk_over_three_transports_is_queryable_in_prometheus() {
    let Some(python) = python() else { return };
    let hub = HubProcess::start(&loopback_config("", ""));
    let gzip = [("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip")];
    let sends = [
        (
            "grpc",
            format!("http://{}", hub.addr("hub-grpc")),
            &gzip[..],
        ),
        (
            "http-protobuf",
            format!("http://{}/v1/metrics", hub.addr("hub-http")),
            &gzip[..],
        ),
        (
            "http-json",
            format!("http://{}/v1/metrics", hub.addr("spokes-http")),
            &[][..],
        ),
    ];
    for (transport, endpoint, env) in &sends {
        let (ok, out) = python_send(
            &python,
            transport,
            endpoint,
            &format!("interop-{transport}"),
            env,
        );
        assert!(ok, "{transport}: {out}");
    }

    let text = hub.metrics();
    assert_promtool_accepts(&text);
    assert!(
        text.contains("# TYPE interop_energy_joules_total counter"),
        "{text}"
    );

    let Some(prom) = Prometheus::start(hub.addr("exposition"), &[]) else {
        return;
    };
    let energy = prom.wait_for("interop_energy_joules_total", |r| r.len() == 3);
    for sample in &energy {
        assert_eq!(sample_value(sample), 42.5, "{sample}");
        let transport = sample_label(sample, "transport").unwrap();
        assert_eq!(
            sample_label(sample, "exported_job"),
            Some(format!("interop-{transport}").as_str())
        );
        assert_eq!(
            sample_label(sample, "exported_instance"),
            Some("instance-1")
        );
        assert_eq!(sample_label(sample, "k8s_pod_name"), Some("pod-1"));
        assert_eq!(sample_label(sample, "http_status_code"), Some("200"));
        assert_eq!(
            sample_label(sample, "otel_scope_name"),
            Some("interop.meter")
        );
        assert_eq!(sample_label(sample, "otel_scope_version"), Some("1.2.3"));
        // 4317/4318 insert cluster="hub"; the spoke listener keeps what was sent (nothing).
        let expected_cluster = if transport == "http-json" {
            None
        } else {
            Some("hub")
        };
        assert_eq!(
            sample_label(sample, "cluster"),
            expected_cluster,
            "{sample}"
        );
    }
    let queue = prom.wait_for("interop_queue_depth", |r| r.len() == 3);
    assert!(queue.iter().all(|s| sample_value(s) == -3.0), "{queue:?}");
    let temp = prom.wait_for("interop_temperature_celsius", |r| r.len() == 3);
    assert!(temp.iter().all(|s| sample_value(s) == 21.5), "{temp:?}");
    let count = prom.wait_for("interop_latency_milliseconds_count", |r| r.len() == 3);
    assert!(count.iter().all(|s| sample_value(s) == 3.0), "{count:?}");
    let sum = prom.query("sum(interop_latency_milliseconds_sum)");
    assert_eq!(sample_value(&sum[0]), 3.0 * 130.0);
    let le10 = prom.query(r#"interop_latency_milliseconds_bucket{le="10",transport="grpc"}"#);
    assert_eq!(sample_value(&le10[0]), 2.0, "{le10:?}");
    let inf = prom.query(r#"interop_latency_milliseconds_bucket{le="+Inf",transport="grpc"}"#);
    assert_eq!(sample_value(&inf[0]), 3.0, "{inf:?}");
    let target = prom.wait_for(r#"target_info{exported_job="interop-grpc"}"#, |r| {
        r.len() == 1
    });
    assert_eq!(sample_label(&target[0], "host_name"), Some("interop-host"));
    assert_eq!(sample_label(&target[0], "k8s_node_name"), Some("node-a"));
    let received = prom.query(r#"kepler_collector_points_received_total{cluster="hub"}"#);
    assert_eq!(sample_value(&received[0]), 8.0, "{received:?}");
}
