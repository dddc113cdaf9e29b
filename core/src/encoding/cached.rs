//! Snapshot encoding that reuses the bytes of chunks unchanged since the previous snapshot.
//!
//! Why: a host snapshots every so many records, and encoding the whole state each time made
//! a snapshot's cost grow with the state, not with what changed: with every order keyed, the
//! snapshot thread re-encoded every idempotency record (and every order and payment) at every
//! snapshot, ~32% of the server's CPU in the binary-batch benchmark. Most of a large state is
//! chunks that no command touched since the last snapshot (old orders, old idempotency
//! records); their bytes are the same as last time.
//!
//! How: the bytes are exactly those of [`Shard::snapshot`](crate::Shard::snapshot) (the
//! format does not change; a test compares the two on random and multi-chunk states). The
//! encoder walks the state as the derived `Serialize` would, and for each chunk of a
//! `ChunkedVec`, `ChunkedDeque` or `NumberedVec` it either copies the bytes cached for that
//! chunk or encodes it and caches the result. A chunk is recognised by the address of its
//! `Arc` allocation, and the cache holds a `Weak` to it, for two reasons:
//! - the allocation is not freed while the `Weak` lives, so no other chunk can ever get the
//!   same address;
//! - a chunk's contents cannot change at that address while a `Weak` exists: every
//!   mutation of a chunk goes through `Arc::make_mut`, which moves the value to a new
//!   allocation when there are weak pointers (and copies it when it is shared), and
//!   `Arc::get_mut` refuses to hand out `&mut` at all. So "same address" means "same bytes".
//!
//! A chunk's bytes depend only on the chunk: its elements (a `NumberedVec` chunk's entries
//! are numbered from its chunk number, which a chunk never leaves), except for the chunks
//! of a merchant's idempotency order, whose entries are `(key, record)` with the record read
//! from the index. That is still a function of the chunk, because a key is in the order iff
//! it is in the index, a record never changes while its key is there (`apply` refuses a key
//! already recorded), and a key leaves only by `pop_front` of the chunk holding it, which
//! changes that chunk.
//!
//! Cost: the live shard pays one small allocation (moving a chunk header) the first time it
//! writes a chunk after a snapshot. The cache keeps the bytes of every chunk of the last
//! snapshot, about one snapshot's size, and forgets what a snapshot did not use.

use std::any::Any;
use std::sync::{Arc, Weak};

use serde::Serialize;

use super::{append, Header, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use crate::chunked::{ChunkedVec, CHUNK};
use crate::numbered::NumberedVec;
use crate::state::{HashMap, Idempotency, Merchant, Queue, ShardImageRef};

/// Encoded chunks of the previous snapshot, by address. Owned by the thread that encodes
/// snapshots; see the module doc.
#[derive(Default)]
pub struct SnapshotCache {
    /// What the previous snapshot encoded; entries move to `current` when used again.
    previous: HashMap<usize, Entry>,
    current: HashMap<usize, Entry>,
    reused_bytes: u64,
    encoded_bytes: u64,
}

struct Entry {
    /// Keeps the chunk's allocation (not its elements) alive: see the module doc.
    _pin: Weak<dyn Any + Send + Sync>,
    bytes: Box<[u8]>,
}

impl SnapshotCache {
    pub fn new() -> Self {
        SnapshotCache::default()
    }

    /// Chunk bytes the last snapshot copied from the cache.
    pub fn reused_bytes(&self) -> u64 {
        self.reused_bytes
    }

    /// Chunk bytes the last snapshot encoded afresh.
    pub fn encoded_bytes(&self) -> u64 {
        self.encoded_bytes
    }

    /// Starts a snapshot: counters from zero.
    pub(crate) fn begin(&mut self) {
        self.reused_bytes = 0;
        self.encoded_bytes = 0;
    }

    /// Ends a snapshot: what it used is kept for the next, the rest is dropped.
    pub(crate) fn end(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    /// Appends the bytes of `chunk`: cached ones if this allocation was encoded before,
    /// else `encode`'s, which are cached.
    fn chunk<C: Send + Sync + 'static>(
        &mut self,
        chunk: &Arc<C>,
        out: &mut Vec<u8>,
        encode: impl FnOnce(&C, &mut Vec<u8>),
    ) {
        let address = Arc::as_ptr(chunk) as *const () as usize;
        if let Some(entry) = self.previous.remove(&address) {
            out.extend_from_slice(&entry.bytes);
            self.reused_bytes += entry.bytes.len() as u64;
            self.current.insert(address, entry);
            return;
        }
        if let Some(entry) = self.current.get(&address) {
            // The same chunk twice in one snapshot (shards cloned from one another).
            out.extend_from_slice(&entry.bytes);
            self.reused_bytes += entry.bytes.len() as u64;
            return;
        }
        let start = out.len();
        encode(chunk, out);
        let bytes: Box<[u8]> = out[start..].into();
        self.encoded_bytes += bytes.len() as u64;
        let pin: Weak<dyn Any + Send + Sync> = Arc::downgrade(chunk) as Weak<C>;
        self.current.insert(address, Entry { _pin: pin, bytes });
    }
}

/// Appends a shard's snapshot, byte for byte what `encode_snapshot_into` writes for it.
pub(crate) fn encode_snapshot_into(image: &ShardImageRef<'_>, cache: &mut SnapshotCache, out: &mut Vec<u8>) {
    let header = Header { magic: SNAPSHOT_MAGIC, version: SNAPSHOT_VERSION, reserved: 0, count: 0 };
    out.extend_from_slice(bytemuck::bytes_of(&header));
    // Destructured without `..` throughout: a new field fails to compile here until it is
    // encoded in its place (postcard writes a struct's fields in declaration order).
    let ShardImageRef { merchants, applied_events } = image;
    seq_len(merchants.len(), out);
    for merchant in merchants.iter() {
        encode_merchant(merchant, cache, out);
    }
    append(applied_events, out);
}

fn encode_merchant(merchant: &Merchant, cache: &mut SnapshotCache, out: &mut Vec<u8>) {
    let Merchant {
        id,
        name,
        currency,
        api_key_hash,
        created_at_ms,
        items,
        customers,
        holds,
        orders,
        payments,
        queues,
        ledger,
        idempotency,
        dead_letters,
        archived_card_net,
    } = merchant;
    // A tuple encodes as its fields one after another, like a struct.
    append(&(id, name, currency, api_key_hash, created_at_ms), out);
    chunked_vec(items.all(), cache, out);
    chunked_vec(customers.all(), cache, out);
    numbered(holds, cache, out);
    numbered(orders, cache, out);
    numbered(payments, cache, out);
    seq_len(queues.len(), out);
    for queue in queues.iter() {
        let Queue { id, max_active, active_ttl_s, tokens, next_waiting, active } = queue;
        append(&(id, max_active, active_ttl_s), out);
        numbered(tokens, cache, out);
        append(&(next_waiting, active), out);
    }
    append(ledger, out);
    encode_idempotency(idempotency, cache, out);
    chunked_vec(dead_letters, cache, out);
    append(archived_card_net, out);
}

/// A sequence's length prefix (postcard: the same varint as a `u64`).
fn seq_len(len: usize, out: &mut Vec<u8>) {
    append(&(len as u64), out);
}

/// As `ChunkedVec`'s `Serialize`: the length, then the elements.
fn chunked_vec<T: Serialize + Send + Sync + 'static>(v: &ChunkedVec<T>, cache: &mut SnapshotCache, out: &mut Vec<u8>) {
    seq_len(v.len(), out);
    for chunk in v.chunks() {
        cache.chunk(chunk, out, |chunk, out| chunk.iter().for_each(|value| append(value, out)));
    }
}

/// As `NumberedVec`'s `Serialize`: `(len, archived_ms, [(index, entry)])`.
fn numbered<T: Serialize + Send + Sync + 'static>(v: &NumberedVec<T>, cache: &mut SnapshotCache, out: &mut Vec<u8>) {
    append(&(v.len() as u64), out);
    append(v.archived_ms(), out);
    seq_len(v.live(), out);
    for (number, part) in v.parts() {
        let base = number * CHUNK;
        cache.chunk(part, out, |part, out| {
            for (offset, slot) in part.slots.iter().enumerate() {
                if let Some(value) = slot {
                    append(&((base + offset) as u64, value), out);
                }
            }
        });
    }
}

/// As `Idempotency`'s `Serialize`: the keys in order, each with its record.
fn encode_idempotency(idempotency: &Idempotency, cache: &mut SnapshotCache, out: &mut Vec<u8>) {
    let Idempotency { records, order } = idempotency;
    seq_len(order.len(), out);
    for chunk in order.chunks() {
        cache.chunk(chunk, out, |chunk, out| chunk.iter().for_each(|key| append(&(key, records.get(key)), out)));
    }
}
