//! A shard's series per family (Prometheus metric name), kept in label order so that a render
//! visits a family's series in order, a few at a time, without copying them first
//! ([`Families`]); and the store-wide [`Registry`] of family names with the shards that hold
//! each. Both change only under the shard's lock (the registry's own lock is taken after it).

use super::locks::lock;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

/// The slots of one family's series in one shard: `slots[..sorted]` in label order, the rest
/// added since (sorted by the next visit).
#[derive(Debug)]
pub(super) struct FamilyIndex {
    pub(super) slots: Vec<u32>,
    pub(super) sorted: usize,
    /// Changes whenever a slot goes or the order is rebuilt: a visit that stopped at a
    /// position resumes there only while this is unchanged.
    pub(super) version: u64,
}

/// A shard's family indexes by family name.
#[derive(Debug, Default)]
pub(super) struct Families {
    map: HashMap<Arc<str>, FamilyIndex>,
    /// Where versions come from: unique within the shard, so an index removed and made again
    /// never repeats one.
    epoch: u64,
}

impl Families {
    pub(super) fn get(&self, name: &str) -> Option<&FamilyIndex> {
        self.map.get(name)
    }

    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut FamilyIndex> {
        self.map.get_mut(name)
    }

    /// A version no index of this shard had before.
    pub(super) fn next_version(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// Adds `slot` to family `name`; returns the name when the family is new in this shard.
    pub(super) fn add(&mut self, name: &str, slot: u32) -> Option<Arc<str>> {
        if let Some(index) = self.map.get_mut(name) {
            index.slots.push(slot);
            return None;
        }
        let name: Arc<str> = name.into();
        let version = self.next_version();
        self.map.insert(
            name.clone(),
            FamilyIndex {
                slots: vec![slot],
                sorted: 0,
                version,
            },
        );
        Some(name)
    }

    /// Removes `slot` from family `name` (a linear search: series move between families only
    /// when a metric's unit changes); returns whether the family left this shard.
    pub(super) fn remove(&mut self, name: &str, slot: u32) -> bool {
        let version = self.next_version();
        let Some(index) = self.map.get_mut(name) else {
            return false;
        };
        if let Some(at) = index.slots.iter().position(|&s| s == slot) {
            index.slots.remove(at);
            if at < index.sorted {
                index.sorted -= 1;
            }
            index.version = version;
        }
        if !index.slots.is_empty() {
            return false;
        }
        self.map.remove(name);
        true
    }

    /// Keeps the slots `keep` accepts, in order; families left empty are removed and handed to
    /// `gone`.
    pub(super) fn retain(&mut self, keep: impl Fn(u32) -> bool, mut gone: impl FnMut(&Arc<str>)) {
        let epoch = &mut self.epoch;
        self.map.retain(|name, index| {
            let before = index.slots.len();
            let mut kept_sorted = 0;
            let mut at = 0;
            index.slots.retain(|&slot| {
                let kept = keep(slot);
                if kept && at < index.sorted {
                    kept_sorted += 1;
                }
                at += 1;
                kept
            });
            if index.slots.len() != before {
                index.sorted = kept_sorted;
                *epoch += 1;
                index.version = *epoch;
                if index.slots.capacity() > 2 * index.slots.len() + 64 {
                    index
                        .slots
                        .shrink_to(index.slots.len() + index.slots.len() / 4);
                }
            }
            if index.slots.is_empty() {
                gone(name);
                return false;
            }
            true
        });
    }
}

/// Every family name in the store with the shards holding some of its series (bit `i`: shard
/// `i`), in name order.
#[derive(Debug, Default)]
pub(super) struct Registry(Mutex<BTreeMap<Arc<str>, u64>>);

impl Registry {
    /// Shard `shard` holds series of `name` now.
    pub(super) fn added(&self, name: &Arc<str>, shard: usize) {
        *lock(&self.0).entry(name.clone()).or_default() |= bit(shard);
    }

    /// Shard `shard` holds no series of `name` any more.
    pub(super) fn removed(&self, name: &str, shard: usize) {
        let mut map = lock(&self.0);
        if let Some(mask) = map.get_mut(name) {
            *mask &= !bit(shard);
            if *mask == 0 {
                map.remove(name);
            }
        }
    }

    /// The first family whose name sorts after `after` (the first of all: `None`), with its
    /// shards.
    pub(super) fn next(&self, after: Option<&str>) -> Option<(Arc<str>, u64)> {
        let map = lock(&self.0);
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        map.range::<str, _>((from, Bound::Unbounded))
            .next()
            .map(|(name, mask)| (name.clone(), *mask))
    }
}

/// The registry's bit for shard `shard` (there are at most 64 shards).
fn bit(shard: usize) -> u64 {
    1u64.checked_shl(shard as u32).unwrap_or(0)
}
