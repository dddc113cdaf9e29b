//! Readers' positions on a partition's log (the relay's sinks, which run on the partition's
//! owner and move with it): the seq of the last batch each has delivered, so that a new
//! owner's reader goes on from there. A position is stored only after its destination
//! acknowledged everything up to it, so a stale one (stored late by a deposed owner, say)
//! means re-delivery, never loss: no fencing needed.

use etcd_client::GetOptions;

use crate::error::{ClusterError, Result};
use crate::{keys, Etcd};

/// The seq `reader` last stored on `partition`, or `None` if it never stored one.
pub async fn load(etcd: &Etcd, partition: u32, reader: &str) -> Result<Option<u64>> {
    let key = keys::checkpoint_key(partition, reader);
    let resp = etcd.get("checkpoint", key.clone(), None::<GetOptions>).await?;
    let Some(kv) = resp.kvs().first() else { return Ok(None) };
    let value = std::str::from_utf8(kv.value()).ok().and_then(|v| v.parse().ok());
    value.map(Some).ok_or(ClusterError::Corrupt { key, reason: "not a decimal seq" })
}

/// Stores `seq` as `reader`'s position on `partition` (a put: repeating it is harmless).
pub async fn store(etcd: &Etcd, partition: u32, reader: &str, seq: u64) -> Result<()> {
    let key = keys::checkpoint_key(partition, reader);
    let value = seq.to_string();
    etcd.read("checkpoint store", |mut kv| {
        let (key, value) = (key.clone(), value.clone());
        async move { kv.put(key, value, None).await }
    })
    .await?;
    Ok(())
}
