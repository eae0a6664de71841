//! Prometheus text exposition parsed into samples.

use super::*;

/// One sample: metric name and labels (sorted).
pub type SeriesKey = (String, BTreeMap<String, String>);

/// Parses Prometheus text exposition (comments skipped) into samples.
pub fn parse_text(text: &str) -> BTreeMap<SeriesKey, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let (labels, rest) = parse_labels(&line[open + 1..]);
                (&line[..open], labels, rest)
            }
            None => {
                let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
                (name, BTreeMap::new(), rest)
            }
        };
        let value = rest.split_whitespace().next().unwrap_or("");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        };
        out.insert((name.to_string(), labels), value);
    }
    out
}

/// Parses `k="v",...}` (after the opening brace): the labels and the text after `}`.
pub(super) fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ') {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'}' {
            return (labels, s.get(i + 1..).unwrap_or(""));
        }
        let eq = s[i..].find('=').map(|p| p + i).unwrap_or(bytes.len());
        let key = s[i..eq].to_string();
        i = eq + 2; // past ="
        let mut value = String::new();
        while i < bytes.len() && bytes[i] != b'"' {
            if bytes[i] == b'\\' && i + 1 < bytes.len() {
                i += 1;
                value.push(match bytes[i] {
                    b'n' => '\n',
                    c => c as char,
                });
            } else {
                let c = s[i..].chars().next().unwrap();
                value.push(c);
                i += c.len_utf8() - 1;
            }
            i += 1;
        }
        i += 1; // past closing quote
        labels.insert(key, value);
    }
}
