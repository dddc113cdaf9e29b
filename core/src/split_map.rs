//! A hash map that grows without ever rehashing more than a few thousand entries at once:
//! the id -> position indexes of a merchant's items, customers and queues, and its
//! idempotency records ([`SplitMap`]).
//!
//! Why: a hash map that is full allocates a table twice the size and moves every entry into
//! it, inside the one insert that found it full. At a million idempotency keys that one
//! insert took 130 ms (241 ms at 1.8M), under the shard's lock: a latency spike for every
//! request queued behind the shard, where the target is p99 <= 5 ms.
//!
//! How: extendible hashing over ordinary (foldhash) hash maps. The map is split into parts
//! of at most `PART_MAX` entries; a directory of `2^depth` slots, indexed by the top `depth`
//! bits of the key's hash, says which part holds a key (a part of local depth `d` owns the
//! `2^(depth - d)` slots that share its top `d` bits). A new key for a full part splits that
//! part in two by the next hash bit first, moving at most `PART_MAX` entries, and doubles the
//! directory (4 bytes per part, copied) only when the part already used every bit the
//! directory has. So an insert rehashes at most `PART_MAX` entries whatever the size, where
//! a map split a fixed N ways would still rehash 1/N of everything (at 2M keys and N = 64,
//! 31k entries: milliseconds again). A part's own table grows by doubling up to `PART_MAX`,
//! so a small map (three items) costs what a `HashMap` costs.
//!
//! Memory: a split part's halves are tables of 4096 buckets (`PART_MAX` is 7/8 of that,
//! hashbrown's maximum load), so the load factor wanders between ~44% and 87.5% like a
//! doubling table's; the directory and part headers add ~50 bytes per `PART_MAX` entries.
//!
//! The directory hash has a seed of its own: the parts' tables take bucket and tag bits from
//! their own hash, and sharing one hash would leave every key of a part with the same top
//! bits (few distinct tags, many false matches). Like every hash map in core this is an index
//! only: it is never iterated into state or output (the split is an internal move), so its
//! random seeds cannot change a digest.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::state::HashMap;

/// Entries in one part before it splits: 7/8 of 4096 buckets, the most a table of that size
/// holds, so a split's halves are allocated once at that size.
pub const PART_MAX: usize = 3_584;
/// The directory never indexes by more than this many hash bits (2^24 parts of `PART_MAX`
/// entries, far beyond memory). Past it a part just grows, which takes a hash that puts
/// thousands of keys on the same 24-bit prefix: not something a random seed lets happen.
const DEPTH_MAX: u32 = 24;

#[derive(Clone)]
pub struct SplitMap<K, V> {
    /// Picks the directory slot (top `depth` bits of its hash).
    selector: foldhash::fast::RandomState,
    depth: u32,
    /// `2^depth` part numbers; empty until the first insert.
    directory: Vec<u32>,
    parts: Vec<Part<K, V>>,
    len: usize,
}

#[derive(Clone)]
struct Part<K, V> {
    /// The part holds exactly the keys whose top `depth` hash bits are its prefix.
    depth: u32,
    map: HashMap<K, V>,
}

impl<K, V> Default for SplitMap<K, V> {
    fn default() -> Self {
        SplitMap { selector: Default::default(), depth: 0, directory: Vec::new(), parts: Vec::new(), len: 0 }
    }
}

impl<K: Hash + Eq, V> SplitMap<K, V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&self, hash: u64) -> usize {
        // `checked_shr`: with depth 0 every key is in slot 0 (a shift by 64 would overflow).
        hash.checked_shr(64 - self.depth).unwrap_or(0) as usize
    }

    fn part_of<Q: Hash + ?Sized>(&self, key: &Q) -> Option<usize> {
        if self.directory.is_empty() {
            return None;
        }
        Some(self.directory[self.slot(self.selector.hash_one(key))] as usize)
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.parts[self.part_of(key)?].map.get(key)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let part = self.part_of(key)?;
        self.parts[part].map.get_mut(key)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Parts are not merged back: like a `HashMap`, the map keeps its size when emptied.
        let part = self.part_of(key)?;
        let removed = self.parts[part].map.remove(key)?;
        self.len -= 1;
        Some(removed)
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.directory.is_empty() {
            self.directory.push(0);
            self.parts.push(Part { depth: 0, map: HashMap::default() });
        }
        let hash = self.selector.hash_one(&key);
        let mut part = self.directory[self.slot(hash)] as usize;
        // Split before the insert, so that the part's own table never grows past PART_MAX
        // (growing it would rehash more than a split moves). Usually once; again only if
        // every key went to the same half.
        while self.parts[part].map.len() >= PART_MAX
            && self.parts[part].depth < DEPTH_MAX
            && !self.parts[part].map.contains_key(&key)
        {
            self.split(part, hash);
            part = self.directory[self.slot(hash)] as usize;
        }
        let replaced = self.parts[part].map.insert(key, value);
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Splits `part` (which holds `hash`) by its next hash bit into itself and a new part,
    /// moving at most `PART_MAX` entries.
    fn split(&mut self, part: usize, hash: u64) {
        let local = self.parts[part].depth;
        assert!(local < DEPTH_MAX && local <= self.depth);
        if local == self.depth {
            // The part uses every bit the directory has: double it, each slot in two.
            let doubled = self.directory.iter().flat_map(|&p| [p, p]).collect();
            self.directory = doubled;
            self.depth += 1;
        }
        let new_part = u32::try_from(self.parts.len()).expect("parts fit in u32 below DEPTH_MAX");
        let bit = 63 - local;
        let mut stay = HashMap::with_capacity_and_hasher(PART_MAX, Default::default());
        let mut moved = HashMap::with_capacity_and_hasher(PART_MAX, Default::default());
        for (key, value) in std::mem::take(&mut self.parts[part].map) {
            let to = if (self.selector.hash_one(&key) >> bit) & 1 == 1 { &mut moved } else { &mut stay };
            to.insert(key, value);
        }
        self.parts[part] = Part { depth: local + 1, map: stay };
        self.parts.push(Part { depth: local + 1, map: moved });
        // The part owned a run of 2^(depth - local) slots (its prefix, any lower bits); the
        // upper half of the run is the prefixes with the next bit set.
        let run = 1usize << (self.depth - local);
        let start = self.slot(hash) & !(run - 1);
        for slot in &mut self.directory[start + run / 2..start + run] {
            debug_assert_eq!(*slot as usize, part);
            *slot = new_part;
        }
    }

    /// Every entry, in no particular order (the seeds decide it): never for state or output.
    fn entries(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(|p| p.map.iter())
    }

    /// The structure's invariants, for tests.
    #[cfg(test)]
    fn check(&self) {
        assert_eq!(self.directory.len(), if self.parts.is_empty() { 0 } else { 1 << self.depth });
        assert_eq!(self.len, self.parts.iter().map(|p| p.map.len()).sum::<usize>());
        for (i, part) in self.parts.iter().enumerate() {
            assert!(part.depth <= self.depth);
            assert!(part.map.len() <= PART_MAX || part.depth == DEPTH_MAX, "part over PART_MAX");
            let owned = self.directory.iter().filter(|&&p| p as usize == i).count();
            assert_eq!(owned, 1 << (self.depth - part.depth), "a part owns 2^(depth - local) slots");
            for key in part.map.keys() {
                assert_eq!(self.directory[self.slot(self.selector.hash_one(key))] as usize, i, "key in the wrong part");
            }
        }
    }
}

impl<K: Hash + Eq, V: PartialEq> PartialEq for SplitMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.entries().all(|(k, v)| other.get(k) == Some(v))
    }
}
impl<K: Hash + Eq, V: Eq> Eq for SplitMap<K, V> {}

impl<K: Hash + Eq + fmt::Debug, V: fmt::Debug> fmt::Debug for SplitMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn splits_keep_every_key_and_bound_the_parts() {
        let mut m: SplitMap<Arc<str>, u32> = SplitMap::default();
        assert_eq!(m.get("x"), None);
        assert_eq!(m.remove("x"), None);
        m.check();
        let n = 20 * PART_MAX as u32;
        for i in 0..n {
            assert_eq!(m.insert(format!("key-{i}").into(), i), None);
        }
        m.check();
        assert_eq!(m.len(), n as usize);
        assert!(m.parts.len() >= 20, "{} parts", m.parts.len());
        for i in 0..n {
            assert_eq!(m.get(format!("key-{i}").as_str()), Some(&i));
        }
        assert_eq!(m.insert("key-7".into(), 70), Some(7));
        *m.get_mut("key-8").unwrap() = 80;
        assert_eq!(m.get("key-8"), Some(&80));
        for i in (0..n).step_by(2) {
            assert!(m.remove(format!("key-{i}").as_str()).is_some());
        }
        m.check();
        assert_eq!(m.len(), n as usize / 2);
        let c = m.clone();
        c.check();
        assert_eq!(c, m);
        assert!(!c.contains_key("key-0") && c.contains_key("key-1"));
    }

    #[test]
    fn equality_ignores_layout() {
        // Two maps with different seeds (so different parts) and the same entries.
        let (mut a, mut b) = (SplitMap::default(), SplitMap::default());
        for i in 0..3 * PART_MAX as u64 {
            a.insert(i, i * 2);
            b.insert(3 * PART_MAX as u64 - 1 - i, (3 * PART_MAX as u64 - 1 - i) * 2);
        }
        assert_eq!(a, b);
        b.insert(0, 1);
        assert_ne!(a, b);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Against a `HashMap`: runs of inserts (of fresh or existing keys) and removes,
        /// sized to split parts several times.
        #[test]
        fn behaves_like_a_hash_map(runs in proptest::collection::vec((0u8..3, 0u32..4 * PART_MAX as u32, any::<u32>()), 0..12)) {
            let mut m = SplitMap::default();
            let mut model: std::collections::HashMap<u32, u32> = Default::default();
            let mut next = 0u32;
            for (op, n, salt) in runs {
                for k in 0..n {
                    match op {
                        0 => {
                            next += 1;
                            prop_assert_eq!(m.insert(next, salt ^ k), model.insert(next, salt ^ k));
                        }
                        1 => {
                            let key = (salt.wrapping_add(k)) % (next + 1);
                            prop_assert_eq!(m.insert(key, k), model.insert(key, k));
                        }
                        _ => {
                            let key = (salt.wrapping_add(k)) % (next + 1);
                            prop_assert_eq!(m.remove(&key), model.remove(&key));
                        }
                    }
                }
                m.check();
                prop_assert_eq!(m.len(), model.len());
                for (k, v) in &model {
                    prop_assert_eq!(m.get(k), Some(v));
                }
                prop_assert_eq!(m.get(&(next + 1)), None);
            }
        }
    }
}
