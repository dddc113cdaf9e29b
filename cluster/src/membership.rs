//! Which nodes are alive: each node holds its membership key under a lease it keeps alive,
//! so a node that dies (or is paused past its lease) drops out of `members` after the TTL.
//! Nodes read the list to size their fair share of the partitions.

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use crate::client::Etcd;
use crate::codec::{decode_owner, encode_owner, NodeInfo};
use crate::error::{ClusterError, Result};
use crate::keys::{node_key, NODES_PREFIX, PARTITIONS_KEY};
use crate::ownership::{create_leased, Leased};

/// Most members `members` reads: a bound on the answer, far above any cluster surge runs.
pub const MEMBERS_MAX: usize = 1_024;

/// This node's membership: its key, leased. Dropping it (or `Leased::release`) ends it.
pub struct Member {
    pub node: NodeInfo,
    pub leased: Leased,
}

/// Joins the cluster as `node` with a lease of `lease_ttl_s` seconds. `Ok(None)` when a
/// live node already holds this id (two processes must not share one).
pub async fn join(etcd: &Etcd, node: &NodeInfo, lease_ttl_s: i64) -> Result<Option<Member>> {
    node.validate()?;
    let leased = create_leased(etcd, node_key(&node.node_id), encode_owner(node), lease_ttl_s).await?;
    Ok(leased.map(|leased| Member { node: node.clone(), leased }))
}

/// The live nodes, ordered by id (linearizable read).
pub async fn members(etcd: &Etcd) -> Result<Vec<NodeInfo>> {
    let options = GetOptions::new().with_prefix().with_limit(MEMBERS_MAX as i64);
    let resp = etcd.get("members", NODES_PREFIX, Some(options)).await?;
    let mut nodes = Vec::with_capacity(resp.kvs().len());
    for kv in resp.kvs() {
        let node = decode_owner(kv.value())
            .map_err(|reason| ClusterError::Corrupt { key: String::from_utf8_lossy(kv.key()).into_owned(), reason })?;
        nodes.push(node);
    }
    if resp.more() {
        return Err(ClusterError::TooLarge { what: "members", size: resp.count() as usize, max: MEMBERS_MAX });
    }
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(nodes)
}

/// The cluster's partition count: `wanted` if this is the first node (it is stored), else
/// the count stored by the first node. A merchant's partition depends on the count, so every
/// node must run with the same one; the caller refuses to start on a mismatch.
pub async fn partition_count(etcd: &Etcd, wanted: u32) -> Result<u32> {
    let stored = agreed(etcd, PARTITIONS_KEY, &wanted.to_string()).await?;
    stored.parse().map_err(|_| ClusterError::Corrupt { key: PARTITIONS_KEY.to_owned(), reason: "not a number" })
}

/// A value every node of the cluster must share (a fingerprint of the admin token, the
/// card key's id): `wanted` if no node stored one under `key` yet (it is stored now), else
/// the one stored. The caller compares and refuses to start on a mismatch.
pub async fn agreed(etcd: &Etcd, key: &str, wanted: &str) -> Result<String> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, wanted, None)])
        .or_else([TxnOp::get(key, None)]);
    // Repeating it is harmless: it writes only when the key is absent.
    let resp = etcd
        .read("cluster setting", |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?;
    if resp.succeeded() {
        return Ok(wanted.to_owned());
    }
    let corrupt = |reason| ClusterError::Corrupt { key: key.to_owned(), reason };
    let Some(TxnOpResponse::Get(get)) = resp.op_responses().into_iter().next() else {
        return Err(corrupt("txn answer without the read"));
    };
    let value = get.kvs().first().map(|kv| kv.value().to_vec()).ok_or_else(|| corrupt("no value"))?;
    String::from_utf8(value).map_err(|_| corrupt("not UTF-8"))
}
