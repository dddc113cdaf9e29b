//! Which partitions a node takes: its fair share of them, spread evenly over the live nodes.
//! A node takes free partitions (no owner key) until it owns its share; it never takes a
//! partition from a live owner (moving partitions to a joining node is a rebalancer's job).
//! When a node dies its owner keys expire and the others' shares grow, so they take its
//! partitions.

use surge_cluster::Table;

/// The most partitions each of `live_nodes` nodes should own (at least 1 node counts: the
/// node asking is alive).
pub fn fair_share(partition_count: usize, live_nodes: usize) -> usize {
    partition_count.div_ceil(live_nodes.max(1))
}

/// The free partitions of `partitions` that node `me` should try to take now, in the order
/// to try them: no more than its fair share leaves room for. The order starts at an offset
/// derived from the node's id, so that nodes starting together try different partitions
/// first instead of racing for the same ones (a lost race only costs a retry).
pub fn to_take(partitions: &[u32], table: &Table, me: &str, live_nodes: usize) -> Vec<u32> {
    let owned = partitions.iter().filter(|p| table.get(p).is_some_and(|o| o.node.node_id == me)).count();
    let room = fair_share(partitions.len(), live_nodes).saturating_sub(owned);
    if room == 0 || partitions.is_empty() {
        return Vec::new();
    }
    let start = offset(me) % partitions.len();
    let take: Vec<u32> = partitions[start..]
        .iter()
        .chain(&partitions[..start])
        .filter(|p| !table.contains_key(p))
        .take(room)
        .copied()
        .collect();
    debug_assert!(take.len() <= room);
    take
}

/// FNV-1a of the node id: stable across processes and versions.
fn offset(node_id: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use surge_cluster::{NodeInfo, Owner};

    fn owner(id: &str) -> Owner {
        Owner { node: NodeInfo { node_id: id.into(), address: "127.0.0.1:1".into() }, token: 1 }
    }

    /// Nodes take in turns (every node once a round, from a random first one) until no
    /// node takes anything.
    fn settle(partitions: &[u32], nodes: &[String], table: &mut Table, order_seed: u64) {
        let mut seed = order_seed;
        for _round in 0..partitions.len() + nodes.len() + 1 {
            let mut took = false;
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let first = (seed >> 33) as usize;
            for i in 0..nodes.len() {
                let me = &nodes[(first + i) % nodes.len()];
                for p in to_take(partitions, table, me, nodes.len()) {
                    table.insert(p, owner(me));
                    took = true;
                }
            }
            if !took {
                return;
            }
        }
        panic!("taking did not settle");
    }

    proptest! {
        /// However nodes interleave, every partition ends owned and no node owns more than
        /// its fair share; after a node dies the survivors take all of its partitions.
        #[test]
        fn shares_cover_every_partition(count in 1usize..64, nodes in 1usize..6, seed in any::<u64>()) {
            let partitions: Vec<u32> = (0..count as u32).collect();
            let names: Vec<String> = (0..nodes).map(|i| format!("n{i}")).collect();
            let mut table = Table::new();
            settle(&partitions, &names, &mut table, seed);
            prop_assert_eq!(table.len(), count);
            for n in &names {
                let owned = table.values().filter(|o| &o.node.node_id == n).count();
                prop_assert!(owned <= fair_share(count, nodes));
            }
            if nodes > 1 {
                let dead = &names[seed as usize % nodes];
                table.retain(|_, o| &o.node.node_id != dead);
                let alive: Vec<String> = names.iter().filter(|n| *n != dead).cloned().collect();
                settle(&partitions, &alive, &mut table, seed ^ 1);
                prop_assert_eq!(table.len(), count);
                prop_assert!(table.values().all(|o| &o.node.node_id != dead));
            }
        }

        /// A node is only offered free partitions, at most its room, without repeats.
        #[test]
        fn only_free_partitions_within_the_share(count in 1usize..64, nodes in 1usize..6, owned_mask in any::<u64>()) {
            let partitions: Vec<u32> = (0..count as u32).collect();
            let mut table = Table::new();
            for p in &partitions {
                if owned_mask >> (p % 64) & 1 == 1 {
                    table.insert(*p, owner(if p % 3 == 0 { "me" } else { "other" }));
                }
            }
            let take = to_take(&partitions, &table, "me", nodes);
            let mine = table.values().filter(|o| o.node.node_id == "me").count();
            prop_assert!(take.len() <= fair_share(count, nodes).saturating_sub(mine));
            prop_assert!(take.iter().all(|p| !table.contains_key(p)));
            let mut sorted = take.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), take.len());
        }
    }
}
