//! The one description of the metrics every view exports: families of name, help, type, unit
//! and labelled samples, and the builders that make them from a snapshot.
//!
//! This module holds the plain types; [`classic`] and [`modern`] build Kepler's two metric
//! families, [`exporter`] our own `kepler_exporter_*` health metrics, and [`schema`] picks
//! them by [`Schema`]. The views above this module (the Prometheus text encoder for `/metrics`,
//! the OTLP push) only encode what it builds, so both carry the same names and labels by
//! construction; nothing here knows about them. A family does not hold its samples: it visits them on demand, borrowing from the
//! snapshot, so rendering allocates no per-sample label storage.

pub mod build_info;
pub mod classic;
pub mod exporter;
pub mod gpu;
pub mod modern;
pub mod schema;

pub use build_info::BuildInfo;
pub use classic::classic_families;
pub use modern::modern_families;
pub use schema::families;

pub use crate::config::Schema;
/// The metric types (the text format's own: both encoders map from them).
pub use kepler_prom_text::MetricType;

/// What to include beyond the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Per-process series (`kepler_process_*`); off by default as in Kepler (they are many).
    pub process_metrics: bool,
    /// Which of Kepler's metric families to serve.
    pub schema: Schema,
}

/// A sample value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// `n / 1e6` exactly (microjoules as joules, CPU nanoseconds as milliseconds): the text
    /// encoder writes it as an exact decimal.
    Millionths(u64),
    Float(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Millionths(n) => n as f64 / 1e6,
            Value::Float(v) => v,
        }
    }
}

/// What a family calls once per sample: the labels in exposition order, and the value.
pub type Visit<'v> = dyn FnMut(&[(&str, &str)], Value) + 'v;

type Samples<'a> = Box<dyn Fn(&mut Visit<'_>) + 'a>;

/// One metric family: header facts and a function that visits its samples.
pub struct Family<'a> {
    /// The name as Prometheus stores it (counters end in `_total`); also the OTLP name.
    pub name: &'static str,
    pub help: String,
    pub ty: MetricType,
    /// The UCUM unit sent over OTLP (`J`, `s`), or empty. Chosen so that the Collector's
    /// name translation gives back `name` exactly: an empty unit adds no suffix.
    pub unit: &'static str,
    samples: Samples<'a>,
}

impl std::fmt::Debug for Family<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("name", &self.name)
            .field("ty", &self.ty)
            .field("unit", &self.unit)
            .finish_non_exhaustive()
    }
}

impl<'a> Family<'a> {
    pub fn new(
        name: &'static str,
        help: impl Into<String>,
        ty: MetricType,
        unit: &'static str,
        samples: impl Fn(&mut Visit<'_>) + 'a,
    ) -> Self {
        Self {
            name,
            help: help.into(),
            ty,
            unit,
            samples: Box::new(samples),
        }
    }

    /// Calls `visit` for every sample, in exposition order.
    pub fn for_each_sample(&self, mut visit: impl FnMut(&[(&str, &str)], Value)) {
        (self.samples)(&mut visit);
    }
}
