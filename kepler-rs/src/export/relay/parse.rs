//! Prometheus text format (0.0.4) -> metric families with typed series, for the relay.
//!
//! Lines are classified by the `prometheus-parse` crate (`# HELP`, `# TYPE`, samples; chosen
//! because it is Apache-2.0 and small, where `openmetrics-parser` is LGPL-3.0); the label block
//! is parsed here with the format's escapes (`\\`, `\"`, `\n`) and commas inside quoted values,
//! which that crate's own label splitter does not handle. Histogram `_bucket`/`_sum`/`_count`
//! and summary quantile/`_sum`/`_count` samples are grouped into one series each, as the format
//! defines them. Empty label values are dropped (in Prometheus an empty label is no label).

use std::collections::BTreeMap;

use prometheus_parse::{LineInfo, SampleType};

/// Label pairs of one series, sorted by name.
pub type Labels = Vec<(String, String)>;

/// The value of one series in one scrape.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesValue {
    Number(f64),
    /// Cumulative bucket counts by upper bound (`le`), sorted, with `+Inf` last if present.
    Histogram {
        buckets: Vec<(f64, f64)>,
        sum: Option<f64>,
        count: Option<f64>,
    },
    Summary {
        quantiles: Vec<(f64, f64)>,
        sum: Option<f64>,
        count: Option<f64>,
    },
}

/// One metric family of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: SampleType,
    pub series: BTreeMap<Labels, SeriesValue>,
}

/// Why a page cannot be relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not the Prometheus text format: line {line}: {text:?}")]
    Garbage { line: usize, text: String },
}

/// Parses a whole page. A line that is neither a comment nor a sample makes the page garbage
/// (an HTML error page, a truncated answer): relaying half a page would be worse than none.
pub fn parse(text: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<Family>, ParseError> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut types: BTreeMap<String, SampleType> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        match LineInfo::parse(trimmed) {
            LineInfo::Empty => {}
            LineInfo::Doc { metric_name, doc } => {
                helps.insert(metric_name.to_string(), unescape_help(doc));
            }
            LineInfo::Type {
                metric_name,
                metric_alias,
                sample_type,
            } => {
                // The crate reports a histogram as `<name>_bucket` with `<name>` as alias.
                let name = metric_alias.unwrap_or(metric_name);
                types.insert(name, sample_type);
            }
            LineInfo::Sample {
                metric_name, value, ..
            } => {
                let Some((labels, value)) = sample_parts(trimmed, metric_name, value) else {
                    return Err(garbage(i, line));
                };
                let (family, part) = owner(metric_name, &types);
                if !keep(&family) {
                    continue;
                }
                let kind = types.get(&family).copied().unwrap_or(SampleType::Untyped);
                let entry = families.entry(family.clone()).or_insert_with(|| Family {
                    help: helps.get(&family).cloned().unwrap_or_default(),
                    name: family,
                    kind,
                    series: BTreeMap::new(),
                });
                add(entry, part, labels, value);
            }
            LineInfo::Ignored if trimmed.starts_with('#') => {}
            LineInfo::Ignored => return Err(garbage(i, line)),
        }
    }
    Ok(families.into_values().collect())
}

fn garbage(i: usize, line: &str) -> ParseError {
    ParseError::Garbage {
        line: i + 1,
        text: line.chars().take(80).collect(),
    }
}

/// Which part of a histogram or summary a sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Value,
    Bucket,
    Sum,
    Count,
}

/// The family a sample belongs to: `x_bucket`/`x_sum`/`x_count` of a histogram or summary `x`.
fn owner(sample: &str, types: &BTreeMap<String, SampleType>) -> (String, Part) {
    for (suffix, part) in [
        ("_bucket", Part::Bucket),
        ("_sum", Part::Sum),
        ("_count", Part::Count),
    ] {
        if let Some(base) = sample.strip_suffix(suffix) {
            match types.get(base) {
                Some(SampleType::Histogram) => return (base.to_string(), part),
                Some(SampleType::Summary) if part != Part::Bucket => {
                    return (base.to_string(), part)
                }
                _ => {}
            }
        }
    }
    (sample.to_string(), Part::Value)
}

fn add(family: &mut Family, part: Part, mut labels: Labels, value: f64) {
    let special = match (family.kind, part) {
        (SampleType::Histogram, Part::Bucket) => "le",
        (SampleType::Summary, Part::Value) => "quantile",
        _ => "",
    };
    let mut bound = None;
    if !special.is_empty() {
        if let Some(pos) = labels.iter().position(|(k, _)| k == special) {
            let (_, v) = labels.remove(pos);
            bound = parse_float(&v);
        }
    }
    match family.kind {
        SampleType::Histogram => {
            let entry = family
                .series
                .entry(labels)
                .or_insert(SeriesValue::Histogram {
                    buckets: Vec::new(),
                    sum: None,
                    count: None,
                });
            if let SeriesValue::Histogram {
                buckets,
                sum,
                count,
            } = entry
            {
                match part {
                    Part::Bucket => {
                        if let Some(le) = bound {
                            buckets.push((le, value));
                            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                        }
                    }
                    Part::Sum => *sum = Some(value),
                    Part::Count => *count = Some(value),
                    Part::Value => {}
                }
            }
        }
        SampleType::Summary => {
            let entry = family.series.entry(labels).or_insert(SeriesValue::Summary {
                quantiles: Vec::new(),
                sum: None,
                count: None,
            });
            if let SeriesValue::Summary {
                quantiles,
                sum,
                count,
            } = entry
            {
                match part {
                    Part::Value => {
                        if let Some(q) = bound {
                            quantiles.push((q, value));
                            quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                        }
                    }
                    Part::Sum => *sum = Some(value),
                    Part::Count => *count = Some(value),
                    Part::Bucket => {}
                }
            }
        }
        _ => {
            family.series.insert(labels, SeriesValue::Number(value));
        }
    }
}

/// Labels (from the raw line, with escapes) and the value of one sample line.
fn sample_parts(line: &str, name: &str, value: &str) -> Option<(Labels, f64)> {
    let rest = line.strip_prefix(name)?;
    let mut labels = Vec::new();
    let mut tail = rest;
    if let Some(block) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(block)?;
        labels = parsed;
        tail = after;
    }
    let value_text = tail.split_whitespace().next()?;
    // The crate's regex stops the label block at the first `}`; trust our own parse.
    let value = parse_float(value_text).or_else(|| parse_float(value))?;
    labels.retain(|(_, v)| !v.is_empty());
    labels.sort();
    Some((labels, value))
}

/// Parses `a="x",b="y\"z"}` (after the `{`): labels and the text after the `}`.
fn parse_labels(mut s: &str) -> Option<(Labels, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((out, after));
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim().to_string();
        if name.is_empty() {
            return None;
        }
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        out.push((name, value));
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        }
    }
}

fn unescape_help(doc: &str) -> String {
    doc.replace("\\n", "\n").replace("\\\\", "\\")
}

/// A float as Prometheus writes it (`NaN`, `+Inf`, `-Inf` included).
pub fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",cpu="total",id="/kubepods.slice/a",image="r/app:1",name="x",namespace="default",pod="p-1"} 12.5 1700000000000
container_cpu_usage_seconds_total{container="",cpu="total",id="/",image="",name="",namespace="",pod=""} 999 1700000000000
# HELP apiserver_request_duration_seconds Latency.
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{verb="GET",le="0.1"} 3
apiserver_request_duration_seconds_bucket{verb="GET",le="+Inf"} 5
apiserver_request_duration_seconds_bucket{verb="GET",le="1"} 4
apiserver_request_duration_seconds_sum{verb="GET"} 2.5
apiserver_request_duration_seconds_count{verb="GET"} 5
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.2
rpc_seconds{quantile="0.99"} 0.9
rpc_seconds_sum 10
rpc_seconds_count 40
weird{msg="a, b=\"c\" \\ d\ne"} 1
"#;

    #[test]
    fn parses_counters_histograms_summaries_and_escapes() {
        let families = parse(PAGE, |_| true).unwrap();
        let by: BTreeMap<&str, &Family> = families.iter().map(|f| (f.name.as_str(), f)).collect();
        let cpu = by["container_cpu_usage_seconds_total"];
        assert_eq!(cpu.kind, SampleType::Counter);
        assert_eq!(cpu.help, "Cumulative cpu time consumed in seconds.");
        assert_eq!(cpu.series.len(), 2);
        // Empty labels are dropped: the root cgroup series has only cpu and id.
        let root: Labels = vec![("cpu".into(), "total".into()), ("id".into(), "/".into())];
        assert_eq!(cpu.series[&root], SeriesValue::Number(999.0));
        let h = by["apiserver_request_duration_seconds"];
        let key: Labels = vec![("verb".into(), "GET".into())];
        assert_eq!(
            h.series[&key],
            SeriesValue::Histogram {
                buckets: vec![(0.1, 3.0), (1.0, 4.0), (f64::INFINITY, 5.0)],
                sum: Some(2.5),
                count: Some(5.0)
            }
        );
        let s = by["rpc_seconds"];
        assert_eq!(
            s.series[&vec![]],
            SeriesValue::Summary {
                quantiles: vec![(0.5, 0.2), (0.99, 0.9)],
                sum: Some(10.0),
                count: Some(40.0)
            }
        );
        let w = by["weird"];
        assert_eq!(w.kind, SampleType::Untyped);
        let key: Labels = vec![("msg".into(), "a, b=\"c\" \\ d\ne".into())];
        assert_eq!(w.series[&key], SeriesValue::Number(1.0));
    }

    #[test]
    fn filter_and_garbage() {
        let families = parse(PAGE, |n| n.starts_with("container_")).unwrap();
        assert_eq!(families.len(), 1);
        let err = parse("<html><body>502 Bad Gateway</body></html>\n", |_| true).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(parse("", |_| true).unwrap().is_empty());
    }
}
