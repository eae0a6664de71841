//! From a decoded `ExportMetricsServiceRequest` to store updates: job/instance from the
//! resource, the `cluster` insert (or the cluster bound to the sender's token), the metric
//! type mapping, and the OTLP partial-success answer (rejected points with a message).
//!
//! Receivers (gRPC and HTTP) call [`Hub::ingest`]; they own transport concerns only.

use crate::selfmetrics::SelfMetrics;
use crate::store::{self, Applied, Meta, Point, Reject, Scope, SeriesKey, Store, Value};
use crate::translate::{self, Kind};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `DataPointFlags.NO_RECORDED_VALUE`: the point carries no value; skipped.
const NO_RECORDED_VALUE: u32 = 1;

/// The hub's state shared by every listener and the exposition.
#[derive(Debug)]
pub struct Hub {
    pub store: Store,
    pub metrics: SelfMetrics,
}

/// How a listener labels what it receives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Labeling<'a> {
    /// Insert `cluster=<this>` on points that have no `cluster` attribute.
    pub insert_cluster: Option<&'a str>,
    /// Set `cluster=<this>` on every point (the cluster bound to the sender's token).
    pub force_cluster: Option<&'a str>,
}

/// The answer to one export request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: u64,
    pub rejected: u64,
    /// Empty when nothing was rejected.
    pub message: String,
}

impl Hub {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            metrics: SelfMetrics::default(),
        }
    }

    /// Applies every data point of the request.
    pub fn ingest(&self, request: &ExportMetricsServiceRequest, labeling: Labeling<'_>) -> Outcome {
        let now = self.store.clock().now_ms();
        let mut tally = Tally::default();
        for rm in &request.resource_metrics {
            let resource_attrs: &[KeyValue] = rm
                .resource
                .as_ref()
                .map_or(&[], |r| r.attributes.as_slice());
            let (job, instance) = job_instance(resource_attrs);
            if !job.is_empty() && !instance.is_empty() {
                self.store
                    .touch_target(&job, &instance, target_labels(resource_attrs), now);
            }
            for sm in &rm.scope_metrics {
                let scope = Arc::new(sm.scope.as_ref().map_or_else(Scope::default, |s| Scope {
                    name: s.name.clone(),
                    version: s.version.clone(),
                }));
                for metric in &sm.metrics {
                    let ctx = Ctx {
                        hub: self,
                        job: &job,
                        instance: &instance,
                        scope: &scope,
                        labeling,
                        now,
                    };
                    ctx.metric(metric, &mut tally);
                }
            }
        }
        for (cluster, n) in &tally.received {
            self.metrics.received(cluster, *n, now);
        }
        let mut rejected = 0;
        let mut reasons = Vec::new();
        for ((cluster, reason), n) in &tally.rejected {
            self.metrics.rejected(cluster, reason.as_str(), *n);
            rejected += n;
            let mut text = format!("{n} {}", describe(*reason));
            if let (Reject::LabelConflict, Some(example)) = (reason, &tally.conflict) {
                text.push_str(&format!(" (first: {example})"));
            }
            reasons.push(text);
        }
        let received: u64 = tally.received.values().sum();
        Outcome {
            accepted: received - rejected,
            rejected,
            message: if reasons.is_empty() {
                String::new()
            } else {
                let mut m = format!("{rejected} of {received} data points rejected: ");
                m.push_str(&reasons.join("; "));
                m
            },
        }
    }
}

fn describe(reason: Reject) -> &'static str {
    match reason {
        Reject::SeriesLimit => "would start a new series over the hub's max_series limit",
        Reject::ClusterSeriesLimit => {
            "would start a new series over the cluster's max_series_per_cluster limit"
        }
        Reject::Unsupported => "exponential histogram points (not exposed by this hub)",
        Reject::Invalid => {
            "malformed points (no value, bucket counts not matching bounds, or a metric name \
             without letters or digits)"
        }
        Reject::LabelConflict => {
            "points whose attributes make colliding or reserved Prometheus labels (not \
             exposable)"
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    received: BTreeMap<Arc<str>, u64>,
    rejected: BTreeMap<(Arc<str>, Reject), u64>,
    /// The first label conflict seen, for the message.
    conflict: Option<translate::LabelConflict>,
}

impl Tally {
    fn count(&mut self, cluster: &Arc<str>, result: Result<Applied, Reject>) {
        *self.received.entry(cluster.clone()).or_default() += 1;
        if let Err(reason) = result {
            *self.rejected.entry((cluster.clone(), reason)).or_default() += 1;
        }
    }
}

/// `job` = `service.namespace/service.name` (or `service.name`); `instance` =
/// `service.instance.id`; empty when absent.
pub fn job_instance(resource: &[KeyValue]) -> (Arc<str>, Arc<str>) {
    let get = |key: &str| {
        resource
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| translate::value_string(kv.value.as_ref()))
    };
    let job = match (get("service.namespace"), get("service.name")) {
        (Some(ns), Some(name)) if !ns.is_empty() => format!("{ns}/{name}"),
        (_, Some(name)) => name,
        _ => String::new(),
    };
    let instance = get("service.instance.id").unwrap_or_default();
    (job.into(), instance.into())
}

/// The `target_info` labels: resource attributes other than the ones that make job and instance.
fn target_labels(resource: &[KeyValue]) -> Vec<(String, String)> {
    resource
        .iter()
        .filter(|kv| {
            !matches!(
                kv.key.as_str(),
                "service.name" | "service.namespace" | "service.instance.id"
            )
        })
        .map(|kv| (kv.key.clone(), translate::value_string(kv.value.as_ref())))
        .collect()
}

struct Ctx<'a> {
    hub: &'a Hub,
    job: &'a Arc<str>,
    instance: &'a Arc<str>,
    scope: &'a Arc<Scope>,
    labeling: Labeling<'a>,
    now: u64,
}

impl Ctx<'_> {
    fn metric(&self, metric: &Metric, tally: &mut Tally) {
        let Some(data) = &metric.data else {
            return;
        };
        let (kind, delta) = match data {
            Data::Gauge(_) => (Kind::Gauge, false),
            Data::Sum(sum) => {
                let delta = sum.aggregation_temporality == AggregationTemporality::Delta as i32;
                if sum.is_monotonic {
                    (Kind::Counter, delta)
                } else {
                    (Kind::Gauge, delta)
                }
            }
            Data::Histogram(h) => (
                Kind::Histogram,
                h.aggregation_temporality == AggregationTemporality::Delta as i32,
            ),
            Data::Summary(_) => (Kind::Summary, false),
            Data::ExponentialHistogram(_) => {
                self.reject_all(data, Reject::Unsupported, tally);
                return;
            }
        };
        if !metric
            .name
            .chars()
            .any(|c| c.is_ascii_alphanumeric() || c == ':')
        {
            // No token survives the translation: there is no Prometheus name to give it.
            self.reject_all(data, Reject::Invalid, tally);
            return;
        }
        let meta = Arc::new(Meta {
            prom_name: translate::metric_name(&metric.name, &metric.unit, kind),
            kind,
            help: metric.description.clone(),
        });
        match data {
            Data::Gauge(g) => {
                for p in &g.data_points {
                    self.number(metric, &meta, p, false, tally);
                }
            }
            Data::Sum(s) => {
                for p in &s.data_points {
                    if delta && !s.is_monotonic {
                        // Non-monotonic deltas have no Prometheus meaning: dropped, as the
                        // Collector drops them (not an error to the sender).
                        let attrs = self.attrs(&p.attributes);
                        tally.count(&store::cluster_of(&attrs).into(), Ok(Applied::Ignored));
                        continue;
                    }
                    self.number(metric, &meta, p, delta, tally);
                }
            }
            Data::Histogram(h) => {
                for p in &h.data_points {
                    self.histogram(metric, &meta, p, delta, tally);
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    self.summary(metric, &meta, p, tally);
                }
            }
            Data::ExponentialHistogram(_) => {}
        }
    }

    /// Counts every point of `data` as rejected for `reason`.
    fn reject_all(&self, data: &Data, reason: Reject, tally: &mut Tally) {
        let attributes: Vec<&[KeyValue]> = match data {
            Data::Gauge(g) => g
                .data_points
                .iter()
                .map(|p| p.attributes.as_slice())
                .collect(),
            Data::Sum(s) => s
                .data_points
                .iter()
                .map(|p| p.attributes.as_slice())
                .collect(),
            Data::Histogram(h) => h
                .data_points
                .iter()
                .map(|p| p.attributes.as_slice())
                .collect(),
            Data::ExponentialHistogram(h) => h
                .data_points
                .iter()
                .map(|p| p.attributes.as_slice())
                .collect(),
            Data::Summary(s) => s
                .data_points
                .iter()
                .map(|p| p.attributes.as_slice())
                .collect(),
        };
        for attributes in attributes {
            let attrs = self.attrs(attributes);
            tally.count(&store::cluster_of(&attrs).into(), Err(reason));
        }
    }

    fn attrs(&self, attributes: &[KeyValue]) -> store::Attrs {
        store::attrs_of(
            attributes,
            self.labeling.insert_cluster,
            self.labeling.force_cluster,
        )
    }

    fn apply(
        &self,
        metric: &Metric,
        meta: &Arc<Meta>,
        attributes: &[KeyValue],
        point: Result<Point, Reject>,
        skip: bool,
        tally: &mut Tally,
    ) {
        let attrs = self.attrs(attributes);
        let cluster: Arc<str> = store::cluster_of(&attrs).into();
        if skip {
            tally.count(&cluster, Ok(Applied::Ignored));
            return;
        }
        let conflict = translate::label_conflict(
            attrs.iter().map(|(k, v)| (&**k, &**v)),
            meta.kind,
            self.job,
            self.instance,
        );
        if let Some(conflict) = conflict {
            tally.conflict.get_or_insert(conflict);
            tally.count(&cluster, Err(Reject::LabelConflict));
            return;
        }
        let result = point.and_then(|point| {
            let key = SeriesKey {
                metric: metric.name.as_str().into(),
                kind: meta.kind,
                scope: self.scope.clone(),
                job: self.job.clone(),
                instance: self.instance.clone(),
                attrs,
            };
            self.hub.store.apply(key, meta, &cluster, point, self.now)
        });
        tally.count(&cluster, result);
    }

    fn number(
        &self,
        metric: &Metric,
        meta: &Arc<Meta>,
        p: &NumberDataPoint,
        delta: bool,
        tally: &mut Tally,
    ) {
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(v)) => Ok(v),
            Some(number_data_point::Value::AsInt(v)) => Ok(v as f64),
            None => Err(Reject::Invalid),
        };
        let point = value.map(|v| Point {
            start_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            value: Value::Number(v),
            delta,
        });
        let skip = p.flags & NO_RECORDED_VALUE != 0;
        self.apply(metric, meta, &p.attributes, point, skip, tally);
    }

    fn histogram(
        &self,
        metric: &Metric,
        meta: &Arc<Meta>,
        p: &HistogramDataPoint,
        delta: bool,
        tally: &mut Tally,
    ) {
        let valid = if p.bucket_counts.is_empty() {
            true
        } else {
            p.bucket_counts.len() == p.explicit_bounds.len() + 1
        };
        let point = if valid {
            let (bounds, counts) = if p.bucket_counts.is_empty() {
                (Vec::new(), vec![p.count])
            } else {
                (p.explicit_bounds.clone(), p.bucket_counts.clone())
            };
            Ok(Point {
                start_unix_nano: p.start_time_unix_nano,
                time_unix_nano: p.time_unix_nano,
                value: Value::Histogram {
                    bounds,
                    counts,
                    sum: p.sum.unwrap_or(0.0),
                    count: p.count,
                },
                delta,
            })
        } else {
            Err(Reject::Invalid)
        };
        let skip = p.flags & NO_RECORDED_VALUE != 0;
        self.apply(metric, meta, &p.attributes, point, skip, tally);
    }

    fn summary(&self, metric: &Metric, meta: &Arc<Meta>, p: &SummaryDataPoint, tally: &mut Tally) {
        let point = Ok(Point {
            start_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            value: Value::Summary {
                quantiles: p
                    .quantile_values
                    .iter()
                    .map(|q| (q.quantile, q.value))
                    .collect(),
                sum: p.sum,
                count: p.count,
            },
            delta: false,
        });
        let skip = p.flags & NO_RECORDED_VALUE != 0;
        self.apply(metric, meta, &p.attributes, point, skip, tally);
    }
}
