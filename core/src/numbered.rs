//! [`NumberedVec`]: aggregates numbered by a per-merchant counter (holds, orders, payments,
//! queue tokens) whose entries leave when they are archived, freeing their memory.
//!
//! Entries live in chunks of [`CHUNK`] slots, slot `i` in chunk `i / CHUNK`; an archived
//! entry leaves a hole (`None`: its slot costs nothing beyond the element's own size, since
//! every element type here has a niche). A chunk whose entries have all been archived is
//! freed, and the chunk table forgets the freed chunks at its front, so what stays in memory
//! is the live entries, the chunks holding them (at most `CHUNK` slots each) and one
//! timestamp per `CHUNK` numbers ever handed out (8 bytes per 4096 numbers: 2 KB per million).
//!
//! Numbers are never reused: `len()` is the next number's index, whatever was archived, and
//! an index below `len()` that holds nothing was archived. `archived_at(i)` names the latest
//! archive time of any entry of `i`'s chunk: the entry was archived at or before it.
//!
//! Copy on write like `ChunkedVec`: chunks are shared (`Arc`) between clones, a clone copies
//! the chunk table (one pointer per `CHUNK` numbers), and a write copies only the chunk it
//! touches (at most `CHUNK` slots).
//!
//! Canonical form (snapshots, digests): `(len, archived_ms per chunk, [(index, entry)])` of
//! the live entries in index order. Where chunks were freed is not part of it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use serde::de::Error as _;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chunked::{ChunkedVec, CHUNK};
use crate::ids::UnixMs;

const CHUNK_BITS: u32 = CHUNK.trailing_zeros();
const CHUNK_MASK: usize = CHUNK - 1;
const _: () = assert!(1 << CHUNK_BITS == CHUNK);

/// One chunk: slots `0..slots.len()` of it (the last chunk fills up by pushes), `live` of
/// them holding an entry. Its `Clone` keeps the capacity, so a copied chunk never regrows.
pub(crate) struct Part<T> {
    pub(crate) slots: Vec<Option<T>>,
    live: u32,
}

impl<T: Clone> Clone for Part<T> {
    fn clone(&self) -> Self {
        let mut slots = Vec::with_capacity(self.slots.capacity());
        slots.extend_from_slice(&self.slots);
        Part { slots, live: self.live }
    }
}

impl<T> Part<T> {
    /// The first chunk grows like a `Vec` (most merchants stay small); later ones are
    /// allocated at full capacity once.
    fn new(chunk: usize) -> Self {
        Part { slots: if chunk == 0 { Vec::new() } else { Vec::with_capacity(CHUNK) }, live: 0 }
    }
}

pub struct NumberedVec<T> {
    /// Chunk `first + k` is `chunks[k]`; `None` is a chunk whose entries were all archived.
    first: usize,
    chunks: VecDeque<Option<Arc<Part<T>>>>,
    /// Indexes handed out (the next entry's index).
    len: usize,
    live: usize,
    /// Per chunk of numbers handed out: the latest archive time of an entry of it (0: none).
    archived_ms: ChunkedVec<UnixMs>,
}

impl<T> NumberedVec<T> {
    pub fn new() -> Self {
        NumberedVec { first: 0, chunks: VecDeque::new(), len: 0, live: 0, archived_ms: ChunkedVec::new() }
    }

    /// Indexes handed out so far: the next entry gets index `len()`.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries in memory (handed out and not archived).
    pub fn live(&self) -> usize {
        self.live
    }

    fn part(&self, chunk: usize) -> Option<&Part<T>> {
        self.chunks.get(chunk.checked_sub(self.first)?)?.as_deref()
    }

    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        self.part(index >> CHUNK_BITS)?.slots.get(index & CHUNK_MASK)?.as_ref()
    }

    /// When the entry at `index` was archived (at the latest): `None` if it is live or was
    /// never handed out.
    pub fn archived_at(&self, index: usize) -> Option<UnixMs> {
        if index >= self.len || self.get(index).is_some() {
            return None;
        }
        self.archived_ms.get(index >> CHUNK_BITS).copied()
    }

    /// Live entries with their index, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.iter_from(0)
    }

    /// Live entries from index `start` on, in index order.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = (usize, &T)> + '_ {
        let first = self.first;
        let skip_chunks = (start >> CHUNK_BITS).saturating_sub(first);
        self.chunks
            .iter()
            .enumerate()
            .skip(skip_chunks)
            .flat_map(move |(k, part)| {
                let base = (first + k) << CHUNK_BITS;
                part.iter().flat_map(move |p| {
                    p.slots.iter().enumerate().filter_map(move |(o, s)| Some((base + o, s.as_ref()?)))
                })
            })
            .filter(move |(i, _)| *i >= start)
    }

    /// The chunks held in memory with their chunk numbers (the first index of chunk `c` is
    /// `c * CHUNK`), in order, for the snapshot encoder's cache (`encoding/cached.rs`).
    pub(crate) fn parts(&self) -> impl Iterator<Item = (usize, &Arc<Part<T>>)> {
        let first = self.first;
        self.chunks.iter().enumerate().filter_map(move |(k, part)| Some((first + k, part.as_ref()?)))
    }

    pub(crate) fn archived_ms(&self) -> &ChunkedVec<UnixMs> {
        &self.archived_ms
    }

    /// Chunks held in memory (for measurements and tests).
    pub fn chunks_in_memory(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_some()).count()
    }
}

impl<T: Clone> NumberedVec<T> {
    #[inline]
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        // Checked first, so a miss un-shares nothing.
        self.get(index)?;
        let k = (index >> CHUNK_BITS) - self.first;
        let part = Arc::make_mut(self.chunks.get_mut(k)?.as_mut()?);
        part.slots.get_mut(index & CHUNK_MASK)?.as_mut()
    }

    /// Appends an entry at index `len()`.
    pub fn push(&mut self, value: T) {
        self.place(self.len, value);
    }

    /// Puts `value` at `index >= len()`; the indexes between are holes (archived).
    fn place(&mut self, index: usize, value: T) {
        debug_assert!(index >= self.len);
        let (chunk, offset) = (index >> CHUNK_BITS, index & CHUNK_MASK);
        if self.chunks.is_empty() {
            // Every chunk before `chunk` is complete and archived (or was never started).
            self.first = chunk;
        }
        while self.first + self.chunks.len() <= chunk {
            self.chunks.push_back(None);
        }
        let slot = &mut self.chunks[chunk - self.first];
        let part = Arc::make_mut(slot.get_or_insert_with(|| Arc::new(Part::new(chunk))));
        while part.slots.len() < offset {
            part.slots.push(None);
        }
        part.slots.push(Some(value));
        part.live += 1;
        while self.archived_ms.len() <= chunk {
            self.archived_ms.push(0);
        }
        self.len = index + 1;
        self.live += 1;
    }

    /// Archives the entry at `index` at time `at_ms`: it leaves memory (its chunk too, once
    /// empty). `None` if there is no live entry there.
    pub fn archive(&mut self, index: usize, at_ms: UnixMs) -> Option<T> {
        self.get(index)?;
        let chunk = index >> CHUNK_BITS;
        let k = chunk - self.first;
        let slot = self.chunks.get_mut(k)?;
        let part = Arc::make_mut(slot.as_mut()?);
        let value = part.slots.get_mut(index & CHUNK_MASK)?.take()?;
        part.live -= 1;
        if part.live == 0 {
            *slot = None;
        }
        self.live -= 1;
        if let Some(t) = self.archived_ms.get_mut(chunk) {
            *t = (*t).max(at_ms);
        }
        self.forget_front();
        Some(value)
    }

    /// Drops freed chunks at the front of the table; a chunk still filling up stays.
    fn forget_front(&mut self) {
        while matches!(self.chunks.front(), Some(None)) && (self.first + 1) << CHUNK_BITS <= self.len {
            self.chunks.pop_front();
            self.first += 1;
        }
    }

    /// A sequence without archived entries (older snapshots: nothing was ever archived).
    pub fn from_dense(values: impl IntoIterator<Item = T>) -> Self {
        let mut out = NumberedVec::new();
        for value in values {
            out.push(value);
        }
        out
    }
}

impl<T> Default for NumberedVec<T> {
    fn default() -> Self {
        NumberedVec::new()
    }
}

impl<T> Clone for NumberedVec<T> {
    /// Shares every chunk: copies the chunk table, not the entries.
    fn clone(&self) -> Self {
        NumberedVec {
            first: self.first,
            chunks: self.chunks.clone(),
            len: self.len,
            live: self.live,
            archived_ms: self.archived_ms.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for NumberedVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NumberedVec")
            .field("len", &self.len)
            .field("entries", &DebugEntries(self))
            .field("archived_ms", &self.archived_ms)
            .finish()
    }
}

struct DebugEntries<'a, T>(&'a NumberedVec<T>);

impl<T: fmt::Debug> fmt::Debug for DebugEntries<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl<T: PartialEq> PartialEq for NumberedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self.live == other.live
            && self.archived_ms == other.archived_ms
            && self.iter().eq(other.iter())
    }
}
impl<T: Eq> Eq for NumberedVec<T> {}

struct LiveEntries<'a, T>(&'a NumberedVec<T>);

impl<T: Serialize> Serialize for LiveEntries<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.live))?;
        for (i, value) in self.0.iter() {
            seq.serialize_element(&(i as u64, value))?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct Canonical<'a, T> {
    len: u64,
    archived_ms: &'a ChunkedVec<UnixMs>,
    entries: LiveEntries<'a, T>,
}

#[derive(Deserialize)]
struct Decoded<T> {
    len: u64,
    archived_ms: ChunkedVec<UnixMs>,
    entries: Vec<(u64, T)>,
}

impl<T: Serialize> Serialize for NumberedVec<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Canonical { len: self.len as u64, archived_ms: &self.archived_ms, entries: LiveEntries(self) }.serialize(s)
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for NumberedVec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let decoded = Decoded::<T>::deserialize(d)?;
        let len = usize::try_from(decoded.len).map_err(|_| D::Error::custom("length out of range"))?;
        if decoded.archived_ms.len() != len.div_ceil(CHUNK) {
            return Err(D::Error::custom("archive times do not match the length"));
        }
        let mut out = NumberedVec::new();
        for (index, value) in decoded.entries {
            let index = usize::try_from(index).map_err(|_| D::Error::custom("index out of range"))?;
            if index < out.len || index >= len {
                return Err(D::Error::custom("entry indexes out of order or beyond the length"));
            }
            out.place(index, value);
        }
        out.len = len;
        out.archived_ms = decoded.archived_ms;
        out.forget_front();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: &NumberedVec<u64>) -> NumberedVec<u64> {
        let bytes = postcard::to_allocvec(v).expect("encodes");
        postcard::from_bytes(&bytes).expect("decodes")
    }

    #[test]
    fn archived_entries_leave_and_their_chunks_are_freed() {
        let mut v = NumberedVec::new();
        for i in 0..(3 * CHUNK as u64 + 10) {
            v.push(i);
        }
        assert_eq!(v.chunks_in_memory(), 4);
        for i in 0..CHUNK {
            assert_eq!(v.archive(i, 7), Some(i as u64));
        }
        assert_eq!(v.chunks_in_memory(), 3);
        assert_eq!(v.first, 1, "the freed front chunk is forgotten");
        assert_eq!(v.get(3), None);
        assert_eq!(v.archived_at(3), Some(7));
        assert_eq!(v.archived_at(CHUNK), None, "live");
        assert_eq!(v.archived_at(v.len()), None, "never handed out");
        assert_eq!(v.get(CHUNK), Some(&(CHUNK as u64)));
        // The tail chunk empties and fills again.
        for i in 3 * CHUNK..3 * CHUNK + 10 {
            v.archive(i, 9);
        }
        v.push(99);
        assert_eq!(v.get(3 * CHUNK + 10), Some(&99));
        assert_eq!(v.live(), 2 * CHUNK + 1);
        let back = roundtrip(&v);
        assert_eq!(back, v);
        assert_eq!(postcard::to_allocvec(&back).ok(), postcard::to_allocvec(&v).ok());
        assert_eq!(v.iter_from(3 * CHUNK).map(|(i, _)| i).collect::<Vec<_>>(), vec![3 * CHUNK + 10]);
    }

    #[test]
    fn a_clone_keeps_what_the_original_archives() {
        let mut v = NumberedVec::new();
        for i in 0..100u64 {
            v.push(i);
        }
        let frozen = v.clone();
        for i in 0..100 {
            v.archive(i, 1);
        }
        assert_eq!(frozen.live(), 100);
        assert_eq!(frozen.get(5), Some(&5));
        assert_eq!(v.live(), 0);
        assert_eq!(roundtrip(&v), v);
        assert!(v.iter().next().is_none());
    }

    #[test]
    fn everything_archived_then_pushing_again() {
        let mut v = NumberedVec::new();
        for i in 0..(2 * CHUNK as u64) {
            v.push(i);
        }
        for i in 0..2 * CHUNK {
            v.archive(i, 3);
        }
        assert_eq!(v.chunks_in_memory(), 0);
        v.push(1);
        assert_eq!(v.get(2 * CHUNK), Some(&1));
        assert_eq!(roundtrip(&v), v);
    }
}
