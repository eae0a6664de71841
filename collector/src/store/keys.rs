//! Series keys: [`KeyRef`] as ingest builds it (borrowing the request's text), [`SeriesKey`] as
//! the exposition reads a stored series (borrowing the store's interned text), and the sorted,
//! deduplicated attribute set with its `cluster` insert ([`attrs_of`], [`sorted_attrs`]).

use crate::intern::{Id, Interner};
use crate::translate::Kind;
use std::borrow::Cow;

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
    /// The attributes whose key ids are `keys` and value ids `values` (pairwise).
    pub(super) fn new(strings: &'a Interner, keys: &'a [Id], values: &'a [Id]) -> Self {
        Self {
            strings,
            keys,
            values,
        }
    }

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
pub(super) mod tests {
    use super::*;

    /// The sorted attribute set of `pairs` (see [`attrs_of`]).
    pub(in crate::store) fn attrs<'a>(
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
}
