//! The one description of the metrics every view exports: families of name, help, type, unit
//! and labelled samples.
//!
//! [`crate::export::prometheus::classic`] builds the families from a snapshot; the Prometheus
//! text encoder writes them as `/metrics`, and [`crate::export::otlp`] maps the same families to
//! OTLP, so both carry the same names and labels by construction. A family does not hold its
//! samples: it visits them on demand, borrowing from the snapshot, so rendering allocates no
//! per-sample label storage.

use super::prometheus::MetricType;

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
