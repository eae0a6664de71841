//! Reference-counted interning for the series store: each distinct string is stored once, in
//! one text arena, and referred to by a `u32` [`Id`]; [`Groups`] does the same for the part of
//! a series key that many series share (metric, type, scope, job, instance, attribute keys),
//! each with the label [`Layout`] of its series.

use crate::labels::{GroupText, Layout, Source};
use crate::translate::Kind;
use foldhash::fast::RandomState;
use hashbrown::HashTable;
use std::hash::BuildHasher;

/// The id of an interned string or group.
pub type Id = u32;

/// Pops free ids until one that `usable` accepts. Tables drop their trailing free entries, so
/// the free list can hold ids past the end; those are skipped (and the table then grows by
/// pushing, which only happens once the free list is empty).
fn take_free(free: &mut Vec<Id>, usable: impl Fn(Id) -> bool) -> Option<Id> {
    while let Some(id) = free.pop() {
        if usable(id) {
            return Some(id);
        }
    }
    None
}

/// Arenas with less dead text than this are never compacted (not worth the copy).
const COMPACT_MIN_DEAD: usize = 64 << 10;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    start: usize,
    len: u32,
    /// 0: free (the id is on the free list).
    refs: u32,
}

/// Interned strings with reference counts. Every holder takes a reference ([`Interner::intern`]
/// / [`Interner::acquire`]) and gives it back ([`Interner::release`]); a string whose last
/// reference goes is forgotten and its id reused. When more than half of the arena is text of
/// forgotten strings, the arena is compacted, so memory follows the live strings as label
/// values churn (containers come and go).
#[derive(Debug, Default)]
pub struct Interner {
    text: String,
    entries: Vec<Entry>,
    free: Vec<Id>,
    index: HashTable<Id>,
    hasher: RandomState,
    /// Bytes of `text` that belong to no live entry.
    dead: usize,
}

fn text_of<'t>(text: &'t str, entry: &Entry) -> &'t str {
    text.get(entry.start..entry.start + entry.len as usize)
        .unwrap_or("")
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `s` if it is interned (no reference taken).
    pub fn get(&self, s: &str) -> Option<Id> {
        let hash = self.hasher.hash_one(s);
        let (text, entries) = (&self.text, &self.entries);
        self.index
            .find(hash, |&id| {
                entries
                    .get(id as usize)
                    .is_some_and(|e| text_of(text, e) == s)
            })
            .copied()
    }

    /// The text of `id` ("" for an id that is not live).
    pub fn text(&self, id: Id) -> &str {
        match self.entries.get(id as usize) {
            Some(e) if e.refs > 0 => text_of(&self.text, e),
            _ => "",
        }
    }

    /// Takes one more reference on a live id.
    pub fn acquire(&mut self, id: Id) {
        if let Some(e) = self.entries.get_mut(id as usize) {
            if e.refs > 0 {
                e.refs = e.refs.saturating_add(1);
            }
        }
    }

    /// Interns `s` and takes a reference on it. `None` only when `u32` ids or a string's
    /// length (4 GiB) run out.
    pub fn intern(&mut self, s: &str) -> Option<Id> {
        if let Some(id) = self.get(s) {
            self.acquire(id);
            return Some(id);
        }
        let len = u32::try_from(s.len()).ok()?;
        let entries = &self.entries;
        let id = match take_free(&mut self.free, |id| {
            entries.get(id as usize).is_some_and(|e| e.refs == 0)
        }) {
            Some(id) => id,
            None => Id::try_from(self.entries.len()).ok()?,
        };
        let entry = Entry {
            start: self.text.len(),
            len,
            refs: 1,
        };
        self.text.push_str(s);
        match self.entries.get_mut(id as usize) {
            Some(slot) => *slot = entry,
            None => self.entries.push(entry),
        }
        let hash = self.hasher.hash_one(s);
        let (text, entries, hasher) = (&self.text, &self.entries, &self.hasher);
        self.index.insert_unique(hash, id, |&other| {
            hasher.hash_one(entries.get(other as usize).map_or("", |e| text_of(text, e)))
        });
        Some(id)
    }

    /// Gives back one reference; the string is forgotten with its last one.
    pub fn release(&mut self, id: Id) {
        let Some(e) = self.entries.get_mut(id as usize) else {
            return;
        };
        if e.refs == 0 || e.refs == u32::MAX {
            // Not live, or saturated (then it stays: it was shared by 4 billion holders).
            return;
        }
        e.refs -= 1;
        if e.refs > 0 {
            return;
        }
        let entry = *e;
        let hash = self.hasher.hash_one(text_of(&self.text, &entry));
        if let Ok(found) = self.index.find_entry(hash, |&other| other == id) {
            found.remove();
        }
        self.dead += entry.len as usize;
        if let Some(e) = self.entries.get_mut(id as usize) {
            *e = Entry::default();
        }
        self.free.push(id);
        while self.entries.last().is_some_and(|e| e.refs == 0) {
            self.entries.pop();
        }
        self.maybe_compact();
    }

    /// Live strings.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of text held (live and not yet compacted away).
    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }

    /// Ids ever handed out at once (the entry table's length; freed ids are reused).
    pub fn id_capacity(&self) -> usize {
        self.entries.len()
    }

    fn maybe_compact(&mut self) {
        if self.dead < COMPACT_MIN_DEAD || self.dead * 2 < self.text.len() {
            return;
        }
        let mut text = String::with_capacity(self.text.len() - self.dead);
        for e in self.entries.iter_mut().filter(|e| e.refs > 0) {
            let start = text.len();
            text.push_str(text_of(&self.text, e));
            e.start = start;
        }
        self.text = text;
        self.dead = 0;
        let len = self.entries.len();
        self.free.retain(|&id| (id as usize) < len);
        if self.entries.capacity() > 2 * len + 64 {
            self.entries.shrink_to(len + len / 4);
        }
        if self.free.capacity() > 2 * self.free.len() + 64 {
            self.free.shrink_to_fit();
        }
        let (text, entries, hasher) = (&self.text, &self.entries, &self.hasher);
        self.index.shrink_to(self.index.len(), |&id| {
            hasher.hash_one(entries.get(id as usize).map_or("", |e| text_of(text, e)))
        });
    }
}

/// What many series share: metric name, type, scope name and version, job, instance (ids into
/// the [`Interner`]) and the sorted attribute keys, held as `K`: borrowed to look a group up
/// ([`GroupRef`]), owned in a stored [`Group`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupKey<K> {
    pub metric: Id,
    pub kind: Kind,
    pub scope_name: Id,
    pub scope_version: Id,
    pub job: Id,
    pub instance: Id,
    pub keys: K,
}

/// A group key borrowing its attribute keys.
pub type GroupRef<'a> = GroupKey<&'a [Id]>;

impl<K> GroupKey<K> {
    /// The same metric, type, scope, job and instance with `keys`.
    pub fn with_keys<L>(&self, keys: L) -> GroupKey<L> {
        GroupKey {
            metric: self.metric,
            kind: self.kind,
            scope_name: self.scope_name,
            scope_version: self.scope_version,
            job: self.job,
            instance: self.instance,
            keys,
        }
    }
}

/// A stored group.
#[derive(Debug)]
pub struct Group {
    pub key: GroupKey<Box<[Id]>>,
    /// Where `cluster` is among the keys.
    pub cluster: Option<usize>,
    /// The label names of the group's series.
    pub layout: Layout,
    refs: u32,
}

impl Group {
    fn as_ref(&self) -> GroupRef<'_> {
        self.key.with_keys(&self.key.keys)
    }

    /// Writes the labels of the group's series with attribute value ids `values` into `out`
    /// (see [`Layout::labels`]).
    pub fn labels<'a>(
        &'a self,
        strings: &'a Interner,
        values: &[Id],
        out: &mut Vec<(&'a str, &'a str)>,
    ) {
        let k = &self.key;
        let text = |id: Option<&Id>| id.map_or("", |&id| strings.text(id));
        self.layout.labels(
            |i| text(k.keys.get(i)),
            |source| match source {
                Source::Attr(i) => text(values.get(i)),
                Source::ScopeName => strings.text(k.scope_name),
                Source::ScopeVersion => strings.text(k.scope_version),
                Source::Job => strings.text(k.job),
                Source::Instance => strings.text(k.instance),
            },
            out,
        );
    }

    /// The ids of the strings the group holds a reference on.
    fn strings(&self) -> impl Iterator<Item = Id> + '_ {
        let k = &self.key;
        [k.metric, k.scope_name, k.scope_version, k.job, k.instance]
            .into_iter()
            .chain(k.keys.iter().copied())
    }
}

/// Interned groups with reference counts (one per series of the group).
#[derive(Debug, Default)]
pub struct Groups {
    groups: Vec<Option<Group>>,
    free: Vec<Id>,
    index: HashTable<Id>,
    hasher: RandomState,
}

fn hash_group(hasher: &RandomState, g: &GroupRef<'_>) -> u64 {
    hasher.hash_one(g)
}

impl Groups {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &GroupRef<'_>) -> Option<Id> {
        let hash = hash_group(&self.hasher, key);
        let groups = &self.groups;
        self.index
            .find(hash, |&id| {
                groups
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|g| g.as_ref() == *key)
            })
            .copied()
    }

    pub fn group(&self, id: Id) -> Option<&Group> {
        self.groups.get(id as usize).and_then(Option::as_ref)
    }

    /// Takes a reference on `key`'s group, creating it when new (then the group takes a
    /// reference on each of its strings in `strings`; the caller's ids must be live).
    pub fn intern(&mut self, key: &GroupRef<'_>, strings: &mut Interner) -> Option<Id> {
        if let Some(id) = self.get(key) {
            if let Some(g) = self.groups.get_mut(id as usize).and_then(Option::as_mut) {
                g.refs = g.refs.saturating_add(1);
            }
            return Some(id);
        }
        let groups = &self.groups;
        let id = match take_free(&mut self.free, |id| {
            groups.get(id as usize).is_some_and(Option::is_none)
        }) {
            Some(id) => id,
            None => Id::try_from(self.groups.len()).ok()?,
        };
        let cluster = key.keys.iter().position(|&k| strings.text(k) == "cluster");
        let keys: Vec<&str> = key.keys.iter().map(|&k| strings.text(k)).collect();
        let layout = Layout::new(GroupText {
            keys: &keys,
            scope_name: strings.text(key.scope_name),
            scope_version: strings.text(key.scope_version),
            job: strings.text(key.job),
            instance: strings.text(key.instance),
        });
        let group = Group {
            key: key.with_keys(key.keys.into()),
            cluster,
            layout,
            refs: 1,
        };
        for s in group.strings() {
            strings.acquire(s);
        }
        match self.groups.get_mut(id as usize) {
            Some(slot) => *slot = Some(group),
            None => self.groups.push(Some(group)),
        }
        let hash = hash_group(&self.hasher, key);
        let (groups, hasher) = (&self.groups, &self.hasher);
        self.index.insert_unique(hash, id, |&other| {
            groups
                .get(other as usize)
                .and_then(Option::as_ref)
                .map_or(0, |g| hash_group(hasher, &g.as_ref()))
        });
        Some(id)
    }

    /// Gives back one reference; with the last one the group goes and releases its strings.
    pub fn release(&mut self, id: Id, strings: &mut Interner) {
        let Some(g) = self.groups.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if g.refs == u32::MAX {
            return;
        }
        g.refs = g.refs.saturating_sub(1);
        if g.refs > 0 {
            return;
        }
        let hash = hash_group(&self.hasher, &g.as_ref());
        if let Ok(found) = self.index.find_entry(hash, |&other| other == id) {
            found.remove();
        }
        if let Some(group) = self.groups.get_mut(id as usize).and_then(Option::take) {
            for s in group.strings() {
                strings.release(s);
            }
        }
        self.free.push(id);
        while self.groups.last().is_some_and(Option::is_none) {
            self.groups.pop();
        }
    }

    /// Live groups.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_id_and_references_count() {
        let mut i = Interner::new();
        let a = i.intern("dynamic").unwrap();
        let b = i.intern("idle").unwrap();
        assert_ne!(a, b);
        assert_eq!(i.intern("dynamic"), Some(a));
        assert_eq!(i.get("dynamic"), Some(a));
        assert_eq!(i.text(a), "dynamic");
        assert_eq!(i.len(), 2);
        i.release(a);
        assert_eq!(i.get("dynamic"), Some(a), "one reference left");
        i.release(a);
        assert_eq!(i.get("dynamic"), None);
        assert_eq!(i.text(a), "");
        assert_eq!(i.len(), 1);
        // A released id is reused, and a stale release does nothing.
        i.release(a);
        assert_eq!(i.intern("x"), Some(a));
        assert_eq!(i.text(b), "idle");
        assert_eq!(i.intern(""), Some(2));
        assert_eq!(i.get(""), Some(2));
    }

    #[test]
    fn churning_values_do_not_grow_memory() {
        let mut i = Interner::new();
        let keep = i.intern("rapl-sysfs").unwrap();
        let mut live: Vec<Id> = Vec::new();
        let mut peak_text = 0;
        let mut peak_ids = 0;
        // 200 generations of 1,000 containers each: only one generation is live at a time.
        for generation in 0..200u32 {
            let ids: Vec<Id> = (0..1_000u32)
                .map(|n| i.intern(&format!("{generation:08}-{n:056x}")).unwrap())
                .collect();
            for id in live.drain(..) {
                i.release(id);
            }
            live = ids;
            peak_text = peak_text.max(i.text_bytes());
            peak_ids = peak_ids.max(i.id_capacity());
        }
        assert_eq!(i.len(), 1_001);
        // Two generations of 64-byte values at most, plus the not yet compacted dead half.
        assert!(
            peak_text <= 4 * 2_000 * 64 + COMPACT_MIN_DEAD,
            "{peak_text}"
        );
        assert!(peak_ids <= 2_001, "{peak_ids}");
        for id in live.drain(..) {
            i.release(id);
        }
        assert_eq!(i.len(), 1);
        assert_eq!(i.text(keep), "rapl-sysfs");
        i.release(keep);
        assert!(i.is_empty());
        assert!(i.id_capacity() <= 1, "{}", i.id_capacity());
    }

    #[test]
    fn groups_hold_their_strings() {
        let mut strings = Interner::new();
        let mut groups = Groups::new();
        let m = strings.intern("m").unwrap();
        let cluster = strings.intern("cluster").unwrap();
        let job = strings.intern("j").unwrap();
        let empty = strings.intern("").unwrap();
        let keys = [cluster];
        let key = GroupRef {
            metric: m,
            kind: Kind::Counter,
            scope_name: empty,
            scope_version: empty,
            job,
            instance: empty,
            keys: &keys,
        };
        let g = groups.intern(&key, &mut strings).unwrap();
        assert_eq!(groups.intern(&key, &mut strings), Some(g));
        assert_eq!(groups.get(&key), Some(g));
        assert_eq!(groups.group(g).unwrap().cluster, Some(0));
        let other = GroupRef {
            kind: Kind::Gauge,
            ..key
        };
        assert_eq!(groups.get(&other), None);
        // The caller's own references go; the group keeps the strings alive.
        for id in [m, cluster, job, empty] {
            strings.release(id);
        }
        assert_eq!(strings.text(m), "m");
        groups.release(g, &mut strings);
        assert_eq!(strings.text(m), "m", "one series left");
        groups.release(g, &mut strings);
        assert!(groups.is_empty());
        assert!(strings.is_empty(), "{}", strings.len());
    }
}
