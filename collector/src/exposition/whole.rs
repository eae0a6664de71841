//! The reference render: the whole page collected in memory from one visit of the store, then
//! handed out family by family. This was the hub's `/metrics` render before pages were
//! rendered while sent ([`super::render_each`], ADR 0012); it stays as the independent
//! reference the tests compare the streamed page with (it reads labels from the series keys,
//! not from the groups' layouts, and sorts each family itself), and as the "before" of the hub
//! bench. Nothing in the server calls it.

use super::samples::{metric_type, with_series_labels, write_series, SampleNames, ValueRank};
use super::targets::write_tail;
use crate::ingest::Hub;
use crate::store::Meta;
use crate::translate::Kind;
use kepler_prom_text::{Encoder, Format, SampleWriter};
use std::collections::BTreeMap;
use std::ops::Range;

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

/// Renders everything the hub exposes in `format` as the hub did before pages were rendered
/// while sent: one piece per family of series, every family's text (and its series' sort keys)
/// collected from one visit of the store before the first piece is handed out, then
/// `target_info` and the hub's own metrics. The same document as [`super::render_each`]
/// writes; the page, and twice a family's text, are in memory at once.
pub fn render_collected(hub: &Hub, format: Format) -> Vec<String> {
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
    let mut enc = Encoder::with_capacity(format, 1 << 16).empty_help_lines();
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
    write_tail(hub, &mut enc);
    chunks.push(enc.finish());
    chunks
}
