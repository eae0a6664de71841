//! Which families a [`Schema`] serves: [`families`], the one list `/metrics` renders and OTLP
//! pushes.

use super::classic::classic_families;
use super::exporter::exporter_families;
use super::modern::modern_families;
use super::{BuildInfo, Family, RenderOptions, Schema};
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
            exporter_families(snapshot, self_metrics, &mut own);
            own
        }
    };
    if options.schema != Schema::Classic {
        out.extend(modern_families(snapshot, options, build));
    }
    out.sort_by_key(|f| f.name);
    out
}
