//! Prometheus exposition of snapshots: the [`Family`]s that [`crate::export::family`] builds
//! from one immutable [`Snapshot`], written as text.
//!
//! [`text`] is our own writer for the Prometheus text format 0.0.4 and OpenMetrics 1.0 text
//! (why: docs/adr/0001-own-text-encoder.md), the `kepler-prom-text` crate shared with the hub.
//! Rendering only reads; it never measures. [`families`] and the builders' inputs
//! ([`BuildInfo`], [`RenderOptions`]) are re-exported here for the integration tests and
//! benches, which render through this module.

/// The shared text writer (crate `kepler-prom-text`, also used by the hub in `collector/`).
pub use kepler_prom_text as text;

pub use crate::export::family::{families, BuildInfo, RenderOptions};

use crate::export::family::{classic_families, Family, Value};
use crate::selfmetrics::SelfMetrics;
use crate::snapshot::Snapshot;

/// Renders Kepler's classic family from `snapshot` in `format`.
pub fn render_classic(
    snapshot: &Snapshot,
    self_metrics: &SelfMetrics,
    options: &RenderOptions,
    build: &BuildInfo,
    format: Format,
) -> String {
    let families = classic_families(snapshot, self_metrics, options, build);
    write_families(&families, format).concat()
}

/// Renders the families `options.schema` asks for in `format`, as one string.
pub fn render(
    snapshot: &Snapshot,
    self_metrics: &SelfMetrics,
    options: &RenderOptions,
    build: &BuildInfo,
    format: Format,
) -> String {
    render_pieces(snapshot, self_metrics, options, build, format).concat()
}

/// Renders the families `options.schema` asks for in `format`, as consecutive pieces of the
/// document of about [`PIECE_BYTES`] each: what `/metrics` sends, so a scrape never allocates a
/// buffer the size of the whole page (with per-process series on a busy node that buffer was
/// tens of MiB, and the allocator kept it after the scrape).
pub fn render_pieces(
    snapshot: &Snapshot,
    self_metrics: &SelfMetrics,
    options: &RenderOptions,
    build: &BuildInfo,
    format: Format,
) -> Vec<String> {
    write_families(&families(snapshot, self_metrics, options, build), format)
}

/// The size of the pieces [`render_pieces`] cuts a page into: small enough to come from the
/// allocator's heap rather than a mapping of its own, big enough to be few.
pub const PIECE_BYTES: usize = 32 * 1024;

/// Renders like [`render_pieces`], but hands each piece to `send` as soon as it is cut, so
/// that only the pieces not yet consumed are alive; stops early (returns `false`) once `send`
/// returns `false` (the reader went away).
pub fn render_each_piece(
    snapshot: &Snapshot,
    self_metrics: &SelfMetrics,
    options: &RenderOptions,
    build: &BuildInfo,
    format: Format,
    send: impl FnMut(String) -> bool,
) -> bool {
    write_families_to(
        &families(snapshot, self_metrics, options, build),
        format,
        send,
    )
}

/// Writes families with the text encoder, in pieces of about [`PIECE_BYTES`].
fn write_families(families: &[Family<'_>], format: Format) -> Vec<String> {
    let mut pieces = Vec::new();
    write_families_to(families, format, |piece| {
        pieces.push(piece);
        true
    });
    pieces
}

/// Writes families with the text encoder and hands `send` each piece of about [`PIECE_BYTES`]
/// when it is cut (the last one may be shorter); stops once `send` returns `false`, and says
/// whether the whole document went out.
fn write_families_to(
    families: &[Family<'_>],
    format: Format,
    mut send: impl FnMut(String) -> bool,
) -> bool {
    let mut enc = Encoder::with_capacity(format, PIECE_BYTES + PIECE_BYTES / 4);
    let mut open = true;
    for family in families {
        let name = family.name;
        enc.family(name, &family.help, family.ty);
        family.for_each_sample(|labels, value| {
            if !open {
                return;
            }
            match value {
                Value::Millionths(n) => enc.sample_millionths(name, labels, n),
                Value::Float(v) => enc.sample(name, labels, v),
            }
            if let Some(piece) = enc.take_if_longer(PIECE_BYTES) {
                open = send(piece);
            }
        });
        if !open {
            return false;
        }
    }
    send(enc.finish())
}
pub use text::{Encoder, Format, MetricType, CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_TEXT};

#[cfg(test)]
mod tests;
