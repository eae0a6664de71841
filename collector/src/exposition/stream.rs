//! The page written while it is sent. Families come in name order from the store's registry.
//! For each, its type and HELP are chosen from the metadata of its live series (one pass over
//! the family's series, no copies); then its series are merged in label order from the shards
//! that hold it: each shard hands over a batch of about [`BATCH`] bytes of sample lines at a
//! time ([`Shard`]), the smallest head among the shards goes next ([`Heads`]), and of several
//! series with the same labels only the best ranked is kept ([`Lines`]). Pieces of about
//! `piece` bytes leave as soon as they are full.

use super::samples::{metric_type, outranks, write_series, Rank, SampleNames, ValueRank};
use super::targets::write_tail;
use crate::ingest::Hub;
use crate::labels::write_key;
use crate::store::{Family, FamilyCursor, Store};
use crate::translate::Kind;
use kepler_prom_text::{Encoder, Format, SampleWriter};
use std::ops::Range;
use std::sync::Arc;

/// Bytes of sample lines fetched from one shard at a time (plus one series or one run of series
/// with the same labels): with 64 shards, about 1 MiB of a family is held at once.
const BATCH: usize = 16 << 10;

/// A family's lines go to the encoder in stretches of about this many bytes (or the piece
/// size, when smaller), so that a piece is cut at most this much after its size.
const COMMIT: usize = 4 << 10;

/// Writes the page, handing each piece of about `piece` bytes to `send` as soon as it is
/// full; stops when `send` returns `false` (the client went away) and returns whether the
/// whole page was handed over.
pub(super) fn render_each(
    hub: &Hub,
    format: Format,
    piece: usize,
    send: &mut dyn FnMut(String) -> bool,
) -> bool {
    let mut enc = Encoder::with_capacity(format, piece + piece / 4).empty_help_lines();
    let mut after: Option<Arc<str>> = None;
    while let Some(family) = hub.store.next_family(after.as_deref()) {
        let mut out = Out {
            enc: &mut enc,
            piece,
            send: &mut *send,
        };
        if !write_family(&hub.store, &family, format, &mut out) {
            return false;
        }
        after = Some(family.name);
    }
    write_tail(hub, &mut enc);
    send(enc.finish())
}

/// Where the page goes: the encoder, cut into pieces of about `piece` bytes for `send`.
struct Out<'a> {
    enc: &'a mut Encoder,
    piece: usize,
    send: &'a mut dyn FnMut(String) -> bool,
}

impl Out<'_> {
    /// Hands out the text written so far if it is a whole piece; `false` when the receiver is
    /// gone.
    fn cut(&mut self) -> bool {
        match self.enc.take_if_longer(self.piece) {
            Some(piece) => (self.send)(piece),
            None => true,
        }
    }
}

/// The type and HELP of a family, as the Collector's exporter picks them when several OTel
/// metrics translate to one name: the smallest kind (counter, gauge, histogram, summary) keeps
/// the family and the other kinds' series are left out; the smallest non-empty HELP of that
/// kind is shown. `None` when the family has no live series.
fn header(store: &Store, family: &Family) -> Option<(Kind, String)> {
    let mut chosen: Option<(Kind, String)> = None;
    store.family_metas(family, |meta| match &mut chosen {
        None => chosen = Some((meta.kind, meta.help.clone())),
        Some((kind, help)) => {
            if meta.kind < *kind {
                *kind = meta.kind;
                help.clone_from(&meta.help);
            } else if meta.kind == *kind
                && !meta.help.is_empty()
                && (help.is_empty() || meta.help < *help)
            {
                help.clone_from(&meta.help);
            }
        }
    });
    chosen
}

/// Writes one family; `false` when the receiver is gone.
fn write_family(store: &Store, family: &Family, format: Format, out: &mut Out<'_>) -> bool {
    let Some((kind, help)) = header(store, family) else {
        return true;
    };
    out.enc.family(&family.name, &help, metric_type(kind));
    let how = How {
        store,
        family,
        kind,
        names: SampleNames::new(&family.name),
        writer: SampleWriter::new(format, metric_type(kind)),
    };
    let mut shards: Vec<Shard> = store
        .family_cursors(family)
        .into_iter()
        .map(|cursor| Shard {
            cursor,
            batch: Batch::default(),
        })
        .collect();
    for shard in &mut shards {
        shard.refill(&how);
    }
    let mut heads = Heads::new(&shards);
    let mut lines = Lines::default();
    while let Some(at) = heads.first() {
        let Some(shard) = shards.get_mut(at) else {
            break;
        };
        if let Some((key, text, part)) = shard.batch.head() {
            lines.push(key, text, part.samples, part.rank);
        }
        if lines.committed >= COMMIT.min(out.piece) {
            lines.commit(out.enc);
            if !out.cut() {
                return false;
            }
        }
        shard.batch.next += 1;
        if shard.batch.head().is_none() {
            shard.refill(&how);
        }
        heads.update(&shards);
    }
    lines.finish(out.enc);
    out.cut()
}

/// What every shard's batches of one family are written with.
struct How<'a> {
    store: &'a Store,
    family: &'a Family,
    kind: Kind,
    names: SampleNames,
    writer: SampleWriter,
}

/// One series in a [`Batch`].
struct Part {
    key: Range<usize>,
    lines: Range<usize>,
    samples: usize,
    rank: Rank,
}

/// Series of one shard, in label order: their sort keys and sample lines back to back.
#[derive(Default)]
struct Batch {
    keys: String,
    lines: String,
    parts: Vec<Part>,
    /// The first series not merged yet.
    next: usize,
}

impl Batch {
    /// The first series not merged yet: its sort key, its lines, and the rest.
    fn head(&self) -> Option<(&str, &str, &Part)> {
        let part = self.parts.get(self.next)?;
        Some((
            self.keys.get(part.key.clone())?,
            self.lines.get(part.lines.clone())?,
            part,
        ))
    }
}

/// One shard's part of the family being written: where its visit stands and its batch.
struct Shard {
    cursor: FamilyCursor,
    batch: Batch,
}

impl Shard {
    /// Fetches the shard's next batch (empty at the end).
    fn refill(&mut self, how: &How<'_>) {
        let batch = &mut self.batch;
        batch.keys.clear();
        batch.lines.clear();
        batch.parts.clear();
        batch.next = 0;
        while batch.parts.is_empty() && !self.cursor.is_done() {
            how.store
                .visit_family(how.family, &mut self.cursor, |labels, series| {
                    if series.meta.kind != how.kind {
                        return true;
                    }
                    let key = batch.keys.len();
                    write_key(labels, &mut batch.keys);
                    let lines = batch.lines.len();
                    let samples = write_series(
                        &mut batch.lines,
                        how.writer,
                        &how.names,
                        labels,
                        &series.point.value,
                    );
                    batch.parts.push(Part {
                        key: key..batch.keys.len(),
                        lines: lines..batch.lines.len(),
                        samples,
                        rank: (
                            series.point.time_unix_nano,
                            ValueRank::of(&series.point.value),
                        ),
                    });
                    batch.lines.len() + batch.keys.len() < BATCH
                });
        }
    }
}

/// The shards with series left, as a binary min-heap by the sort key of their heads.
struct Heads(Vec<usize>);

impl Heads {
    fn new(shards: &[Shard]) -> Self {
        let mut heads = Heads(
            (0..shards.len())
                .filter(|&i| shards[i].batch.head().is_some())
                .collect(),
        );
        for at in (0..heads.0.len() / 2).rev() {
            heads.sift_down(at, shards);
        }
        heads
    }

    /// The shard whose head comes first.
    fn first(&self) -> Option<usize> {
        self.0.first().copied()
    }

    /// Puts the first shard back in its place after its head moved on (or drops it when it
    /// has no series left).
    fn update(&mut self, shards: &[Shard]) {
        let Some(&first) = self.0.first() else {
            return;
        };
        if shards.get(first).and_then(|s| s.batch.head()).is_none() {
            self.0.swap_remove(0);
        }
        self.sift_down(0, shards);
    }

    fn sift_down(&mut self, mut at: usize, shards: &[Shard]) {
        let heap = &mut self.0;
        loop {
            let mut smallest = at;
            for child in [2 * at + 1, 2 * at + 2] {
                if let (Some(c), Some(s)) = (
                    head_key(heap, shards, child),
                    head_key(heap, shards, smallest),
                ) {
                    if c < s {
                        smallest = child;
                    }
                }
            }
            if smallest == at {
                return;
            }
            heap.swap(at, smallest);
            at = smallest;
        }
    }
}

/// The sort key of the head of the shard at `i` in the heap.
fn head_key<'s>(heap: &[usize], shards: &'s [Shard], i: usize) -> Option<&'s str> {
    let shard = shards.get(*heap.get(i)?)?;
    shard.batch.head().map(|(key, _, _)| key)
}

/// A family's sample lines on their way to the encoder: series with the same labels arrive one
/// after another, so the last series stays replaceable until one with other labels follows.
#[derive(Default)]
struct Lines {
    text: String,
    /// Bytes of `text` before the last series, and their samples.
    committed: usize,
    committed_samples: usize,
    last: Option<Last>,
}

/// The last series in [`Lines`].
struct Last {
    key: String,
    samples: usize,
    rank: Rank,
}

impl Lines {
    fn push(&mut self, key: &str, text: &str, samples: usize, rank: Rank) {
        match &mut self.last {
            Some(last) if last.key == key => {
                // The same labels again: two OTel metrics that translate to one series. A family
                // must not repeat a series (Prometheus drops the scrape's duplicates; the
                // Collector serves whichever its registry met first): the newest point wins.
                if outranks(&rank, &last.rank) {
                    self.text.truncate(self.committed);
                    self.text.push_str(text);
                    last.samples = samples;
                    last.rank = rank;
                }
                return;
            }
            Some(last) => {
                self.committed = self.text.len();
                self.committed_samples += last.samples;
                last.key.clear();
                last.key.push_str(key);
                last.samples = samples;
                last.rank = rank;
            }
            None => {
                self.last = Some(Last {
                    key: key.to_string(),
                    samples,
                    rank,
                })
            }
        }
        self.text.push_str(text);
    }

    /// Moves the lines before the last series into the encoder.
    fn commit(&mut self, enc: &mut Encoder) {
        enc.raw_samples(&self.text[..self.committed], self.committed_samples);
        self.text.drain(..self.committed);
        self.committed = 0;
        self.committed_samples = 0;
    }

    /// Moves every line into the encoder.
    fn finish(mut self, enc: &mut Encoder) {
        self.committed = self.text.len();
        self.committed_samples += self.last.take().map_or(0, |last| last.samples);
        self.commit(enc);
    }
}
