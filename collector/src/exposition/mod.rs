//! Renders the store as Prometheus text 0.0.4 (or OpenMetrics) as the Collector's prometheus
//! exporter would, `target_info` and the hub's own `kepler_collector_*` metrics included.
//!
//! The page is written while it is sent ([`render_each`]): family by family in name order,
//! each family's series merged in label order from the shards' family indexes a batch at a
//! time ([`stream`]), handed out in pieces of about [`PIECE`] bytes, so that no buffer the size
//! of the page, or of one family, exists. [`whole`] keeps the former render, which collected
//! the whole page first, as the reference the tests compare the streamed page with.

mod samples;
mod stream;
mod targets;
pub mod whole;

use crate::ingest::Hub;
use crate::store::Value;
use kepler_prom_text::Format;
use samples::{flat_samples, with_series_labels, SampleNames};

/// The size of the pieces a page is handed out in (each piece ends at a line end, so it is
/// this long plus at most one line).
pub const PIECE: usize = 64 << 10;

/// Renders everything the hub exposes as Prometheus text 0.0.4.
pub fn render(hub: &Hub) -> String {
    render_as(hub, Format::Text)
}

/// Renders everything the hub exposes in `format` (OpenMetrics: counter families named
/// without `_total`, `# EOF` at the end; the samples are the same), as one string.
pub fn render_as(hub: &Hub, format: Format) -> String {
    render_chunks(hub, format).concat()
}

/// The pieces [`render_each`] hands out, collected.
pub fn render_chunks(hub: &Hub, format: Format) -> Vec<String> {
    let mut pieces = Vec::new();
    render_each(hub, format, |piece| {
        pieces.push(piece);
        true
    });
    pieces
}

/// Renders everything the hub exposes in `format`, handing the document to `send` in pieces
/// of about [`PIECE`] bytes as they are written: families sorted by name, series by labels,
/// then `target_info` (one per job + instance) and the hub's own metrics. Stops when `send`
/// returns `false`; returns whether the whole document was handed over. The store is locked
/// one shard at a time, for one batch of series, never while `send` runs.
pub fn render_each(hub: &Hub, format: Format, mut send: impl FnMut(String) -> bool) -> bool {
    stream::render_each(hub, format, PIECE, &mut send)
}

/// [`render_each`] with pieces of about `piece` bytes (tests use small ones).
pub fn render_each_sized(
    hub: &Hub,
    format: Format,
    piece: usize,
    mut send: impl FnMut(String) -> bool,
) -> bool {
    stream::render_each(hub, format, piece.max(1), &mut send)
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
