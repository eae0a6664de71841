//! From a decoded `ExportMetricsServiceRequest` to store updates: job/instance from the
//! resource, the `cluster` insert (or the cluster bound to the sender's token), the metric
//! type mapping, and the OTLP partial-success answer (rejected points with a message).
//!
//! Receivers (gRPC and HTTP) call [`Hub::ingest`]; they own transport concerns only.

use crate::intern::Id;
use crate::selfmetrics::SelfMetrics;
use crate::store::{self, Applied, Attr, KeyRef, Meta, Point, Reject, Store, Value};
use crate::translate::{self, Kind};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint,
};
use std::borrow::Cow;
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
    pub fn ingest<'a>(
        &self,
        request: &'a ExportMetricsServiceRequest,
        labeling: Labeling<'a>,
    ) -> Outcome {
        let now = self.store.clock().now_ms();
        let mut state = State::default();
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
                let (scope_name, scope_version) = sm
                    .scope
                    .as_ref()
                    .map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
                for metric in &sm.metrics {
                    let ctx = Ctx {
                        hub: self,
                        job: &job,
                        instance: &instance,
                        scope_name,
                        scope_version,
                        labeling,
                        now,
                    };
                    ctx.metric(metric, &mut state);
                }
            }
        }
        self.outcome(&state.tally, now)
    }

    /// Counts a request's points in the self-metrics and writes the answer.
    fn outcome(&self, tally: &Tally<'_>, now: u64) -> Outcome {
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

/// Points received and rejected per cluster in one request.
#[derive(Debug, Default)]
struct Tally<'a> {
    received: BTreeMap<Cow<'a, str>, u64>,
    rejected: BTreeMap<(Cow<'a, str>, Reject), u64>,
    /// The first label conflict seen, for the message.
    conflict: Option<translate::LabelConflict>,
}

impl<'a> Tally<'a> {
    fn count(&mut self, cluster: Cow<'a, str>, result: Result<Applied, Reject>) {
        if let Err(reason) = result {
            *self.rejected.entry((cluster.clone(), reason)).or_default() += 1;
        }
        match self.received.get_mut(&*cluster) {
            Some(n) => *n += 1,
            None => {
                self.received.insert(cluster, 1);
            }
        }
    }
}

/// What one request's ingest reuses from point to point.
#[derive(Debug, Default)]
struct State<'a> {
    tally: Tally<'a>,
    attrs: Vec<Attr<'a>>,
    ids: Vec<Id>,
}

/// The `cluster` of a sorted attribute set, kept for the tally ("" when absent).
fn cluster_of<'a>(attrs: &[Attr<'a>]) -> Cow<'a, str> {
    attrs
        .binary_search_by(|p| p.0.cmp("cluster"))
        .map_or(Cow::Borrowed(""), |i| attrs[i].1.clone())
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

/// An attribute's value as a label value, borrowed when it is a string.
fn label_value(kv: &KeyValue) -> Cow<'_, str> {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Cow::Borrowed(s),
        _ => Cow::Owned(translate::value_string(kv.value.as_ref())),
    }
}

struct Ctx<'c, 'a> {
    hub: &'c Hub,
    job: &'c str,
    instance: &'c str,
    scope_name: &'a str,
    scope_version: &'a str,
    labeling: Labeling<'a>,
    now: u64,
}

impl<'a> Ctx<'_, 'a> {
    fn metric(&self, metric: &'a Metric, state: &mut State<'a>) {
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
                self.reject_all(data, Reject::Unsupported, state);
                return;
            }
        };
        if !metric
            .name
            .chars()
            .any(|c| c.is_ascii_alphanumeric() || c == ':')
        {
            // No token survives the translation: there is no Prometheus name to give it.
            self.reject_all(data, Reject::Invalid, state);
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
                    self.number(metric, &meta, p, false, state);
                }
            }
            Data::Sum(s) => {
                for p in &s.data_points {
                    if delta && !s.is_monotonic {
                        // Non-monotonic deltas have no Prometheus meaning: dropped, as the
                        // Collector drops them (not an error to the sender).
                        self.attrs(&p.attributes, state);
                        let cluster = cluster_of(&state.attrs);
                        state.tally.count(cluster, Ok(Applied::Ignored));
                        continue;
                    }
                    self.number(metric, &meta, p, delta, state);
                }
            }
            Data::Histogram(h) => {
                for p in &h.data_points {
                    self.histogram(metric, &meta, p, delta, state);
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    self.summary(metric, &meta, p, state);
                }
            }
            Data::ExponentialHistogram(_) => {}
        }
    }

    /// Counts every point of `data` as rejected for `reason`.
    fn reject_all(&self, data: &'a Data, reason: Reject, state: &mut State<'a>) {
        let attributes: Vec<&'a [KeyValue]> = match data {
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
            self.attrs(attributes, state);
            let cluster = cluster_of(&state.attrs);
            state.tally.count(cluster, Err(reason));
        }
    }

    /// The point's sorted attribute set, into `state.attrs`.
    fn attrs(&self, attributes: &'a [KeyValue], state: &mut State<'a>) {
        store::attrs_of(
            attributes,
            |kv| (kv.key.as_str(), label_value(kv)),
            self.labeling.insert_cluster,
            self.labeling.force_cluster,
            &mut state.attrs,
        );
    }

    fn apply(
        &self,
        metric: &'a Metric,
        meta: &Arc<Meta>,
        attributes: &'a [KeyValue],
        point: Result<Point, Reject>,
        skip: bool,
        state: &mut State<'a>,
    ) {
        self.attrs(attributes, state);
        let cluster = cluster_of(&state.attrs);
        if skip {
            state.tally.count(cluster, Ok(Applied::Ignored));
            return;
        }
        let conflict = translate::label_conflict(
            state.attrs.iter().map(|(k, v)| (*k, &**v)),
            meta.kind,
            self.job,
            self.instance,
        );
        if let Some(conflict) = conflict {
            state.tally.conflict.get_or_insert(conflict);
            state.tally.count(cluster, Err(Reject::LabelConflict));
            return;
        }
        let result = point.and_then(|point| {
            let key = KeyRef {
                metric: &metric.name,
                kind: meta.kind,
                scope_name: self.scope_name,
                scope_version: self.scope_version,
                job: self.job,
                instance: self.instance,
                attrs: &state.attrs,
            };
            self.hub
                .store
                .apply(&key, meta, point, self.now, &mut state.ids)
        });
        state.tally.count(cluster, result);
    }

    fn number(
        &self,
        metric: &'a Metric,
        meta: &Arc<Meta>,
        p: &'a NumberDataPoint,
        delta: bool,
        state: &mut State<'a>,
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
        self.apply(metric, meta, &p.attributes, point, skip, state);
    }

    fn histogram(
        &self,
        metric: &'a Metric,
        meta: &Arc<Meta>,
        p: &'a HistogramDataPoint,
        delta: bool,
        state: &mut State<'a>,
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
                value: Value::Histogram(Box::new(store::Histogram {
                    bounds,
                    counts,
                    sum: p.sum.unwrap_or(0.0),
                    count: p.count,
                })),
                delta,
            })
        } else {
            Err(Reject::Invalid)
        };
        let skip = p.flags & NO_RECORDED_VALUE != 0;
        self.apply(metric, meta, &p.attributes, point, skip, state);
    }

    fn summary(
        &self,
        metric: &'a Metric,
        meta: &Arc<Meta>,
        p: &'a SummaryDataPoint,
        state: &mut State<'a>,
    ) {
        let point = Ok(Point {
            start_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            value: Value::Summary(Box::new(store::Summary {
                quantiles: p
                    .quantile_values
                    .iter()
                    .map(|q| (q.quantile, q.value))
                    .collect(),
                sum: p.sum,
                count: p.count,
            })),
            delta: false,
        });
        let skip = p.flags & NO_RECORDED_VALUE != 0;
        self.apply(metric, meta, &p.attributes, point, skip, state);
    }
}
