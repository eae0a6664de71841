//! The series store: OTLP data points keyed as the Collector's prometheus exporter keys them
//! (metric name + type + scope + data-point attributes + `job` + `instance`), with the
//! Collector's accumulation rules, series limits (overall and per cluster) and expiry by
//! arrival time.
//!
//! The map is split into shards, each behind its own mutex, so that a render (which visits one
//! shard at a time) never holds up ingestion for more than one shard's worth of copying.
//! `target_info` metadata (resource attributes per job + instance) expires with its series.

use crate::clock::Clock;
use crate::intern::{GroupRef, Groups, Id, Interner};
use crate::translate::Kind;
use foldhash::fast::RandomState;
use hashbrown::HashTable;
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

const SHARDS: usize = 64;

/// One attribute of a series on its way in: key and label value (borrowed from the request
/// where the value is a string, written out otherwise).
pub type Attr<'a> = (&'a str, Cow<'a, str>);

/// A series key as ingest builds it, borrowing its text; `attrs` are sorted by key, keys
/// unique (see [`attrs_of`]).
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    pub metric: &'a str,
    pub kind: Kind,
    pub scope_name: &'a str,
    pub scope_version: &'a str,
    pub job: &'a str,
    pub instance: &'a str,
    pub attrs: &'a [Attr<'a>],
}

/// A stored series' key as the exposition reads it (a view into the store's interned text).
#[derive(Debug, Clone, Copy)]
pub struct SeriesKey<'a> {
    pub metric: &'a str,
    pub kind: Kind,
    pub scope: Scope<'a>,
    pub job: &'a str,
    pub instance: &'a str,
    pub attrs: Attrs<'a>,
}

/// An instrumentation scope (name, version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scope<'a> {
    pub name: &'a str,
    pub version: &'a str,
}

/// The sorted attributes of a stored series.
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a> {
    strings: &'a Interner,
    keys: &'a [Id],
    values: &'a [Id],
}

impl<'a> Attrs<'a> {
    /// `(key, value)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let strings = self.strings;
        self.keys
            .iter()
            .zip(self.values)
            .map(move |(&k, &v)| (strings.text(k), strings.text(v)))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

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
    /// Arrival time (clock ms) of the last update.
    pub updated_ms: u64,
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

/// What happened to one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Inserted,
    Updated,
    /// Older than the stored point (or a non-monotonic delta): ignored, as the Collector does.
    Ignored,
}

/// Attribute values of one series (ids into the interner), in the order of its group's keys;
/// stored inline up to a Kepler series' 7 (6 attributes and `cluster`).
#[derive(Debug, Clone)]
enum Values {
    Inline { len: u8, ids: [Id; INLINE] },
    Heap(Box<[Id]>),
}

const INLINE: usize = 7;

impl Values {
    fn new(ids: &[Id]) -> Self {
        match (u8::try_from(ids.len()), ids.len() <= INLINE) {
            (Ok(len), true) => {
                let mut inline = [0; INLINE];
                inline[..ids.len()].copy_from_slice(ids);
                Values::Inline { len, ids: inline }
            }
            _ => Values::Heap(ids.into()),
        }
    }

    fn as_slice(&self) -> &[Id] {
        match self {
            Values::Inline { len, ids } => ids.get(..*len as usize).unwrap_or(&[]),
            Values::Heap(ids) => ids,
        }
    }
}

/// A stored series with its key: a group (shared by many series) and its attribute values.
#[derive(Debug)]
struct Record {
    group: Id,
    values: Values,
    series: Series,
}

/// One shard: records in a slab, found through a table of slab indices.
#[derive(Debug, Default)]
struct Shard {
    index: HashTable<u32>,
    slots: Vec<Option<Record>>,
    free: Vec<u32>,
}

/// The interned text and groups every series key refers to.
#[derive(Debug, Default)]
struct Names {
    strings: Interner,
    groups: Groups,
    /// Changes whenever the names are written (an id may then have been freed and reused):
    /// ids a [`Lookup`] remembers are only used while it is unchanged.
    generation: u64,
}

/// What consecutive [`Store::apply`] calls share: the group of the previous point (most points
/// of a request share metric, scope, job, instance and attribute keys), checked against the
/// interned text before each use unless the caller says the key's group part is unchanged,
/// the attribute value ids of the previous point's series, and reused buffers.
#[derive(Debug, Default)]
pub struct Lookup {
    group: Option<Id>,
    keys: Vec<Id>,
    values: Vec<Id>,
    /// [`Names::generation`] when `group` and `last` were taken.
    generation: u64,
    /// The group and value ids of the series the previous call found or inserted.
    last: Option<(Id, Vec<Id>)>,
}

/// What the caller of [`Store::apply`] knows of a key compared with its previous call's key
/// (on the same [`Lookup`]): `same_group`: metric, type, scope, job, instance and attribute keys
/// are the same; bit `i` of `same_values` (when `same_group`): the value of attribute `i` is the
/// same text. Only ever a shortcut: the default (nothing known) is always correct.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hint {
    pub same_group: bool,
    pub same_values: u64,
}

/// Whether group `id` is (still) the group of `key`, comparing text.
fn group_is(names: &Names, id: Id, key: &KeyRef<'_>) -> bool {
    let Some(g) = names.groups.group(id) else {
        return false;
    };
    let text = |id| names.strings.text(id);
    g.kind == key.kind
        && g.keys.len() == key.attrs.len()
        && text(g.metric) == key.metric
        && text(g.job) == key.job
        && text(g.instance) == key.instance
        && text(g.scope_name) == key.scope_name
        && text(g.scope_version) == key.scope_version
        && g.keys
            .iter()
            .zip(key.attrs)
            .all(|(&k, (name, _))| text(k) == *name)
}

/// Ids of a key whose strings and group are all interned.
struct Resolved {
    group: Id,
    hash: u64,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    /// Locked before any shard.
    names: RwLock<Names>,
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

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The hash of a series: its group and the text of its attribute values (so that a known
/// series is found from a request's text without looking each value up in the interner).
fn series_hash<'t>(hasher: &RandomState, group: Id, values: impl Iterator<Item = &'t str>) -> u64 {
    let mut h = hasher.build_hasher();
    h.write_u32(group);
    for v in values {
        h.write(v.as_bytes());
        // Not a byte of any UTF-8 text: "ab","c" and "a","bc" hash apart.
        h.write_u8(0xff);
    }
    h.finish()
}

/// The hash of a stored series.
fn record_hash(hasher: &RandomState, strings: &Interner, r: &Record) -> u64 {
    series_hash(
        hasher,
        r.group,
        r.values.as_slice().iter().map(|&id| strings.text(id)),
    )
}

impl Shard {
    /// The slot of the series with `group` and attribute value ids `values`.
    fn find(&self, hash: u64, group: Id, values: &[Id]) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                slots
                    .get(i as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|r| r.group == group && r.values.as_slice() == values)
            })
            .copied()
    }

    /// The slot of the series with `group` and the attribute values of `attrs`, comparing text;
    /// value `i` is compared by id with `known[i]` instead where bit `i` of `known_mask` is set.
    fn find_text(
        &self,
        hash: u64,
        group: Id,
        strings: &Interner,
        attrs: &[Attr<'_>],
        (known, known_mask): (&[Id], u64),
    ) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                slots
                    .get(i as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|r| {
                        let values = r.values.as_slice();
                        r.group == group
                            && values.len() == attrs.len()
                            && values
                                .iter()
                                .zip(attrs)
                                .enumerate()
                                .all(|(at, (&id, (_, v)))| match known.get(at) {
                                    Some(&k) if at < 64 && known_mask >> at & 1 == 1 => id == k,
                                    _ => strings.text(id) == &**v,
                                })
                    })
            })
            .copied()
    }

    fn series_mut(&mut self, slot: u32) -> Option<&mut Series> {
        self.slots
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .map(|r| &mut r.series)
    }

    fn insert(&mut self, hasher: &RandomState, strings: &Interner, hash: u64, record: Record) {
        let slots = &self.slots;
        let slot = match self.free.pop() {
            Some(slot) if slots.get(slot as usize).is_some_and(Option::is_none) => slot,
            _ => match u32::try_from(self.slots.len()) {
                Ok(slot) => slot,
                // 4 billion series in one shard: the limits stop this long before.
                Err(_) => return,
            },
        };
        match self.slots.get_mut(slot as usize) {
            Some(place) => *place = Some(record),
            None => self.slots.push(Some(record)),
        }
        let slots = &self.slots;
        self.index.insert_unique(hash, slot, |&i| {
            slots
                .get(i as usize)
                .and_then(Option::as_ref)
                .map_or(0, |r| record_hash(hasher, strings, r))
        });
    }
}

/// Updates a stored series with a point.
fn update(series: &mut Series, meta: &Arc<Meta>, point: Point, now_ms: u64) -> Applied {
    if !Arc::ptr_eq(&series.meta, meta) && *series.meta != **meta {
        series.meta = meta.clone();
    }
    let applied = merge(&mut series.point, point);
    if applied != Applied::Ignored {
        series.updated_ms = now_ms;
    }
    applied
}

impl Store {
    pub fn new(limits: Limits, expiration_ms: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            names: RwLock::new(Names::default()),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::default(),
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

    /// Interned strings and groups held (for tests and benchmarks: they must follow the live
    /// series, not everything ever seen).
    pub fn interned(&self) -> (usize, usize) {
        let names = read(&self.names);
        (names.strings.len(), names.groups.len())
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

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[((hash >> 32) as usize) % SHARDS]
    }

    /// The group of `key` (when it is interned) and the series hash.
    fn resolve(
        &self,
        names: &Names,
        key: &KeyRef<'_>,
        lookup: &mut Lookup,
        hint: Hint,
    ) -> Option<Resolved> {
        let strings = &names.strings;
        let unchanged = hint.same_group && lookup.generation == names.generation;
        if !unchanged {
            lookup.last = None;
        }
        let group = match lookup
            .group
            .filter(|&g| unchanged || group_is(names, g, key))
        {
            Some(group) => group,
            None => {
                lookup.keys.clear();
                for (k, _) in key.attrs {
                    lookup.keys.push(strings.get(k)?);
                }
                let group = names.groups.get(&GroupRef {
                    metric: strings.get(key.metric)?,
                    kind: key.kind,
                    scope_name: strings.get(key.scope_name)?,
                    scope_version: strings.get(key.scope_version)?,
                    job: strings.get(key.job)?,
                    instance: strings.get(key.instance)?,
                    keys: &lookup.keys,
                })?;
                lookup.group = Some(group);
                lookup.last = None;
                group
            }
        };
        lookup.generation = names.generation;
        Some(Resolved {
            group,
            hash: series_hash(&self.hasher, group, key.attrs.iter().map(|(_, v)| &**v)),
        })
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
            if let Some(r) = self.resolve(&names, key, lookup, hint) {
                let known = match &lookup.last {
                    Some((group, ids)) if *group == r.group => (&ids[..], hint.same_values),
                    _ => (&[][..], 0),
                };
                let mut shard = lock(self.shard(r.hash));
                let found = shard.find_text(r.hash, r.group, &names.strings, key.attrs, known);
                if let Some(record) = found
                    .and_then(|slot| shard.slots.get_mut(slot as usize))
                    .and_then(Option::as_mut)
                {
                    match &mut lookup.last {
                        Some((group, ids)) => {
                            *group = r.group;
                            ids.clear();
                            ids.extend_from_slice(record.values.as_slice());
                        }
                        None => lookup.last = Some((r.group, record.values.as_slice().to_vec())),
                    }
                    return Ok(update(&mut record.series, meta, point, now_ms));
                }
            }
        }
        lookup.group = None;
        lookup.last = None;
        self.insert(key, meta, point, now_ms, &mut lookup.values)
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
        names.generation = names.generation.wrapping_add(1);
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
            return match shard.series_mut(slot) {
                Some(series) => Ok(update(series, meta, point, now_ms)),
                None => Err(Reject::Invalid),
            };
        }
        let cluster = key
            .attrs
            .binary_search_by(|(k, _)| (*k).cmp("cluster"))
            .map_or("", |i| &*key.attrs[i].1);
        if let Err(reject) = self.reserve(cluster) {
            release_values(names, Some(group), values);
            return Err(reject);
        }
        shard.insert(
            &self.hasher,
            &names.strings,
            hash,
            Record {
                group,
                values: Values::new(values),
                series: Series {
                    meta: meta.clone(),
                    point,
                    updated_ms: now_ms,
                },
            },
        );
        Ok(Applied::Inserted)
    }

    /// Counts a new series against the limits.
    fn reserve(&self, cluster: &str) -> Result<(), Reject> {
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

    fn release(&self, cluster: &str, n: usize) {
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

    /// Removes expired series and targets; returns how many series went. Their interned text
    /// and groups are released with them.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        let mut removed = 0;
        for shard in &self.shards {
            let mut guard = write(&self.names);
            let names = &mut *guard;
            names.generation = names.generation.wrapping_add(1);
            let mut shard = lock(shard);
            let Shard { index, slots, free } = &mut *shard;
            index.retain(|&mut i| {
                let Some(place) = slots.get_mut(i as usize) else {
                    return false;
                };
                let keep = place
                    .as_ref()
                    .is_some_and(|r| self.alive(r.series.updated_ms, now));
                if keep {
                    return true;
                }
                if let Some(record) = place.take() {
                    let cluster = names
                        .groups
                        .group(record.group)
                        .and_then(|g| g.cluster)
                        .and_then(|at| record.values.as_slice().get(at))
                        .map_or("", |&id| names.strings.text(id));
                    self.release(cluster, 1);
                    for &id in record.values.as_slice() {
                        names.strings.release(id);
                    }
                    names.groups.release(record.group, &mut names.strings);
                    removed += 1;
                }
                free.push(i);
                false
            });
            while slots.last().is_some_and(Option::is_none) {
                slots.pop();
            }
            let len = slots.len();
            if free.len() > len {
                free.retain(|&i| (i as usize) < len);
            }
        }
        lock(&self.targets).retain(|_, t| self.alive(t.updated_ms, now));
        removed
    }

    /// Calls `f` for every live series, one shard at a time (each shard locked only while it is
    /// visited).
    pub fn for_each_live(&self, mut f: impl FnMut(&SeriesKey<'_>, &Series)) {
        let now = self.clock.now_ms();
        for shard in &self.shards {
            let names = read(&self.names);
            let shard = lock(shard);
            for record in shard.slots.iter().flatten() {
                if !self.alive(record.series.updated_ms, now) {
                    continue;
                }
                let Some(group) = names.groups.group(record.group) else {
                    continue;
                };
                let text = |id| names.strings.text(id);
                let key = SeriesKey {
                    metric: text(group.metric),
                    kind: group.kind,
                    scope: Scope {
                        name: text(group.scope_name),
                        version: text(group.scope_version),
                    },
                    job: text(group.job),
                    instance: text(group.instance),
                    attrs: Attrs {
                        strings: &names.strings,
                        keys: &group.keys,
                        values: record.values.as_slice(),
                    },
                };
                f(&key, &record.series);
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

/// Builds the sorted attribute set of a data point into `out`: duplicate keys keep their first
/// value; `cluster` is inserted when absent (`insert`) or set (`force`, from an auth token).
/// `value` writes an attribute's value as a label value.
pub fn attrs_of<'a, T>(
    attributes: impl IntoIterator<Item = T>,
    pair: impl Fn(T) -> Attr<'a>,
    insert: Option<&'a str>,
    force: Option<&'a str>,
    out: &mut Vec<Attr<'a>>,
) {
    sorted_attrs(
        attributes.into_iter().map(pair),
        Cow::Borrowed,
        insert,
        force,
        out,
    );
}

/// [`attrs_of`] for any kind of value (`cluster` makes the value of an inserted or forced
/// `cluster`): ingest builds the layout of a point's attributes with it (which attribute goes
/// where) and reuses it for the next points with the same keys.
pub fn sorted_attrs<'a, V>(
    attributes: impl IntoIterator<Item = (&'a str, V)>,
    cluster: impl Fn(&'a str) -> V,
    insert: Option<&'a str>,
    force: Option<&'a str>,
    out: &mut Vec<(&'a str, V)>,
) {
    out.clear();
    out.extend(attributes);
    // Stable sort keeps the first of duplicate keys first; dedup keeps it.
    if !out.is_sorted_by(|a, b| a.0 < b.0) {
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.dedup_by(|later, first| later.0 == first.0);
    }
    let found = out.binary_search_by(|p| p.0.cmp("cluster"));
    let value = force.or_else(|| if found.is_ok() { None } else { insert });
    if let Some(value) = value {
        match found {
            Ok(i) => out[i].1 = cluster(value),
            Err(i) => out.insert(i, ("cluster", cluster(value))),
        }
    }
}

/// The `cluster` attribute of a sorted attribute set ("" when absent).
pub fn cluster_of<'s, 'a>(attrs: &'s [Attr<'a>]) -> &'s str {
    attrs
        .binary_search_by(|p| p.0.cmp("cluster"))
        .map_or("", |i| &attrs[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn attrs<'a>(
        pairs: &[(&'a str, &'a str)],
        insert: Option<&'a str>,
        force: Option<&'a str>,
    ) -> Vec<Attr<'a>> {
        let mut out = Vec::new();
        attrs_of(
            pairs.iter().copied(),
            |(k, v)| (k, Cow::Borrowed(v)),
            insert,
            force,
            &mut out,
        );
        out
    }

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
        let a = attrs(&[("b", "1"), ("a", "x"), ("a", "y")], Some("hub"), None);
        let got: Vec<_> = a.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(got, ["a=x", "b=1", "cluster=hub"]);
        let a = attrs(&[("cluster", "c1")], Some("hub"), None);
        assert_eq!(cluster_of(&a), "c1");
        let a = attrs(&[("cluster", "c2")], Some("hub"), Some("c1"));
        assert_eq!(cluster_of(&a), "c1");
        assert_eq!(a.len(), 1);
        // Already sorted, with a duplicate: still deduplicated.
        let a = attrs(&[("a", "x"), ("a", "y")], None, None);
        assert_eq!(a.len(), 1);
        assert_eq!(cluster_of(&a), "");
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
        assert_eq!(
            apply(&store, "a", "c1", point(1, 1.0), 0),
            Ok(Applied::Inserted)
        );
        assert_eq!(
            apply(&store, "b", "c1", point(1, 1.0), 0),
            Ok(Applied::Inserted)
        );
        assert_eq!(
            apply(&store, "c", "c1", point(1, 1.0), 0),
            Err(Reject::ClusterSeriesLimit)
        );
        assert_eq!(
            apply(&store, "a", "c1", point(2, 2.0), 0),
            Ok(Applied::Updated)
        );
        assert_eq!(
            apply(&store, "a", "c2", point(1, 1.0), 0),
            Ok(Applied::Inserted)
        );
        assert_eq!(
            apply(&store, "b", "c2", point(1, 1.0), 0),
            Err(Reject::SeriesLimit)
        );
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
