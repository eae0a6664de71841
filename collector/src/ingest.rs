//! From an export request to store updates: job/instance from the resource, the `cluster`
//! insert (or the cluster bound to the sender's token), the metric type mapping, and the
//! [`Outcome`] behind the OTLP partial-success answer. Entry points: [`Hub::ingest_protobuf`]
//! (request bytes, read in place when they can be) and [`Hub::ingest`] (a decoded request).

use crate::decode::{self, DecodeError};
use crate::selfmetrics::SelfMetrics;
use crate::store::{self, Applied, Attr, Hint, KeyRef, Meta, Point, Reject, Store, Value};
use crate::translate::{self, Kind};
use crate::wire::{DataKind, MetricView, PointValue, PointView, View};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{HistogramDataPoint, SummaryDataPoint};
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

    /// Applies every data point of a decoded request.
    pub fn ingest<'a>(
        &self,
        request: &'a ExportMetricsServiceRequest,
        labeling: Labeling<'a>,
    ) -> Outcome {
        self.ingest_view(&View::of_request(request), labeling)
    }

    /// Applies every data point of an encoded (protobuf) request: read in place when it has the
    /// common shape, decoded with prost otherwise (so malformed bodies get prost's error and
    /// nothing is applied).
    pub fn ingest_protobuf<'a>(
        &self,
        body: &'a [u8],
        labeling: Labeling<'a>,
    ) -> Result<Outcome, DecodeError> {
        match View::of_protobuf(body) {
            Some(view) => Ok(self.ingest_view(&view, labeling)),
            None => Ok(self.ingest(&decode::protobuf(body)?, labeling)),
        }
    }

    /// Applies every data point of a request's view.
    pub fn ingest_view<'a>(&self, view: &View<'a>, labeling: Labeling<'a>) -> Outcome {
        let now = self.store.clock().now_ms();
        let mut state = State::default();
        for rm in &view.resources {
            let resource_attrs = view.attrs(&rm.attrs);
            let (job, instance) = job_instance(resource_attrs);
            if !job.is_empty() && !instance.is_empty() {
                self.store
                    .touch_target(&job, &instance, target_labels(resource_attrs), now);
            }
            for sm in view.scopes.get(rm.scopes.clone()).unwrap_or(&[]) {
                for metric in view.metrics.get(sm.metrics.clone()).unwrap_or(&[]) {
                    let ctx = Ctx {
                        hub: self,
                        view,
                        job: &job,
                        instance: &instance,
                        scope_name: sm.name,
                        scope_version: sm.version,
                        labeling,
                        now,
                    };
                    ctx.metric(metric, &mut state);
                }
            }
        }
        self.store.end_request(&mut state.lookup);
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
    /// The current point's sorted attribute set.
    attrs: Vec<Attr<'a>>,
    lookup: store::Lookup,
    layout: Layout<'a>,
    /// Changes with every metric (so with its name, type, scope and resource).
    metric: u64,
    /// The attributes of the point last handed to the store, with the metric and layout it
    /// had (`(metric, layout serial)`).
    previous: Vec<Attr<'a>>,
    previous_of: Option<(u64, u64)>,
}

/// Where an attribute of a point's sorted set comes from.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    /// The point's attribute at this index (request order).
    At(usize),
    /// The `cluster` the listener inserts or forces.
    Cluster(&'a str),
}

/// How the attributes of a point with these keys (in this order) become its sorted set:
/// points of one metric mostly share their keys in the same order, so the sort, the `cluster`
/// insert and the label-conflict check of the keys are done once per layout, not per point.
#[derive(Debug, Default)]
struct Layout<'a> {
    /// The keys in request order (empty and `serial` 0: no layout yet).
    keys: Vec<&'a str>,
    sorted: Vec<(&'a str, Source<'a>)>,
    /// Where `cluster` is in `sorted`.
    cluster: Option<usize>,
    /// No values can make these keys a label conflict ([`translate::keys_never_conflict`]).
    plain: bool,
    /// Changes with every new layout (0: none yet).
    serial: u64,
}

/// Same text; pointer-equal strings (the wire walker reuses a repeated string's text) are
/// known equal without comparing bytes.
#[inline]
fn same_text(a: &str, b: &str) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// `job` = `service.namespace/service.name` (or `service.name`); `instance` =
/// `service.instance.id`; empty when absent. The first of duplicate keys counts.
pub fn job_instance(resource: &[Attr<'_>]) -> (Arc<str>, Arc<str>) {
    let get = |key: &str| {
        resource
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_ref())
    };
    let job = match (get("service.namespace"), get("service.name")) {
        (Some(ns), Some(name)) if !ns.is_empty() => format!("{ns}/{name}"),
        (_, Some(name)) => name.to_string(),
        _ => String::new(),
    };
    let instance = get("service.instance.id").unwrap_or_default();
    (job.into(), instance.into())
}

/// The `target_info` labels: resource attributes other than the ones that make job and instance.
fn target_labels(resource: &[Attr<'_>]) -> Vec<(String, String)> {
    resource
        .iter()
        .filter(|(k, _)| {
            !matches!(
                *k,
                "service.name" | "service.namespace" | "service.instance.id"
            )
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Ctx<'c, 'a> {
    hub: &'c Hub,
    view: &'c View<'a>,
    job: &'c str,
    instance: &'c str,
    scope_name: &'a str,
    scope_version: &'a str,
    labeling: Labeling<'a>,
    now: u64,
}

impl<'c, 'a> Ctx<'c, 'a> {
    fn metric(&self, metric: &MetricView<'a>, state: &mut State<'a>) {
        state.metric += 1;
        let points = self.view.points.get(metric.points.clone()).unwrap_or(&[]);
        let (kind, delta) = match metric.data {
            DataKind::None => return,
            DataKind::Gauge => (Kind::Gauge, false),
            DataKind::Sum { delta, monotonic } => {
                if monotonic {
                    (Kind::Counter, delta)
                } else {
                    (Kind::Gauge, delta)
                }
            }
            DataKind::Histogram { delta } => (Kind::Histogram, delta),
            DataKind::Summary => (Kind::Summary, false),
            DataKind::ExponentialHistogram => {
                self.reject_all(points, Reject::Unsupported, state);
                return;
            }
        };
        if !metric
            .name
            .chars()
            .any(|c| c.is_ascii_alphanumeric() || c == ':')
        {
            // No token survives the translation: there is no Prometheus name to give it.
            self.reject_all(points, Reject::Invalid, state);
            return;
        }
        let meta = Arc::new(Meta {
            prom_name: translate::metric_name(metric.name, metric.unit, kind),
            kind,
            help: metric.description.to_string(),
        });
        let dropped = matches!(
            metric.data,
            DataKind::Sum {
                delta: true,
                monotonic: false
            }
        );
        for p in points {
            if dropped {
                // Non-monotonic deltas have no Prometheus meaning: dropped, as the Collector
                // drops them (not an error to the sender).
                self.attrs(p, state);
                let cluster = Self::cluster(state);
                state.tally.count(cluster, Ok(Applied::Ignored));
                continue;
            }
            match &p.value {
                PointValue::Number {
                    start_unix_nano,
                    time_unix_nano,
                    value,
                    flags,
                } => {
                    let point = value.ok_or(Reject::Invalid).map(|v| Point {
                        start_unix_nano: *start_unix_nano,
                        time_unix_nano: *time_unix_nano,
                        value: Value::Number(v),
                        delta,
                    });
                    let skip = flags & NO_RECORDED_VALUE != 0;
                    self.apply(metric, &meta, p, point, skip, state);
                }
                PointValue::Histogram(h) => {
                    self.apply(metric, &meta, p, histogram(h, delta), skip(h.flags), state);
                }
                PointValue::Summary(s) => {
                    self.apply(metric, &meta, p, Ok(summary(s)), skip(s.flags), state);
                }
                PointValue::Other => {
                    self.attrs(p, state);
                    let cluster = Self::cluster(state);
                    state.tally.count(cluster, Err(Reject::Unsupported));
                }
            }
        }
    }

    /// Counts every point as rejected for `reason`.
    fn reject_all(&self, points: &[PointView<'a>], reason: Reject, state: &mut State<'a>) {
        for p in points {
            self.attrs(p, state);
            let cluster = Self::cluster(state);
            state.tally.count(cluster, Err(reason));
        }
    }

    /// The point's sorted attribute set (as [`store::attrs_of`] builds it), into
    /// `state.attrs`, through the layout of its keys.
    fn attrs(&self, p: &PointView<'a>, state: &mut State<'a>) {
        let raw = self.view.attrs(&p.attrs);
        let layout = &mut state.layout;
        let known = layout.serial != 0
            && layout.keys.len() == raw.len()
            && layout
                .keys
                .iter()
                .zip(raw)
                .all(|(k, (key, _))| same_text(k, key));
        if !known {
            layout.keys.clear();
            layout.keys.extend(raw.iter().map(|(k, _)| *k));
            store::sorted_attrs(
                raw.iter()
                    .enumerate()
                    .map(|(i, (k, _))| (*k, Source::At(i))),
                Source::Cluster,
                self.labeling.insert_cluster,
                self.labeling.force_cluster,
                &mut layout.sorted,
            );
            layout.cluster = layout.sorted.binary_search_by(|p| p.0.cmp("cluster")).ok();
            layout.plain = translate::keys_never_conflict(layout.sorted.iter().map(|(k, _)| *k));
            layout.serial += 1;
        }
        state.attrs.clear();
        state
            .attrs
            .extend(layout.sorted.iter().map(|&(key, source)| match source {
                Source::At(i) => (key, raw.get(i).map_or(Cow::Borrowed(""), |a| a.1.clone())),
                Source::Cluster(c) => (key, Cow::Borrowed(c)),
            }));
    }

    /// The `cluster` of `state.attrs` (built by [`Ctx::attrs`]), "" when absent.
    fn cluster(state: &State<'a>) -> Cow<'a, str> {
        state
            .layout
            .cluster
            .and_then(|i| state.attrs.get(i))
            .map_or(Cow::Borrowed(""), |a| a.1.clone())
    }

    fn apply(
        &self,
        metric: &MetricView<'a>,
        meta: &Arc<Meta>,
        p: &PointView<'a>,
        point: Result<Point, Reject>,
        skip: bool,
        state: &mut State<'a>,
    ) {
        self.attrs(p, state);
        let cluster = Self::cluster(state);
        let key = KeyRef {
            metric: metric.name,
            kind: meta.kind,
            scope_name: self.scope_name,
            scope_version: self.scope_version,
            job: self.job,
            instance: self.instance,
            attrs: &state.attrs,
        };
        if skip {
            // A staleness marker ends the series it names.
            self.hub.store.mark_stale(&key, &mut state.lookup);
            state.previous_of = None;
            state.tally.count(cluster, Ok(Applied::Ignored));
            return;
        }
        let conflict = if state.layout.plain {
            None
        } else {
            translate::label_conflict(
                state.attrs.iter().map(|(k, v)| (*k, &**v)),
                meta.kind,
                self.job,
                self.instance,
            )
        };
        if let Some(conflict) = conflict {
            state.tally.conflict.get_or_insert(conflict);
            state.tally.count(cluster, Err(Reject::LabelConflict));
            return;
        }
        let point = match point {
            Ok(point) => point,
            Err(reject) => {
                state.tally.count(cluster, Err(reject));
                return;
            }
        };
        // What the store may skip: the same group as the point it was handed last (same
        // metric, so name, type, scope and resource, and same layout, so same keys), and which
        // values are the same text as that point's.
        let of = (state.metric, state.layout.serial);
        let mut hint = Hint::default();
        if state.previous_of == Some(of) && state.previous.len() == state.attrs.len() {
            hint.same_group = true;
            for (i, (now, before)) in state.attrs.iter().zip(&state.previous).enumerate() {
                if i < 64 && same_text(&now.1, &before.1) {
                    hint.same_values |= 1 << i;
                }
            }
        }
        let result = self
            .hub
            .store
            .apply(&key, meta, point, self.now, &mut state.lookup, hint);
        std::mem::swap(&mut state.attrs, &mut state.previous);
        state.previous_of = Some(of);
        state.tally.count(cluster, result);
    }
}

fn skip(flags: u32) -> bool {
    flags & NO_RECORDED_VALUE != 0
}

fn histogram(p: &HistogramDataPoint, delta: bool) -> Result<Point, Reject> {
    let valid = if p.bucket_counts.is_empty() {
        true
    } else {
        p.bucket_counts.len() == p.explicit_bounds.len() + 1
    };
    if !valid {
        return Err(Reject::Invalid);
    }
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
}

fn summary(p: &SummaryDataPoint) -> Point {
    Point {
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
    }
}
