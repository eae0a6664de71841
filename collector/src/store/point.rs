//! What a series holds (its [`Meta`] and latest [`Point`]) and how a new point goes into it:
//! the Collector's accumulation rules ([`merge`]) and what came of it ([`Applied`]).

use crate::translate::Kind;
use std::sync::Arc;

/// Per-metric facts shared by a metric's series: the Prometheus name and HELP text.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub prom_name: String,
    pub kind: Kind,
    pub help: String,
}

/// The latest state of a series. Histograms and summaries are boxed: most series are numbers,
/// and every stored series pays for the largest variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(Box<Histogram>),
    Summary(Box<Summary>),
}

/// An explicit-bucket histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds; the last bucket (`+Inf`) has no bound.
    pub bounds: Vec<f64>,
    /// Per-bucket (not cumulative) counts, `bounds.len() + 1` of them.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// A summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// (quantile, value) pairs.
    pub quantiles: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: u64,
}

/// A data point on its way into the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub start_unix_nano: u64,
    pub time_unix_nano: u64,
    pub value: Value,
    /// Delta temporality: accumulate onto the previous point when it continues it.
    pub delta: bool,
}

/// A stored series.
#[derive(Debug, Clone)]
pub struct Series {
    pub meta: Arc<Meta>,
    pub point: Point,
    /// Arrival time (clock ms) of the last update; [`STALE`] once a staleness marker came.
    pub updated_ms: u64,
}

/// The `updated_ms` of a series that a staleness marker (a point flagged "no recorded value")
/// ended: hidden at once, removed at the next sweep.
pub const STALE: u64 = u64::MAX;

/// What happened to one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Inserted,
    Updated,
    /// Older than the stored point (or a non-monotonic delta): ignored, as the Collector does.
    Ignored,
}

/// Updates a stored series with a point.
pub(super) fn update(series: &mut Series, meta: &Arc<Meta>, point: Point, now_ms: u64) -> Applied {
    if !Arc::ptr_eq(&series.meta, meta) && *series.meta != **meta {
        series.meta = meta.clone();
    }
    if series.updated_ms == STALE {
        // Ended by a staleness marker: the series starts again from this point.
        series.point = point;
        series.updated_ms = now_ms;
        return Applied::Updated;
    }
    let applied = merge(&mut series.point, point);
    if applied != Applied::Ignored {
        series.updated_ms = now_ms;
    }
    applied
}

/// Merges a new point into the stored one with the Collector's rules: an older timestamp is
/// ignored; a delta that continues the stored point (its start = the stored time) is added;
/// anything else replaces.
fn merge(stored: &mut Point, new: Point) -> Applied {
    if new.time_unix_nano < stored.time_unix_nano {
        return Applied::Ignored;
    }
    if new.delta && new.start_unix_nano == stored.time_unix_nano && stored.time_unix_nano != 0 {
        let continued = match (&mut stored.value, &new.value) {
            (Value::Number(a), Value::Number(b)) => {
                *a += b;
                true
            }
            (Value::Histogram(a), Value::Histogram(b))
                if a.bounds == b.bounds && a.counts.len() == b.counts.len() =>
            {
                for (x, y) in a.counts.iter_mut().zip(&b.counts) {
                    *x = x.saturating_add(*y);
                }
                a.sum += b.sum;
                a.count = a.count.saturating_add(b.count);
                true
            }
            _ => false,
        };
        if continued {
            stored.time_unix_nano = new.time_unix_nano;
            return Applied::Updated;
        }
    }
    *stored = new;
    Applied::Updated
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A cumulative number point at time `t` (started at 1).
    pub(in crate::store) fn point(t: u64, v: f64) -> Point {
        Point {
            start_unix_nano: 1,
            time_unix_nano: t,
            value: Value::Number(v),
            delta: false,
        }
    }

    #[test]
    fn older_points_ignored_and_deltas_accumulate() {
        let mut p = point(10, 5.0);
        assert_eq!(merge(&mut p, point(9, 1.0)), Applied::Ignored);
        assert_eq!(merge(&mut p, point(11, 6.0)), Applied::Updated);
        assert_eq!(p.value, Value::Number(6.0));
        let delta = |s, t, v| Point {
            start_unix_nano: s,
            time_unix_nano: t,
            value: Value::Number(v),
            delta: true,
        };
        let mut p = delta(0, 10, 2.0);
        merge(&mut p, delta(10, 20, 3.0));
        assert_eq!(p.value, Value::Number(5.0));
        // A gap (start != previous time) restarts the accumulation.
        merge(&mut p, delta(25, 30, 1.0));
        assert_eq!(p.value, Value::Number(1.0));
    }
}
