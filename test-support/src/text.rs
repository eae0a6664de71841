//! Prometheus text exposition parsed back: samples keyed by name and labels, and whole families
//! with their TYPE and HELP, for tests that compare pages.

use std::collections::BTreeMap;

/// One sample: metric name and labels (sorted).
pub type SeriesKey = (String, BTreeMap<String, String>);

/// Parses Prometheus text exposition (comments skipped) into samples.
pub fn parse_text(text: &str) -> BTreeMap<SeriesKey, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some((key, value)) = parse_sample(line) {
            out.insert(key, value);
        }
    }
    out
}

/// One sample line (`None` for comments and blank lines).
fn parse_sample(line: &str) -> Option<(SeriesKey, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
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
    Some(((name.to_string(), labels), value))
}

/// Parses `k="v",...}` (after the opening brace): the labels and the text after `}`.
pub fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
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

/// A metric family of a page: its TYPE, its HELP (`None` without a HELP line) and samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FamilyText {
    pub kind: String,
    pub help: Option<String>,
    pub samples: BTreeMap<SeriesKey, f64>,
}

/// Parses a page into families by the name of their `# TYPE` line; a sample belongs to the
/// family whose TYPE line came last before it (as in the text format).
pub fn parse_families(text: &str) -> BTreeMap<String, FamilyText> {
    let mut families: BTreeMap<String, FamilyText> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            helps.insert(name.to_string(), help.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let family = families.entry(name.to_string()).or_default();
            family.kind = kind.to_string();
            current = Some(name.to_string());
        } else if let Some((key, value)) = parse_sample(line) {
            let name = current.clone().unwrap_or_else(|| key.0.clone());
            families.entry(name).or_default().samples.insert(key, value);
        }
    }
    for (name, help) in helps {
        if let Some(family) = families.get_mut(&name) {
            family.help = Some(help);
        }
    }
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_keep_type_help_and_escaped_labels() {
        let page =
            "# HELP a_total Things.\n# TYPE a_total counter\na_total{k=\"x\\\"y\",z=\"\"} 2\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_sum 1.5\nh_count 3\n";
        let f = parse_families(page);
        assert_eq!(f["a_total"].kind, "counter");
        assert_eq!(f["a_total"].help.as_deref(), Some("Things."));
        let (key, v) = f["a_total"].samples.iter().next().unwrap();
        assert_eq!(key.1["k"], "x\"y");
        assert_eq!(key.1["z"], "");
        assert_eq!(*v, 2.0);
        assert_eq!(f["h"].kind, "histogram");
        assert_eq!(f["h"].help, None);
        assert_eq!(f["h"].samples.len(), 3);
    }
}
