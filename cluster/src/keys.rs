//! The key layout in etcd. Every key the crate writes is built here.
//!
//! ```text
//! /surge/owner/p{p}                  owner of partition p (value: node id, address), leased
//! /surge/nodes/{node_id}             a live node (value: node id, address), leased
//! /surge/partitions                  the cluster's partition count (decimal), set once
//! /surge/settings/{name}             another setting every node must share, set once
//! /surge/log/p{p}/{seq:020}          one group commit of partition p (a batch of records)
//! /surge/snapmeta/p{p}               the newest snapshot of partition p (its manifest)
//! /surge/snap/p{p}/{seq:020}/{i:010} chunk i of the snapshot covering partition p up to seq
//! /surge/ckpt/p{p}/{reader}          how far a reader (a relay sink) has read partition p's log
//! ```
//!
//! Sequence numbers are zero-padded to 20 digits (`u64::MAX` has 20), so etcd's byte order
//! of the keys is the numeric order of the sequence numbers and a range read returns a
//! partition's log in order.

/// The cluster's partition count, written by the first node that starts.
pub const PARTITIONS_KEY: &str = "/surge/partitions";

/// A setting every node must share (see `membership::agreed`), written by the first node
/// that names it.
pub fn setting_key(name: &str) -> String {
    format!("/surge/settings/{name}")
}

/// The prefix every membership key starts with.
pub const NODES_PREFIX: &str = "/surge/nodes/";

/// The membership key of a node (its id is validated: no newline, bounded).
pub fn node_key(node_id: &str) -> String {
    format!("{NODES_PREFIX}{node_id}")
}

/// The prefix every owner key starts with: the partition table watches it.
pub const OWNER_PREFIX: &str = "/surge/owner/";

/// The owner key of a partition.
pub fn owner_key(partition: u32) -> String {
    format!("{OWNER_PREFIX}p{partition}")
}

/// The partition an owner key names, or `None` for a key that is not an owner key.
pub fn parse_owner_key(key: &[u8]) -> Option<u32> {
    let rest = key.strip_prefix(OWNER_PREFIX.as_bytes())?.strip_prefix(b"p")?;
    parse_decimal_u32(rest)
}

/// The prefix of a partition's log keys (ends with `/`, so `p1` does not cover `p10`).
pub fn log_prefix(partition: u32) -> String {
    format!("/surge/log/p{partition}/")
}

/// The key of one group commit of a partition.
pub fn log_key(partition: u32, seq: u64) -> String {
    format!("{}{seq:020}", log_prefix(partition))
}

/// The sequence number of a log key of `partition`, or `None` for any other key.
pub fn parse_log_key(partition: u32, key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(log_prefix(partition).as_bytes())?;
    if rest.len() != 20 || !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// The manifest key of a partition's newest snapshot.
pub fn snapshot_manifest_key(partition: u32) -> String {
    format!("/surge/snapmeta/p{partition}")
}

/// The checkpoint key of `reader` on a partition's log (reader names are the relay's
/// short sink names: `kafka`, `mariadb`).
pub fn checkpoint_key(partition: u32, reader: &str) -> String {
    format!("/surge/ckpt/p{partition}/{reader}")
}

/// The prefix of every snapshot chunk of a partition.
pub fn snapshot_prefix(partition: u32) -> String {
    format!("/surge/snap/p{partition}/")
}

/// The prefix of the chunks of the snapshot covering `partition` up to `seq`.
pub fn snapshot_chunks_prefix(partition: u32, seq: u64) -> String {
    format!("{}{seq:020}/", snapshot_prefix(partition))
}

/// The key of chunk `index` of the snapshot covering `partition` up to `seq`.
pub fn snapshot_chunk_key(partition: u32, seq: u64, index: u32) -> String {
    format!("{}{index:010}", snapshot_chunks_prefix(partition, seq))
}

/// The chunk index of a chunk key under `prefix`, or `None`.
pub fn parse_chunk_key(prefix: &str, key: &[u8]) -> Option<u32> {
    let rest = key.strip_prefix(prefix.as_bytes())?;
    if rest.len() != 10 {
        return None;
    }
    parse_decimal_u32(rest)
}

/// The end of the range `[prefix, end)` that holds exactly the keys starting with `prefix`
/// (etcd's convention: the prefix with its last byte incremented).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    // Every prefix here ends with '/' (0x2F), which increments without carry.
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All bytes 0xFF: the range to the end of the key space.
    vec![0]
}

fn parse_decimal_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn log_keys_round_trip(p in any::<u32>(), seq in any::<u64>()) {
            prop_assert_eq!(parse_log_key(p, log_key(p, seq).as_bytes()), Some(seq));
        }

        #[test]
        fn log_key_order_is_seq_order(p in any::<u32>(), a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(log_key(p, a).cmp(&log_key(p, b)), a.cmp(&b));
        }

        #[test]
        fn a_log_key_is_in_its_partition_range_only(p in 0u32..1000, q in 0u32..1000, seq in any::<u64>()) {
            let key = log_key(p, seq);
            let inside = key.as_str() >= log_prefix(q).as_str()
                && key.as_bytes() < prefix_end(&log_prefix(q)).as_slice();
            prop_assert_eq!(inside, p == q);
            prop_assert_eq!(parse_log_key(q, key.as_bytes()).is_some(), p == q);
        }

        #[test]
        fn owner_keys_round_trip(p in any::<u32>()) {
            prop_assert_eq!(parse_owner_key(owner_key(p).as_bytes()), Some(p));
        }

        #[test]
        fn chunk_keys_round_trip_and_order(p in any::<u32>(), seq in any::<u64>(), a in any::<u32>(), b in any::<u32>()) {
            let prefix = snapshot_chunks_prefix(p, seq);
            prop_assert_eq!(parse_chunk_key(&prefix, snapshot_chunk_key(p, seq, a).as_bytes()), Some(a));
            prop_assert_eq!(snapshot_chunk_key(p, seq, a).cmp(&snapshot_chunk_key(p, seq, b)), a.cmp(&b));
        }

        #[test]
        fn parsers_never_panic(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_owner_key(&key);
            let _ = parse_log_key(3, &key);
            let _ = parse_chunk_key("/surge/snap/p3/", &key);
        }
    }

    #[test]
    fn foreign_keys_are_not_parsed() {
        assert_eq!(parse_owner_key(b"/surge/owner/p"), None);
        assert_eq!(parse_owner_key(b"/surge/owner/px"), None);
        assert_eq!(parse_owner_key(b"/surge/owner/p99999999999"), None);
        assert_eq!(parse_log_key(1, b"/surge/log/p1/123"), None);
        assert_eq!(parse_log_key(1, b"/surge/log/p1/0000000000000000000a"), None);
        // 20 digits but above u64::MAX
        assert_eq!(parse_log_key(1, b"/surge/log/p1/99999999999999999999"), None);
        assert_eq!(prefix_end("/surge/log/p1/"), b"/surge/log/p10".to_vec());
    }
}
