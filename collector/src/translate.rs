//! The OpenTelemetry Collector's OTLP -> Prometheus name and label translation (the
//! `prometheus` exporter's default: with type and unit suffixes), as pure functions, and the
//! attribute sets it cannot expose ([`label_conflict`]). The rules are in
//! docs/otlp-to-prometheus.md; golden tests are in tests/translation.rs.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use std::fmt::Write as _;

/// What the metric becomes in Prometheus; decides the suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Monotonic sum.
    Counter,
    /// Gauge or non-monotonic sum.
    Gauge,
    Histogram,
    Summary,
}

/// The UCUM unit as the Collector spells it in a metric name; `None` for units that add no
/// suffix (`1`). Unknown units are used as written, sanitized.
fn unit_word(unit: &str) -> Option<String> {
    let word = match unit {
        "" | "1" => return None,
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        other => {
            let cleaned = sanitize_unit(other);
            return (!cleaned.is_empty()).then_some(cleaned);
        }
    };
    Some(word.to_string())
}

/// The per-unit of `a/b` (`b`) as the Collector spells it.
fn per_unit_word(unit: &str) -> Option<String> {
    let word = match unit {
        "" => return None,
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => {
            let cleaned = sanitize_unit(other);
            return (!cleaned.is_empty()).then_some(cleaned);
        }
    };
    Some(word.to_string())
}

/// Unknown units keep their letters and digits; other runs become `_`, trimmed at the ends.
fn sanitize_unit(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    for c in unit.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Removes `{...}` annotations from a UCUM unit (`{packets}/s` -> `/s`).
fn strip_annotations(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// The Prometheus metric name (without `_bucket`/`_sum`/`_count`) of an OTel metric: split on
/// every character outside `[a-zA-Z0-9:]`, the unit appended (mapped from UCUM, `{annotations}`
/// dropped, `a/b` -> `a_per_b`) unless the name already has that token, monotonic sums with
/// exactly one trailing `total`, gauges with unit `1` with `ratio`, a leading digit gets `_`.
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut tokens: Vec<&str> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty())
        .collect();
    let unit = strip_annotations(unit);
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main.trim(), per.trim()),
        None => (unit.as_str(), ""),
    };
    let mut suffixes: Vec<String> = Vec::new();
    if let Some(word) = unit_word(main) {
        if !tokens.contains(&word.as_str()) {
            suffixes.push(word);
        }
    }
    if let Some(word) = per_unit_word(per) {
        let per_word = format!("per_{word}");
        if !tokens.windows(2).any(|w| w[0] == "per" && w[1] == word) {
            suffixes.push(per_word);
        }
    }
    let trailing = match kind {
        Kind::Counter => Some("total"),
        Kind::Gauge if main == "1" && per.is_empty() => Some("ratio"),
        _ => None,
    };
    if let Some(word) = trailing {
        tokens.retain(|t| *t != word);
    }
    let mut out = String::with_capacity(name.len() + 16);
    for token in tokens
        .iter()
        .copied()
        .chain(suffixes.iter().map(String::as_str))
    {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(token);
    }
    if let Some(word) = trailing {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(word);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Prometheus label name of an attribute key, as the Collector's label namer builds it:
/// runs outside `[a-zA-Z0-9_]` -> one `_`, a leading digit gets `key_`, a single leading `_`
/// gets `key`. A leading `__` is kept: such names are reserved for Prometheus itself
/// (`__name__`), and [`label_conflict`] refuses them. `None` for an empty key.
pub fn label_name(key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(key.len() + 4);
    let mut in_run = false;
    for c in key.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    Some(out)
}

/// Whether `key` is already a label name that [`label_name`] leaves unchanged and that is not
/// reserved: an ASCII letter, then letters, digits and `_`.
pub fn is_clean_label(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Labels the exposition writes itself for every series, whatever its attributes (the
/// Collector always declares the three scope labels, empty or not).
const SCOPE_LABELS: [&str; 3] = [
    "otel_scope_name",
    "otel_scope_version",
    "otel_scope_schema_url",
];

/// Why a data point's attributes cannot be the labels of its series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelConflict {
    /// The attribute becomes a `__*` label, reserved for Prometheus.
    Reserved { key: String, label: String },
    /// The attribute becomes a label the exposition writes itself (`le` of a histogram,
    /// `quantile` of a summary, `job` / `instance` from the resource, the scope labels).
    Exposition { key: String, label: String },
    /// Two attributes become the same label.
    Attributes {
        first: String,
        second: String,
        label: String,
    },
}

impl std::fmt::Display for LabelConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelConflict::Reserved { key, label } => write!(
                f,
                "attribute {key:?} becomes label {label:?}, a name reserved for Prometheus"
            ),
            LabelConflict::Exposition { key, label } => write!(
                f,
                "attribute {key:?} becomes label {label:?}, which the exposition writes itself"
            ),
            LabelConflict::Attributes {
                first,
                second,
                label,
            } => write!(
                f,
                "attributes {first:?} and {second:?} both become label {label:?}"
            ),
        }
    }
}

/// Whether an attribute that becomes label `label` with `value` clashes with a label the
/// exposition writes for a series of `kind`. `job` / `instance` are the values the resource
/// gives (empty: none): an attribute repeating the same value is no clash (kepler-rs sends
/// Kepler's `instance` label, the node name, beside `service.instance.id`, the same name).
fn exposition_clash(label: &str, value: &str, kind: Kind, job: &str, instance: &str) -> bool {
    match label {
        "le" => kind == Kind::Histogram,
        "quantile" => kind == Kind::Summary,
        "job" => !job.is_empty() && value != job,
        "instance" => !instance.is_empty() && value != instance,
        other => SCOPE_LABELS.contains(&other),
    }
}

/// Checks that the attributes of a data point (distinct keys, as stored; values as label
/// values) make distinct, non-reserved labels that do not clash with the labels the exposition
/// writes itself. The Collector's prometheus exporter cannot expose such a series: it drops it
/// at every scrape ("duplicate label names", "invalid label name", "must not have an explicit
/// quantile label"), or for `le` on a histogram writes two `le` labels, which fails the whole
/// scrape in Prometheus. The hub refuses the point instead (see the README). Keys that are
/// already clean label names cost one pass over their bytes; only other keys are translated.
pub fn label_conflict<'a, I>(
    attrs: I,
    kind: Kind,
    job: &str,
    instance: &str,
) -> Option<LabelConflict>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
    I::IntoIter: Clone,
{
    let attrs = attrs.into_iter();
    let mut translated = false;
    for (key, value) in attrs.clone() {
        let label = if is_clean_label(key) {
            std::borrow::Cow::Borrowed(key)
        } else {
            translated = true;
            match label_name(key) {
                Some(label) => std::borrow::Cow::Owned(label),
                None => continue,
            }
        };
        if label.starts_with("__") {
            return Some(LabelConflict::Reserved {
                key: key.to_string(),
                label: label.into_owned(),
            });
        }
        if exposition_clash(&label, value, kind, job, instance) {
            return Some(LabelConflict::Exposition {
                key: key.to_string(),
                label: label.into_owned(),
            });
        }
    }
    if !translated {
        // Distinct clean keys are distinct labels.
        return None;
    }
    let mut labels: Vec<(String, &str)> = attrs
        .filter_map(|(key, _)| label_name(key).map(|label| (label, key)))
        .collect();
    labels.sort();
    labels.windows(2).find_map(|pair| {
        (pair[0].0 == pair[1].0).then(|| LabelConflict::Attributes {
            first: pair[0].1.to_string(),
            second: pair[1].1.to_string(),
            label: pair[0].0.clone(),
        })
    })
}

/// Whether attributes with these (distinct) keys can never make a label conflict, whatever
/// their values, the metric's kind, job and instance: every key is already a clean label name
/// and none is a label the exposition writes itself. [`label_conflict`] is then `None`, so
/// ingest checks a layout of keys once instead of every point.
pub fn keys_never_conflict<'k>(keys: impl IntoIterator<Item = &'k str>) -> bool {
    keys.into_iter().all(|key| {
        is_clean_label(key)
            && !matches!(key, "le" | "quantile" | "job" | "instance")
            && !SCOPE_LABELS.contains(&key)
    })
}

/// An attribute value as a label value: strings as they are, bools `true`/`false`, ints in
/// decimal, doubles as JSON numbers, bytes base64, arrays and maps as JSON.
pub fn value_string(value: Option<&AnyValue>) -> String {
    let mut out = String::new();
    if let Some(v) = value.and_then(|v| v.value.as_ref()) {
        match v {
            any_value::Value::StringValue(s) => out.push_str(s),
            other => write_any(&mut out, other, false),
        }
    }
    out
}

fn write_any(out: &mut String, value: &any_value::Value, nested: bool) {
    match value {
        any_value::Value::StringValue(s) if nested => write_json_string(out, s),
        any_value::Value::StringValue(s) => out.push_str(s),
        any_value::Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::DoubleValue(d) => write_json_double(out, *d, nested),
        any_value::Value::BytesValue(b) => {
            let encoded = base64(b);
            if nested {
                write_json_string(out, &encoded);
            } else {
                out.push_str(&encoded);
            }
        }
        any_value::Value::ArrayValue(array) => {
            out.push('[');
            for (i, item) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item.value.as_ref() {
                    Some(v) => write_any(out, v, true),
                    None => out.push_str("null"),
                }
            }
            out.push(']');
        }
        any_value::Value::KvlistValue(list) => {
            out.push('{');
            for (i, kv) in list.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, &kv.key);
                out.push(':');
                match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(v) => write_any(out, v, true),
                    None => out.push_str("null"),
                }
            }
            out.push('}');
        }
        any_value::Value::StringValueStrindex(i) => {
            let _ = write!(out, "{i}");
        }
    }
}

/// A double as Go's JSON encoder writes it (shortest round-trip; exponent outside
/// [1e-6, 1e21)); NaN and infinities as the strings Go's `AsString` gives.
fn write_json_double(out: &mut String, d: f64, nested: bool) {
    if !d.is_finite() {
        let word = if d.is_nan() {
            "NaN"
        } else if d > 0.0 {
            "+Inf"
        } else {
            "-Inf"
        };
        if nested {
            write_json_string(out, word);
        } else {
            out.push_str(word);
        }
        return;
    }
    let magnitude = d.abs();
    if magnitude == 0.0 || (1e-6..1e21).contains(&magnitude) {
        let _ = write!(out, "{d}");
    } else {
        let text = format!("{d:e}");
        match text.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                let _ = write!(out, "{mantissa}e+{exp}");
            }
            _ => out.push_str(&text),
        }
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for (name, unit, kind, want) in [
            (
                "kepler_container_joules_total",
                "J",
                Kind::Counter,
                "kepler_container_joules_total",
            ),
            ("http.requests", "1", Kind::Counter, "http_requests_total"),
            ("cpu.utilization", "1", Kind::Gauge, "cpu_utilization_ratio"),
            (
                "x.duration",
                "ms",
                Kind::Histogram,
                "x_duration_milliseconds",
            ),
            ("net.io", "By/s", Kind::Gauge, "net_io_bytes_per_second"),
            ("packets", "{packets}", Kind::Counter, "packets_total"),
            ("total.total.x", "", Kind::Counter, "x_total"),
            ("2xx.count", "", Kind::Gauge, "_2xx_count"),
            ("a..b__c", "W", Kind::Gauge, "a_b_c_watts"),
            ("mem", "MiBy", Kind::Gauge, "mem_mebibytes"),
            ("temp", "Cel", Kind::Gauge, "temp_celsius"),
            ("odd", "foo.bar", Kind::Gauge, "odd_foo_bar"),
            ("ns:rule", "s", Kind::Gauge, "ns:rule_seconds"),
        ] {
            assert_eq!(metric_name(name, unit, kind), want, "{name} [{unit}]");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(label_name("k8s.pod.name").as_deref(), Some("k8s_pod_name"));
        assert_eq!(label_name("a..b").as_deref(), Some("a_b"));
        assert_eq!(label_name("2fa").as_deref(), Some("key_2fa"));
        assert_eq!(label_name("_x").as_deref(), Some("key_x"));
        assert_eq!(label_name("__name__").as_deref(), Some("__name__"));
        assert_eq!(label_name("..x").as_deref(), Some("key_x"));
        assert_eq!(label_name("_.x").as_deref(), Some("__x"));
        assert_eq!(label_name("ünï").as_deref(), Some("key_n_"));
        assert_eq!(label_name(".").as_deref(), Some("key_"));
        assert_eq!(label_name(""), None);
        assert!(is_clean_label("cluster"));
        assert!(is_clean_label("k8s_pod"));
        assert!(!is_clean_label("a.b"));
        assert!(!is_clean_label("_x"));
        assert!(!is_clean_label("2x"));
        assert!(!is_clean_label(""));
    }

    #[test]
    fn label_conflicts() {
        let check = |keys: &[&str], kind| {
            label_conflict(keys.iter().map(|k| (*k, "v")), kind, "app", "node-1")
        };
        let none = |keys: &[&str], kind| assert_eq!(check(keys, kind), None, "{keys:?}");
        none(&["cluster", "le", "mode"], Kind::Counter);
        none(&["quantile"], Kind::Histogram);
        none(&["le"], Kind::Summary);
        none(&["a.b", "a_c", "_x"], Kind::Gauge);
        none(&[""], Kind::Gauge);
        let exposition = |key: &str, label: &str| LabelConflict::Exposition {
            key: key.into(),
            label: label.into(),
        };
        assert_eq!(
            check(&["le"], Kind::Histogram),
            Some(exposition("le", "le"))
        );
        assert_eq!(
            check(&["quantile"], Kind::Summary),
            Some(exposition("quantile", "quantile"))
        );
        assert_eq!(check(&["job"], Kind::Gauge), Some(exposition("job", "job")));
        assert_eq!(
            check(&["a", "instance"], Kind::Counter),
            Some(exposition("instance", "instance"))
        );
        assert_eq!(
            check(&["otel.scope.name"], Kind::Gauge),
            Some(exposition("otel.scope.name", "otel_scope_name"))
        );
        // Without service.name / service.instance.id, `job` and `instance` are plain labels;
        // with them, an attribute repeating their value is no clash.
        let pairs = [("instance", "node-1"), ("job", "app")];
        assert_eq!(label_conflict(pairs, Kind::Gauge, "", ""), None);
        assert_eq!(label_conflict(pairs, Kind::Gauge, "app", "node-1"), None);
        assert_eq!(
            label_conflict(pairs, Kind::Gauge, "app", "node-2"),
            Some(exposition("instance", "instance"))
        );
        assert_eq!(
            check(&["__name__"], Kind::Gauge),
            Some(LabelConflict::Reserved {
                key: "__name__".into(),
                label: "__name__".into()
            })
        );
        assert_eq!(
            check(&["a-b", "a.b", "a_b"], Kind::Gauge),
            Some(LabelConflict::Attributes {
                first: "a-b".into(),
                second: "a.b".into(),
                label: "a_b".into()
            })
        );
        assert_eq!(
            check(&["_x", "key_x"], Kind::Gauge),
            Some(LabelConflict::Attributes {
                first: "_x".into(),
                second: "key_x".into(),
                label: "key_x".into()
            })
        );
        assert!(check(&["a-b", "le"], Kind::Histogram)
            .is_some_and(|c| c.to_string().contains("which the exposition writes itself")));
    }

    #[test]
    fn keys_that_never_conflict() {
        let keys = [
            "cluster",
            "le",
            "quantile",
            "job",
            "instance",
            "a.b",
            "a_b",
            "_x",
            "key_x",
            "__name__",
            "2x",
            "otel_scope_name",
            "otel.scope.version",
            "mode",
            "",
        ];
        let kinds = [Kind::Gauge, Kind::Counter, Kind::Histogram, Kind::Summary];
        // Every set of up to three distinct keys: when the keys never conflict, no kind, job,
        // instance or value makes a conflict.
        for a in 0..keys.len() {
            for b in a..keys.len() {
                for c in b..keys.len() {
                    let mut set = vec![keys[a], keys[b], keys[c]];
                    set.dedup();
                    if !keys_never_conflict(set.iter().copied()) {
                        continue;
                    }
                    for kind in kinds {
                        for (job, instance) in [("", ""), ("app", "node-1")] {
                            for value in ["v", "app", "node-1"] {
                                let pairs = set.iter().map(|k| (*k, value));
                                assert_eq!(label_conflict(pairs, kind, job, instance), None);
                            }
                        }
                    }
                }
            }
        }
        assert!(keys_never_conflict(["cluster", "container_id", "mode"]));
        for key in [
            "le",
            "job",
            "instance",
            "quantile",
            "otel_scope_name",
            "a.b",
            "_x",
            "",
        ] {
            assert!(!keys_never_conflict(["mode", key]), "{key}");
        }
    }

    #[test]
    fn values() {
        let v = |value| value_string(Some(&AnyValue { value: Some(value) }));
        assert_eq!(v(any_value::Value::BoolValue(true)), "true");
        assert_eq!(v(any_value::Value::IntValue(-5)), "-5");
        assert_eq!(v(any_value::Value::DoubleValue(1.5)), "1.5");
        assert_eq!(v(any_value::Value::DoubleValue(2.0)), "2");
        assert_eq!(v(any_value::Value::DoubleValue(1e21)), "1e+21");
        assert_eq!(v(any_value::Value::BytesValue(b"hi!".to_vec())), "aGkh");
        assert_eq!(v(any_value::Value::BytesValue(b"h".to_vec())), "aA==");
        assert_eq!(value_string(None), "");
    }
}
