//! A hash map that grows without ever rehashing more than a few thousand entries at once:
//! the id -> position indexes of a merchant's items, customers and queues, and its
//! idempotency records ([`SplitMap`]).
//!
//! Why: a hash map that is full allocates a table twice the size and moves every entry into
//! it, inside the one insert that found it full. At a million idempotency keys that one
//! insert took 130 ms (241 ms at 1.8M), under the shard's lock: a latency spike for every
//! request queued behind the shard, where the target is p99 <= 5 ms.
//!
//! How: extendible hashing over hashbrown tables. The map is split into parts of at most
//! `PART_MAX` entries; a directory of `2^depth` slots, indexed by `depth` bits of the key's
//! hash, says which part holds a key (a part of local depth `d` owns the `2^(depth - d)`
//! slots that share its first `d` bits). A new key for a full part first splits that part
//! in two by its next bit, rehashing at most `PART_MAX` entries, and doubles the directory
//! (4 bytes per slot, copied) only when the part already used every bit the directory has.
//! So an insert rehashes at most `PART_MAX` entries whatever the size, where a map split a
//! fixed N ways would still rehash 1/N of everything (at 2M keys and N = 64, 31k entries:
//! milliseconds again). The first part grows by doubling up to `PART_MAX`, so a small map
//! (three items) costs what a `HashMap` costs.
//!
//! Memory: a split's halves are tables of 4096 buckets (`PART_MAX` is 7/8 of that,
//! hashbrown's maximum load), so the load factor wanders between ~44% and 87.5% like a
//! doubling table's; the directory and part headers add ~50 bytes per part. Removals leave
//! tombstones, and hashbrown may grow a part full of them to 8192 buckets: that rehash is
//! still of at most `PART_MAX` entries, and the part still splits at `PART_MAX` entries.
//!
//! One foldhash hash per operation serves both levels: `hashbrown::HashTable` takes the hash
//! from its caller (std maps under a directory with its own seed cost a second hash and
//! ~45 ns more per lookup hit at 1.2M keys than one plain map; this ~24 ns, inserts the
//! same). hashbrown takes the bucket from the low bits (a part has at most 4096 buckets
//! until it holds tombstones, so 12 or 13 bits) and the tag from the top 7, so the directory
//! uses the bits just below the tag, which neither uses. A map that never split (most of
//! them: a merchant's items, its queues, a shard's merchants) skips the directory. Like every
//! hash map in core this is an index only: it is never iterated into state or output (a
//! split is an internal move), so its random seed cannot change a digest.
//!
//! Copy on write: parts are shared (`Arc`), so a clone copies the directory and one `Arc` per
//! part, never an entry (at 2M keys: ~600-1,200 parts, a directory of a few thousand `u32`s).
//! Every mutation makes the part it changes unique first (`Arc::make_mut`, whose
//! `HashTable::clone` keeps the bucket count, so a copied part still holds at most
//! `PART_MAX` entries in at most 4096 buckets): the first write to a shared part copies at
//! most `PART_MAX` entries, the same bound as a split; a lookup that misses, or a split,
//! copies nothing extra (a split of a shared part clones its entries into the two new tables
//! instead of moving them). The directory stays a plain `Vec`: it has about one or two slots
//! per part (more only if a few parts are much deeper than the rest, which a random seed
//! does not let happen), so copying it costs about what copying the part `Arc`s costs.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use hashbrown::HashTable;

/// Entries in one part before it splits: 7/8 of 4096 buckets, the most a table of that size
/// holds, so a part's table never grows past 4096 buckets.
pub const PART_MAX: usize = 3_584;
/// The directory never indexes by more than this many hash bits (2^24 parts of `PART_MAX`
/// entries, far beyond memory). Past it a part just grows, which takes a hash that puts
/// thousands of keys on the same 24-bit prefix: not something a random seed lets happen.
const DEPTH_MAX: u32 = 24;
/// Hash bits hashbrown takes the tag from (the top 7); the directory uses the bits below.
const TAG_BITS: u32 = 7;

#[derive(Clone)]
pub struct SplitMap<K, V> {
    hasher: foldhash::fast::RandomState,
    /// Directory bits in use: 0 while there is a single part.
    depth: u32,
    /// `2^depth` part numbers once the map has split; empty before.
    directory: Vec<u32>,
    /// Shared with clones until written (see the module doc).
    parts: Vec<Arc<Part<K, V>>>,
    len: usize,
}

#[derive(Clone)]
struct Part<K, V> {
    /// The part holds exactly the keys whose first `depth` directory bits are its prefix.
    depth: u32,
    table: HashTable<(K, V)>,
}

impl<K, V> Default for SplitMap<K, V> {
    fn default() -> Self {
        SplitMap { hasher: Default::default(), depth: 0, directory: Vec::new(), parts: Vec::new(), len: 0 }
    }
}

impl<K: Hash + Eq, V> SplitMap<K, V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The directory slot: the `depth` hash bits just below the tag bits. Only once the map
    /// has split (`depth >= 1`; a shift by 64 would overflow).
    #[inline]
    fn slot(&self, hash: u64) -> usize {
        debug_assert!(self.depth >= 1);
        ((hash << TAG_BITS) >> (64 - self.depth)) as usize
    }

    /// The part that holds (or would hold) `hash`, if there is any part.
    #[inline]
    fn part_of(&self, hash: u64) -> Option<usize> {
        if self.depth == 0 {
            // Never split: no directory to read.
            return if self.parts.is_empty() { None } else { Some(0) };
        }
        Some(self.directory[self.slot(hash)] as usize)
    }

    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let part = self.part_of(hash)?;
        self.parts[part].table.find(hash, |(k, _)| k.borrow() == key).map(|(_, v)| v)
    }

    #[inline]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Every entry, in no particular order (the seed decides it): never for state or output.
    fn entries(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(|p| p.table.iter().map(|(k, v)| (k, v)))
    }

    /// Whether part `part` is shared with a clone. No weak pointers to parts exist, so a
    /// strong count of 1 means unique (and `&self` keeps anyone from cloning it meanwhile).
    #[inline]
    fn shared(&self, part: usize) -> bool {
        Arc::strong_count(&self.parts[part]) > 1
    }
}

/// Mutations: each makes the part it changes unique first (copying it if a clone shares it).
impl<K: Hash + Eq + Clone, V: Clone> SplitMap<K, V> {
    #[inline]
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let table = self.unique_table_holding(hash, key)?;
        table.find_mut(hash, |(k, _)| k.borrow() == key).map(|(_, v)| v)
    }

    /// The table of the part where `key` (of hash `hash`) would be, made unique for a
    /// change; `None` when a shared part does not hold the key (a miss copies nothing).
    #[inline]
    fn unique_table_holding<Q>(&mut self, hash: u64, key: &Q) -> Option<&mut HashTable<(K, V)>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let part = self.part_of(hash)?;
        if self.shared(part) && self.parts[part].table.find(hash, |(k, _)| k.borrow() == key).is_none() {
            return None;
        }
        Some(&mut Arc::make_mut(&mut self.parts[part]).table)
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Parts are not merged back: like a `HashMap`, the map keeps its size when emptied.
        let hash = self.hasher.hash_one(key);
        let table = self.unique_table_holding(hash, key)?;
        let entry = table.find_entry(hash, |(k, _)| k.borrow() == key).ok()?;
        let ((_, removed), _) = entry.remove();
        self.len -= 1;
        Some(removed)
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = self.hasher.hash_one(&key);
        let Some(mut part) = self.part_of(hash) else {
            // The first part grows like a `HashMap` (small maps stay small) up to PART_MAX.
            self.parts.push(Arc::new(Part { depth: 0, table: HashTable::new() }));
            return self.insert(key, value);
        };
        if !self.shared(part) || self.parts[part].table.find(hash, |(k, _)| *k == key).is_some() {
            // (A shared part is copied only to replace here; for a new key, a full part is
            // split below rather than copied and then split.)
            let table = &mut Arc::make_mut(&mut self.parts[part]).table;
            if let Some((_, old)) = table.find_mut(hash, |(k, _)| *k == key) {
                return Some(std::mem::replace(old, value));
            }
            if table.len() < PART_MAX {
                // The common case, with a single `make_mut`: a new key with room for it.
                let hasher = &self.hasher;
                table.insert_unique(hash, (key, value), |(k, _)| hasher.hash_one(k));
                self.len += 1;
                return None;
            }
        }
        // A new key: split a full part first, so that no part's table ever grows past 4096
        // buckets (growing it would rehash more than a split moves). Usually once; again
        // only if every key went to the same half.
        while self.parts[part].table.len() >= PART_MAX && self.parts[part].depth < DEPTH_MAX {
            self.split(part, hash);
            part = self.directory[self.slot(hash)] as usize;
        }
        let hasher = &self.hasher;
        Arc::make_mut(&mut self.parts[part]).table.insert_unique(hash, (key, value), |(k, _)| hasher.hash_one(k));
        self.len += 1;
        None
    }

    /// Splits `part` (which holds `hash`) by its next directory bit into itself and a new
    /// part, rehashing its at most `PART_MAX` entries.
    fn split(&mut self, part: usize, hash: u64) {
        let local = self.parts[part].depth;
        assert!(local < DEPTH_MAX && local <= self.depth);
        if local == self.depth {
            // The part uses every bit the directory has: double it, each slot in two.
            let doubled =
                if self.depth == 0 { vec![0, 0] } else { self.directory.iter().flat_map(|&p| [p, p]).collect() };
            self.directory = doubled;
            self.depth += 1;
        }
        let new_part = u32::try_from(self.parts.len()).expect("parts fit in u32 below DEPTH_MAX");
        // Directory bit number `local` (0 = the first below the tag bits).
        let bit = 63 - TAG_BITS - local;
        let hasher = &self.hasher;
        // Both halves get fresh tables at the size they split at, so they never grow. (Taking
        // the moved half out of the old table in place would leave tombstones there, and
        // hashbrown grows a table with tombstones to twice its buckets when it fills.)
        let mut stay = HashTable::with_capacity(PART_MAX);
        let mut moved = HashTable::with_capacity(PART_MAX);
        let mut place = |key: K, value: V| {
            let hash = hasher.hash_one(&key);
            let to = if (hash >> bit) & 1 == 1 { &mut moved } else { &mut stay };
            to.insert_unique(hash, (key, value), |(k, _)| hasher.hash_one(k));
        };
        match Arc::get_mut(&mut self.parts[part]) {
            // Unique: move the entries out.
            Some(old) => std::mem::take(&mut old.table).into_iter().for_each(|(k, v)| place(k, v)),
            // Shared with a clone, which keeps the old part: copy the entries (no more work
            // than un-sharing the part would have been).
            None => self.parts[part].table.iter().for_each(|(k, v)| place(k.clone(), v.clone())),
        }
        self.parts[part] = Arc::new(Part { depth: local + 1, table: stay });
        self.parts.push(Arc::new(Part { depth: local + 1, table: moved }));
        // The part owned a run of 2^(depth - local) slots (its prefix, any lower bits); the
        // upper half of the run is the prefixes with the next bit set.
        let run = 1usize << (self.depth - local);
        let start = self.slot(hash) & !(run - 1);
        for slot in &mut self.directory[start + run / 2..start + run] {
            debug_assert_eq!(*slot as usize, part);
            *slot = new_part;
        }
    }

    /// The structure's invariants, for tests.
    #[cfg(test)]
    fn check(&self, had_removals: bool) {
        assert_eq!(self.directory.len(), if self.depth == 0 { 0 } else { 1 << self.depth });
        assert!(self.depth > 0 || self.parts.len() <= 1);
        assert_eq!(self.len, self.parts.iter().map(|p| p.table.len()).sum::<usize>());
        for (i, part) in self.parts.iter().enumerate() {
            assert!(part.depth <= self.depth);
            assert!(part.table.len() <= PART_MAX || part.depth == DEPTH_MAX, "part over PART_MAX");
            // (Only without removals: a part whose table filled up with tombstones may have been
            // grown by hashbrown to 8192 buckets, still holding at most PART_MAX entries.)
            assert!(had_removals || part.table.capacity() <= PART_MAX, "table over 4096 buckets");
            if self.depth > 0 {
                let owned = self.directory.iter().filter(|&&p| p as usize == i).count();
                assert_eq!(owned, 1 << (self.depth - part.depth), "a part owns 2^(depth - local) slots");
            }
            for (key, _) in part.table.iter() {
                assert_eq!(self.part_of(self.hasher.hash_one(key)), Some(i), "key in the wrong part");
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
        m.check(false);
        let n = 20 * PART_MAX as u32;
        for i in 0..n {
            assert_eq!(m.insert(format!("key-{i}").into(), i), None);
        }
        m.check(false);
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
        m.check(true);
        assert_eq!(m.len(), n as usize / 2);
        let c = m.clone();
        c.check(true);
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

    /// Copy on write: a clone shares every part; insert (new and existing keys, with
    /// splits), get_mut and remove on either side copy only the parts they change.
    #[test]
    fn clones_share_parts_until_written() {
        let mut m: SplitMap<u64, u64> = SplitMap::default();
        let n = 6 * PART_MAX as u64;
        for i in 0..n {
            m.insert(i, i);
        }
        let model: std::collections::HashMap<u64, u64> = (0..n).map(|i| (i, i)).collect();
        let c = m.clone();
        assert!(m.parts.iter().zip(&c.parts).all(|(a, b)| Arc::ptr_eq(a, b)), "a clone copies no part");
        let mut expect = model.clone();
        // Misses copy nothing.
        assert_eq!(m.get_mut(&(n + 1)), None);
        assert_eq!(m.remove(&(n + 1)), None);
        assert!(m.parts.iter().zip(&c.parts).all(|(a, b)| Arc::ptr_eq(a, b)));
        *m.get_mut(&5).unwrap() = 50;
        expect.insert(5, 50);
        assert_eq!(m.insert(6, 60), Some(6));
        expect.insert(6, 60);
        assert_eq!(m.remove(&7), Some(7));
        expect.remove(&7);
        let shared = m.parts.iter().zip(&c.parts).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
        assert!(shared + 3 >= c.parts.len(), "only the parts written were copied");
        // New keys: fills and splits shared parts.
        for i in n..3 * n {
            assert_eq!(m.insert(i, i * 3), None);
            expect.insert(i, i * 3);
        }
        m.check(true);
        c.check(false);
        assert_eq!(c.len(), model.len());
        for (k, v) in &model {
            assert_eq!(c.get(k), Some(v), "the clone is unchanged");
        }
        assert_eq!(c.get(&n), None);
        assert_eq!(m.len(), expect.len());
        for (k, v) in &expect {
            assert_eq!(m.get(k), Some(v));
        }
        // Writing the clone leaves the original alone.
        let mut c = c;
        assert_eq!(c.remove(&5), Some(5));
        c.insert(n + 1, 1);
        c.check(true);
        assert_eq!(m.get(&5), Some(&50));
        assert_eq!(m.get(&(n + 1)), Some(&((n + 1) * 3)));
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
                m.check(true);
                prop_assert_eq!(m.len(), model.len());
                for (k, v) in &model {
                    prop_assert_eq!(m.get(k), Some(v));
                }
                prop_assert_eq!(m.get(&(next + 1)), None);
            }
        }

        /// Clones taken between runs stay what they were while the original goes on.
        #[test]
        fn clones_are_independent(runs in proptest::collection::vec((0u8..4, 0u32..4 * PART_MAX as u32, any::<u32>()), 0..8)) {
            let mut m = SplitMap::default();
            let mut model: std::collections::HashMap<u32, u32> = Default::default();
            let mut clones = Vec::new();
            let mut next = 0u32;
            for (op, n, salt) in runs {
                clones.push((m.clone(), model.clone()));
                for k in 0..n {
                    let key = (salt.wrapping_add(k)) % (next + 1);
                    match op {
                        0 => {
                            next += 1;
                            prop_assert_eq!(m.insert(next, salt ^ k), model.insert(next, salt ^ k));
                        }
                        1 => prop_assert_eq!(m.insert(key, k), model.insert(key, k)),
                        2 => {
                            if let Some(v) = m.get_mut(&key) {
                                *v = v.wrapping_add(1);
                            }
                            if let Some(v) = model.get_mut(&key) {
                                *v = v.wrapping_add(1);
                            }
                        }
                        _ => prop_assert_eq!(m.remove(&key), model.remove(&key)),
                    }
                }
                m.check(true);
                prop_assert_eq!(m.len(), model.len());
                for (k, v) in &model {
                    prop_assert_eq!(m.get(k), Some(v));
                }
                for (c, c_model) in &clones {
                    c.check(true);
                    prop_assert_eq!(c.len(), c_model.len());
                    for (k, v) in c_model {
                        prop_assert_eq!(c.get(k), Some(v));
                    }
                }
            }
        }
    }
}
