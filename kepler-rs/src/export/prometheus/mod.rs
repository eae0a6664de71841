//! Prometheus exposition of snapshots.
//!
//! [`text`] is our own writer for the Prometheus text format 0.0.4 and OpenMetrics 1.0 text
//! (why: docs/adr/0001-own-text-encoder.md), the `kepler-prom-text` crate shared with the hub; [`classic`] renders Kepler's classic metric family
//! (`kepler_container_joules_total`, ...) from one immutable [`Snapshot`](crate::snapshot::Snapshot).
//! Rendering only reads; it never measures. [`BuildInfo`] feeds `kepler_exporter_build_info`.

pub mod classic;
pub mod modern;
/// The shared text writer (crate `kepler-prom-text`, also used by the hub in `collector/`).
pub use kepler_prom_text as text;

pub use classic::{classic_families, render_classic, RenderOptions, Schema};

use crate::export::family::{Family, Value};
use crate::selfmetrics::SelfMetrics;
use crate::snapshot::Snapshot;

/// The families `options.schema` asks for (self-metrics always), sorted by name: what
/// `/metrics` serves and OTLP pushes.
pub fn families<'a>(
    snapshot: &'a Snapshot,
    self_metrics: &SelfMetrics,
    options: &RenderOptions,
    build: &'a BuildInfo,
) -> Vec<Family<'a>> {
    let mut out = match options.schema {
        Schema::Classic | Schema::Both => classic_families(snapshot, self_metrics, options, build),
        Schema::Modern => {
            let mut own = Vec::new();
            classic::self_families(snapshot, self_metrics, &mut own);
            own
        }
    };
    if options.schema != Schema::Classic {
        out.extend(modern::modern_families(snapshot, options, build));
    }
    out.sort_by_key(|f| f.name);
    out
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
pub(crate) fn write_families(families: &[Family<'_>], format: Format) -> Vec<String> {
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

/// What this binary is, for the build-info metrics. [`BuildInfo::current`] reads what
/// `build.rs` recorded; tests build their own for stable output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// Git branch at build time, or `unknown`.
    pub branch: String,
    /// Git commit at build time, or `unknown`.
    pub revision: String,
    /// The crate version.
    pub version: String,
    /// `std::env::consts::OS` (`linux`).
    pub os: String,
    /// `std::env::consts::ARCH` (`x86_64`).
    pub arch: String,
    /// The `rustc --version` that built us, or `unknown`.
    pub rust_version: String,
}

impl BuildInfo {
    /// The build facts of this binary.
    pub fn current() -> Self {
        Self {
            branch: option_env!("KEPLER_BUILD_GIT_BRANCH")
                .unwrap_or("unknown")
                .to_string(),
            revision: option_env!("KEPLER_BUILD_GIT_REVISION")
                .unwrap_or("unknown")
                .to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            rust_version: option_env!("KEPLER_BUILD_RUSTC_VERSION")
                .unwrap_or("unknown")
                .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_build_info_is_filled() {
        let info = BuildInfo::current();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(!info.branch.is_empty());
        assert!(!info.revision.is_empty());
        assert!(!info.rust_version.is_empty());
        assert_eq!(info.os, std::env::consts::OS);
    }
}
