//! Finding a key's series from a request's text: the interned [`Names`] every key refers to,
//! what consecutive lookups of one request share ([`Lookup`], [`Hint`]) so that most points
//! skip interning and group lookups, and the [`Routes`] that let a sender's next request skip
//! the series table.

use super::keys::KeyRef;
use crate::intern::{GroupRef, Groups, Id, Interner};
use std::collections::HashMap;

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

/// Where a series is in the store: its shard and its slot there, packed into a `u32` (the
/// shard in the low bits), or [`Place::NONE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place(u32);

const SHARD_BITS: u32 = super::SHARDS.trailing_zeros();
const _: () = assert!(super::SHARDS.is_power_of_two());

impl Place {
    /// No series (a point that was rejected, or a slot past what a place can hold).
    pub(super) const NONE: Place = Place(u32::MAX);

    pub(super) fn new(shard: usize, slot: u32) -> Self {
        if slot < u32::MAX >> SHARD_BITS && shard < super::SHARDS {
            Place(slot << SHARD_BITS | shard as u32)
        } else {
            Place::NONE
        }
    }

    pub(super) fn shard(self) -> usize {
        (self.0 & ((1 << SHARD_BITS) - 1)) as usize
    }

    pub(super) fn slot(self) -> u32 {
        self.0 >> SHARD_BITS
    }
}

/// The places of the series a sender's last request named, per group, in the order of its
/// points (a sender sends its series in the same order every time, as a Prometheus target
/// does, whose scrape cache is the model). A point at the position where the last request had
/// a series of its group is checked against that series' key before anything else: when the
/// key matches, that is its series, and the series table is not probed (nor the key hashed).
/// A place is only ever a guess checked against the stored key, so it may be out of date (a
/// series gone, its slot reused) without harm. 4 bytes per routed series.
pub(super) type Routes = HashMap<Id, Vec<Place>, foldhash::fast::RandomState>;

/// The route of one group within one request: the places of the previous request, overwritten
/// with this one's as its points arrive (`next`: the position of the group's next point).
#[derive(Debug)]
struct Route {
    group: Id,
    places: Vec<Place>,
    next: usize,
}

/// What consecutive `Store::apply` calls share: the group of the previous point (most points
/// of a request share metric, scope, job, instance and attribute keys), checked against the
/// interned text before each use unless the caller says the key's group part is unchanged, the
/// attribute value ids of the previous point's series, reused buffers, and the [`Routes`] of
/// the groups of the request (handed back to the store by `Store::end_request`).
#[derive(Debug, Default)]
pub struct Lookup {
    group: Option<Id>,
    keys: Vec<Id>,
    values: Vec<Id>,
    /// [`Names::generation`] when `group` and `last` were taken.
    generation: u64,
    /// The group and value ids of the series the previous call found or inserted.
    last: Option<(Id, Vec<Id>)>,
    /// The route of the group of the latest point, and those of the request's other groups.
    route: Option<Route>,
    routes: HashMap<Id, Route, foldhash::fast::RandomState>,
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
    /// The group of `key`, when it is interned.
    pub(super) fn resolve(&mut self, names: &Names, key: &KeyRef<'_>, hint: Hint) -> Option<Id> {
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
        Some(group)
    }

    /// Where the series of the next point of `group` was in the sender's previous request
    /// (a guess to check), making `group`'s route the current one (`take`: the store's route
    /// of a group this request has not had yet).
    pub(super) fn predict(
        &mut self,
        group: Id,
        take: impl FnOnce(Id) -> Vec<Place>,
    ) -> Option<Place> {
        if self.route.as_ref().map(|r| r.group) != Some(group) {
            if let Some(route) = self.route.take() {
                self.routes.insert(route.group, route);
            }
            let route = self.routes.remove(&group).unwrap_or_else(|| Route {
                group,
                places: take(group),
                next: 0,
            });
            self.route = Some(route);
        }
        let route = self.route.as_ref()?;
        route
            .places
            .get(route.next)
            .copied()
            .filter(|&p| p != Place::NONE)
    }

    /// Where the series of the current point (of the group of the last [`Lookup::predict`])
    /// is: [`Place::NONE`] when it has none; the route moves on to the next point.
    pub(super) fn arrived(&mut self, place: Place) {
        if let Some(route) = &mut self.route {
            match route.places.get_mut(route.next) {
                Some(p) => *p = place,
                None => route.places.push(place),
            }
            route.next += 1;
        }
    }

    /// The request's routes, each cut to the points it had: what the store keeps for the
    /// sender's next request.
    pub(super) fn take_routes(&mut self) -> impl Iterator<Item = (Id, Vec<Place>)> + '_ {
        if let Some(route) = self.route.take() {
            self.routes.insert(route.group, route);
        }
        self.routes.drain().map(|(group, mut route)| {
            route.places.truncate(route.next);
            if route.places.capacity() > 2 * route.places.len() + 16 {
                route.places.shrink_to_fit();
            }
            (group, route.places)
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

    /// A reused buffer for a key's value ids (to give back with [`Lookup::give_back`]).
    pub(super) fn value_buffer(&mut self) -> Vec<Id> {
        std::mem::take(&mut self.values)
    }

    pub(super) fn give_back(&mut self, values: Vec<Id>) {
        self.values = values;
    }
}
