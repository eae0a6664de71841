//! The series store: OTLP data points keyed as the Collector's prometheus exporter keys them
//! (metric name + type + scope + data-point attributes + `job` + `instance`), with the
//! Collector's accumulation rules, series limits (overall and per cluster) and expiry by
//! arrival time.
//!
//! The map is split into shards, each behind its own mutex, so that a render (which visits one
//! shard at a time) never holds up ingestion for more than one shard's worth of copying.
//! `target_info` metadata (resource attributes per job + instance) expires with its series.

use crate::clock::Clock;
use crate::translate::{self, Kind};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 64;

/// Sorted `(key, value)` attribute pairs, values already written as label values.
pub type Attrs = Box<[(Box<str>, Box<str>)]>;

/// What identifies a series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub metric: Box<str>,
    pub kind: Kind,
    pub scope: Arc<Scope>,
    pub job: Arc<str>,
    pub instance: Arc<str>,
    pub attrs: Attrs,
}

/// An instrumentation scope (name, version).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Scope {
    pub name: String,
    pub version: String,
}

/// Per-metric facts shared by a metric's series: the Prometheus name and HELP text.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub prom_name: String,
    pub kind: Kind,
    pub help: String,
}

/// The latest state of a series.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram {
        /// Upper bounds; the last bucket (`+Inf`) has no bound.
        bounds: Vec<f64>,
        /// Per-bucket (not cumulative) counts, `bounds.len() + 1` of them.
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
    Summary {
        quantiles: Vec<(f64, f64)>,
        sum: f64,
        count: u64,
    },
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
    /// Arrival time (clock ms) of the last update.
    pub updated_ms: u64,
    /// The series' `cluster` attribute ("" when it has none), for the per-cluster limits.
    pub cluster: Arc<str>,
}

/// Resource attributes behind a `target_info` sample.
#[derive(Debug, Clone)]
pub struct Target {
    pub labels: Vec<(String, String)>,
    pub updated_ms: u64,
}

/// `target_info` entries by (job, instance).
type Targets = HashMap<(Arc<str>, Arc<str>), Target>;

/// A live `target_info` entry: job, instance, the other resource attributes.
pub type TargetInfo = (Arc<str>, Arc<str>, Vec<(String, String)>);

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
    /// ([`translate::label_conflict`]).
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

/// What happened to one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Inserted,
    Updated,
    /// Older than the stored point (or a non-monotonic delta): ignored, as the Collector does.
    Ignored,
}

type Shard = HashMap<SeriesKey, Series>;

/// The store.
#[derive(Debug)]
pub struct Store {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    targets: Mutex<Targets>,
    total: AtomicUsize,
    per_cluster: Mutex<HashMap<Arc<str>, usize>>,
    limits: Limits,
    expiration_ms: u64,
    clock: Arc<dyn Clock>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps inconsistent in a way that matters
    // more than losing the whole hub, so keep going with the data.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store {
    pub fn new(limits: Limits, expiration_ms: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            targets: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            per_cluster: Mutex::new(HashMap::new()),
            limits,
            expiration_ms,
            clock,
        }
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Number of series held (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Series per cluster ("" for series without a `cluster` attribute).
    pub fn series_per_cluster(&self) -> Vec<(Arc<str>, usize)> {
        let mut out: Vec<_> = lock(&self.per_cluster)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        out.sort();
        out
    }

    fn shard_of(&self, key: &SeriesKey) -> &Mutex<Shard> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[index]
    }

    /// Applies one point. New series count against the limits; existing ones always update.
    pub fn apply(
        &self,
        key: SeriesKey,
        meta: &Arc<Meta>,
        cluster: &Arc<str>,
        point: Point,
        now_ms: u64,
    ) -> Result<Applied, Reject> {
        let mut shard = lock(self.shard_of(&key));
        match shard.entry(key) {
            Entry::Occupied(mut entry) => {
                let series = entry.get_mut();
                if !Arc::ptr_eq(&series.meta, meta) && *series.meta != **meta {
                    series.meta = meta.clone();
                }
                let applied = merge(&mut series.point, point);
                if applied != Applied::Ignored {
                    series.updated_ms = now_ms;
                }
                Ok(applied)
            }
            Entry::Vacant(entry) => {
                self.reserve(cluster)?;
                entry.insert(Series {
                    meta: meta.clone(),
                    point,
                    updated_ms: now_ms,
                    cluster: cluster.clone(),
                });
                Ok(Applied::Inserted)
            }
        }
    }

    /// Counts a new series against the limits.
    fn reserve(&self, cluster: &Arc<str>) -> Result<(), Reject> {
        let mut per_cluster = lock(&self.per_cluster);
        let total = self.total.load(Ordering::Relaxed);
        if self.limits.max_series > 0 && total >= self.limits.max_series {
            return Err(Reject::SeriesLimit);
        }
        let count = per_cluster.get(cluster).copied().unwrap_or(0);
        if self.limits.max_series_per_cluster > 0 && count >= self.limits.max_series_per_cluster {
            return Err(Reject::ClusterSeriesLimit);
        }
        per_cluster.insert(cluster.clone(), count + 1);
        self.total.store(total + 1, Ordering::Relaxed);
        Ok(())
    }

    fn release(&self, cluster: &Arc<str>, n: usize) {
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

    /// Records the resource attributes of a job + instance for `target_info`.
    pub fn touch_target(
        &self,
        job: &Arc<str>,
        instance: &Arc<str>,
        labels: Vec<(String, String)>,
        now_ms: u64,
    ) {
        let mut targets = lock(&self.targets);
        targets.insert(
            (job.clone(), instance.clone()),
            Target {
                labels,
                updated_ms: now_ms,
            },
        );
    }

    /// Whether something updated at `updated_ms` is still alive at `now_ms`.
    pub fn alive(&self, updated_ms: u64, now_ms: u64) -> bool {
        self.expiration_ms == 0 || now_ms < updated_ms.saturating_add(self.expiration_ms)
    }

    /// Removes expired series and targets; returns how many series went.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        let mut removed = 0;
        for shard in &self.shards {
            let mut gone: Vec<Arc<str>> = Vec::new();
            lock(shard).retain(|_, series| {
                let keep = self.alive(series.updated_ms, now);
                if !keep {
                    gone.push(series.cluster.clone());
                }
                keep
            });
            removed += gone.len();
            for cluster in gone {
                self.release(&cluster, 1);
            }
        }
        lock(&self.targets).retain(|_, t| self.alive(t.updated_ms, now));
        removed
    }

    /// Calls `f` for every live series, one shard at a time (each shard locked only while it is
    /// visited).
    pub fn for_each_live(&self, mut f: impl FnMut(&SeriesKey, &Series)) {
        let now = self.clock.now_ms();
        for shard in &self.shards {
            let shard = lock(shard);
            for (key, series) in shard.iter() {
                if self.alive(series.updated_ms, now) {
                    f(key, series);
                }
            }
        }
    }

    /// Live `target_info` entries: (job, instance, labels).
    pub fn live_targets(&self) -> Vec<TargetInfo> {
        let now = self.clock.now_ms();
        lock(&self.targets)
            .iter()
            .filter(|(_, t)| self.alive(t.updated_ms, now))
            .map(|((job, instance), t)| (job.clone(), instance.clone(), t.labels.clone()))
            .collect()
    }
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
            (
                Value::Histogram {
                    bounds,
                    counts,
                    sum,
                    count,
                },
                Value::Histogram {
                    bounds: nb,
                    counts: nc,
                    sum: ns,
                    count: ncount,
                },
            ) if bounds == nb && counts.len() == nc.len() => {
                for (a, b) in counts.iter_mut().zip(nc) {
                    *a = a.saturating_add(*b);
                }
                *sum += ns;
                *count = count.saturating_add(*ncount);
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

/// Builds the sorted attribute set of a data point: duplicate keys keep their first value;
/// `cluster` is inserted when absent (`insert`) or set (`force`, from an auth token).
pub fn attrs_of(attributes: &[KeyValue], insert: Option<&str>, force: Option<&str>) -> Attrs {
    let mut pairs: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(attributes.len() + 1);
    for kv in attributes {
        pairs.push((
            kv.key.as_str().into(),
            translate::value_string(kv.value.as_ref()).into_boxed_str(),
        ));
    }
    // Stable sort keeps the first of duplicate keys first; dedup keeps it.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.dedup_by(|later, first| later.0 == first.0);
    let cluster = force.or_else(|| {
        let present = pairs.binary_search_by(|p| (*p.0).cmp("cluster")).is_ok();
        if present {
            None
        } else {
            insert
        }
    });
    if let Some(cluster) = cluster {
        match pairs.binary_search_by(|p| (*p.0).cmp("cluster")) {
            Ok(i) => pairs[i].1 = cluster.into(),
            Err(i) => pairs.insert(i, ("cluster".into(), cluster.into())),
        }
    }
    pairs.into_boxed_slice()
}

/// The `cluster` attribute of a sorted attribute set ("" when absent).
pub fn cluster_of(attrs: &Attrs) -> &str {
    attrs
        .binary_search_by(|p| (*p.0).cmp("cluster"))
        .map_or("", |i| &attrs[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            key_strindex: 0,
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
        }
    }

    fn key(name: &str, cluster: &str) -> SeriesKey {
        SeriesKey {
            metric: name.into(),
            kind: Kind::Counter,
            scope: Arc::new(Scope::default()),
            job: "j".into(),
            instance: "i".into(),
            attrs: attrs_of(&[kv("cluster", cluster)], None, None),
        }
    }

    fn point(t: u64, v: f64) -> Point {
        Point {
            start_unix_nano: 1,
            time_unix_nano: t,
            value: Value::Number(v),
            delta: false,
        }
    }

    fn meta() -> Arc<Meta> {
        Arc::new(Meta {
            prom_name: "m_total".into(),
            kind: Kind::Counter,
            help: String::new(),
        })
    }

    #[test]
    fn attrs_insert_force_and_duplicates() {
        let a = attrs_of(
            &[kv("b", "1"), kv("a", "x"), kv("a", "y")],
            Some("hub"),
            None,
        );
        let got: Vec<_> = a.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(got, ["a=x", "b=1", "cluster=hub"]);
        let a = attrs_of(&[kv("cluster", "c1")], Some("hub"), None);
        assert_eq!(cluster_of(&a), "c1");
        let a = attrs_of(&[kv("cluster", "c2")], Some("hub"), Some("c1"));
        assert_eq!(cluster_of(&a), "c1");
        assert_eq!(a.len(), 1);
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

    #[test]
    fn limits_reject_new_series_but_update_existing() {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = Store::new(
            Limits {
                max_series: 3,
                max_series_per_cluster: 2,
            },
            300_000,
            clock.clone(),
        );
        let m = meta();
        let c1: Arc<str> = "c1".into();
        let c2: Arc<str> = "c2".into();
        assert_eq!(
            store.apply(key("a", "c1"), &m, &c1, point(1, 1.0), 0),
            Ok(Applied::Inserted)
        );
        assert_eq!(
            store.apply(key("b", "c1"), &m, &c1, point(1, 1.0), 0),
            Ok(Applied::Inserted)
        );
        assert_eq!(
            store.apply(key("c", "c1"), &m, &c1, point(1, 1.0), 0),
            Err(Reject::ClusterSeriesLimit)
        );
        assert_eq!(
            store.apply(key("a", "c1"), &m, &c1, point(2, 2.0), 0),
            Ok(Applied::Updated)
        );
        assert_eq!(
            store.apply(key("a", "c2"), &m, &c2, point(1, 1.0), 0),
            Ok(Applied::Inserted)
        );
        assert_eq!(
            store.apply(key("b", "c2"), &m, &c2, point(1, 1.0), 0),
            Err(Reject::SeriesLimit)
        );
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn expiry_by_arrival_time() {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = Store::new(Limits::default(), 300_000, clock.clone());
        let m = meta();
        let c1: Arc<str> = "c1".into();
        store
            .apply(key("a", "c1"), &m, &c1, point(1, 1.0), clock.now_ms())
            .unwrap();
        clock.advance_ms(299_999);
        let mut n = 0;
        store.for_each_live(|_, _| n += 1);
        assert_eq!(n, 1);
        assert_eq!(store.sweep(), 0);
        clock.advance_ms(1);
        let mut n = 0;
        store.for_each_live(|_, _| n += 1);
        assert_eq!(n, 0);
        assert_eq!(store.sweep(), 1);
        assert!(store.is_empty());
        assert!(store.series_per_cluster().is_empty());
    }
}
