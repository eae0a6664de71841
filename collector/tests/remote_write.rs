//! Remote write to a real Prometheus (`--web.enable-remote-write-receiver`): the hub pushes its
//! series as snappy protobuf and PromQL finds them with the exposition's names and labels; a
//! receiver that is down at first is retried until it comes up (bounded queue).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::net::SocketAddr;

fn request() -> ExportMetricsServiceRequest {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    };
    let counter = Metric {
        name: "rw.energy".into(),
        unit: "J".into(),
        data: Some(Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: vec![kv("k8s.pod.name", "p1")],
                start_time_unix_nano: 1,
                time_unix_nano: 2,
                value: Some(number_data_point::Value::AsDouble(12.5)),
                ..Default::default()
            }],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "rw.latency".into(),
        unit: "s".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: 2,
                count: 3,
                sum: Some(1.5),
                bucket_counts: vec![1, 2],
                explicit_bounds: vec![0.5],
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "rw-test"),
                    kv("service.instance.id", "i1"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![counter, histogram],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn send(hub: &HubProcess) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = MetricsServiceClient::connect(format!("http://{}", hub.addr("hub-grpc")))
            .await
            .unwrap();
        client.export(request()).await.unwrap();
    });
}

#[test]
fn remote_write_reaches_a_real_prometheus_and_retries_until_it_is_up() {
    // Prometheus will listen here, but only after the hub has tried and failed.
    let prom_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let extra = format!(
        "remote_write: {{url: \"http://{prom_addr}/api/v1/write\", interval: 200ms, timeout: 2s, max_queue: 50}}\n"
    );
    let hub = HubProcess::start(&loopback_config("", &extra));
    send(&hub);
    // The receiver is down: the hub retries and says so.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = hub.metrics();
        let retries = text
            .lines()
            .find_map(|l| l.strip_prefix("kepler_collector_remote_write_retries_total "))
            .map(|v| v.parse::<f64>().unwrap());
        if retries.is_some_and(|r| r >= 1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retry counted:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Prometheus comes up (scraping nothing of ours): the queued and new samples arrive.
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let Some(prom) = Prometheus::start_at(
        Some(prom_addr),
        unused,
        &["--web.enable-remote-write-receiver"],
    ) else {
        return;
    };
    let energy = prom.wait_for("rw_energy_joules_total", |r| r.len() == 1);
    assert_eq!(sample_value(&energy[0]), 12.5);
    assert_eq!(sample_label(&energy[0], "cluster"), Some("hub"));
    assert_eq!(sample_label(&energy[0], "job"), Some("rw-test"));
    assert_eq!(sample_label(&energy[0], "instance"), Some("i1"));
    assert_eq!(sample_label(&energy[0], "k8s_pod_name"), Some("p1"));
    let bucket = prom.wait_for(r#"rw_latency_seconds_bucket{le="0.5"}"#, |r| r.len() == 1);
    assert_eq!(sample_value(&bucket[0]), 1.0);
    let count = prom.query("rw_latency_seconds_count");
    assert_eq!(sample_value(&count[0]), 3.0);
    let text = hub.metrics();
    assert!(
        !text.contains("kepler_collector_remote_write_samples_total{outcome=\"sent\"} 0\n"),
        "{text}"
    );
}
