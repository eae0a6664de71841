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
use lookup::{Names, Place, Routes};
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
    /// Where the series of each group were in the last request that sent the group (see
    /// [`Routes`]); locked last, after anything else.
    routes: Mutex<Routes>,
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
            routes: Mutex::new(Routes::default()),
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

    /// The number of the shard of a series hash.
    fn shard_of(hash: u64) -> usize {
        ((hash >> 32) as usize) % SHARDS
    }

    /// The store's route of `group`, taken out (the request that takes it hands it back).
    fn take_route(&self, group: Id) -> Vec<Place> {
        lock(&self.routes).remove(&group).unwrap_or_default()
    }

    /// Hands back the routes a request's `lookup` took and made (see [`Routes`]): call it once
    /// the request's points are applied.
    pub fn end_request(&self, lookup: &mut Lookup) {
        let mut routes = lookup.take_routes().peekable();
        if routes.peek().is_none() {
            return;
        }
        let mut held = lock(&self.routes);
        for (group, places) in routes {
            if places.iter().any(|&p| p != Place::NONE) {
                held.insert(group, places);
            }
        }
    }

    /// Routed series (for tests and benchmarks).
    pub fn routed(&self) -> usize {
        lock(&self.routes).values().map(Vec::len).sum()
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
            if let Some(group) = lookup.resolve(&names, key, hint) {
                // Where the sender's previous request had this point's series, checked first.
                let predicted = lookup.predict(group, |g| self.take_route(g));
                let mut found = None;
                if let Some(place) = predicted {
                    let known = lookup.known_values(group, hint);
                    let shard = lock(&self.shards[place.shard()]);
                    if shard.holds(place.slot(), group, &names.strings, key.attrs, known) {
                        found = Some((shard, place));
                    }
                }
                if found.is_none() {
                    let hash =
                        series_hash(&self.hasher, group, key.attrs.iter().map(|(_, v)| &**v));
                    let known = lookup.known_values(group, hint);
                    let number = Self::shard_of(hash);
                    let shard = lock(&self.shards[number]);
                    let slot = shard.find_text(hash, group, &names.strings, key.attrs, known);
                    found = slot.map(|slot| (shard, Place::new(number, slot)));
                }
                if let Some((mut shard, place)) = found {
                    let slot = place.slot();
                    if let Some(record) = shard.record(slot) {
                        lookup.remember(group, record.values());
                        lookup.arrived(place);
                        return shard
                            .update(slot, meta, point, now_ms, &self.registry)
                            .ok_or(Reject::Invalid);
                    }
                }
            }
        }
        lookup.forget();
        self.insert(key, meta, point, now_ms, lookup)
    }

    /// The slow path of [`Store::apply`]: interns what is new and inserts the series (or
    /// updates it, when another request inserted it meanwhile).
    fn insert(
        &self,
        key: &KeyRef<'_>,
        meta: &Arc<Meta>,
        point: Point,
        now_ms: u64,
        lookup: &mut Lookup,
    ) -> Result<Applied, Reject> {
        let mut values = lookup.value_buffer();
        let result = self.insert_with(key, meta, point, now_ms, lookup, &mut values);
        lookup.give_back(values);
        result
    }

    fn insert_with(
        &self,
        key: &KeyRef<'_>,
        meta: &Arc<Meta>,
        point: Point,
        now_ms: u64,
        lookup: &mut Lookup,
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
        // The point's position in the group's route (the guess is not needed: the series is
        // new, or another request inserted it meanwhile).
        lookup.predict(group, |g| self.take_route(g));
        let hash = series_hash(&self.hasher, group, key.attrs.iter().map(|(_, v)| &**v));
        let number = Self::shard_of(hash);
        let mut shard = lock(&self.shards[number]);
        if let Some(slot) = shard.find(hash, group, values) {
            release_values(names, Some(group), values);
            lookup.arrived(Place::new(number, slot));
            return shard
                .update(slot, meta, point, now_ms, &self.registry)
                .ok_or(Reject::Invalid);
        }
        if let Err(reject) = self.counts.reserve(cluster_of(key.attrs)) {
            release_values(names, Some(group), values);
            lookup.arrived(Place::NONE);
            return Err(reject);
        }
        let slot = shard.insert(
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
        lookup.arrived(slot.map_or(Place::NONE, |slot| Place::new(number, slot)));
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
                .resolve(&names, key, hint)
                .and_then(|group| {
                    let hash =
                        series_hash(&self.hasher, group, key.attrs.iter().map(|(_, v)| &**v));
                    let known = lookup.known_values(group, hint);
                    let mut shard = lock(&self.shards[Self::shard_of(hash)]);
                    let slot = shard.find_text(hash, group, &names.strings, key.attrs, known)?;
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
        if removed > 0 {
            // The routes of groups that went (a group id may be reused: a route is only a
            // guess, checked against the stored key, but it must not outlive its group).
            let names = read(&self.names);
            lock(&self.routes).retain(|&group, _| names.groups.group(group).is_some());
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

    /// One request of a sender: a point per id (attribute `id`, value `v`, time `t`), in this
    /// order, on one [`Lookup`]; the routes are handed back unless `end` is false.
    fn send(store: &Store, ids: &[&str], v: f64, t: u64, end: bool) -> Vec<Applied> {
        let mut lookup = Lookup::default();
        let now = store.clock().now_ms();
        let applied = ids
            .iter()
            .map(|id| {
                let attrs = attrs(&[("id", id), ("mode", "idle")], Some("hub"), None);
                let key = KeyRef {
                    metric: "m",
                    kind: Kind::Counter,
                    scope_name: "s",
                    scope_version: "1",
                    job: "j",
                    instance: "i",
                    attrs: &attrs,
                };
                store
                    .apply(
                        &key,
                        &meta(),
                        point(t, v),
                        now,
                        &mut lookup,
                        Hint::default(),
                    )
                    .unwrap()
            })
            .collect();
        if end {
            store.end_request(&mut lookup);
        }
        applied
    }

    /// The value of every live series by its `id`.
    fn values(store: &Store) -> std::collections::BTreeMap<String, Value> {
        let mut out = std::collections::BTreeMap::new();
        store.for_each_live(|key, series| {
            let id = key.attrs.iter().find(|(k, _)| *k == "id").unwrap().1;
            assert!(out
                .insert(id.to_string(), series.point.value.clone())
                .is_none());
        });
        out
    }

    fn expect(pairs: &[(&str, f64)]) -> std::collections::BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(id, v)| (id.to_string(), Value::Number(*v)))
            .collect()
    }

    #[test]
    fn routes_follow_a_sender_whose_series_change_order() {
        let store = Store::new(Limits::default(), 0, Arc::new(ManualClock::new(1_000)));
        let ids = ["a", "b", "c", "d", "e"];
        assert!(send(&store, &ids, 1.0, 1, true)
            .iter()
            .all(|a| *a == Applied::Inserted));
        assert_eq!(store.routed(), 5);
        // The same series in the same order, then reversed, then rotated: every point goes to
        // its own series.
        assert!(send(&store, &ids, 2.0, 2, true)
            .iter()
            .all(|a| *a == Applied::Updated));
        let reversed = ["e", "d", "c", "b", "a"];
        assert!(send(&store, &reversed, 3.0, 3, true)
            .iter()
            .all(|a| *a == Applied::Updated));
        let mut by_id = expect(&[("a", 3.0), ("b", 3.0), ("c", 3.0), ("d", 3.0), ("e", 3.0)]);
        assert_eq!(values(&store), by_id);
        send(&store, &["c", "d", "e", "a", "b"], 4.0, 4, true);
        send(&store, &["c", "d"], 5.0, 5, true);
        by_id.extend(expect(&[
            ("a", 4.0),
            ("b", 4.0),
            ("c", 5.0),
            ("d", 5.0),
            ("e", 4.0),
        ]));
        assert_eq!(values(&store), by_id);
        // The route is cut to the last request's points.
        assert_eq!(store.routed(), 2);
        assert_eq!(store.len(), 5);
    }

    #[test]
    fn a_changed_value_at_a_routed_position_is_another_series() {
        let store = Store::new(Limits::default(), 0, Arc::new(ManualClock::new(1_000)));
        send(&store, &["a", "b", "c"], 1.0, 1, true);
        // Position 1 was "b": "x" there is a new series, and "b" keeps its value.
        let applied = send(&store, &["a", "x", "c"], 2.0, 2, true);
        assert_eq!(
            applied,
            [Applied::Updated, Applied::Inserted, Applied::Updated]
        );
        assert_eq!(
            values(&store),
            expect(&[("a", 2.0), ("b", 1.0), ("c", 2.0), ("x", 2.0)])
        );
        // And back: "b" is found again (its route entry now names "x").
        send(&store, &["a", "b", "c"], 3.0, 3, true);
        assert_eq!(
            values(&store),
            expect(&[("a", 3.0), ("b", 3.0), ("c", 3.0), ("x", 2.0)])
        );
        assert_eq!(store.len(), 4);
    }

    #[test]
    fn a_routed_series_that_expired_and_whose_slot_was_reused() {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = Store::new(Limits::default(), 1_000, clock.clone());
        send(&store, &["x", "y"], 1.0, 1, true);
        let stale = lock(&store.routes).clone();
        let x = stale.values().next().unwrap()[0];
        // "y" stays alive, "x" expires and is swept; the group lives on.
        clock.advance_ms(600);
        send(&store, &["y"], 2.0, 2, true);
        clock.advance_ms(600);
        assert_eq!(store.sweep(), 1);
        // Many new series of the same group: one of them takes the slot "x" had.
        let fresh: Vec<String> = (0..1_000).map(|n| format!("z{n}")).collect();
        let fresh: Vec<&str> = fresh.iter().map(String::as_str).collect();
        send(&store, &fresh, 7.0, 3, true);
        assert_eq!(store.len(), 1_001);
        assert!(lock(&store.shards[x.shard()]).record(x.slot()).is_some());
        // The route of the first request again: position 0 names the slot of some "z", which
        // is not "x"; "x" comes back as a new series and no "z" changes.
        *lock(&store.routes) = stale;
        assert_eq!(
            send(&store, &["x", "y"], 3.0, 4, true),
            [Applied::Inserted, Applied::Updated]
        );
        let by_id = values(&store);
        assert_eq!(by_id.len(), 1_002);
        assert_eq!(by_id["x"], Value::Number(3.0));
        assert_eq!(by_id["y"], Value::Number(3.0));
        assert!(fresh.iter().all(|z| by_id[*z] == Value::Number(7.0)));
        assert_eq!(store.routed(), 2);
    }

    #[test]
    fn places_pack_shard_and_slot() {
        let p = Place::new(SHARDS - 1, 12_345);
        assert_eq!((p.shard(), p.slot()), (SHARDS - 1, 12_345));
        let last = u32::MAX / SHARDS as u32 - 1;
        let p = Place::new(3, last);
        assert_eq!((p.shard(), p.slot()), (3, last));
        assert_eq!(Place::new(0, last + 1), Place::NONE);
        assert_eq!(Place::new(SHARDS, 0), Place::NONE);
    }

    #[test]
    fn routes_go_with_their_group() {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = Store::new(Limits::default(), 1_000, clock.clone());
        send(&store, &["a", "b"], 1.0, 1, true);
        assert_eq!(store.routed(), 2);
        clock.advance_ms(1_000);
        assert_eq!(store.sweep(), 2);
        assert_eq!(store.routed(), 0);
        assert_eq!(store.interned(), (0, 0));
        // The same sender after its series expired: new series again.
        assert_eq!(
            send(&store, &["a", "b"], 2.0, 2, true),
            [Applied::Inserted, Applied::Inserted]
        );
        assert_eq!(values(&store), expect(&[("a", 2.0), ("b", 2.0)]));
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
