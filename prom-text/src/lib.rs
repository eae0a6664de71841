//! A small writer for the Prometheus text exposition format 0.0.4 and OpenMetrics 1.0 text.
//!
//! [`Encoder`] writes one metric family at a time: [`Encoder::family`] opens a family (its
//! `# HELP` and `# TYPE` lines), [`Encoder::sample`] adds samples, [`Encoder::finish`] returns the
//! text. A family that gets no sample writes nothing, so exposition linters never see an empty
//! family. Label values and HELP texts are escaped as each format requires, and values are
//! written so that Prometheus parses them back exactly (`NaN`, `+Inf`, `-Inf`, integers without
//! an exponent). Why we do not use the `prometheus` crates: docs/adr/0001-own-text-encoder.md.

use std::fmt::Write as _;

/// `Content-Type` of the Prometheus text format 0.0.4.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics 1.0 text.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition format to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (what every Prometheus understands; the default).
    #[default]
    Text,
    /// OpenMetrics 1.0 text: counter families are named without `_total`, ends with `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` header value for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => CONTENT_TYPE_TEXT,
            Format::OpenMetrics => CONTENT_TYPE_OPENMETRICS,
        }
    }
}

/// The format a scraper asks for in its `Accept` header values: OpenMetrics when it asks for
/// `application/openmetrics-text` (any version) with a quality at least that of the text
/// format (`text/plain`, `text/*`, `*/*`); the text format otherwise, including when there is
/// no `Accept` header. Servers that offer OpenMetrics call this; others always write text.
pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
    let mut openmetrics = 0.0_f32;
    let mut text = 0.0_f32;
    for value in accept {
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    /// A classic histogram: `_bucket{le}`, `_sum` and `_count` samples.
    Histogram,
    /// A summary: `{quantile}`, `_sum` and `_count` samples.
    Summary,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
        }
    }
}

/// Writes an exposition document family by family.
#[derive(Debug)]
pub struct Encoder {
    format: Format,
    out: String,
    /// Where the current family's header starts, to drop it if no sample follows.
    family_start: usize,
    family_samples: usize,
    family_type: Option<MetricType>,
    /// Whether a family with an empty HELP text still gets its `# HELP` line.
    empty_help_lines: bool,
}

impl Encoder {
    pub fn new(format: Format) -> Self {
        Self::with_capacity(format, 4096)
    }

    /// An encoder whose buffer starts with `capacity` bytes (to avoid regrowing on big outputs).
    pub fn with_capacity(format: Format, capacity: usize) -> Self {
        Self {
            format,
            out: String::with_capacity(capacity),
            family_start: 0,
            family_samples: 0,
            family_type: None,
            empty_help_lines: false,
        }
    }

    /// Writes `# HELP name ` with no text for a family whose HELP is empty, as the Prometheus
    /// Go client (and so the OpenTelemetry Collector's prometheus exporter) does, instead of
    /// leaving the line out.
    pub fn empty_help_lines(mut self) -> Self {
        self.empty_help_lines = true;
        self
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Opens a family: writes `# HELP` (left out when `help` is empty, unless
    /// [`empty_help_lines`](Self::empty_help_lines)) and `# TYPE`. `name` is the sample name as Prometheus
    /// stores it (counters end in `_total`); in OpenMetrics the family line of a counter
    /// drops that suffix. If no [`sample`](Self::sample) follows, the header is removed again.
    pub fn family(&mut self, name: &str, help: &str, ty: MetricType) {
        self.close_family();
        self.family_start = self.out.len();
        self.family_samples = 0;
        self.family_type = Some(ty);
        let family_name = match (self.format, ty) {
            (Format::OpenMetrics, MetricType::Counter) => {
                name.strip_suffix("_total").unwrap_or(name)
            }
            _ => name,
        };
        if !help.is_empty() || self.empty_help_lines {
            self.out.push_str("# HELP ");
            self.out.push_str(family_name);
            self.out.push(' ');
            escape_help(&mut self.out, help, self.format);
            self.out.push('\n');
        }
        self.out.push_str("# TYPE ");
        self.out.push_str(family_name);
        self.out.push(' ');
        self.out.push_str(ty.as_str());
        self.out.push('\n');
    }

    /// Writes one sample of the open family. Label names must be valid Prometheus label names
    /// (they are ours, so they are not escaped); label values are escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample_with(name, labels, |out| write_value(out, value));
    }

    /// Like [`sample`](Self::sample) for the value `millionths / 1e6` (microjoules as joules,
    /// CPU nanoseconds as milliseconds), written as an exact decimal without going through
    /// `f64` formatting. For values below 1e15 millionths the text is the same as
    /// `sample(.., millionths as f64 / 1e6)` writes.
    pub fn sample_millionths(&mut self, name: &str, labels: &[(&str, &str)], millionths: u64) {
        self.sample_with(name, labels, |out| write_millionths(out, millionths));
    }

    fn sample_with(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl FnOnce(&mut String),
    ) {
        self.family_samples += 1;
        let sample = SampleWriter {
            format: self.format,
            family_type: self.family_type,
        };
        sample.write_with(&mut self.out, name, labels, None, value);
    }

    /// Appends sample lines written elsewhere by a [`SampleWriter`] for this format and the open
    /// family's type (`samples` of them), e.g. built in parts and sorted by the caller.
    pub fn raw_samples(&mut self, lines: &str, samples: usize) {
        self.family_samples += samples;
        self.out.push_str(lines);
    }

    /// Makes room for `additional` more bytes of text (before a known amount of
    /// [`raw_samples`](Self::raw_samples)).
    pub fn reserve(&mut self, additional: usize) {
        self.out.reserve(additional);
    }

    /// Closes the open family (dropping it if it got no sample) and returns the text written so
    /// far, leaving the encoder empty for what follows: a long document handed out in pieces.
    /// [`finish`](Self::finish) returns the last piece.
    pub fn take(&mut self) -> String {
        self.close_family();
        self.family_start = 0;
        std::mem::take(&mut self.out)
    }

    /// Hands out the text written so far once it is at least `limit` bytes long, at a sample
    /// boundary and without closing the open family, and goes on in a fresh buffer: called after
    /// each sample, it cuts a long document into pieces of about `limit` bytes (plus one line),
    /// so no buffer the size of the whole document is ever allocated. `None` while shorter, and
    /// while the open family has no sample yet (its header may still be dropped).
    pub fn take_if_longer(&mut self, limit: usize) -> Option<String> {
        if self.out.len() < limit || (self.family_type.is_some() && self.family_samples == 0) {
            return None;
        }
        self.family_start = 0;
        let next = String::with_capacity(limit + limit / 4);
        Some(std::mem::replace(&mut self.out, next))
    }

    /// Ends the document and returns it (OpenMetrics: with the mandatory `# EOF`).
    pub fn finish(mut self) -> String {
        self.close_family();
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }

    fn close_family(&mut self) {
        if self.family_type.is_some() && self.family_samples == 0 {
            self.out.truncate(self.family_start);
        }
        self.family_type = None;
    }
}

/// Writes sample lines of one family into any `String`, exactly as [`Encoder::sample`] does
/// (for callers that build a family in parts and hand it over with [`Encoder::raw_samples`]).
#[derive(Debug, Clone, Copy)]
pub struct SampleWriter {
    format: Format,
    family_type: Option<MetricType>,
}

impl SampleWriter {
    /// A writer for samples of a family of type `family_type` in `format`.
    pub fn new(format: Format, family_type: MetricType) -> Self {
        Self {
            format,
            family_type: Some(family_type),
        }
    }

    /// Appends `name{labels,extra} value\n`; `extra` (a histogram's `le`, a summary's
    /// `quantile`) goes after `labels`.
    pub fn write(
        self,
        out: &mut String,
        name: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        value: f64,
    ) {
        self.write_with(out, name, labels, extra, |out| write_value(out, value));
    }

    fn write_with(
        self,
        out: &mut String,
        name: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        value: impl FnOnce(&mut String),
    ) {
        out.push_str(name);
        if self.format == Format::OpenMetrics
            && self.family_type == Some(MetricType::Counter)
            && !name.ends_with("_total")
        {
            out.push_str("_total");
        }
        if !labels.is_empty() || extra.is_some() {
            out.push('{');
            for (i, (label, value)) in labels.iter().chain(extra.as_ref()).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(label);
                out.push_str("=\"");
                escape_label_value(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        value(out);
        out.push('\n');
    }
}

/// Appends a label value with `\`, `"` and line feed escaped (both formats).
pub fn escape_label_value(out: &mut String, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends a HELP text: `\` and line feed escaped; OpenMetrics also escapes `"`
/// (the 0.0.4 parser rejects `\"` in HELP, so it stays literal there).
pub fn escape_help(out: &mut String, help: &str, format: Format) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Appends a sample value as both formats (and Go's `strconv.ParseFloat`) read it:
/// `NaN`, `+Inf`, `-Inf`; plain decimals (shortest round-trip digits, no exponent) between
/// 1e-6 and 1e21, scientific notation outside that range.
pub fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if value == 0.0 {
        // Also turns -0 into 0.
        out.push('0');
    } else {
        let magnitude = value.abs();
        // Writing into a String cannot fail.
        let _ = if (1e-6..1e21).contains(&magnitude) {
            write!(out, "{value}")
        } else {
            write!(out, "{value:e}")
        };
    }
}

/// Appends `millionths / 1e6` as an exact decimal: integer part, then up to six fraction
/// digits with trailing zeros dropped (`1500000` -> `1.5`, `7` -> `0.000007`).
pub fn write_millionths(out: &mut String, millionths: u64) {
    let whole = millionths / 1_000_000;
    let frac = millionths % 1_000_000;
    // Writing into a String cannot fail.
    let _ = write!(out, "{whole}");
    if frac != 0 {
        let mut digits = [b'0'; 6];
        let mut rest = frac;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let len = 6 - digits.iter().rev().take_while(|d| **d == b'0').count();
        out.push('.');
        for d in &digits[..len] {
            out.push(char::from(*d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value(v: f64) -> String {
        let mut s = String::new();
        write_value(&mut s, v);
        s
    }

    /// The reverse of the escaping, as a Prometheus parser does it. `quotes`: `"` must be
    /// escaped (label values, OpenMetrics HELP); otherwise it is literal and `\"` is invalid
    /// (0.0.4 HELP).
    fn unescape(s: &str, quotes: bool) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('\\') => out.push('\\'),
                    Some('"') if quotes => out.push('"'),
                    Some('n') => out.push('\n'),
                    other => panic!("invalid escape \\{other:?} in {s:?}"),
                }
            } else {
                assert!(c != '\n', "unescaped line feed in {s:?}");
                assert!(!quotes || c != '"', "unescaped quote in {s:?}");
                out.push(c);
            }
        }
        out
    }

    /// Extracts the raw (escaped) value of the only label of a sample line.
    fn raw_label_value(line: &str) -> &str {
        let start = line.find("=\"").unwrap() + 2;
        let end = line.rfind("\"}").unwrap();
        &line[start..end]
    }

    #[test]
    fn empty_help_lines_only_when_asked() {
        for (enc, want) in [
            (Encoder::new(Format::Text), "# TYPE a gauge\na 1\n"),
            (
                Encoder::new(Format::Text).empty_help_lines(),
                "# HELP a \n# TYPE a gauge\na 1\n",
            ),
        ] {
            let mut enc = enc;
            enc.family("a", "", MetricType::Gauge);
            enc.sample("a", &[], 1.0);
            assert_eq!(enc.finish(), want);
        }
    }

    #[test]
    fn values() {
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
        assert_eq!(value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(value(0.0), "0");
        assert_eq!(value(-0.0), "0");
        assert_eq!(value(1.0), "1");
        assert_eq!(value(-3.0), "-3");
        assert_eq!(value(1_000_000.0), "1000000");
        assert_eq!(value(123_456_789_012.0), "123456789012");
        assert_eq!(value(12.345678), "12.345678");
        assert_eq!(value(0.1), "0.1");
        assert_eq!(value(1e21), "1e21");
        assert_eq!(value(1.5e-7), "1.5e-7");
        assert_eq!(value(u64::MAX as f64 / 1e6), "18446744073709.55");
    }

    #[test]
    fn millionths() {
        let m = |v: u64| {
            let mut s = String::new();
            write_millionths(&mut s, v);
            s
        };
        assert_eq!(m(0), "0");
        assert_eq!(m(7), "0.000007");
        assert_eq!(m(1_500_000), "1.5");
        assert_eq!(m(2_000_000), "2");
        assert_eq!(m(1_234_567_890), "1234.56789");
        assert_eq!(m(u64::MAX), "18446744073709.551615");
    }

    #[test]
    fn negotiation() {
        let accept = |v: &str| negotiate([v]);
        assert_eq!(negotiate([]), Format::Text);
        assert_eq!(accept("*/*"), Format::Text);
        assert_eq!(accept("text/plain;version=0.0.4"), Format::Text);
        assert_eq!(accept("application/openmetrics-text"), Format::OpenMetrics);
        // What Prometheus 2.x sends.
        assert_eq!(
            accept(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            Format::OpenMetrics
        );
        assert_eq!(
            accept("text/plain;version=0.0.4,application/openmetrics-text;q=0.5"),
            Format::Text
        );
        assert_eq!(accept("application/openmetrics-text;q=0"), Format::Text);
        // Several header values count together.
        assert_eq!(
            negotiate(["text/plain;q=0.5", "application/openmetrics-text"]),
            Format::OpenMetrics
        );
    }

    #[test]
    fn text_family() {
        let mut enc = Encoder::new(Format::Text);
        enc.family(
            "a_total",
            "An \"a\" with \\ and\nnewline.",
            MetricType::Counter,
        );
        enc.sample("a_total", &[("x", "1"), ("y", "q\"\\\n")], 2.5);
        enc.sample("a_total", &[], 3.0);
        enc.family("b", "B.", MetricType::Gauge);
        enc.sample("b", &[("x", "")], 1.0);
        assert_eq!(
            enc.finish(),
            "# HELP a_total An \"a\" with \\\\ and\\nnewline.\n\
             # TYPE a_total counter\n\
             a_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 2.5\n\
             a_total 3\n\
             # HELP b B.\n\
             # TYPE b gauge\n\
             b{x=\"\"} 1\n"
        );
    }

    #[test]
    fn openmetrics_family() {
        let mut enc = Encoder::new(Format::OpenMetrics);
        enc.family("a_total", "Say \"a\".", MetricType::Counter);
        enc.sample("a_total", &[("x", "1")], 2.0);
        enc.family("c", "No suffix.", MetricType::Counter);
        enc.sample("c", &[], 1.0);
        enc.family("b", "B.", MetricType::Gauge);
        enc.sample("b", &[], 1.0);
        assert_eq!(
            enc.finish(),
            "# HELP a Say \\\"a\\\".\n# TYPE a counter\na_total{x=\"1\"} 2\n\
             # HELP c No suffix.\n# TYPE c counter\nc_total 1\n\
             # HELP b B.\n# TYPE b gauge\nb 1\n# EOF\n"
        );
        assert_eq!(Format::OpenMetrics.content_type(), CONTENT_TYPE_OPENMETRICS);
        assert_eq!(Format::default().content_type(), CONTENT_TYPE_TEXT);
    }

    #[test]
    fn samples_written_apart_are_the_encoders() {
        for format in [Format::Text, Format::OpenMetrics] {
            let mut direct = Encoder::new(format);
            direct.family("c", "C.", MetricType::Counter);
            direct.sample("c", &[("a", "x\"y")], 1.0);
            direct.sample("c", &[("a", "z"), ("le", "0.5")], 2.0);
            direct.sample("c", &[], 3.0);
            let mut lines = String::new();
            let writer = SampleWriter::new(format, MetricType::Counter);
            writer.write(&mut lines, "c", &[("a", "x\"y")], None, 1.0);
            writer.write(&mut lines, "c", &[("a", "z")], Some(("le", "0.5")), 2.0);
            writer.write(&mut lines, "c", &[], None, 3.0);
            let mut parts = Encoder::new(format);
            parts.family("c", "C.", MetricType::Counter);
            parts.raw_samples(&lines, 3);
            // An empty family is still dropped when nothing was handed over.
            let first = parts.take();
            parts.family("empty", "E.", MetricType::Gauge);
            parts.raw_samples("", 0);
            assert_eq!(parts.take(), "");
            assert_eq!(first + &parts.finish(), direct.finish());
        }
    }

    #[test]
    fn pieces_join_to_the_whole_document() {
        for format in [Format::Text, Format::OpenMetrics] {
            let write = |enc: &mut Encoder, pieces: &mut Vec<String>, limit: Option<usize>| {
                for f in 0..5 {
                    let name = format!("family_{f}_total");
                    enc.family(&name, "help", MetricType::Counter);
                    // Family 2 has no sample: its header must not survive a cut.
                    let samples = if f == 2 { 0 } else { 40 };
                    for i in 0..samples {
                        let v = i.to_string();
                        enc.sample(&name, &[("id", &v)], f64::from(i));
                        if let Some(piece) = limit.and_then(|l| enc.take_if_longer(l)) {
                            pieces.push(piece);
                        }
                    }
                }
            };
            let mut whole = Encoder::new(format);
            write(&mut whole, &mut Vec::new(), None);
            let whole = whole.finish();
            let mut pieces = Vec::new();
            let mut enc = Encoder::new(format);
            write(&mut enc, &mut pieces, Some(256));
            pieces.push(enc.finish());
            assert!(pieces.len() > 10, "{}", pieces.len());
            assert!(pieces
                .iter()
                .all(|p| p.len() < 256 + 64 && p.ends_with('\n')));
            assert_eq!(pieces.concat(), whole);
            assert!(!whole.contains("family_2"));
        }
    }

    #[test]
    fn empty_families_write_nothing() {
        let mut enc = Encoder::new(Format::Text);
        enc.family("empty_total", "Nothing.", MetricType::Counter);
        enc.family("full", "Something.", MetricType::Gauge);
        enc.sample("full", &[], 1.0);
        enc.family("empty_too", "Nothing.", MetricType::Gauge);
        assert_eq!(
            enc.finish(),
            "# HELP full Something.\n# TYPE full gauge\nfull 1\n"
        );
        let mut enc = Encoder::new(Format::OpenMetrics);
        enc.family("empty", "Nothing.", MetricType::Gauge);
        assert_eq!(enc.finish(), "# EOF\n");
    }

    proptest! {
        #[test]
        fn label_values_round_trip(v in any::<String>()) {
            let mut enc = Encoder::new(Format::Text);
            enc.family("m", "M.", MetricType::Gauge);
            enc.sample("m", &[("l", &v)], 1.0);
            let text = enc.finish();
            let sample = text.lines().nth(2).unwrap();
            prop_assert_eq!(text.lines().count(), 3);
            prop_assert_eq!(unescape(raw_label_value(sample), true), v);
        }

        #[test]
        fn help_round_trips(h in any::<String>()) {
            for format in [Format::Text, Format::OpenMetrics] {
                let mut out = String::new();
                escape_help(&mut out, &h, format);
                prop_assert!(!out.contains('\n'));
                prop_assert_eq!(unescape(&out, format == Format::OpenMetrics), h.clone());
            }
        }

        #[test]
        fn millionths_match_float_formatting(v in 0u64..1_000_000_000_000_000) {
            let mut exact = String::new();
            write_millionths(&mut exact, v);
            prop_assert_eq!(exact, value(v as f64 / 1e6));
        }

        #[test]
        fn finite_values_round_trip(v in any::<f64>()) {
            let s = value(v);
            let parsed: f64 = match s.as_str() {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                s => s.parse().unwrap(),
            };
            if v.is_nan() {
                prop_assert!(parsed.is_nan());
            } else {
                prop_assert_eq!(parsed, v);
            }
        }
    }
}
