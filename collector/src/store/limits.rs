//! Series limits (overall and per cluster), the count of series they are checked against, and
//! why a point did not make it into the store ([`Reject`]).

use super::locks::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Series limits; `0` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_series: usize,
    pub max_series_per_cluster: usize,
}

/// Why a point did not make it into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// The overall series limit is reached and the point would start a new series.
    SeriesLimit,
    /// The cluster's series limit is reached and the point would start a new series.
    ClusterSeriesLimit,
    /// Exponential histograms are accepted but not exposed.
    Unsupported,
    /// The point is malformed (histogram buckets that do not match their bounds, no value).
    Invalid,
    /// The point's attributes make colliding or reserved labels
    /// ([`crate::translate::label_conflict`]).
    LabelConflict,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::SeriesLimit => "series_limit",
            Reject::ClusterSeriesLimit => "cluster_series_limit",
            Reject::Unsupported => "unsupported_type",
            Reject::Invalid => "invalid_point",
            Reject::LabelConflict => "label_conflict",
        }
    }
}

/// Series held, overall and per cluster, against the [`Limits`].
#[derive(Debug)]
pub(super) struct SeriesCounts {
    limits: Limits,
    total: AtomicUsize,
    per_cluster: Mutex<HashMap<Arc<str>, usize>>,
}

impl SeriesCounts {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            limits,
            total: AtomicUsize::new(0),
            per_cluster: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Series per cluster ("" for series without a `cluster` attribute), sorted.
    pub(super) fn per_cluster(&self) -> Vec<(Arc<str>, usize)> {
        let mut out: Vec<_> = lock(&self.per_cluster)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        out.sort();
        out
    }

    /// Counts a new series against the limits.
    pub(super) fn reserve(&self, cluster: &str) -> Result<(), Reject> {
        let mut per_cluster = lock(&self.per_cluster);
        let total = self.total.load(Ordering::Relaxed);
        if self.limits.max_series > 0 && total >= self.limits.max_series {
            return Err(Reject::SeriesLimit);
        }
        let count = per_cluster.get(cluster).copied().unwrap_or(0);
        if self.limits.max_series_per_cluster > 0 && count >= self.limits.max_series_per_cluster {
            return Err(Reject::ClusterSeriesLimit);
        }
        match per_cluster.get_mut(cluster) {
            Some(n) => *n += 1,
            None => {
                per_cluster.insert(cluster.into(), 1);
            }
        }
        self.total.store(total + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back `n` series of `cluster`.
    pub(super) fn release(&self, cluster: &str, n: usize) {
        let mut per_cluster = lock(&self.per_cluster);
        if let Some(count) = per_cluster.get_mut(cluster) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                per_cluster.remove(cluster);
            }
        }
        self.total
            .fetch_sub(n.min(self.total.load(Ordering::Relaxed)), Ordering::Relaxed);
    }
}
