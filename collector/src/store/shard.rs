//! One shard of the store: series records in a slab, found through a hash table of slab
//! indices by the series hash (group id and attribute value text, see [`series_hash`]), and
//! listed per family in label order ([`Families`]).

use super::family::{Families, FamilyIndex, Registry};
use super::keys::Attr;
use super::point::{self, Applied, Meta, Point, Series};
use crate::intern::{Id, Interner};
use foldhash::fast::RandomState;
use hashbrown::HashTable;
use std::cmp::Ordering;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

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
pub(super) struct Record {
    pub(super) group: Id,
    values: Values,
    pub(super) series: Series,
}

impl Record {
    pub(super) fn new(group: Id, values: &[Id], series: Series) -> Self {
        Self {
            group,
            values: Values::new(values),
            series,
        }
    }

    /// The attribute value ids, in the order of the group's keys.
    pub(super) fn values(&self) -> &[Id] {
        self.values.as_slice()
    }
}

/// One shard: records in a slab, found through a table of slab indices.
#[derive(Debug)]
pub(super) struct Shard {
    /// Its place in the store (its bit in the [`Registry`]).
    number: usize,
    index: HashTable<u32>,
    slots: Vec<Option<Record>>,
    free: Vec<u32>,
    families: Families,
}

/// The hash of a series: its group and the text of its attribute values (so that a known
/// series is found from a request's text without looking each value up in the interner).
pub(super) fn series_hash<'t>(
    hasher: &RandomState,
    group: Id,
    values: impl Iterator<Item = &'t str>,
) -> u64 {
    let mut h = hasher.build_hasher();
    h.write_u32(group);
    for v in values {
        h.write(v.as_bytes());
        // Not a byte of any UTF-8 text: "ab","c" and "a","bc" hash apart.
        h.write_u8(0xff);
    }
    h.finish()
}

/// The record in slot `i` (none for a free or missing slot).
fn record_at(slots: &[Option<Record>], i: u32) -> Option<&Record> {
    slots.get(i as usize).and_then(Option::as_ref)
}

/// Whether `r` is the series with `group` and the attribute values of `attrs`, comparing
/// text; value `i` is compared by id with `known[i]` instead where bit `i` of `known_mask` is
/// set.
#[inline]
fn is_key(
    r: &Record,
    group: Id,
    strings: &Interner,
    attrs: &[Attr<'_>],
    (known, known_mask): (&[Id], u64),
) -> bool {
    let values = r.values();
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
}

/// The hash of a stored series.
fn record_hash(hasher: &RandomState, strings: &Interner, r: &Record) -> u64 {
    series_hash(
        hasher,
        r.group,
        r.values().iter().map(|&id| strings.text(id)),
    )
}

impl Shard {
    pub(super) fn new(number: usize) -> Self {
        Self {
            number,
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            families: Families::default(),
        }
    }

    /// The slot of the series with `group` and attribute value ids `values`.
    pub(super) fn find(&self, hash: u64, group: Id, values: &[Id]) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                record_at(slots, i).is_some_and(|r| r.group == group && r.values() == values)
            })
            .copied()
    }

    /// The slot of the series with `group` and the attribute values of `attrs`, comparing text
    /// (see [`is_key`] for `known`).
    pub(super) fn find_text(
        &self,
        hash: u64,
        group: Id,
        strings: &Interner,
        attrs: &[Attr<'_>],
        known: (&[Id], u64),
    ) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                record_at(slots, i).is_some_and(|r| is_key(r, group, strings, attrs, known))
            })
            .copied()
    }

    /// Whether `slot` holds the series with `group` and the attribute values of `attrs`
    /// (see [`is_key`]): a series' key is unique in the store, so a record with that key is
    /// the series, whichever way its slot was found.
    pub(super) fn holds(
        &self,
        slot: u32,
        group: Id,
        strings: &Interner,
        attrs: &[Attr<'_>],
        known: (&[Id], u64),
    ) -> bool {
        record_at(&self.slots, slot).is_some_and(|r| is_key(r, group, strings, attrs, known))
    }

    /// The record in `slot`.
    pub(super) fn record(&self, slot: u32) -> Option<&Record> {
        record_at(&self.slots, slot)
    }

    /// Applies a point to the series in `slot` (none there: `None`); a series whose metric now
    /// translates to another family name moves to that family.
    pub(super) fn update(
        &mut self,
        slot: u32,
        meta: &Arc<Meta>,
        incoming: Point,
        now_ms: u64,
        registry: &Registry,
    ) -> Option<Applied> {
        let record = self.slots.get_mut(slot as usize).and_then(Option::as_mut)?;
        let old = &record.series.meta;
        let moved = (!Arc::ptr_eq(old, meta) && old.prom_name != meta.prom_name)
            .then(|| old.prom_name.clone());
        let applied = point::update(&mut record.series, meta, incoming, now_ms);
        if let Some(old) = moved {
            if self.families.remove(&old, slot) {
                registry.removed(&old, self.number);
            }
            if let Some(name) = self.families.add(&meta.prom_name, slot) {
                registry.added(&name, self.number);
            }
        }
        Some(applied)
    }

    /// Marks the series in `slot` stale (see [`super::point::STALE`]); `None` when the slot is
    /// empty.
    pub(super) fn mark_stale(&mut self, slot: u32) -> Option<()> {
        let record = self.slots.get_mut(slot as usize).and_then(Option::as_mut)?;
        record.series.updated_ms = super::point::STALE;
        Some(())
    }

    /// The index of family `name` in this shard.
    pub(super) fn family(&self, name: &str) -> Option<&FamilyIndex> {
        self.families.get(name)
    }

    /// Puts the index of family `name` in label order (`cmp`) where series were added since
    /// the last time; returns whether this shard holds the family.
    pub(super) fn sort_family(
        &mut self,
        name: &str,
        mut cmp: impl FnMut(&Record, &Record) -> Ordering,
    ) -> bool {
        let version = match self.families.get(name) {
            Some(index) if index.sorted < index.slots.len() => self.families.next_version(),
            Some(_) => return true,
            None => return false,
        };
        let slots = &self.slots;
        let Some(index) = self.families.get_mut(name) else {
            return false;
        };
        // A stable sort finds the sorted prefix as one run and merges the new tail into it.
        index
            .slots
            .sort_by(|&a, &b| match (record_at(slots, a), record_at(slots, b)) {
                (Some(a), Some(b)) => cmp(a, b),
                (a, b) => a.is_some().cmp(&b.is_some()),
            });
        index.sorted = index.slots.len();
        index.version = version;
        true
    }

    /// Every record, in slot order.
    pub(super) fn records(&self) -> impl Iterator<Item = &Record> {
        self.slots.iter().flatten()
    }

    /// Inserts a new series; returns its slot.
    pub(super) fn insert(
        &mut self,
        hasher: &RandomState,
        strings: &Interner,
        hash: u64,
        record: Record,
        registry: &Registry,
    ) -> Option<u32> {
        let slots = &self.slots;
        let slot = match self.free.pop() {
            Some(slot) if slots.get(slot as usize).is_some_and(Option::is_none) => slot,
            _ => match u32::try_from(self.slots.len()) {
                Ok(slot) => slot,
                // 4 billion series in one shard: the limits stop this long before.
                Err(_) => return None,
            },
        };
        if let Some(name) = self.families.add(&record.series.meta.prom_name, slot) {
            registry.added(&name, self.number);
        }
        match self.slots.get_mut(slot as usize) {
            Some(place) => *place = Some(record),
            None => self.slots.push(Some(record)),
        }
        let slots = &self.slots;
        self.index.insert_unique(hash, slot, |&i| {
            record_at(slots, i).map_or(0, |r| record_hash(hasher, strings, r))
        });
        Some(slot)
    }

    /// Keeps the records `keep` accepts and hands the others to `removed`; their slots are
    /// freed for reuse (trailing ones given back) and leave their family.
    pub(super) fn retain(
        &mut self,
        mut keep: impl FnMut(&Record) -> bool,
        mut removed: impl FnMut(Record),
        registry: &Registry,
    ) {
        let Shard {
            number,
            index,
            slots,
            free,
            families,
        } = self;
        let live = index.len();
        index.retain(|&mut i| {
            let Some(place) = slots.get_mut(i as usize) else {
                return false;
            };
            if place.as_ref().is_some_and(&mut keep) {
                return true;
            }
            if let Some(record) = place.take() {
                removed(record);
            }
            free.push(i);
            false
        });
        if index.len() != live {
            families.retain(
                |slot| record_at(slots, slot).is_some(),
                |name| registry.removed(name, *number),
            );
        }
        while slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
        let len = slots.len();
        if free.len() > len {
            free.retain(|&i| (i as usize) < len);
        }
    }
}
