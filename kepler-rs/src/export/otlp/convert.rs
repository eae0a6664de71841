//! Maps metric [`Family`]s (the same ones `/metrics` renders) to OTLP messages.
//!
//! Counters become monotonic cumulative Sums with a stable `start_time_unix_nano` (when this
//! exporter started counting), gauges become Gauges; labels become data-point attributes in
//! exposition order, and `cluster` is appended to every point when one is configured (never an
//! empty one). Kepler's `instance` label (the node name) is not repeated on the points: the
//! resource's `service.instance.id` is that name and becomes `instance` at the hub, and the
//! Collector's prometheus exporter drops a whole metric whose points also carry `instance`
//! ("duplicate label names"). Names and units are the families' own, chosen so that the OpenTelemetry
//! Collector's Prometheus translation gives back the `/metrics` names exactly.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::export::family::{Family, MetricType};

/// The data-point attribute that keys series by cluster at the hub.
pub const CLUSTER_ATTRIBUTE: &str = "cluster";

/// Who is sending: becomes the OTLP resource (the hub's `job` and `instance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `service.name` (the hub's `job` label).
    pub service_name: String,
    /// The node name: `service.instance.id` (the hub's `instance`), `host.name`, `k8s.node.name`.
    pub node_name: String,
    /// `k8s.cluster.name` and the `cluster` point attribute; `None`: neither is sent.
    pub cluster: Option<String>,
}

impl Identity {
    /// The OTLP resource of this node.
    pub fn resource(&self) -> Resource {
        let mut attributes = vec![
            kv("service.name", &self.service_name),
            kv("service.instance.id", &self.node_name),
            kv("host.name", &self.node_name),
            kv("k8s.node.name", &self.node_name),
        ];
        if let Some(cluster) = &self.cluster {
            attributes.push(kv("k8s.cluster.name", cluster));
        }
        Resource {
            attributes,
            ..Default::default()
        }
    }
}

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The instrumentation scope of everything kepler-rs sends.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "kepler-rs".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

/// One request carrying `metrics` for `resource`.
pub fn request(resource: Resource, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The label that the resource's `service.instance.id` becomes at the hub.
const INSTANCE_LABEL: &str = "instance";

/// Converts families to OTLP metrics for `identity`: points at `time`, counters starting at
/// `start`. Families without samples are left out, as the text encoder leaves them out.
pub fn families_to_metrics(
    families: &[Family<'_>],
    start: SystemTime,
    time: SystemTime,
    identity: &Identity,
) -> Vec<Metric> {
    let start = unix_nanos(start);
    let time = unix_nanos(time);
    let cluster = identity.cluster.as_deref();
    let mut metrics = Vec::with_capacity(families.len());
    for family in families {
        // A counter goes as a monotonic sum, to which the Collector's Prometheus exporter adds
        // `_total`; one whose name lacks it (Kepler's `kepler_node_info`, always 1) goes as a
        // gauge, so that its name comes back unchanged.
        let as_sum = family.ty == MetricType::Counter && family.name.ends_with("_total");
        let mut points = Vec::new();
        family.for_each_sample(|labels, value| {
            let mut attributes: Vec<KeyValue> = labels
                .iter()
                .filter(|(k, v)| !(*k == INSTANCE_LABEL && *v == identity.node_name))
                .map(|(k, v)| kv(k, v))
                .collect();
            if let Some(cluster) = cluster {
                attributes.push(kv(CLUSTER_ATTRIBUTE, cluster));
            }
            points.push(NumberDataPoint {
                attributes,
                start_time_unix_nano: if as_sum { start } else { 0 },
                time_unix_nano: time,
                value: Some(number_data_point::Value::AsDouble(value.as_f64())),
                ..Default::default()
            });
        });
        if points.is_empty() {
            continue;
        }
        let data = match family.ty {
            MetricType::Counter if !as_sum => metric::Data::Gauge(Gauge {
                data_points: points,
            }),
            MetricType::Counter => metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            MetricType::Gauge => metric::Data::Gauge(Gauge {
                data_points: points,
            }),
            // A family's samples are plain numbers; histogram and summary families (none in
            // the classic set) cannot be mapped from them.
            MetricType::Histogram | MetricType::Summary => continue,
        };
        metrics.push(Metric {
            name: family.name.to_string(),
            description: family.help.clone(),
            unit: family.unit.to_string(),
            data: Some(data),
            ..Default::default()
        });
    }
    metrics
}

#[cfg(test)]
mod tests;
