//! One series as sample lines: its labels as the Collector's exporter writes them
//! ([`with_series_labels`], from a series key), its value flattened into samples
//! ([`flat_samples`], [`write_series`]), and the rank that decides between two series with the
//! same labels ([`ValueRank`]).

use crate::store::{Histogram, SeriesKey, Summary, Value};
use crate::translate::{self, Kind};
use kepler_prom_text::{write_value, MetricType, SampleWriter};
use std::cmp::Ordering;

pub(super) fn metric_type(kind: Kind) -> MetricType {
    match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
        Kind::Histogram => MetricType::Histogram,
        Kind::Summary => MetricType::Summary,
    }
}

/// The sample names of a family: the family name and its `_bucket`, `_sum`, `_count`.
pub(super) struct SampleNames {
    pub(super) name: String,
    pub(super) bucket: String,
    pub(super) sum: String,
    pub(super) count: String,
}

impl SampleNames {
    pub(super) fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            bucket: format!("{name}_bucket"),
            sum: format!("{name}_sum"),
            count: format!("{name}_count"),
        }
    }
}

/// A total order on values, only to break ties deterministically.
#[derive(Debug, Clone, Copy)]
pub(super) struct ValueRank(u64, f64);

impl ValueRank {
    pub(super) fn of(value: &Value) -> Self {
        match value {
            Value::Number(n) => ValueRank(0, *n),
            Value::Histogram(h) => ValueRank(h.count, h.sum),
            Value::Summary(s) => ValueRank(s.count, s.sum),
        }
    }

    pub(super) fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0).then(self.1.total_cmp(&other.1))
    }
}

/// Decides between two series with the same labels: the newer point, then the larger value.
pub(super) type Rank = (u64, ValueRank);

/// Whether a series ranked `a` wins over one ranked `b`.
pub(super) fn outranks(a: &Rank, b: &Rank) -> bool {
    a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)) == Ordering::Greater
}

/// Calls `f` with the labels of a series, sorted by name: its attributes as label names (ingest
/// made sure they are distinct and do not clash with the labels below), `otel_scope_name` and
/// `otel_scope_version` when the scope has a name, `job` and `instance` when not empty. Only
/// attribute keys that are not label names already are copied (translated).
pub(super) fn with_series_labels<R>(key: &SeriesKey, f: impl FnOnce(&[(&str, &str)]) -> R) -> R {
    let renamed: Vec<(String, &str)> = key
        .attrs
        .iter()
        .filter(|(k, _)| !translate::is_clean_label(k))
        .filter_map(|(k, v)| translate::label_name(k).map(|name| (name, v)))
        .collect();
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(key.attrs.len() + 4);
    labels.extend(
        key.attrs
            .iter()
            .filter(|(k, _)| translate::is_clean_label(k)),
    );
    labels.extend(renamed.iter().map(|(name, v)| (name.as_str(), *v)));
    let scope_version = if key.scope.name.is_empty() {
        ""
    } else {
        key.scope.version
    };
    for (name, value) in [
        ("otel_scope_name", key.scope.name),
        ("otel_scope_version", scope_version),
        ("job", key.job),
        ("instance", key.instance),
    ] {
        if value.is_empty() {
            continue;
        }
        match labels.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => labels.push((name, value)),
        }
    }
    labels.sort_unstable();
    labels.dedup_by(|later, first| later.0 == first.0);
    f(&labels)
}

/// Writes the samples of one series; returns how many.
pub(super) fn write_series(
    out: &mut String,
    writer: SampleWriter,
    names: &SampleNames,
    labels: &[(&str, &str)],
    value: &Value,
) -> usize {
    flat_samples(names, value, |name, extra, v| {
        writer.write(out, name, labels, extra, v);
    })
}

/// Flattens one series' value into its samples as the Collector exposes them: a number as
/// itself; a histogram as cumulative `_bucket` samples (`+Inf` last), `_sum` and `_count`; a
/// summary as quantile samples, `_sum` and `_count`. Calls `sample(name, extra, value)` for
/// each, `extra` being the `le` or `quantile` label that goes after the series' labels, and
/// returns how many.
pub(super) fn flat_samples(
    names: &SampleNames,
    value: &Value,
    mut sample: impl FnMut(&str, Option<(&str, &str)>, f64),
) -> usize {
    match value {
        Value::Number(v) => {
            sample(&names.name, None, *v);
            1
        }
        Value::Histogram(h) => {
            let Histogram {
                bounds,
                counts,
                sum,
                count,
            } = &**h;
            let mut le = String::new();
            let mut cumulative = 0u64;
            for (bound, n) in bounds.iter().zip(counts) {
                cumulative = cumulative.saturating_add(*n);
                le.clear();
                write_value(&mut le, *bound);
                sample(&names.bucket, Some(("le", &le)), cumulative as f64);
            }
            sample(&names.bucket, Some(("le", "+Inf")), *count as f64);
            sample(&names.sum, None, *sum);
            sample(&names.count, None, *count as f64);
            bounds.len().min(counts.len()) + 3
        }
        Value::Summary(s) => {
            let Summary {
                quantiles,
                sum,
                count,
            } = &**s;
            let mut q = String::new();
            for (quantile, v) in quantiles {
                q.clear();
                write_value(&mut q, *quantile);
                sample(&names.name, Some(("quantile", &q)), *v);
            }
            sample(&names.sum, None, *sum);
            sample(&names.count, None, *count as f64);
            quantiles.len() + 2
        }
    }
}
