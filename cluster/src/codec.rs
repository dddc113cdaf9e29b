//! The bytes of the values the crate stores: a batch of opaque records (one log key), the
//! owner of a partition, a snapshot's manifest, and the split of a snapshot into chunks.
//! Decoding checks every length and never panics: a value in etcd may have been written by
//! another version or by hand.

use crate::error::{ClusterError, Result};

/// First byte of an encoded batch: the format's version, so a later format can be told apart.
const BATCH_VERSION: u8 = 1;
/// version, writer's token, record count; then per record its length; then a CRC32C.
const BATCH_HEADER_BYTES: usize = 1 + 8 + 4;
const RECORD_HEADER_BYTES: usize = 4;
const CRC_BYTES: usize = 4;

/// The encoded size of a batch of records, without encoding it (the bound is checked before
/// any copy).
pub fn batch_encoded_len(records: &[&[u8]]) -> usize {
    BATCH_HEADER_BYTES + CRC_BYTES + records.iter().map(|r| RECORD_HEADER_BYTES + r.len()).sum::<usize>()
}

/// Encodes a batch: `version u8, token i64 LE, count u32 LE, (len u32 LE, bytes)*, crc32c
/// u32 LE` of everything before it. The token of the writer is kept in each batch so that a
/// reader can tell who wrote it (etcd's guard, not this field, keeps a deposed writer out).
/// The caller checks the bounds first (`batch_encoded_len`, at most `u32::MAX` records of
/// at most `u32::MAX` bytes).
pub fn encode_batch(token: i64, records: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch_encoded_len(records));
    out.push(BATCH_VERSION);
    out.extend_from_slice(&token.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A decoded batch: the writer's token and the records in append order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub token: i64,
    pub records: Vec<Vec<u8>>,
}

/// Decodes a batch; `max_records` bounds the allocation a damaged count could ask for.
pub fn decode_batch(bytes: &[u8], max_records: usize) -> std::result::Result<Batch, &'static str> {
    if bytes.len() < BATCH_HEADER_BYTES + CRC_BYTES {
        return Err("shorter than a batch header");
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().map_err(|_| "crc")?) {
        return Err("checksum mismatch");
    }
    let mut r = Reader { rest: body };
    if r.u8()? != BATCH_VERSION {
        return Err("unknown batch version");
    }
    let token = i64::from_le_bytes(r.take(8)?.try_into().map_err(|_| "token")?);
    let count = r.u32()? as usize;
    if count > max_records {
        return Err("more records than the configured maximum");
    }
    // Each record needs at least its length field: a count the bytes cannot hold is damage.
    if count > r.rest.len() / RECORD_HEADER_BYTES {
        return Err("record count larger than the batch");
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.u32()? as usize;
        records.push(r.take(len)?.to_vec());
    }
    if !r.rest.is_empty() {
        return Err("bytes after the last record");
    }
    Ok(Batch { token, records })
}

/// The most bytes a node id or an address may have in an owner value.
pub const OWNER_FIELD_BYTES_MAX: usize = 256;

/// Who owns a partition, as stored in its owner key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// A node's stable name, unique in the cluster.
    pub node_id: String,
    /// Where other nodes reach it (host:port), for forwarding.
    pub address: String,
}

impl NodeInfo {
    /// Checks the fields: not empty, bounded, no newline (the separator).
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("node_id", &self.node_id), ("address", &self.address)] {
            if v.is_empty() || v.len() > OWNER_FIELD_BYTES_MAX || v.contains('\n') {
                return Err(ClusterError::Config(format!(
                    "{name} must be 1-{OWNER_FIELD_BYTES_MAX} bytes without a newline"
                )));
            }
        }
        Ok(())
    }
}

/// `node_id \n address`: readable with etcdctl.
pub fn encode_owner(node: &NodeInfo) -> Vec<u8> {
    format!("{}\n{}", node.node_id, node.address).into_bytes()
}

pub fn decode_owner(bytes: &[u8]) -> std::result::Result<NodeInfo, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "owner value is not UTF-8")?;
    let (node_id, address) = text.split_once('\n').ok_or("owner value without a newline")?;
    let node = NodeInfo { node_id: node_id.to_owned(), address: address.to_owned() };
    node.validate().map_err(|_| "owner value out of bounds")?;
    Ok(node)
}

/// What a snapshot's manifest says: the log sequence it covers (every batch up to and
/// including `covers_seq` is in it) and how to check its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    pub covers_seq: u64,
    pub chunks: u32,
    pub total_bytes: u64,
    pub crc32c: u32,
}

const MANIFEST_VERSION: u8 = 1;
const MANIFEST_BYTES: usize = 1 + 8 + 4 + 8 + 4;

pub fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let mut out = Vec::with_capacity(MANIFEST_BYTES);
    out.push(MANIFEST_VERSION);
    out.extend_from_slice(&m.covers_seq.to_le_bytes());
    out.extend_from_slice(&m.chunks.to_le_bytes());
    out.extend_from_slice(&m.total_bytes.to_le_bytes());
    out.extend_from_slice(&m.crc32c.to_le_bytes());
    out
}

pub fn decode_manifest(bytes: &[u8]) -> std::result::Result<Manifest, &'static str> {
    if bytes.len() != MANIFEST_BYTES {
        return Err("manifest of the wrong size");
    }
    let mut r = Reader { rest: bytes };
    if r.u8()? != MANIFEST_VERSION {
        return Err("unknown manifest version");
    }
    let covers_seq = r.u64()?;
    let chunks = r.u32()?;
    let total_bytes = r.u64()?;
    let crc32c = r.u32()?;
    Ok(Manifest { covers_seq, chunks, total_bytes, crc32c })
}

/// The chunks of a snapshot: consecutive slices of at most `chunk_bytes` (> 0) each; an
/// empty snapshot has no chunk.
pub fn chunks(bytes: &[u8], chunk_bytes: usize) -> impl Iterator<Item = &[u8]> {
    bytes.chunks(chunk_bytes.max(1))
}

/// The number of chunks `chunks` yields for `len` bytes.
pub fn chunk_count(len: usize, chunk_bytes: usize) -> usize {
    len.div_ceil(chunk_bytes.max(1))
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], &'static str> {
        if self.rest.len() < n {
            return Err("truncated");
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> std::result::Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> std::result::Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "u32")?))
    }
    fn u64(&mut self) -> std::result::Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "u64")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn batches_round_trip(token in any::<i64>(),
                              records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..40)) {
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            let bytes = encode_batch(token, &refs);
            prop_assert_eq!(bytes.len(), batch_encoded_len(&refs));
            let batch = decode_batch(&bytes, 1000).map_err(TestCaseError::fail)?;
            prop_assert_eq!(batch.token, token);
            prop_assert_eq!(batch.records, records);
        }

        #[test]
        fn damaged_batches_are_refused_not_panicking(token in any::<i64>(),
                                                     records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..10),
                                                     flip in any::<proptest::sample::Index>(), bit in 0u8..8) {
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            let mut bytes = encode_batch(token, &refs);
            let i = flip.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(decode_batch(&bytes, 1000).is_err());
            // and every truncation
            let good = encode_batch(token, &refs);
            for cut in 0..good.len() {
                prop_assert!(decode_batch(&good[..cut], 1000).is_err());
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_batch(&bytes, 1000);
            let _ = decode_manifest(&bytes);
            let _ = decode_owner(&bytes);
        }

        #[test]
        fn chunks_reassemble_and_are_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..5000), chunk in 1usize..700) {
            let parts: Vec<&[u8]> = chunks(&bytes, chunk).collect();
            prop_assert_eq!(parts.len(), chunk_count(bytes.len(), chunk));
            prop_assert!(parts.iter().all(|p| !p.is_empty() && p.len() <= chunk));
            prop_assert_eq!(parts.concat(), bytes);
        }

        #[test]
        fn manifests_round_trip(covers_seq in any::<u64>(), chunks in any::<u32>(), total_bytes in any::<u64>(), crc in any::<u32>()) {
            let m = Manifest { covers_seq, chunks, total_bytes, crc32c: crc };
            prop_assert_eq!(decode_manifest(&encode_manifest(&m)), Ok(m));
        }

        #[test]
        fn owners_round_trip(node_id in "[a-z0-9-]{1,40}", address in "[a-z0-9.:]{1,60}") {
            let n = NodeInfo { node_id, address };
            prop_assert_eq!(decode_owner(&encode_owner(&n)), Ok(n));
        }
    }

    #[test]
    fn a_count_larger_than_the_bound_is_refused() {
        let one: &[u8] = b"x";
        let bytes = encode_batch(7, &[one, one, one]);
        assert!(decode_batch(&bytes, 2).is_err());
        assert!(decode_batch(&bytes, 3).is_ok());
    }
}
