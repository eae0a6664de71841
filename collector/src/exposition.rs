//! Renders the store as Prometheus text 0.0.4 (or OpenMetrics) as the Collector's prometheus
//! exporter would, `target_info` and the hub's own `kepler_collector_*` metrics included. The
//! store is read one shard at a time, each series written straight into its family's text; the
//! document is handed out family by family ([`render_chunks`]) for the server to stream.

use crate::ingest::Hub;
use crate::store::{Histogram, Meta, SeriesKey, Summary, Value};
use crate::translate::{self, Kind};
use kepler_prom_text::{write_value, Encoder, Format, MetricType, SampleWriter};
use std::collections::BTreeMap;
use std::ops::Range;

fn metric_type(kind: Kind) -> MetricType {
    match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
        Kind::Histogram => MetricType::Histogram,
        Kind::Summary => MetricType::Summary,
    }
}

/// The sample names of a family: the family name and its `_bucket`, `_sum`, `_count`.
struct SampleNames {
    name: String,
    bucket: String,
    sum: String,
    count: String,
}

impl SampleNames {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            bucket: format!("{name}_bucket"),
            sum: format!("{name}_sum"),
            count: format!("{name}_count"),
        }
    }
}

/// One series inside its family's text.
struct Part {
    /// Its sort key in [`FamilyText::keys`].
    key: Range<usize>,
    /// Its sample lines in [`FamilyText::lines`].
    lines: Range<usize>,
    samples: usize,
    /// Decides between two series with the same labels: the newer point, then the larger value.
    rank: (u64, ValueRank),
}

/// A total order on values, only to break ties deterministically.
#[derive(Clone, Copy)]
struct ValueRank(u64, f64);

impl ValueRank {
    fn of(value: &Value) -> Self {
        match value {
            Value::Number(n) => ValueRank(0, *n),
            Value::Histogram(h) => ValueRank(h.count, h.sum),
            Value::Summary(s) => ValueRank(s.count, s.sum),
        }
    }

    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0).then(self.1.total_cmp(&other.1))
    }
}

/// One family while the store is visited: every series' sample lines back to back, and per
/// series a sort key (label names and values, each followed by a NUL, so that byte order is the
/// order of the label pairs).
struct FamilyText {
    kind: Kind,
    help: String,
    names: SampleNames,
    writer: SampleWriter,
    lines: String,
    keys: String,
    parts: Vec<Part>,
}

impl FamilyText {
    /// An empty family for the series of `meta`.
    fn new(meta: &Meta, format: Format) -> Self {
        FamilyText {
            kind: meta.kind,
            help: meta.help.clone(),
            names: SampleNames::new(&meta.prom_name),
            writer: SampleWriter::new(format, metric_type(meta.kind)),
            lines: String::new(),
            keys: String::new(),
            parts: Vec::new(),
        }
    }
}

/// Calls `f` with the labels of a series, sorted by name: its attributes as label names (ingest
/// made sure they are distinct and do not clash with the labels below), `otel_scope_name` and
/// `otel_scope_version` when the scope has a name, `job` and `instance` when not empty. Only
/// attribute keys that are not label names already are copied (translated).
fn with_series_labels<R>(key: &SeriesKey, f: impl FnOnce(&[(&str, &str)]) -> R) -> R {
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

/// Writes the samples of one series; returns how many.
fn write_series(
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
fn flat_samples(
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

/// Renders everything the hub exposes as Prometheus text 0.0.4.
pub fn render(hub: &Hub) -> String {
    render_as(hub, Format::Text)
}

/// Renders everything the hub exposes in `format` (OpenMetrics: counter families named
/// without `_total`, `# EOF` at the end; the samples are the same), as one string.
pub fn render_as(hub: &Hub, format: Format) -> String {
    render_chunks(hub, format).concat()
}

/// Renders everything the hub exposes in `format` as consecutive pieces of the document: one
/// per family of series (families sorted by name, series by labels), then `target_info` (one
/// per job + instance; resource attributes that sanitize to the same label have their values
/// joined with `;` in key order, and a resource with a reserved `__*` label gets none, as in
/// the Collector) and the hub's own metrics.
pub fn render_chunks(hub: &Hub, format: Format) -> Vec<String> {
    let mut families: BTreeMap<String, FamilyText> = BTreeMap::new();
    hub.store.for_each_live(|key, series| {
        let meta = &series.meta;
        if !families.contains_key(&meta.prom_name) {
            families.insert(meta.prom_name.clone(), FamilyText::new(meta, format));
        }
        let Some(family) = families.get_mut(&meta.prom_name) else {
            return;
        };
        // Several OTel metrics can translate to one name. A Prometheus family has one type and
        // one HELP: the smallest kind (counter, gauge, histogram, summary) keeps the family and
        // the other kinds' series are left out; the smallest non-empty HELP is shown. Neither
        // choice depends on the order the store is visited in.
        if meta.kind < family.kind {
            *family = FamilyText::new(meta, format);
        } else if meta.kind > family.kind {
            return;
        } else if !meta.help.is_empty() && (family.help.is_empty() || meta.help < family.help) {
            family.help.clone_from(&meta.help);
        }
        with_series_labels(key, |labels| {
            let key_start = family.keys.len();
            for (name, value) in labels {
                family.keys.push_str(name);
                family.keys.push('\0');
                family.keys.push_str(value);
                family.keys.push('\0');
            }
            let lines_start = family.lines.len();
            let samples = write_series(
                &mut family.lines,
                family.writer,
                &family.names,
                labels,
                &series.point.value,
            );
            family.parts.push(Part {
                key: key_start..family.keys.len(),
                lines: lines_start..family.lines.len(),
                samples,
                rank: (
                    series.point.time_unix_nano,
                    ValueRank::of(&series.point.value),
                ),
            });
        });
    });
    let mut chunks = Vec::with_capacity(families.len() + 1);
    let mut enc = Encoder::with_capacity(format, 1 << 16);
    for (name, mut family) in families {
        let keys = &family.keys;
        // Two OTel metrics that translate to one name can carry the same labels; a family must
        // not repeat a series (Prometheus drops the scrape's duplicates; the Collector serves
        // whichever its registry met first). The newest point wins.
        family.parts.sort_unstable_by(|a, b| {
            keys[a.key.clone()]
                .cmp(&keys[b.key.clone()])
                .then(b.rank.0.cmp(&a.rank.0))
                .then_with(|| b.rank.1.cmp(&a.rank.1))
        });
        family
            .parts
            .dedup_by(|later, kept| keys[later.key.clone()] == keys[kept.key.clone()]);
        // The keys are not needed any more: free them before the family is copied out.
        family.keys = String::new();
        enc.reserve(family.lines.len() + name.len() + family.help.len() + 64);
        enc.family(&name, &family.help, metric_type(family.kind));
        for part in &family.parts {
            enc.raw_samples(&family.lines[part.lines.clone()], part.samples);
        }
        chunks.push(enc.take());
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
    chunks.push(enc.finish());
    chunks
}

/// Calls `f(name, labels, value)` for every sample of every live series (histograms and
/// summaries flattened into `_bucket`/`_sum`/`_count` and quantile samples, the `le` /
/// `quantile` label last), in no particular order. Used by remote write.
pub fn for_each_sample(hub: &Hub, mut f: impl FnMut(&str, &[(&str, &str)], f64)) {
    hub.store.for_each_live(|key, series| {
        let value = &series.point.value;
        if let Value::Number(v) = value {
            // The common case, without the suffixed names.
            with_series_labels(key, |labels| f(&series.meta.prom_name, labels, *v));
            return;
        }
        let names = SampleNames::new(&series.meta.prom_name);
        with_series_labels(key, |labels| {
            flat_samples(&names, value, |name, extra, value| match extra {
                None => f(name, labels, value),
                Some(extra) => {
                    let mut all = Vec::with_capacity(labels.len() + 1);
                    all.extend_from_slice(labels);
                    all.push(extra);
                    f(name, &all, value);
                }
            });
        });
    });
}
