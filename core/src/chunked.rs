//! Sequences that grow without ever copying what they already hold: a merchant's orders,
//! payments, holds, items, customers, queue tokens ([`ChunkedVec`]) and the expiry queue of
//! its idempotency keys ([`ChunkedDeque`]).
//!
//! Why: a `Vec` that is full reallocates to twice its capacity and copies every element,
//! inside the one command that pushed. In a flash sale one merchant reaches millions of
//! orders, so that command copies hundreds of megabytes (and page-faults the new block in)
//! while holding its shard's lock: every request queued behind the shard waits for it. A
//! profile of `surge serve` under load showed ~4% of server CPU there, and the worst single
//! `Shard::execute` at 2M orders took 0.5-1 s (`cargo bench -p surge-benches --bench grow`).
//!
//! How: elements live in chunks of `CHUNK` elements. A chunk other than the first is
//! allocated at full capacity and never reallocates; when it is full the next push starts a
//! new chunk. The first chunk grows like a `Vec` (doubling, capped at `CHUNK`) so that the
//! many small collections (a merchant with three items, a queue with ten tokens) cost no
//! more than a `Vec`. So a push copies at most `CHUNK` elements (while the first chunk
//! grows) plus the table of chunk headers (24 bytes per `CHUNK` elements), whatever the
//! length. Memory: the chunk table is the only overhead (no per-element cost), and at most
//! one chunk is partly empty, where a `Vec` leaves up to half of its capacity unused.
//!
//! `CHUNK` is a power of two so that indexing is a shift and a mask. 4096 elements: the
//! biggest element stored here (`Payment`, ~150 bytes) makes a ~600 KiB chunk, and copying
//! 4096 elements while the first chunk grows costs well under a millisecond.
//!
//! Both serialize exactly as the `Vec` / `VecDeque` they replace (one serde sequence with its
//! length up front), so snapshots and digests are byte for byte what they were.
//!
//! Copy on write: chunks are shared (`Arc`), so a clone copies the chunk table (one `Arc` per
//! `CHUNK` elements: ~500 pointers at 2M elements), never the elements. That is what lets a
//! host snapshot a shard by cloning it under its lock for microseconds and encoding the clone
//! elsewhere. Every mutation first makes the chunk it touches unique (`Arc::make_mut`), so
//! the original and the clone never see each other's changes; the first write to a shared
//! chunk copies that chunk (at most `CHUNK` elements, the same bound as a push), later writes
//! to it copy nothing. A copied chunk keeps the capacity of the one it copies ([`Chunk`]'s
//! `Clone`), so a chunk after the first still never reallocates.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Elements per chunk (a power of two: `index >> CHUNK_BITS`, `index & CHUNK_MASK`).
pub const CHUNK: usize = 1 << CHUNK_BITS;
const CHUNK_BITS: u32 = 12;
const CHUNK_MASK: usize = CHUNK - 1;

/// One chunk's buffer (`Vec` or `VecDeque`). Its `Clone` keeps the capacity (`Vec::clone`
/// allocates only `len`), so un-sharing a chunk after the first gives it its full `CHUNK`
/// capacity again and the first chunk keeps growing from where it was.
pub(crate) struct Chunk<C>(C);

impl<C> Deref for Chunk<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.0
    }
}
impl<C> DerefMut for Chunk<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.0
    }
}

impl<T: Clone> Clone for Chunk<Vec<T>> {
    fn clone(&self) -> Self {
        let mut copy = Vec::with_capacity(self.0.capacity());
        copy.extend_from_slice(&self.0);
        Chunk(copy)
    }
}

impl<T: Clone> Clone for Chunk<VecDeque<T>> {
    fn clone(&self) -> Self {
        let mut copy = VecDeque::with_capacity(self.0.capacity());
        copy.extend(self.0.iter().cloned());
        Chunk(copy)
    }
}

impl<C: PartialEq> PartialEq for Chunk<C> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<C: Eq> Eq for Chunk<C> {}

/// A growable sequence indexed like a `Vec`, stored in chunks of `CHUNK` elements so that a
/// push never copies more than one chunk. Only appends: nothing in a merchant's state is
/// ever removed from these.
///
/// Invariants: every chunk but the last holds exactly `CHUNK` elements, the last holds
/// 1..=`CHUNK`, there are no empty chunks, every chunk but the first has capacity `CHUNK`,
/// and `len` is the total. Chunks may be shared with clones (see the module doc).
pub struct ChunkedVec<T> {
    chunks: Vec<Arc<Chunk<Vec<T>>>>,
    len: usize,
}

fn vec_chunk_iter<T>(chunk: &Arc<Chunk<Vec<T>>>) -> std::slice::Iter<'_, T> {
    chunk.0.iter()
}

fn vec_chunk_iter_mut<T>(chunk: &mut Arc<Chunk<Vec<T>>>) -> std::slice::IterMut<'_, T> {
    // `iter_mut` made every chunk unique first.
    Arc::get_mut(chunk).expect("chunk made unique").0.iter_mut()
}

impl<T> ChunkedVec<T> {
    pub const fn new() -> Self {
        ChunkedVec { chunks: Vec::new(), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        // Every chunk before the last is full, so element i is in chunk i / CHUNK.
        self.chunks.get(index >> CHUNK_BITS)?.get(index & CHUNK_MASK)
    }

    pub fn first(&self) -> Option<&T> {
        self.chunks.first()?.first()
    }

    pub fn last(&self) -> Option<&T> {
        self.chunks.last()?.last()
    }

    pub fn iter(&self) -> Iter<'_, T> {
        Iter { inner: self.chunks.iter().flat_map(vec_chunk_iter), remaining: self.len }
    }

    /// The chunks in order, for the snapshot encoder's cache (`encoding/cached.rs`).
    pub(crate) fn chunks(&self) -> &[Arc<Chunk<Vec<T>>>] {
        &self.chunks
    }

    /// The chunk layout, for tests of the invariants.
    #[cfg(test)]
    fn check(&self) {
        for (i, chunk) in self.chunks.iter().enumerate() {
            assert!(!chunk.is_empty(), "no empty chunks");
            assert!(chunk.len() <= CHUNK && chunk.capacity() <= CHUNK.max(4), "chunk over capacity");
            if i > 0 {
                assert_eq!(chunk.capacity(), CHUNK, "chunks after the first are allocated at full capacity");
            }
            if i + 1 < self.chunks.len() {
                assert_eq!(chunk.len(), CHUNK, "every chunk but the last is full");
            }
        }
        assert_eq!(self.len, self.chunks.iter().map(|c| c.len()).sum::<usize>());
    }
}

/// Mutations: each makes the chunk it touches unique first (copying it if a clone shares it).
impl<T: Clone> ChunkedVec<T> {
    #[inline]
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        // Below `len` exactly when in a chunk: checked first, so a miss un-shares nothing.
        if index >= self.len {
            return None;
        }
        Arc::make_mut(&mut self.chunks[index >> CHUNK_BITS]).get_mut(index & CHUNK_MASK)
    }

    #[inline]
    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            // The common case: room in the last chunk, so no reallocation (and never past
            // CHUNK, whatever capacity the allocation got; un-sharing keeps the capacity).
            Some(last) if last.len() < last.capacity().min(CHUNK) => Arc::make_mut(last).push(value),
            _ => self.push_slow(value),
        }
        self.len += 1;
        debug_assert!(self.chunks.last().is_some_and(|c| c.len() <= CHUNK));
        debug_assert_eq!(self.len, (self.chunks.len() - 1) * CHUNK + self.chunks.last().map_or(0, |c| c.len()));
    }

    /// A push into a full chunk: the first chunk doubles (capped at CHUNK), any other
    /// starts a new chunk. Does not count the element (`push` does).
    #[cold]
    fn push_slow(&mut self, value: T) {
        let only_chunk = self.chunks.len() == 1;
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => {
                // Only the first chunk is ever allocated below `CHUNK`: it doubles like a
                // `Vec`, capped so that it never holds more than one chunk's worth.
                assert!(only_chunk, "a chunk after the first was allocated at full capacity");
                let target = (last.capacity() * 2).clamp(4, CHUNK);
                let last = Arc::make_mut(last);
                let len = last.len();
                last.reserve_exact(target - len);
                last.push(value);
            }
            _ => {
                // The first chunk starts small (most collections stay small); later ones are
                // allocated at full capacity once, so they never reallocate.
                let mut chunk = if self.chunks.is_empty() { Vec::new() } else { Vec::with_capacity(CHUNK) };
                chunk.push(value);
                self.chunks.push(Arc::new(Chunk(chunk)));
            }
        }
    }

    /// Makes every chunk unique first: copies whatever a clone still shares.
    pub fn iter_mut(&mut self) -> IterMut<'_, T> {
        self.chunks.iter_mut().for_each(|chunk| {
            Arc::make_mut(chunk);
        });
        IterMut { inner: self.chunks.iter_mut().flat_map(vec_chunk_iter_mut), remaining: self.len }
    }
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec::new()
    }
}

impl<T> Clone for ChunkedVec<T> {
    /// Shares every chunk: copies the chunk table, not the elements (see the module doc).
    fn clone(&self) -> Self {
        ChunkedVec { chunks: self.chunks.clone(), len: self.len }
    }
}

impl<T: fmt::Debug> fmt::Debug for ChunkedVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: PartialEq> PartialEq for ChunkedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        // Equal lengths have equal layouts, so chunk by chunk compares element by element.
        self.len == other.len && self.chunks == other.chunks
    }
}
impl<T: Eq> Eq for ChunkedVec<T> {}

impl<T> std::ops::Index<usize> for ChunkedVec<T> {
    type Output = T;
    fn index(&self, index: usize) -> &T {
        match self.get(index) {
            Some(value) => value,
            None => panic!("index {index} out of bounds (len {})", self.len),
        }
    }
}

impl<T: Clone> FromIterator<T> for ChunkedVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut out = ChunkedVec::new();
        iter.into_iter().for_each(|value| out.push(value));
        out
    }
}

impl<T: Clone> Extend<T> for ChunkedVec<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        iter.into_iter().for_each(|value| self.push(value));
    }
}

impl<'a, T> IntoIterator for &'a ChunkedVec<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// The elements in order; exact-size, so serde writes the length up front as for a `Vec`.
#[allow(clippy::type_complexity)]
pub struct Iter<'a, T> {
    inner: std::iter::FlatMap<
        std::slice::Iter<'a, Arc<Chunk<Vec<T>>>>,
        std::slice::Iter<'a, T>,
        fn(&'a Arc<Chunk<Vec<T>>>) -> std::slice::Iter<'a, T>,
    >,
    remaining: usize,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;
    fn next(&mut self) -> Option<&'a T> {
        let next = self.inner.next()?;
        self.remaining -= 1;
        Some(next)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}
impl<T> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let next = self.inner.next_back()?;
        self.remaining -= 1;
        Some(next)
    }
}
impl<T> ExactSizeIterator for Iter<'_, T> {}
impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Iter { inner: self.inner.clone(), remaining: self.remaining }
    }
}

#[allow(clippy::type_complexity)]
pub struct IterMut<'a, T> {
    inner: std::iter::FlatMap<
        std::slice::IterMut<'a, Arc<Chunk<Vec<T>>>>,
        std::slice::IterMut<'a, T>,
        fn(&'a mut Arc<Chunk<Vec<T>>>) -> std::slice::IterMut<'a, T>,
    >,
    remaining: usize,
}

impl<'a, T> Iterator for IterMut<'a, T> {
    type Item = &'a mut T;
    fn next(&mut self) -> Option<&'a mut T> {
        let next = self.inner.next()?;
        self.remaining -= 1;
        Some(next)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}
impl<T> ExactSizeIterator for IterMut<'_, T> {}

impl<T: Serialize> Serialize for ChunkedVec<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // What `Vec::serialize` does: one sequence, its exact length up front.
        s.collect_seq(self.iter())
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for ChunkedVec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Clone> Visitor<'de> for Seq<T> {
            type Value = ChunkedVec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ChunkedVec<T>, A::Error> {
                // Element by element into chunks: no intermediate `Vec` of the whole length,
                // and nothing is reserved from an untrusted length prefix.
                let mut out = ChunkedVec::new();
                while let Some(value) = seq.next_element()? {
                    out.push(value);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Seq(PhantomData))
    }
}

/// A FIFO queue in chunks of `CHUNK` elements: `push_back` never copies more than one chunk
/// (see the module doc), and `pop_front` frees a chunk as soon as it is empty, so a queue
/// that is drained from the front while it grows at the back (idempotency keys expiring
/// while new ones arrive) neither copies nor holds on to memory.
///
/// Invariants: every chunk but the first and the last holds exactly `CHUNK` elements, none
/// holds more, only a sole chunk may be empty (kept for reuse), every chunk but the first
/// has capacity >= `CHUNK`, and `len` is the total. Chunks may be shared with clones, as in
/// `ChunkedVec`: a pop or push makes only the chunk it touches unique.
pub struct ChunkedDeque<T> {
    chunks: VecDeque<Arc<Chunk<VecDeque<T>>>>,
    len: usize,
}

fn deque_chunk_iter<T>(chunk: &Arc<Chunk<VecDeque<T>>>) -> std::collections::vec_deque::Iter<'_, T> {
    chunk.0.iter()
}

impl<T> ChunkedDeque<T> {
    pub const fn new() -> Self {
        ChunkedDeque { chunks: VecDeque::new(), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn front(&self) -> Option<&T> {
        self.chunks.front()?.front()
    }

    pub fn back(&self) -> Option<&T> {
        self.chunks.back()?.back()
    }

    pub fn iter(&self) -> DequeIter<'_, T> {
        DequeIter { inner: self.chunks.iter().flat_map(deque_chunk_iter), remaining: self.len }
    }

    /// The chunks in order, for the snapshot encoder's cache (`encoding/cached.rs`).
    pub(crate) fn chunks(&self) -> impl Iterator<Item = &Arc<Chunk<VecDeque<T>>>> {
        self.chunks.iter()
    }

    #[cfg(test)]
    fn check(&self) {
        let n = self.chunks.len();
        for (i, chunk) in self.chunks.iter().enumerate() {
            assert!(chunk.len() <= CHUNK, "chunk over capacity");
            assert!(n == 1 || !chunk.is_empty(), "only a sole chunk may be empty");
            if i > 0 && i + 1 < n {
                assert_eq!(chunk.len(), CHUNK, "middle chunks are full");
            }
            if i > 0 {
                assert!(chunk.capacity() >= CHUNK, "later chunks are allocated at full capacity");
            }
        }
        assert_eq!(self.len, self.chunks.iter().map(|c| c.len()).sum::<usize>());
    }
}

/// Mutations: each makes the chunk it touches unique first (copying it if a clone shares it).
impl<T: Clone> ChunkedDeque<T> {
    pub fn push_back(&mut self, value: T) {
        let only_chunk = self.chunks.len() == 1;
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => {
                let last = Arc::make_mut(last);
                if last.len() == last.capacity() {
                    // As in `ChunkedVec::push`: only a sole first chunk grows, capped at CHUNK.
                    assert!(only_chunk, "a chunk after the first was allocated at full capacity");
                    let target = (last.capacity() * 2).clamp(4, CHUNK);
                    let len = last.len();
                    last.reserve_exact(target - len);
                }
                last.push_back(value);
            }
            _ => {
                let mut chunk = if self.chunks.is_empty() { VecDeque::new() } else { VecDeque::with_capacity(CHUNK) };
                chunk.push_back(value);
                self.chunks.push_back(Arc::new(Chunk(chunk)));
            }
        }
        self.len += 1;
        debug_assert!(self.chunks.back().is_some_and(|c| c.len() <= CHUNK));
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let first = self.chunks.front_mut()?;
        if first.is_empty() {
            return None;
        }
        let value = Arc::make_mut(first).pop_front()?;
        if first.is_empty() && self.chunks.len() > 1 {
            // An emptied chunk before others is freed at once; a sole one is kept (a ring
            // buffer that keys cycle through without allocating).
            self.chunks.pop_front();
        }
        self.len -= 1;
        debug_assert!(self.len > 0 || self.chunks.len() <= 1);
        Some(value)
    }
}

impl<T> Default for ChunkedDeque<T> {
    fn default() -> Self {
        ChunkedDeque::new()
    }
}

impl<T> Clone for ChunkedDeque<T> {
    /// Shares every chunk: copies the chunk table, not the elements.
    fn clone(&self) -> Self {
        ChunkedDeque { chunks: self.chunks.clone(), len: self.len }
    }
}

impl<T: fmt::Debug> fmt::Debug for ChunkedDeque<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: PartialEq> PartialEq for ChunkedDeque<T> {
    fn eq(&self, other: &Self) -> bool {
        // Layouts differ with the history of pops: compare the elements.
        self.len == other.len && self.iter().eq(other.iter())
    }
}
impl<T: Eq> Eq for ChunkedDeque<T> {}

impl<'a, T> IntoIterator for &'a ChunkedDeque<T> {
    type Item = &'a T;
    type IntoIter = DequeIter<'a, T>;
    fn into_iter(self) -> DequeIter<'a, T> {
        self.iter()
    }
}

/// The elements front to back; exact-size like `ChunkedVec`'s.
#[allow(clippy::type_complexity)]
pub struct DequeIter<'a, T> {
    inner: std::iter::FlatMap<
        std::collections::vec_deque::Iter<'a, Arc<Chunk<VecDeque<T>>>>,
        std::collections::vec_deque::Iter<'a, T>,
        fn(&'a Arc<Chunk<VecDeque<T>>>) -> std::collections::vec_deque::Iter<'a, T>,
    >,
    remaining: usize,
}

impl<'a, T> Iterator for DequeIter<'a, T> {
    type Item = &'a T;
    fn next(&mut self) -> Option<&'a T> {
        let next = self.inner.next()?;
        self.remaining -= 1;
        Some(next)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}
impl<T> ExactSizeIterator for DequeIter<'_, T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn indexes_across_chunks() {
        let mut v = ChunkedVec::new();
        for i in 0..3 * CHUNK + 5 {
            assert_eq!(v.len(), i);
            v.push(i as u32);
            assert_eq!(v.last(), Some(&(i as u32)));
        }
        v.check();
        assert_eq!(v.chunks.len(), 4);
        for i in 0..v.len() {
            assert_eq!(v.get(i), Some(&(i as u32)));
            assert_eq!(v[i], i as u32);
        }
        assert_eq!(v.get(v.len()), None);
        assert_eq!(v.get(usize::MAX), None);
        assert!(v.iter().copied().eq(0..v.len() as u32));
        assert!(v.iter().rev().copied().eq((0..v.len() as u32).rev()));
        assert_eq!(v.iter().len(), v.len());
        *v.get_mut(CHUNK).unwrap() = 7;
        assert_eq!(v[CHUNK], 7);
        let c = v.clone();
        c.check();
        assert_eq!(c, v);
        assert!(c.chunks.iter().skip(1).all(|chunk| chunk.capacity() >= CHUNK));
    }

    #[test]
    fn the_first_chunk_grows_up_to_one_chunk_and_later_ones_never_reallocate() {
        let mut v = ChunkedVec::new();
        let mut buffers = Vec::new();
        for i in 0..3 * CHUNK {
            v.push(i as u64);
            assert!(v.chunks[0].capacity() <= CHUNK);
            if v.chunks.len() > 1 {
                let ptr = v.chunks.last().unwrap().as_ptr();
                let n = v.chunks.len();
                if buffers.len() < n - 1 {
                    buffers.push(ptr);
                }
                assert_eq!(buffers[n - 2], ptr, "chunk {n} moved");
            }
        }
        v.check();
    }

    #[test]
    fn deque_frees_chunks_from_the_front() {
        let mut d = ChunkedDeque::new();
        for i in 0..3 * CHUNK {
            d.push_back(i);
        }
        d.check();
        for i in 0..2 * CHUNK + 1 {
            assert_eq!(d.front(), Some(&i));
            assert_eq!(d.pop_front(), Some(i));
        }
        d.check();
        assert_eq!(d.chunks.len(), 1);
        assert_eq!(d.len(), CHUNK - 1);
        assert!(d.iter().copied().eq(2 * CHUNK + 1..3 * CHUNK));
        while d.pop_front().is_some() {}
        d.check();
        assert!(d.is_empty() && d.front().is_none());
        assert_eq!(d.chunks.len(), 1, "a sole empty chunk is kept for reuse");
        d.push_back(1);
        assert_eq!(d.back(), Some(&1));
        d.check();
    }

    /// The serde bytes of a `Vec` and of a `ChunkedVec` with the same elements are the same,
    /// in both directions, across chunk boundaries.
    #[test]
    fn encodes_as_a_vec() {
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let plain: Vec<(u64, String)> = (0..n).map(|i| (i as u64 * 31, format!("e{i}"))).collect();
            let chunked: ChunkedVec<(u64, String)> = plain.iter().cloned().collect();
            let bytes = postcard::to_allocvec(&plain).unwrap();
            assert_eq!(postcard::to_allocvec(&chunked).unwrap(), bytes, "{n} elements");
            let back: ChunkedVec<(u64, String)> = postcard::from_bytes(&bytes).unwrap();
            back.check();
            assert_eq!(back, chunked);
            assert_eq!(serde_json::to_string(&chunked).unwrap(), serde_json::to_string(&plain).unwrap());

            let deque: ChunkedDeque<(u64, String)> = {
                let mut d = ChunkedDeque::new();
                plain.iter().cloned().for_each(|e| d.push_back(e));
                d
            };
            let as_deque: VecDeque<(u64, String)> = plain.iter().cloned().collect();
            assert_eq!(postcard::to_allocvec(&deque.iter().collect::<Vec<_>>()).unwrap(), bytes);
            assert!(deque.iter().eq(as_deque.iter()));
        }
    }

    /// Copy on write: a clone shares every chunk, and every mutation of either side copies
    /// only the chunk it touches, so neither ever sees the other's changes.
    #[test]
    fn clones_share_chunks_until_written() {
        let n = 3 * CHUNK + 5;
        let model: Vec<u64> = (0..n as u64).collect();
        let mut v: ChunkedVec<u64> = model.iter().copied().collect();
        let c = v.clone();
        assert!(v.chunks.iter().zip(&c.chunks).all(|(a, b)| Arc::ptr_eq(a, b)), "a clone copies no chunk");
        let mut expect = model.clone();
        // push into the shared last chunk, get_mut in a shared middle chunk and in the
        // (shared) first chunk, then enough pushes to start a new chunk.
        v.push(1_000_000);
        expect.push(1_000_000);
        *v.get_mut(CHUNK + 7).unwrap() = 7;
        expect[CHUNK + 7] = 7;
        *v.get_mut(3).unwrap() = 3_000;
        expect[3] = 3_000;
        assert_eq!(v.get_mut(v.len()), None);
        assert!(Arc::ptr_eq(&v.chunks[2], &c.chunks[2]), "an untouched chunk stays shared");
        for i in 0..CHUNK as u64 {
            v.push(i);
            expect.push(i);
        }
        v.check();
        c.check();
        assert!(c.iter().eq(model.iter()), "the clone is unchanged");
        assert!(v.iter().eq(expect.iter()));
        // iter_mut un-shares everything; and the clone can be written in turn.
        let c2 = v.clone();
        v.iter_mut().for_each(|x| *x += 1);
        expect.iter_mut().for_each(|x| *x += 1);
        v.check();
        assert!(v.iter().eq(expect.iter()));
        assert!(c2.iter().map(|x| x + 1).eq(expect.iter().copied()));
        let mut c = c;
        c.push(5);
        *c.get_mut(0).unwrap() = 9;
        c.check();
        assert_eq!((c[0], c[n], c.len()), (9, 5, n + 1));
        assert!(v.iter().eq(expect.iter()), "writing the clone leaves the original alone");

        // A small first chunk keeps its capacity (and so its growth) when un-shared.
        let mut small: ChunkedVec<u64> = (0..5).collect();
        let cap = small.chunks[0].capacity();
        let small_clone = small.clone();
        *small.get_mut(0).unwrap() = 1;
        assert_eq!(small.chunks[0].capacity(), cap);
        small.check();
        assert_eq!(small_clone[0], 0);
    }

    #[test]
    fn deque_clones_share_chunks_until_written() {
        let mut d = ChunkedDeque::new();
        let mut model = VecDeque::new();
        for i in 0..3 * CHUNK + 5 {
            d.push_back(i);
            model.push_back(i);
        }
        for _ in 0..10 {
            assert_eq!(d.pop_front(), model.pop_front());
        }
        let c = d.clone();
        assert!(d.chunks.iter().zip(&c.chunks).all(|(a, b)| Arc::ptr_eq(a, b)));
        let at_clone = model.clone();
        // Pops from the shared front chunk (until it is freed), pushes into the shared back
        // chunk and on into a new one.
        for _ in 0..CHUNK {
            assert_eq!(d.pop_front(), model.pop_front());
        }
        for i in 0..CHUNK + 3 {
            d.push_back(i);
            model.push_back(i);
        }
        d.check();
        c.check();
        assert!(d.iter().eq(model.iter()));
        assert!(c.iter().eq(at_clone.iter()), "the clone is unchanged");
        let mut c = c;
        assert_eq!(c.pop_front(), at_clone.front().copied());
        c.push_back(99);
        c.check();
        assert!(d.iter().eq(model.iter()), "writing the clone leaves the original alone");
        while d.pop_front().is_some() {}
        d.check();
        assert_eq!(c.len(), at_clone.len());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(u16),
        Pop,
        Set(usize, u16),
    }

    fn ops() -> impl Strategy<Value = Vec<(Op, u16)>> {
        // Runs of the same op (`u16` repeats) reach several chunks in a few hundred ops.
        let op = prop_oneof![
            4 => any::<u16>().prop_map(Op::Push),
            2 => Just(Op::Pop),
            1 => (any::<usize>(), any::<u16>()).prop_map(|(i, v)| Op::Set(i, v)),
        ];
        proptest::collection::vec((op, 0..2 * CHUNK as u16), 0..24)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// `ChunkedVec` against `Vec` (pushes and overwrites) and `ChunkedDeque` against
        /// `VecDeque` (pushes and pops), with the invariants checked after every run.
        #[test]
        fn behaves_like_the_std_collections(ops in ops()) {
            let (mut v, mut v_model) = (ChunkedVec::new(), Vec::new());
            let (mut d, mut d_model) = (ChunkedDeque::new(), VecDeque::new());
            for (op, times) in ops {
                for k in 0..times {
                    match op {
                        Op::Push(x) => {
                            let x = x.wrapping_add(k);
                            v.push(x);
                            v_model.push(x);
                            d.push_back(x);
                            d_model.push_back(x);
                        }
                        Op::Pop => prop_assert_eq!(d.pop_front(), d_model.pop_front()),
                        Op::Set(i, x) => {
                            if !v_model.is_empty() {
                                let i = (i + k as usize) % v_model.len();
                                *v.get_mut(i).unwrap() = x;
                                v_model[i] = x;
                            }
                        }
                    }
                }
                v.check();
                d.check();
                prop_assert_eq!(v.len(), v_model.len());
                prop_assert!(v.iter().eq(v_model.iter()));
                prop_assert_eq!(v.last(), v_model.last());
                prop_assert_eq!(v.first(), v_model.first());
                prop_assert_eq!(v.get(v_model.len()), None);
                prop_assert_eq!(d.len(), d_model.len());
                prop_assert!(d.iter().eq(d_model.iter()));
                prop_assert_eq!(d.front(), d_model.front());
                prop_assert_eq!(d.back(), d_model.back());
            }
            prop_assert_eq!(postcard::to_allocvec(&v).unwrap(), postcard::to_allocvec(&v_model).unwrap());
        }

        /// Clones taken between runs of ops stay what they were while the original goes on
        /// (copy on write), and the original still behaves like the std collections.
        #[test]
        fn clones_are_independent(ops in ops()) {
            let (mut v, mut v_model) = (ChunkedVec::new(), Vec::new());
            let (mut d, mut d_model) = (ChunkedDeque::new(), VecDeque::new());
            let mut clones = Vec::new();
            for (op, times) in ops {
                clones.push((v.clone(), v_model.clone(), d.clone(), d_model.clone()));
                for k in 0..times {
                    match op {
                        Op::Push(x) => {
                            let x = x.wrapping_add(k);
                            v.push(x);
                            v_model.push(x);
                            d.push_back(x);
                            d_model.push_back(x);
                        }
                        Op::Pop => prop_assert_eq!(d.pop_front(), d_model.pop_front()),
                        Op::Set(i, x) => {
                            if !v_model.is_empty() {
                                let i = (i + k as usize) % v_model.len();
                                *v.get_mut(i).unwrap() = x;
                                v_model[i] = x;
                            }
                        }
                    }
                }
                v.check();
                d.check();
                prop_assert!(v.iter().eq(v_model.iter()));
                prop_assert!(d.iter().eq(d_model.iter()));
                for (cv, cv_model, cd, cd_model) in &clones {
                    cv.check();
                    cd.check();
                    prop_assert!(cv.iter().eq(cv_model.iter()));
                    prop_assert!(cd.iter().eq(cd_model.iter()));
                }
            }
        }
    }
}
