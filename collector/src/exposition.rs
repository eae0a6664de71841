//! Renders the store as Prometheus text 0.0.4, as the Collector's prometheus exporter would:
//! one family per translated name (sorted), samples sorted by labels, data-point attributes as
//! sanitized labels (ingest refused points whose attributes collide with each other or with the
//! labels written here, see [`translate::label_conflict`]), `otel_scope_name`/
//! `otel_scope_version` when the scope has a name, `job` and `instance` from the resource, and
//! one `target_info` per job + instance, whose resource attributes that sanitize to the same
//! label have their values joined with `;` in key order (as the Collector does there); a
//! resource with a reserved `__*` label gets no `target_info`, as in the Collector. The hub's
//! own `kepler_collector_*` metrics follow.
//!
//! The store is read one shard at a time (see [`crate::store`]), so a render never stops
//! ingestion for long; the text is built from the copies.

use crate::ingest::Hub;
use crate::store::{Histogram, Series, SeriesKey, Summary, Value};
use crate::translate::{self, Kind};
use kepler_prom_text::{write_value, Encoder, Format, MetricType};
use std::collections::BTreeMap;

struct Family {
    kind: Kind,
    help: String,
    samples: Vec<(Vec<(String, String)>, Value)>,
}

fn metric_type(kind: Kind) -> MetricType {
    match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
        Kind::Histogram => MetricType::Histogram,
        Kind::Summary => MetricType::Summary,
    }
}

/// The labels of a series, sorted by name.
pub fn series_labels(key: &SeriesKey) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = Vec::with_capacity(key.attrs.len() + 4);
    push_attrs(&mut labels, key.attrs.iter());
    let mut set = |name: &str, value: &str| {
        if value.is_empty() {
            return;
        }
        match labels.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value.to_string(),
            None => labels.push((name.to_string(), value.to_string())),
        }
    };
    set("otel_scope_name", key.scope.name);
    if !key.scope.name.is_empty() {
        set("otel_scope_version", key.scope.version);
    }
    set("job", key.job);
    set("instance", key.instance);
    labels.sort();
    labels
}

/// Adds attributes (in key order) as labels; colliding sanitized names join values with `;`
/// (only resource attributes can collide: ingest refuses data points whose attributes do).
fn push_attrs<'a>(
    labels: &mut Vec<(String, String)>,
    attrs: impl Iterator<Item = (&'a str, &'a str)>,
) {
    for (key, value) in attrs {
        let Some(name) = translate::label_name(key) else {
            continue;
        };
        match labels.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => {
                entry.1.push(';');
                entry.1.push_str(value);
            }
            None => labels.push((name, value.to_string())),
        }
    }
}

/// Renders everything the hub exposes as Prometheus text 0.0.4.
pub fn render(hub: &Hub) -> String {
    render_as(hub, Format::Text)
}

/// Renders everything the hub exposes in `format` (OpenMetrics: counter families named
/// without `_total`, `# EOF` at the end; the samples are the same).
pub fn render_as(hub: &Hub, format: Format) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    hub.store.for_each_live(|key: &SeriesKey, series: &Series| {
        let family = families
            .entry(series.meta.prom_name.clone())
            .or_insert_with(|| Family {
                kind: series.meta.kind,
                help: series.meta.help.clone(),
                samples: Vec::new(),
            });
        if family.kind != series.meta.kind {
            // Two OTel metrics that translate to one name with different types: the first
            // type seen wins, as a Prometheus family has one type.
            return;
        }
        family
            .samples
            .push((series_labels(key), series.point.value.clone()));
    });
    let mut enc = Encoder::with_capacity(format, 1 << 16);
    for (name, mut family) in families {
        family.samples.sort_by(|a, b| a.0.cmp(&b.0));
        enc.family(&name, &family.help, metric_type(family.kind));
        for (labels, value) in &family.samples {
            write_series(&mut enc, &name, labels, value);
        }
    }
    let mut targets = hub.store.live_targets();
    targets.sort();
    enc.family("target_info", "Target metadata", MetricType::Gauge);
    for (job, instance, attrs) in &targets {
        let mut labels = Vec::with_capacity(attrs.len() + 2);
        push_attrs(
            &mut labels,
            attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        if labels.iter().any(|(n, _)| n.starts_with("__")) {
            continue;
        }
        labels.retain(|(n, _)| n != "job" && n != "instance");
        labels.push(("job".to_string(), job.to_string()));
        labels.push(("instance".to_string(), instance.to_string()));
        labels.sort();
        let refs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        enc.sample("target_info", &refs, 1.0);
    }
    hub.metrics.render(&mut enc, &hub.store);
    enc.finish()
}

fn write_series(enc: &mut Encoder, name: &str, labels: &[(String, String)], value: &Value) {
    let refs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    fn with<'a>(refs: &[(&'a str, &'a str)], extra: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
        let mut all = Vec::with_capacity(refs.len() + 1);
        all.extend_from_slice(refs);
        all.push(extra);
        all
    }
    match value {
        Value::Number(v) => enc.sample(name, &refs, *v),
        Value::Histogram(h) => {
            let Histogram {
                bounds,
                counts,
                sum,
                count,
            } = &**h;
            let bucket = format!("{name}_bucket");
            let mut cumulative = 0u64;
            for (bound, n) in bounds.iter().zip(counts) {
                cumulative = cumulative.saturating_add(*n);
                let mut le = String::new();
                write_value(&mut le, *bound);
                enc.sample(&bucket, &with(&refs, ("le", &le)), cumulative as f64);
            }
            enc.sample(&bucket, &with(&refs, ("le", "+Inf")), *count as f64);
            enc.sample(&format!("{name}_sum"), &refs, *sum);
            enc.sample(&format!("{name}_count"), &refs, *count as f64);
        }
        Value::Summary(s) => {
            let Summary {
                quantiles,
                sum,
                count,
            } = &**s;
            for (quantile, v) in quantiles {
                let mut q = String::new();
                write_value(&mut q, *quantile);
                enc.sample(name, &with(&refs, ("quantile", &q)), *v);
            }
            enc.sample(&format!("{name}_sum"), &refs, *sum);
            enc.sample(&format!("{name}_count"), &refs, *count as f64);
        }
    }
}

/// A sample visitor: name, labels, value.
type SampleFn<'a> = dyn FnMut(&str, &[(&str, &str)], f64) + 'a;

/// Calls `f(name, labels, value)` for every sample of every live series (histograms and
/// summaries flattened into `_bucket`/`_sum`/`_count` and quantile samples), in no particular
/// order. Used by remote write.
pub fn for_each_sample(hub: &Hub, mut f: impl FnMut(&str, &[(&str, &str)], f64)) {
    hub.store.for_each_live(|key, series| {
        let labels = series_labels(key);
        let refs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let name = series.meta.prom_name.as_str();
        let with = |extra: (&'static str, &str)| -> Vec<(String, String)> {
            let mut all: Vec<(String, String)> = labels.clone();
            all.push((extra.0.to_string(), extra.1.to_string()));
            all
        };
        let pass = |f: &mut SampleFn<'_>, n: &str, l: &[(String, String)], v: f64| {
            let r: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            f(n, &r, v);
        };
        match &series.point.value {
            Value::Number(v) => f(name, &refs, *v),
            Value::Histogram(h) => {
                let Histogram {
                    bounds,
                    counts,
                    sum,
                    count,
                } = &**h;
                let bucket = format!("{name}_bucket");
                let mut cumulative = 0u64;
                for (bound, n) in bounds.iter().zip(counts) {
                    cumulative = cumulative.saturating_add(*n);
                    let mut le = String::new();
                    write_value(&mut le, *bound);
                    pass(&mut f, &bucket, &with(("le", &le)), cumulative as f64);
                }
                pass(&mut f, &bucket, &with(("le", "+Inf")), *count as f64);
                f(&format!("{name}_sum"), &refs, *sum);
                f(&format!("{name}_count"), &refs, *count as f64);
            }
            Value::Summary(s) => {
                let Summary {
                    quantiles,
                    sum,
                    count,
                } = &**s;
                for (q, v) in quantiles {
                    let mut text = String::new();
                    write_value(&mut text, *q);
                    pass(&mut f, name, &with(("quantile", &text)), *v);
                }
                f(&format!("{name}_sum"), &refs, *sum);
                f(&format!("{name}_count"), &refs, *count as f64);
            }
        }
    });
}
