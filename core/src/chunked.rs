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

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Elements per chunk (a power of two: `index >> CHUNK_BITS`, `index & CHUNK_MASK`).
pub const CHUNK: usize = 1 << CHUNK_BITS;
const CHUNK_BITS: u32 = 12;
const CHUNK_MASK: usize = CHUNK - 1;

/// A growable sequence indexed like a `Vec`, stored in chunks of `CHUNK` elements so that a
/// push never copies more than one chunk. Only appends: nothing in a merchant's state is
/// ever removed from these.
///
/// Invariants: every chunk but the last holds exactly `CHUNK` elements, the last holds
/// 1..=`CHUNK`, there are no empty chunks, and `len` is the total.
pub struct ChunkedVec<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
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

    #[inline]
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.chunks.get_mut(index >> CHUNK_BITS)?.get_mut(index & CHUNK_MASK)
    }

    pub fn first(&self) -> Option<&T> {
        self.chunks.first()?.first()
    }

    pub fn last(&self) -> Option<&T> {
        self.chunks.last()?.last()
    }

    #[inline]
    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            // The common case: room in the last chunk, so no reallocation (and never past
            // CHUNK, whatever capacity the allocation got).
            Some(last) if last.len() < last.capacity().min(CHUNK) => last.push(value),
            _ => self.push_slow(value),
        }
        self.len += 1;
        debug_assert!(self.chunks.last().is_some_and(|c| c.len() <= CHUNK));
        debug_assert_eq!(self.len, (self.chunks.len() - 1) * CHUNK + self.chunks.last().map_or(0, Vec::len));
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
                last.reserve_exact(target - last.len());
                last.push(value);
            }
            _ => {
                // The first chunk starts small (most collections stay small); later ones are
                // allocated at full capacity once, so they never reallocate.
                let mut chunk = if self.chunks.is_empty() { Vec::new() } else { Vec::with_capacity(CHUNK) };
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
    }

    pub fn iter(&self) -> Iter<'_, T> {
        Iter { inner: self.chunks.iter().flatten(), remaining: self.len }
    }

    pub fn iter_mut(&mut self) -> IterMut<'_, T> {
        IterMut { inner: self.chunks.iter_mut().flatten(), remaining: self.len }
    }

    /// The chunk layout, for tests of the invariants.
    #[cfg(test)]
    fn check(&self) {
        for (i, chunk) in self.chunks.iter().enumerate() {
            assert!(!chunk.is_empty(), "no empty chunks");
            assert!(chunk.len() <= CHUNK && chunk.capacity() <= CHUNK.max(4), "chunk over capacity");
            if i + 1 < self.chunks.len() {
                assert_eq!(chunk.len(), CHUNK, "every chunk but the last is full");
            }
        }
        assert_eq!(self.len, self.chunks.iter().map(Vec::len).sum::<usize>());
    }
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec::new()
    }
}

impl<T: Clone> Clone for ChunkedVec<T> {
    /// Keeps the layout: a clone grows without copying, like the original.
    fn clone(&self) -> Self {
        let chunks = self
            .chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut copy = Vec::with_capacity(if i == 0 { chunk.capacity() } else { CHUNK });
                copy.extend_from_slice(chunk);
                copy
            })
            .collect();
        ChunkedVec { chunks, len: self.len }
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

impl<T> FromIterator<T> for ChunkedVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut out = ChunkedVec::new();
        iter.into_iter().for_each(|value| out.push(value));
        out
    }
}

impl<T> Extend<T> for ChunkedVec<T> {
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
pub struct Iter<'a, T> {
    inner: std::iter::Flatten<std::slice::Iter<'a, Vec<T>>>,
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

pub struct IterMut<'a, T> {
    inner: std::iter::Flatten<std::slice::IterMut<'a, Vec<T>>>,
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

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ChunkedVec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Seq<T> {
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
/// holds more, only a sole chunk may be empty (kept for reuse), and `len` is the total.
pub struct ChunkedDeque<T> {
    chunks: VecDeque<VecDeque<T>>,
    len: usize,
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

    pub fn push_back(&mut self, value: T) {
        let only_chunk = self.chunks.len() == 1;
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => {
                if last.len() == last.capacity() {
                    // As in `ChunkedVec::push`: only a sole first chunk grows, capped at CHUNK.
                    assert!(only_chunk, "a chunk after the first was allocated at full capacity");
                    let target = (last.capacity() * 2).clamp(4, CHUNK);
                    last.reserve_exact(target - last.len());
                }
                last.push_back(value);
            }
            _ => {
                let mut chunk = if self.chunks.is_empty() { VecDeque::new() } else { VecDeque::with_capacity(CHUNK) };
                chunk.push_back(value);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
        debug_assert!(self.chunks.back().is_some_and(|c| c.len() <= CHUNK));
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let first = self.chunks.front_mut()?;
        let value = first.pop_front()?;
        if first.is_empty() && self.chunks.len() > 1 {
            // An emptied chunk before others is freed at once; a sole one is kept (a ring
            // buffer that keys cycle through without allocating).
            self.chunks.pop_front();
        }
        self.len -= 1;
        debug_assert!(self.len > 0 || self.chunks.len() <= 1);
        Some(value)
    }

    pub fn iter(&self) -> DequeIter<'_, T> {
        DequeIter { inner: self.chunks.iter().flatten(), remaining: self.len }
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
        assert_eq!(self.len, self.chunks.iter().map(VecDeque::len).sum::<usize>());
    }
}

impl<T> Default for ChunkedDeque<T> {
    fn default() -> Self {
        ChunkedDeque::new()
    }
}

impl<T: Clone> Clone for ChunkedDeque<T> {
    /// Keeps the layout (and full capacity of every chunk but the first).
    fn clone(&self) -> Self {
        let chunks = self
            .chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut copy = VecDeque::with_capacity(if i == 0 { chunk.capacity() } else { CHUNK });
                copy.extend(chunk.iter().cloned());
                copy
            })
            .collect();
        ChunkedDeque { chunks, len: self.len }
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
pub struct DequeIter<'a, T> {
    inner: std::iter::Flatten<std::collections::vec_deque::Iter<'a, VecDeque<T>>>,
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
    }
}
