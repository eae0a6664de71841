//! The series store: OTLP data points keyed as the Collector's prometheus exporter keys them
//! (metric name + type + scope + data-point attributes + `job` + `instance`), in shards each
//! behind its own mutex (a render visits one shard at a time), each shard listing its series per
//! family in label order, with series limits and expiry by arrival time; `target_info` metadata
//! expires with its series.

mod family;
mod keys;
mod limits;
mod locks;
mod lookup;
mod point;
mod shard;
mod visit;

pub use keys::{attrs_of, cluster_of, sorted_attrs, Attr, Attrs, KeyRef, Scope, SeriesKey};
pub use limits::{Limits, Reject};
pub use lookup::{Hint, Lookup};
pub use point::{Applied, Histogram, Meta, Point, Series, Summary, Value};
pub use visit::{Family, FamilyCursor};

use crate::clock::Clock;
use crate::intern::{GroupRef, Id};
use family::Registry;
use foldhash::fast::RandomState;
use limits::SeriesCounts;
use locks::{lock, read, write};
use lookup::Names;
use shard::{series_hash, Record, Shard};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

const SHARDS: usize = 64;
// The family registry keeps a family's shards in one `u64`.
const _: () = assert!(SHARDS <= 64);

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

/// The store.
#[derive(Debug)]
pub struct Store {
    /// Locked before any shard.
    names: RwLock<Names>,
    shards: Vec<Mutex<Shard>>,
    /// Family names and the shards holding them; locked after a shard, never before.
    registry: Registry,
    hasher: RandomState,
    targets: Mutex<Targets>,
    counts: SeriesCounts,
    expiration_ms: u64,
    clock: Arc<dyn Clock>,
}

impl Store {
    pub fn new(limits: Limits, expiration_ms: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            names: RwLock::new(Names::default()),
            shards: (0..SHARDS).map(|i| Mutex::new(Shard::new(i))).collect(),
            registry: Registry::default(),
            hasher: RandomState::default(),
            targets: Mutex::new(HashMap::new()),
            counts: SeriesCounts::new(limits),
            expiration_ms,
            clock,
        }
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Number of series held (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.counts.total()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Interned strings and groups held (for tests and benchmarks: they must follow the live
    /// series, not everything ever seen).
    pub fn interned(&self) -> (usize, usize) {
        let names = read(&self.names);
        (names.strings.len(), names.groups.len())
    }

    /// Series per cluster ("" for series without a `cluster` attribute).
    pub fn series_per_cluster(&self) -> Vec<(Arc<str>, usize)> {
        self.counts.per_cluster()
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[((hash >> 32) as usize) % SHARDS]
    }

    /// Applies one point. New series count against the limits; existing ones always update.
    /// `lookup` carries what one request's points share (see [`Lookup`]), `hint` what the
    /// caller knows of this key compared with the previous one (see [`Hint`]).
    pub fn apply(
        &self,
        key: &KeyRef<'_>,
        meta: &Arc<Meta>,
        point: Point,
        now_ms: u64,
        lookup: &mut Lookup,
        hint: Hint,
    ) -> Result<Applied, Reject> {
        {
            let names = read(&self.names);
            if let Some(r) = lookup.resolve(&names, &self.hasher, key, hint) {
                let known = lookup.known_values(r.group, hint);
                let mut shard = lock(self.shard(r.hash));
                let found = shard.find_text(r.hash, r.group, &names.strings, key.attrs, known);
                if let Some(slot) = found {
                    if let Some(record) = shard.record(slot) {
                        lookup.remember(r.group, record.values());
                        return shard
                            .update(slot, meta, point, now_ms, &self.registry)
                            .ok_or(Reject::Invalid);
                    }
                }
            }
        }
        lookup.forget();
        self.insert(key, meta, point, now_ms, lookup.value_buffer())
    }

    /// The slow path of [`Store::apply`]: interns what is new and inserts the series (or
    /// updates it, when another request inserted it meanwhile).
    fn insert(
        &self,
        key: &KeyRef<'_>,
        meta: &Arc<Meta>,
        point: Point,
        now_ms: u64,
        values: &mut Vec<Id>,
    ) -> Result<Applied, Reject> {
        let mut guard = write(&self.names);
        let names = &mut *guard;
        names.mark_changed();
        let strings = &mut names.strings;
        // Every id taken here is given back below unless the new series keeps it.
        let mut taken: Vec<Id> = Vec::with_capacity(5 + key.attrs.len());
        let mut intern = |s: &str, taken: &mut Vec<Id>| -> Result<Id, Reject> {
            let id = strings.intern(s).ok_or(Reject::SeriesLimit)?;
            taken.push(id);
            Ok(id)
        };
        let interned = (|| {
            let metric = intern(key.metric, &mut taken)?;
            let scope_name = intern(key.scope_name, &mut taken)?;
            let scope_version = intern(key.scope_version, &mut taken)?;
            let job = intern(key.job, &mut taken)?;
            let instance = intern(key.instance, &mut taken)?;
            let mut keys = Vec::with_capacity(key.attrs.len());
            for (k, _) in key.attrs {
                keys.push(intern(k, &mut taken)?);
            }
            let group_strings = taken.len();
            values.clear();
            for (_, v) in key.attrs {
                values.push(intern(v, &mut taken)?);
            }
            Ok::<_, Reject>((
                GroupRef {
                    metric,
                    kind: key.kind,
                    scope_name,
                    scope_version,
                    job,
                    instance,
                    keys: &[],
                },
                keys,
                group_strings,
            ))
        })();
        let (group_key, keys, group_strings) = match interned {
            Ok(x) => x,
            Err(reject) => {
                for id in taken {
                    strings.release(id);
                }
                return Err(reject);
            }
        };
        let group = names.groups.intern(
            &GroupRef {
                keys: &keys,
                ..group_key
            },
            &mut names.strings,
        );
        // The group holds its own references on its strings.
        for &id in &taken[..group_strings] {
            names.strings.release(id);
        }
        let release_values = |names: &mut Names, group: Option<Id>, values: &[Id]| {
            for &id in values {
                names.strings.release(id);
            }
            if let Some(group) = group {
                names.groups.release(group, &mut names.strings);
            }
        };
        let Some(group) = group else {
            release_values(names, None, values);
            return Err(Reject::SeriesLimit);
        };
        let hash = series_hash(&self.hasher, group, key.attrs.iter().map(|(_, v)| &**v));
        let mut shard = lock(self.shard(hash));
        if let Some(slot) = shard.find(hash, group, values) {
            release_values(names, Some(group), values);
            return shard
                .update(slot, meta, point, now_ms, &self.registry)
                .ok_or(Reject::Invalid);
        }
        if let Err(reject) = self.counts.reserve(cluster_of(key.attrs)) {
            release_values(names, Some(group), values);
            return Err(reject);
        }
        shard.insert(
            &self.hasher,
            &names.strings,
            hash,
            Record::new(
                group,
                values,
                Series {
                    meta: meta.clone(),
                    point,
                    updated_ms: now_ms,
                },
            ),
            &self.registry,
        );
        Ok(Applied::Inserted)
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

    /// A staleness marker (a point flagged "no recorded value", which the Prometheus receiver
    /// sends when a target or a series goes away): the stored series with `key`, if any, is
    /// hidden from the exposition at once and removed at the next sweep, as the Collector's
    /// prometheus exporter deletes it. A later point brings it back. Whether a series was
    /// marked.
    pub fn mark_stale(&self, key: &KeyRef<'_>, lookup: &mut Lookup) -> bool {
        let marked = {
            let names = read(&self.names);
            let hint = Hint::default();
            lookup
                .resolve(&names, &self.hasher, key, hint)
                .and_then(|r| {
                    let known = lookup.known_values(r.group, hint);
                    let mut shard = lock(self.shard(r.hash));
                    let slot =
                        shard.find_text(r.hash, r.group, &names.strings, key.attrs, known)?;
                    shard.mark_stale(slot)
                })
                .is_some()
        };
        lookup.forget();
        marked
    }

    /// Whether something updated at `updated_ms` is still alive at `now_ms` (never once
    /// marked stale).
    pub fn alive(&self, updated_ms: u64, now_ms: u64) -> bool {
        updated_ms != point::STALE
            && (self.expiration_ms == 0 || now_ms < updated_ms.saturating_add(self.expiration_ms))
    }

    /// Removes expired series and targets; returns how many series went. Their interned text
    /// and groups are released with them.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        let mut removed = 0;
        for shard in &self.shards {
            let mut guard = write(&self.names);
            let names = &mut *guard;
            names.mark_changed();
            let mut shard = lock(shard);
            shard.retain(
                |record| self.alive(record.series.updated_ms, now),
                |record| {
                    let cluster = names
                        .groups
                        .group(record.group)
                        .and_then(|g| g.cluster)
                        .and_then(|at| record.values().get(at))
                        .map_or("", |&id| names.strings.text(id));
                    self.counts.release(cluster, 1);
                    for &id in record.values() {
                        names.strings.release(id);
                    }
                    names.groups.release(record.group, &mut names.strings);
                    removed += 1;
                },
                &self.registry,
            );
        }
        lock(&self.targets).retain(|_, t| self.alive(t.updated_ms, now));
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::keys::tests::attrs;
    use super::point::tests::point;
    use super::*;
    use crate::clock::ManualClock;
    use crate::translate::Kind;

    fn apply(
        store: &Store,
        name: &str,
        cluster: &str,
        p: Point,
        now: u64,
    ) -> Result<Applied, Reject> {
        let attrs = attrs(&[("cluster", cluster)], None, None);
        let key = KeyRef {
            metric: name,
            kind: Kind::Counter,
            scope_name: "",
            scope_version: "",
            job: "j",
            instance: "i",
            attrs: &attrs,
        };
        store.apply(
            &key,
            &meta(),
            p,
            now,
            &mut Lookup::default(),
            Hint::default(),
        )
    }

    fn meta() -> Arc<Meta> {
        Arc::new(Meta {
            prom_name: "m_total".into(),
            kind: Kind::Counter,
            help: String::new(),
        })
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
        for (metric, cluster, time, want) in [
            ("a", "c1", 1, Ok(Applied::Inserted)),
            ("b", "c1", 1, Ok(Applied::Inserted)),
            ("c", "c1", 1, Err(Reject::ClusterSeriesLimit)),
            ("a", "c1", 2, Ok(Applied::Updated)),
            ("a", "c2", 1, Ok(Applied::Inserted)),
            ("b", "c2", 1, Err(Reject::SeriesLimit)),
        ] {
            let got = apply(&store, metric, cluster, point(time, time as f64), 0);
            assert_eq!(got, want, "{metric} {cluster} at {time}");
        }
        assert_eq!(store.len(), 3);
        // Rejected series leave nothing interned behind: a, b, j, i, "", cluster, c1, c2.
        assert_eq!(store.interned(), (8, 2));
    }

    #[test]
    fn expiry_by_arrival_time() {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = Store::new(Limits::default(), 300_000, clock.clone());
        apply(&store, "a", "c1", point(1, 1.0), clock.now_ms()).unwrap();
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
        assert_eq!(store.interned(), (0, 0));
    }

    #[test]
    fn keys_read_back_and_interned_text_follows_the_live_series() {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = Store::new(Limits::default(), 1_000, clock.clone());
        // 50 generations of 100 containers; each generation expires before the next arrives.
        for generation in 0..50 {
            for n in 0..100 {
                let id = format!("{generation}-{n:060}");
                let attrs = attrs(
                    &[("container_id", &id), ("mode", "idle"), ("source", "rapl")],
                    Some("hub"),
                    None,
                );
                let key = KeyRef {
                    metric: "kepler_container_joules_total",
                    kind: Kind::Counter,
                    scope_name: "kepler",
                    scope_version: "1",
                    job: "kepler",
                    instance: "node-1",
                    attrs: &attrs,
                };
                let now = clock.now_ms();
                assert_eq!(
                    store.apply(
                        &key,
                        &meta(),
                        point(1, 1.0),
                        now,
                        &mut Lookup::default(),
                        Hint::default()
                    ),
                    Ok(Applied::Inserted)
                );
            }
            let mut seen = 0;
            store.for_each_live(|key, series| {
                seen += 1;
                assert_eq!(key.metric, "kepler_container_joules_total");
                assert_eq!((key.scope.name, key.scope.version), ("kepler", "1"));
                assert_eq!((key.job, key.instance), ("kepler", "node-1"));
                let pairs: Vec<_> = key.attrs.iter().collect();
                assert_eq!(pairs.len(), 4);
                assert_eq!(pairs[0], ("cluster", "hub"));
                assert_eq!(pairs[1].0, "container_id");
                assert!(
                    pairs[1].1.starts_with(&format!("{generation}-")),
                    "{pairs:?}"
                );
                assert_eq!(&pairs[2..], [("mode", "idle"), ("source", "rapl")]);
                assert_eq!(series.point.value, Value::Number(1.0));
            });
            assert_eq!(seen, 100);
            // metric, "kepler" (scope and job), "1", "node-1", 4 keys, 3 shared values, 100 ids.
            assert_eq!(store.interned(), (111, 1));
            clock.advance_ms(1_000);
            assert_eq!(store.sweep(), 100);
        }
        assert_eq!(store.interned(), (0, 0));
        assert!(store.is_empty());
    }
}
