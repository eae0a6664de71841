//! The OpenTelemetry Collector's OTLP -> Prometheus name and label translation (the
//! `prometheus` exporter's default: with type and unit suffixes), as pure functions.
//!
//! Metric names: split on every character outside `[a-zA-Z0-9:]`, append the unit (mapped from
//! UCUM, `{annotations}` dropped, `a/b` -> `a_per_b`) unless the name already has that token,
//! monotonic sums get exactly one trailing `total`, gauges with unit `1` get `ratio`, a leading
//! digit gets `_`. Labels: every run of characters outside `[a-zA-Z0-9_]` becomes one `_`, a
//! leading digit gets `key_`. Attribute values are written as the Collector's `AsString` does.
//! The rules are in ../shared/spec/pipeline.md; golden tests are in tests/translation.rs.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use std::fmt::Write as _;

/// What the metric becomes in Prometheus; decides the suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// The Prometheus metric name (without `_bucket`/`_sum`/`_count`) of an OTel metric.
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

/// The Prometheus label name of an attribute key: runs outside `[a-zA-Z0-9_]` -> one `_`,
/// a leading digit gets `key_`, a leading `__` (reserved) gets `key`. `None` for an empty key.
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
    } else if out.starts_with("__") {
        // `__*` names are reserved for Prometheus itself (`__name__`).
        out.insert_str(0, "key");
    }
    Some(out)
}

/// Whether `key` is already a valid label name that [`label_name`] leaves unchanged.
pub fn is_clean_label(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
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
        assert_eq!(
            metric_name("kepler_container_joules_total", "J", Kind::Counter),
            "kepler_container_joules_total"
        );
        assert_eq!(
            metric_name("http.requests", "1", Kind::Counter),
            "http_requests_total"
        );
        assert_eq!(
            metric_name("cpu.utilization", "1", Kind::Gauge),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            metric_name("x.duration", "ms", Kind::Histogram),
            "x_duration_milliseconds"
        );
        assert_eq!(
            metric_name("net.io", "By/s", Kind::Gauge),
            "net_io_bytes_per_second"
        );
        assert_eq!(
            metric_name("packets", "{packets}", Kind::Counter),
            "packets_total"
        );
        assert_eq!(metric_name("total.total.x", "", Kind::Counter), "x_total");
        assert_eq!(metric_name("2xx.count", "", Kind::Gauge), "_2xx_count");
        assert_eq!(metric_name("a..b__c", "W", Kind::Gauge), "a_b_c_watts");
        assert_eq!(metric_name("mem", "MiBy", Kind::Gauge), "mem_mebibytes");
        assert_eq!(metric_name("temp", "Cel", Kind::Gauge), "temp_celsius");
        assert_eq!(metric_name("odd", "foo.bar", Kind::Gauge), "odd_foo_bar");
        assert_eq!(metric_name("ns:rule", "s", Kind::Gauge), "ns:rule_seconds");
    }

    #[test]
    fn labels() {
        assert_eq!(label_name("k8s.pod.name").as_deref(), Some("k8s_pod_name"));
        assert_eq!(label_name("a..b").as_deref(), Some("a_b"));
        assert_eq!(label_name("2fa").as_deref(), Some("key_2fa"));
        assert_eq!(label_name("_x").as_deref(), Some("_x"));
        assert_eq!(label_name("__name__").as_deref(), Some("key__name__"));
        assert_eq!(label_name("..x").as_deref(), Some("_x"));
        assert_eq!(label_name("ünï").as_deref(), Some("_n_"));
        assert_eq!(label_name(""), None);
        assert!(is_clean_label("cluster"));
        assert!(!is_clean_label("a.b"));
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
