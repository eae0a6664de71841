//! Reading the store: every live series in no particular order ([`Store::for_each_live`], for
//! remote write and tests), and family by family in label order, a few series at a time
//! ([`Store::next_family`], [`Store::family_metas`], [`Store::visit_family`]), for the
//! exposition. Every visit locks one shard at a time, for a bounded stretch of work.

use super::keys::{Attrs, Scope, SeriesKey};
use super::locks::{lock, read};
use super::lookup::Names;
use super::point::{Meta, Series};
use super::shard::Record;
use super::{Store, TargetInfo};
use crate::labels::{cmp_labels, cmp_labels_key, write_key};
use std::cmp::Ordering;
use std::sync::Arc;

/// A family of series: its name and the shards that held some of its series when it was
/// looked up.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: Arc<str>,
    shards: u64,
}

impl Family {
    /// The numbers of the shards that hold some of the family's series.
    fn shards(&self) -> impl Iterator<Item = usize> + '_ {
        (0..64).filter(|i| self.shards >> i & 1 == 1)
    }
}

/// Where the visit of one shard's part of a family stands: the sort key of the last series
/// visited, and its position in the shard's index while the index is unchanged.
#[derive(Debug)]
pub struct FamilyCursor {
    shard: usize,
    started: bool,
    position: usize,
    version: u64,
    last_key: String,
    done: bool,
}

impl FamilyCursor {
    /// Whether the visit has passed the last series.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// Writes the labels of `record` into `out` (none for a record without a group).
fn labels_of<'n>(names: &'n Names, record: &Record, out: &mut Vec<(&'n str, &'n str)>) {
    match names.groups.group(record.group) {
        Some(group) => group.labels(&names.strings, record.values(), out),
        None => out.clear(),
    }
}

impl Store {
    /// Calls `f` for every live series, one shard at a time (each shard locked only while it is
    /// visited).
    pub fn for_each_live(&self, mut f: impl FnMut(&SeriesKey<'_>, &Series)) {
        let now = self.clock.now_ms();
        for shard in &self.shards {
            let names = read(&self.names);
            let shard = lock(shard);
            for record in shard.records() {
                if !self.alive(record.series.updated_ms, now) {
                    continue;
                }
                let Some(group) = names.groups.group(record.group).map(|g| &g.key) else {
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
                    attrs: Attrs::new(&names.strings, &group.keys, record.values()),
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

    /// The first family (Prometheus metric name) whose name sorts after `after`, bytewise;
    /// `None` after the last. `after: None` gives the first.
    pub fn next_family(&self, after: Option<&str>) -> Option<Family> {
        self.registry
            .next(after)
            .map(|(name, shards)| Family { name, shards })
    }

    /// Calls `f` with the [`Meta`] of the live series of `family` (once for consecutive series
    /// sharing one), one shard at a time.
    pub fn family_metas(&self, family: &Family, mut f: impl FnMut(&Meta)) {
        let now = self.clock.now_ms();
        for number in family.shards() {
            let Some(shard) = self.shards.get(number) else {
                continue;
            };
            let shard = lock(shard);
            let Some(index) = shard.family(&family.name) else {
                continue;
            };
            let mut last: Option<&Arc<Meta>> = None;
            for &slot in &index.slots {
                let Some(record) = shard.record(slot) else {
                    continue;
                };
                let meta = &record.series.meta;
                if !self.alive(record.series.updated_ms, now)
                    || last.is_some_and(|last| Arc::ptr_eq(last, meta))
                {
                    continue;
                }
                f(meta);
                last = Some(meta);
            }
        }
    }

    /// One cursor per shard holding series of `family`, each before its first series.
    pub fn family_cursors(&self, family: &Family) -> Vec<FamilyCursor> {
        family
            .shards()
            .map(|shard| FamilyCursor {
                shard,
                started: false,
                position: 0,
                version: 0,
                last_key: String::new(),
                done: false,
            })
            .collect()
    }

    /// Visits the live series of `family` in the cursor's shard in label order (their sort keys,
    /// see [`crate::labels`]), from where the cursor stands: calls `f(labels, series)` for each
    /// until `f` returns `false`, then goes on only through series with the same labels as the
    /// last one (so that a later visit, which starts after the last labels visited, misses
    /// none). The shard is locked for this one stretch; series added meanwhile before the
    /// cursor are left for the next render.
    pub fn visit_family(
        &self,
        family: &Family,
        cursor: &mut FamilyCursor,
        mut f: impl FnMut(&[(&str, &str)], &Series) -> bool,
    ) {
        let now = self.clock.now_ms();
        let names = read(&self.names);
        let Some(shard) = self.shards.get(cursor.shard) else {
            cursor.done = true;
            return;
        };
        let mut shard = lock(shard);
        let names = &*names;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let exists = shard.sort_family(&family.name, |x, y| {
            labels_of(names, x, &mut a);
            labels_of(names, y, &mut b);
            cmp_labels(&a, &b)
        });
        let Some(index) = exists.then(|| shard.family(&family.name)).flatten() else {
            cursor.done = true;
            return;
        };
        let slots = &index.slots;
        let mut at = if !cursor.started {
            0
        } else if cursor.version == index.version {
            cursor.position
        } else {
            slots.partition_point(|&slot| match shard.record(slot) {
                Some(record) => {
                    labels_of(names, record, &mut a);
                    cmp_labels_key(&a, &cursor.last_key) != Ordering::Greater
                }
                None => true,
            })
        };
        let mut last: Vec<(&str, &str)> = Vec::new();
        let mut visited = false;
        let mut stop = false;
        while let Some(&slot) = slots.get(at) {
            let Some(record) = shard.record(slot) else {
                at += 1;
                continue;
            };
            labels_of(names, record, &mut a);
            if stop && cmp_labels(&a, &last) != Ordering::Equal {
                break;
            }
            at += 1;
            if self.alive(record.series.updated_ms, now) && !f(&a, &record.series) {
                stop = true;
            }
            std::mem::swap(&mut a, &mut last);
            visited = true;
        }
        cursor.started = true;
        cursor.position = at;
        cursor.version = index.version;
        cursor.done = at >= slots.len();
        if visited {
            cursor.last_key.clear();
            write_key(&last, &mut cursor.last_key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::tests::attrs;
    use super::super::point::tests::point;
    use super::super::{Hint, KeyRef, Limits, Lookup};
    use super::*;
    use crate::clock::ManualClock;
    use crate::translate::Kind;

    fn meta(name: &str) -> Arc<Meta> {
        Arc::new(Meta {
            prom_name: name.into(),
            kind: Kind::Counter,
            help: String::new(),
        })
    }

    fn apply(store: &Store, metric: &str, meta: &Arc<Meta>, cluster: &str) {
        let attrs = attrs(&[("cluster", cluster)], None, None);
        let key = KeyRef {
            metric,
            kind: Kind::Counter,
            scope_name: "",
            scope_version: "",
            job: "j",
            instance: "",
            attrs: &attrs,
        };
        let now = store.clock().now_ms();
        let mut lookup = Lookup::default();
        let applied = store.apply(
            &key,
            meta,
            point(now, 1.0),
            now,
            &mut lookup,
            Hint::default(),
        );
        assert!(applied.is_ok(), "{applied:?}");
    }

    /// The `cluster` values of a family's live series, in visit order, `per_visit` at a time;
    /// `between` runs between two visits.
    fn visit(
        store: &Store,
        family: &Family,
        per_visit: usize,
        mut between: impl FnMut(),
    ) -> Vec<String> {
        let mut seen = Vec::new();
        for mut cursor in store.family_cursors(family) {
            let mut shard_seen: Vec<String> = Vec::new();
            while !cursor.is_done() {
                let mut n = 0;
                store.visit_family(family, &mut cursor, |labels, _| {
                    shard_seen.push(labels[0].1.to_string());
                    n += 1;
                    n < per_visit
                });
                between();
            }
            assert!(shard_seen.windows(2).all(|w| w[0] < w[1]), "{shard_seen:?}");
            seen.extend(shard_seen);
        }
        seen.sort();
        seen
    }

    #[test]
    fn families_are_listed_by_name_and_visited_in_label_order() {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = Store::new(Limits::default(), 1_000, clock.clone());
        let (a, b) = (meta("a_total"), meta("b_total"));
        for n in 0..800u32 {
            let n = (n * 337) % 800;
            let (metric, meta) = if n % 8 < 3 { ("a", &a) } else { ("b", &b) };
            apply(&store, metric, meta, &format!("c{n:04}"));
        }
        let first = store.next_family(None).unwrap();
        assert_eq!(&*first.name, "a_total");
        let second = store.next_family(Some("a_total")).unwrap();
        assert_eq!(&*second.name, "b_total");
        assert!(store.next_family(Some("b_total")).is_none());
        let all_a = visit(&store, &first, 1, || {});
        assert_eq!(all_a.len(), 300);
        assert_eq!(visit(&store, &second, 7, || {}).len(), 500);
        // Series added while a visit is under way: those after its position are visited.
        let mut added = 0;
        let seen = visit(&store, &first, 3, || {
            added += 1;
            apply(&store, "a", &a, &format!("c{added:04}x"));
        });
        assert!(
            seen.len() > 300 && seen.len() <= 300 + added,
            "{}",
            seen.len()
        );
        // A series whose metric now translates to another name moves family.
        apply(&store, "b", &meta("c_total"), "c0004");
        let moved = store.next_family(Some("b_total")).unwrap();
        assert_eq!(visit(&store, &moved, 5, || {}), ["c0004"]);
        assert_eq!(visit(&store, &second, 5, || {}).len(), 499);
        let mut kinds = 0;
        store.family_metas(&second, |_| kinds += 1);
        assert!(kinds >= 1);
        // Everything expires: no family is left, nor any interned text.
        clock.advance_ms(1_000);
        assert_eq!(visit(&store, &second, 5, || {}).len(), 0);
        assert!(store.sweep() > 0);
        assert!(store.next_family(None).is_none());
        assert_eq!(store.interned(), (0, 0));
    }
}
