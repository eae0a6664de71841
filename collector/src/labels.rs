//! The Prometheus labels of a stored series and the order of a family's series.
//!
//! All series of a group (metric, type, scope, job, instance, attribute keys) carry the same
//! label names, so a [`Layout`] is made once per group: the data-point attributes as label
//! names, `otel_scope_name` / `otel_scope_version` when the scope has a name, `job` and
//! `instance` when not empty, sorted by name, each with where its value comes from. A family's
//! series are ordered by their sort key: label names and values, each followed by a NUL,
//! compared as bytes ([`cmp_labels`], [`cmp_labels_key`], [`write_key`]).

use crate::translate;
use std::cmp::Ordering;

/// Where a label's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The value of attribute `i` (in the group's key order).
    Attr(usize),
    ScopeName,
    ScopeVersion,
    Job,
    Instance,
}

/// A label name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    /// Attribute key `i`, already a clean label name.
    Key(usize),
    /// A label the exposition writes itself.
    Fixed(&'static str),
    /// An attribute key translated into a label name.
    Translated(Box<str>),
}

/// The texts of a group that its layout is made from.
#[derive(Debug, Clone, Copy)]
pub struct GroupText<'a> {
    /// Attribute keys, sorted and distinct.
    pub keys: &'a [&'a str],
    pub scope_name: &'a str,
    pub scope_version: &'a str,
    pub job: &'a str,
    pub instance: &'a str,
}

/// The label names of a group's series, each with where its value comes from.
#[derive(Debug, Clone)]
pub struct Layout {
    labels: Box<[(Name, Source)]>,
    /// The names are distinct and `labels` is sorted by name. Otherwise (two attribute keys
    /// that translate to one name, which ingest refuses) each series' labels are sorted and
    /// deduplicated as they are read, keeping the smallest value of a name.
    sorted: bool,
}

impl Layout {
    /// The layout of a group, with the rules of the Collector's exporter: attribute keys as
    /// label names (translated where they are not label names already; an empty key has none),
    /// then the scope, `job` and `instance` labels, which take the place of an attribute that
    /// translates to the same name.
    pub fn new(group: GroupText<'_>) -> Self {
        let mut labels: Vec<(Name, Source)> = Vec::with_capacity(group.keys.len() + 4);
        let clean = |k: &&str| translate::is_clean_label(k);
        for (i, _) in group.keys.iter().enumerate().filter(|(_, k)| clean(k)) {
            labels.push((Name::Key(i), Source::Attr(i)));
        }
        for (i, k) in group.keys.iter().enumerate().filter(|(_, k)| !clean(k)) {
            if let Some(name) = translate::label_name(k) {
                labels.push((Name::Translated(name.into()), Source::Attr(i)));
            }
        }
        let has_scope = !group.scope_name.is_empty();
        for (name, source, present) in [
            ("otel_scope_name", Source::ScopeName, has_scope),
            (
                "otel_scope_version",
                Source::ScopeVersion,
                has_scope && !group.scope_version.is_empty(),
            ),
            ("job", Source::Job, !group.job.is_empty()),
            ("instance", Source::Instance, !group.instance.is_empty()),
        ] {
            if !present {
                continue;
            }
            match labels
                .iter_mut()
                .find(|(n, _)| name_text(n, group.keys) == name)
            {
                Some(entry) => entry.1 = source,
                None => labels.push((Name::Fixed(name), source)),
            }
        }
        labels.sort_by(|a, b| name_text(&a.0, group.keys).cmp(name_text(&b.0, group.keys)));
        let sorted = labels
            .windows(2)
            .all(|w| name_text(&w[0].0, group.keys) != name_text(&w[1].0, group.keys));
        Layout {
            labels: labels.into(),
            sorted,
        }
    }

    /// Writes the labels of one series into `out` (cleared first), sorted by name: `key(i)` is
    /// the text of attribute key `i`, `value(source)` the text of a value.
    pub fn labels<'a>(
        &'a self,
        key: impl Fn(usize) -> &'a str,
        value: impl Fn(Source) -> &'a str,
        out: &mut Vec<(&'a str, &'a str)>,
    ) {
        out.clear();
        out.extend(self.labels.iter().map(|(name, source)| {
            let name = match name {
                Name::Key(i) => key(*i),
                Name::Fixed(name) => name,
                Name::Translated(name) => name,
            };
            (name, value(*source))
        }));
        if !self.sorted {
            out.sort_unstable();
            out.dedup_by(|later, first| later.0 == first.0);
        }
    }
}

/// The text of a label name, given the group's attribute keys.
fn name_text<'a>(name: &'a Name, keys: &[&'a str]) -> &'a str {
    match name {
        Name::Key(i) => keys.get(*i).copied().unwrap_or(""),
        Name::Fixed(name) => name,
        Name::Translated(name) => name,
    }
}

/// The pieces of a series' sort key, in order: each label's name, a NUL, its value, a NUL.
fn key_pieces<'a>(labels: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = &'a [u8]> + 'a {
    labels
        .iter()
        .flat_map(|(n, v)| [n.as_bytes(), b"\0", v.as_bytes(), b"\0"])
}

/// Compares two byte strings given as pieces, as if each were joined into one.
fn cmp_pieces<'a, 'b>(
    mut a: impl Iterator<Item = &'a [u8]>,
    mut b: impl Iterator<Item = &'b [u8]>,
) -> Ordering {
    let (mut x, mut y): (&[u8], &[u8]) = (&[], &[]);
    loop {
        while x.is_empty() {
            match a.next() {
                Some(piece) => x = piece,
                None => break,
            }
        }
        while y.is_empty() {
            match b.next() {
                Some(piece) => y = piece,
                None => break,
            }
        }
        match (x.is_empty(), y.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        let n = x.len().min(y.len());
        match x[..n].cmp(&y[..n]) {
            Ordering::Equal => {
                x = &x[n..];
                y = &y[n..];
            }
            other => return other,
        }
    }
}

/// The order of two series of a family: their sort keys compared as bytes.
pub fn cmp_labels(a: &[(&str, &str)], b: &[(&str, &str)]) -> Ordering {
    cmp_pieces(key_pieces(a), key_pieces(b))
}

/// [`cmp_labels`] against a sort key written by [`write_key`].
pub fn cmp_labels_key(labels: &[(&str, &str)], key: &str) -> Ordering {
    cmp_pieces(key_pieces(labels), std::iter::once(key.as_bytes()))
}

/// Appends the sort key of a series with `labels` to `out`.
pub fn write_key(labels: &[(&str, &str)], out: &mut String) {
    for (name, value) in labels {
        out.push_str(name);
        out.push('\0');
        out.push_str(value);
        out.push('\0');
    }
}
