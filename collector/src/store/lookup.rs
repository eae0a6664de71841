//! Finding a key's series from a request's text: the interned [`Names`] every key refers to,
//! and what consecutive lookups of one request share ([`Lookup`], [`Hint`]) so that most
//! points skip interning and group lookups.

use super::keys::KeyRef;
use super::shard::series_hash;
use crate::intern::{GroupRef, Groups, Id, Interner};
use foldhash::fast::RandomState;

/// The interned text and groups every series key refers to.
#[derive(Debug, Default)]
pub(super) struct Names {
    pub(super) strings: Interner,
    pub(super) groups: Groups,
    /// Changes whenever the names are written (an id may then have been freed and reused):
    /// ids a [`Lookup`] remembers are only used while it is unchanged.
    generation: u64,
}

impl Names {
    /// Marks the names as written: ids remembered so far may no longer mean the same text.
    pub(super) fn mark_changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }
}

/// What consecutive `Store::apply` calls share: the group of the previous point (most points
/// of a request share metric, scope, job, instance and attribute keys), checked against the
/// interned text before each use unless the caller says the key's group part is unchanged, the
/// attribute value ids of the previous point's series, and reused buffers.
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

/// What the caller of `Store::apply` knows of a key compared with its previous call's key (on
/// the same [`Lookup`]): `same_group`: metric, type, scope, job, instance and attribute keys
/// are the same; bit `i` of `same_values` (when `same_group`): the value of attribute `i` is
/// the same text. Only ever a shortcut: the default (nothing known) is always correct.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hint {
    pub same_group: bool,
    pub same_values: u64,
}

/// Ids of a key whose strings and group are all interned.
pub(super) struct Resolved {
    pub(super) group: Id,
    pub(super) hash: u64,
}

/// Whether group `id` is (still) the group of `key`, comparing text.
fn group_is(names: &Names, id: Id, key: &KeyRef<'_>) -> bool {
    let Some(g) = names.groups.group(id).map(|g| &g.key) else {
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

impl Lookup {
    /// The group of `key` (when it is interned) and the series hash.
    pub(super) fn resolve(
        &mut self,
        names: &Names,
        hasher: &RandomState,
        key: &KeyRef<'_>,
        hint: Hint,
    ) -> Option<Resolved> {
        let strings = &names.strings;
        let unchanged = hint.same_group && self.generation == names.generation;
        if !unchanged {
            self.last = None;
        }
        let group = match self.group.filter(|&g| unchanged || group_is(names, g, key)) {
            Some(group) => group,
            None => {
                self.keys.clear();
                for (k, _) in key.attrs {
                    self.keys.push(strings.get(k)?);
                }
                let group = names.groups.get(&GroupRef {
                    metric: strings.get(key.metric)?,
                    kind: key.kind,
                    scope_name: strings.get(key.scope_name)?,
                    scope_version: strings.get(key.scope_version)?,
                    job: strings.get(key.job)?,
                    instance: strings.get(key.instance)?,
                    keys: &self.keys,
                })?;
                self.group = Some(group);
                self.last = None;
                group
            }
        };
        self.generation = names.generation;
        Some(Resolved {
            group,
            hash: series_hash(hasher, group, key.attrs.iter().map(|(_, v)| &**v)),
        })
    }

    /// The value ids of the previous series when it had `group`, with the mask of the values
    /// `hint` says are unchanged (nothing known otherwise).
    pub(super) fn known_values(&self, group: Id, hint: Hint) -> (&[Id], u64) {
        match &self.last {
            Some((last, ids)) if *last == group => (&ids[..], hint.same_values),
            _ => (&[][..], 0),
        }
    }

    /// Remembers the series just found: `group` and its value ids.
    pub(super) fn remember(&mut self, group: Id, values: &[Id]) {
        match &mut self.last {
            Some((last, ids)) => {
                *last = group;
                ids.clear();
                ids.extend_from_slice(values);
            }
            None => self.last = Some((group, values.to_vec())),
        }
    }

    /// Forgets the previous group and series (the names are about to change).
    pub(super) fn forget(&mut self) {
        self.group = None;
        self.last = None;
    }

    /// A reused buffer for a key's value ids.
    pub(super) fn value_buffer(&mut self) -> &mut Vec<Id> {
        &mut self.values
    }
}
