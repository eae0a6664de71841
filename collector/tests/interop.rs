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

/// A counter (with a quote in its HELP), a gauge, a histogram and a summary over OTLP/JSON.
const FOUR_TYPES: &[u8] = br#"{"resourceMetrics":[{"resource":{"attributes":[
  {"key":"service.name","value":{"stringValue":"om"}},
  {"key":"service.instance.id","value":{"stringValue":"om-1"}}]},
 "scopeMetrics":[{"metrics":[
  {"name":"om.requests","unit":"1","description":"Requests \"served\".","sum":{
    "aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"asInt":"5",
    "startTimeUnixNano":"1","timeUnixNano":"2",
    "attributes":[{"key":"route","value":{"stringValue":"/a"}}]}]}},
  {"name":"om.temperature","unit":"Cel","gauge":{"dataPoints":[
    {"asDouble":21.5,"timeUnixNano":"2"}]}},
  {"name":"om.latency","unit":"ms","histogram":{"aggregationTemporality":2,"dataPoints":[
    {"count":"3","sum":130,"bucketCounts":["1","1","1"],"explicitBounds":[10,100],
     "startTimeUnixNano":"1","timeUnixNano":"2"}]}},
  {"name":"om.rpc","unit":"s","summary":{"dataPoints":[{"count":"4","sum":2,
    "quantileValues":[{"quantile":0.5,"value":0.4}],"timeUnixNano":"2"}]}}
 ]}]}]}"#;

/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn scrape(hub: &HubProcess, accept: Option<&str>) -> (String, String) {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    let (status, headers, body) = http(hub.addr("exposition"), "GET", "/metrics", &headers, b"");
    assert_eq!(status, 200);
    (
        headers["content-type"].clone(),
        String::from_utf8(body).unwrap(),
    )
}

#[test]
fn openmetrics_when_enabled_and_asked_for_is_what_prometheus_scrapes() {
    let config = |enable: bool| {
        format!(
            "listeners:\n  - {{name: hub-http, protocol: http, address: \"127.0.0.1:0\"}}\n\
             exposition: {{address: \"127.0.0.1:0\", enable_open_metrics: {enable}}}\n"
        )
    };
    // Off (the default, as in the Collector): text even when OpenMetrics is preferred.
    let off = HubProcess::start(&config(false));
    let (status, _, _) = http(
        off.addr("hub-http"),
        "POST",
        "/v1/metrics",
        &[("Content-Type", "application/json")],
        FOUR_TYPES,
    );
    assert_eq!(status, 200);
    let (content_type, text) = scrape(&off, Some(PROMETHEUS_ACCEPT));
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF"), "{text}");
    drop(off);

    let hub = HubProcess::start(&config(true));
    let (status, _, _) = http(
        hub.addr("hub-http"),
        "POST",
        "/v1/metrics",
        &[("Content-Type", "application/json")],
        FOUR_TYPES,
    );
    assert_eq!(status, 200);
    // No Accept header, or one preferring text: text, which promtool accepts.
    let (content_type, text) = scrape(&hub, None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        text.contains("# TYPE om_requests_total counter\n"),
        "{text}"
    );
    assert_promtool_accepts(&text);
    let (content_type, _) = scrape(&hub, Some("text/plain;version=0.0.4,*/*;q=0.1"));
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    // Prometheus's own Accept header: OpenMetrics 1.0.
    let (content_type, om) = scrape(&hub, Some(PROMETHEUS_ACCEPT));
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.ends_with("\n# EOF\n"), "{om}");
    for expected in [
        "# HELP om_requests Requests \\\"served\\\".\n# TYPE om_requests counter\n",
        "om_requests_total{instance=\"om-1\",job=\"om\",route=\"/a\"} 5\n",
        "# TYPE om_latency_milliseconds histogram\n",
        "om_latency_milliseconds_bucket{instance=\"om-1\",job=\"om\",le=\"100\"} 2\n",
        "# TYPE om_rpc_seconds summary\n",
        "# TYPE kepler_collector_points_received counter\n",
    ] {
        assert!(om.contains(expected), "{expected:?} not in\n{om}");
    }
    // The same samples as the text answer.
    let samples = |doc: &str| -> Vec<String> {
        doc.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(samples(&om), samples(&text));

    // A real Prometheus (which prefers OpenMetrics) parses every sample of it.
    let Some(prom) = Prometheus::start(hub.addr("exposition"), &[]) else {
        return;
    };
    let up = prom.wait_for(r#"up{job="hub"}"#, |r| {
        r.first().is_some_and(|s| sample_value(s) == 1.0)
    });
    assert_eq!(up.len(), 1);
    let scraped = prom.wait_for("scrape_samples_scraped", |r| !r.is_empty());
    assert_eq!(sample_value(&scraped[0]), samples(&om).len() as f64);
    let requests = prom.wait_for("om_requests_total", |r| r.len() == 1);
    assert_eq!(sample_value(&requests[0]), 5.0);
    let le100 = prom.query(r#"om_latency_milliseconds_bucket{le="100"}"#);
    assert_eq!(sample_value(&le100[0]), 2.0, "{le100:?}");
    let q = prom.query(r#"om_rpc_seconds{quantile="0.5"}"#);
    assert_eq!(sample_value(&q[0]), 0.4, "{q:?}");
    let temperature = prom.query("om_temperature_celsius");
    assert_eq!(sample_value(&temperature[0]), 21.5, "{temperature:?}");
}
