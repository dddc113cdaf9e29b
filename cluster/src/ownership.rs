//! Ownership of a partition: one etcd key under a lease. The key's create revision is the
//! owner's fencing token; every write of a partition's log compares it in the same txn, so a
//! deposed owner (its lease expired while it was paused or cut off) writes nothing after a
//! new owner took the key, whatever it believes.
//!
//! A lease is `Held`, `Lapsed` or `Lost` as this node sees it. `Lapsed`: no renewal
//! succeeded for a whole TTL (a pause, a cut-off, or an etcd leader election that outlasts
//! the TTL), so another node may own the key now: stop serving, but keep renewing, because
//! etcd may still hold the lease (a new leader extends every lease it finds). A renewal that
//! succeeds makes it `Held` again (the key is still this node's: it lives and dies with the
//! lease); etcd answering that the lease is gone makes it `Lost`, for good.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::Etcd;
use crate::codec::{encode_owner, NodeInfo};
use crate::error::{ClusterError, Result};
use crate::keys::owner_key;

/// A key this node created under a lease it keeps alive: a partition's owner key or a
/// node's membership key. Dropping it stops the keep-alive (the lease then expires, and
/// the key with it); `release` deletes the key at once.
pub struct Leased {
    etcd: Etcd,
    key: String,
    token: i64,
    lease_id: i64,
    state: watch::Receiver<LeaseState>,
    stop: Arc<Notify>,
    keeper: JoinHandle<()>,
}

/// A lease as this node sees it (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Held,
    /// No renewal for a whole TTL: another node may own the key; renewals go on.
    Lapsed,
    /// etcd said the lease is gone, or this node stopped renewing it: final.
    Lost,
}

/// A partition this node owns: its owner key, leased.
pub struct Owned {
    partition: u32,
    leased: Leased,
}

/// Why the keep-alive task stopped believing in the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    Kept,
    Lost,
}

impl Owned {
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The fencing token: the owner key's create revision. Strictly greater than every
    /// earlier owner's token of any key, so "newer owner" is "larger token".
    pub fn token(&self) -> i64 {
        self.leased.token
    }

    pub fn lease_id(&self) -> i64 {
        self.leased.lease_id
    }

    /// A receiver of the lease's state: for a task that stops serving the partition the
    /// moment it lapses (a paused node resumes and finds its lease run out) and serves again
    /// if it is renewed after all.
    pub fn state_signal(&self) -> watch::Receiver<LeaseState> {
        self.leased.state.clone()
    }

    /// True once the lease is lost for good ([`Leased::is_lost`]): give the partition up.
    pub fn is_lost(&self) -> bool {
        self.leased.is_lost()
    }

    /// Waits until the lease is lost.
    pub async fn lost(&mut self) {
        self.leased.lost().await
    }

    /// Stops renewing the lease, keeping the token ([`Leased::stop_keep_alive`]).
    pub fn stop_keep_alive(&self) {
        self.leased.stop_keep_alive()
    }

    /// Gives the partition up: deletes the owner key if it still carries this token and
    /// revokes the lease. Another node can take the partition at once.
    pub async fn release(self) -> Result<()> {
        self.leased.release().await
    }
}

impl Leased {
    /// The key's create revision.
    pub fn token(&self) -> i64 {
        self.token
    }

    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }

    /// True once etcd said the lease is gone or this node stopped renewing it. Advisory for
    /// an owner key: safety does not depend on it (the log's txns compare the token).
    pub fn is_lost(&self) -> bool {
        *self.state.borrow() == LeaseState::Lost
    }

    /// True while the lease is not known to be held (lapsed or lost): an owner stops serving.
    pub fn is_lapsed(&self) -> bool {
        *self.state.borrow() != LeaseState::Held
    }

    /// Waits until the lease is lost (see `is_lost`).
    pub async fn lost(&mut self) {
        // An error means the keep-alive task ended, which it does only after marking the loss
        // or being stopped: both mean this node no longer keeps the lease.
        let _ = self.state.wait_for(|s| *s == LeaseState::Lost).await;
    }

    /// Deletes the key if it still carries this token and revokes the lease.
    pub async fn release(self) -> Result<()> {
        self.stop.notify_one();
        let key = self.key.clone();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, self.token)])
            .and_then([TxnOp::delete(key, None)]);
        // Repeating the delete is harmless: it is guarded by this token.
        self.etcd
            .read("release", |mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
        let mut lease = self.etcd.client().1.lease_client();
        // The key is gone; a failed revoke only leaves a lease to expire by itself.
        if let Ok(Err(e)) = self.etcd.bounded("revoke", lease.revoke(self.lease_id)).await {
            tracing::debug!(lease = self.lease_id, error = %e, "lease revoke failed");
        }
        Ok(())
    }

    /// Stops renewing the lease without deleting the key, as a process paused by SIGSTOP or
    /// cut off from etcd would: the key expires after the TTL. The token stays in hand, so
    /// the tests can show that writes under it are refused once another node owns the key.
    pub fn stop_keep_alive(&self) {
        self.stop.notify_one();
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        self.stop.notify_one();
        self.keeper.abort();
    }
}

/// Tries to take `partition` for `node`: grants a lease of `lease_ttl_s` seconds and creates
/// the owner key under it only if no key exists (`create_revision == 0`). `Ok(None)` when
/// another node owns it. The lease is kept alive every third of its TTL until the `Owned`
/// is released or dropped.
pub async fn acquire(etcd: &Etcd, partition: u32, node: &NodeInfo, lease_ttl_s: i64) -> Result<Option<Owned>> {
    node.validate()?;
    let leased = create_leased(etcd, owner_key(partition), encode_owner(node), lease_ttl_s).await?;
    Ok(leased.map(|leased| Owned { partition, leased }))
}

/// Creates `key` with `value` under a new lease of `lease_ttl_s` seconds if the key does not
/// exist, and keeps the lease alive. `Ok(None)` when the key exists.
pub(crate) async fn create_leased(
    etcd: &Etcd,
    key: String,
    value: Vec<u8>,
    lease_ttl_s: i64,
) -> Result<Option<Leased>> {
    // etcd's leases count whole seconds; below 2 s a leader election alone could expire it.
    if !(2..=3600).contains(&lease_ttl_s) {
        return Err(ClusterError::Config("lease_ttl_s must be 2..=3600".to_owned()));
    }
    // A lease granted by a try whose answer was lost expires by itself.
    let grant = etcd
        .read("lease grant", |_| {
            let mut lease = etcd.client().1.lease_client();
            async move { lease.grant(lease_ttl_s, None).await }
        })
        .await?;
    // Measured from before the grant: etcd starts the TTL when it grants, which is later.
    let granted_at = Instant::now();
    let lease_id = grant.id();
    let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
        key.clone(),
        value,
        Some(PutOptions::new().with_lease(lease_id)),
    )]);
    let resp = match etcd.write("acquire", |mut kv| async move { kv.txn(txn).await }).await {
        Ok(resp) => resp,
        Err(e) => {
            // Unknown whether the key was created: revoking the lease deletes it if it was.
            revoke_quietly(etcd, lease_id).await;
            return Err(e);
        }
    };
    if !resp.succeeded() {
        revoke_quietly(etcd, lease_id).await;
        return Ok(None);
    }
    // The txn's revision is the revision that created the key: the token.
    let token = resp.header().map(|h| h.revision()).unwrap_or(0);
    if token <= 0 {
        revoke_quietly(etcd, lease_id).await;
        return Err(ClusterError::Corrupt { key, reason: "txn answer without a revision" });
    }
    debug_assert!(matches!(resp.op_responses().first(), Some(TxnOpResponse::Put(_))));
    let (tx, rx) = watch::channel(LeaseState::Held);
    let stop = Arc::new(Notify::new());
    let keeper = tokio::spawn(keep_alive(
        etcd.clone(),
        lease_id,
        Duration::from_secs(lease_ttl_s as u64),
        granted_at,
        tx,
        stop.clone(),
    ));
    Ok(Some(Leased { etcd: etcd.clone(), key, token, lease_id, state: rx, stop, keeper }))
}

async fn revoke_quietly(etcd: &Etcd, lease_id: i64) {
    let mut lease = etcd.client().1.lease_client();
    if let Ok(Err(e)) = etcd.bounded("revoke", lease.revoke(lease_id)).await {
        tracing::debug!(lease = lease_id, error = %e, "lease revoke failed");
    }
}

/// Renews the lease every third of its TTL. The lease lapses when no renewal succeeded for
/// a whole TTL since the last one was sent (etcd measures the TTL from when it received that
/// renewal, which is later, so this node stops serving no later than etcd could expire it,
/// clock rates aside); renewals go on, a bounded try each, quickly after a failure, and the
/// lease is held again when one succeeds, lost when etcd says it is gone. Bounded by `stop`
/// (the key released or dropped) and by etcd's answer.
async fn keep_alive(
    etcd: Etcd,
    lease_id: i64,
    ttl: Duration,
    granted_at: Instant,
    state: watch::Sender<LeaseState>,
    stop: Arc<Notify>,
) {
    let interval = ttl / 3;
    let mut valid_until = granted_at + ttl;
    let mut stream = None;
    let mut wait = interval;
    let outcome = loop {
        tokio::select! {
            _ = stop.notified() => break Loss::Kept,
            _ = tokio::time::sleep(wait) => {}
        }
        let sent_at = Instant::now();
        if sent_at >= valid_until && *state.borrow() == LeaseState::Held {
            tracing::warn!(lease = lease_id, "lease lapsed: no renewal for a whole TTL; renewing on");
            let _ = state.send(LeaseState::Lapsed);
        }
        // One renewal, bounded by what is left of the lease while it is held (a stream that
        // hangs must not keep this node believing past the TTL; a slow one may finish), and
        // by a third of the TTL once it lapsed (the next try goes to another member).
        let left = valid_until.saturating_duration_since(sent_at);
        let bound = if left.is_zero() { interval } else { left };
        let renewed = tokio::time::timeout(bound, renew(&etcd, lease_id, &mut stream)).await;
        match renewed {
            Ok(Ok(ttl_s)) if ttl_s > 0 => {
                valid_until = sent_at + ttl;
                wait = interval;
                if *state.borrow() == LeaseState::Lapsed {
                    tracing::warn!(lease = lease_id, "lease renewed after it lapsed: held again");
                    let _ = state.send(LeaseState::Held);
                }
            }
            Ok(Ok(_)) => break Loss::Lost, // etcd says the lease is gone
            Ok(Err(e)) => {
                tracing::warn!(lease = lease_id, error = %e, "lease keep-alive failed; retrying");
                // Reopen the stream on the next member, soon.
                if let Some((member, _)) = stream.take() {
                    etcd.demote(member);
                }
                wait = RETRY_AFTER_FAILURE;
                // A stream refused for a lease etcd no longer has ends in an error, not in a
                // TTL of 0: once lapsed, ask etcd whether the lease still exists.
                if *state.borrow() == LeaseState::Lapsed && lease_exists(&etcd, lease_id).await == Some(false) {
                    break Loss::Lost;
                }
            }
            Err(_) => {
                if let Some((member, _)) = stream.take() {
                    etcd.demote(member);
                }
                wait = RETRY_AFTER_FAILURE;
            }
        }
    };
    if outcome == Loss::Lost {
        tracing::warn!(lease = lease_id, "lease lost");
    }
    // Either way this node no longer keeps the lease alive.
    let _ = state.send(LeaseState::Lost);
}

/// Whether etcd still has the lease (`None`: no answer, as while it elects a leader).
async fn lease_exists(etcd: &Etcd, lease_id: i64) -> Option<bool> {
    let mut lease = etcd.client().1.lease_client();
    match etcd.bounded("lease time to live", lease.time_to_live(lease_id, None)).await {
        Ok(Ok(resp)) => Some(resp.ttl() > 0),
        _ => None,
    }
}

/// The pause before a renewal after a failed one (on the next member).
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(100);

/// The member a keep-alive stream runs on, and the stream.
type KeepAlive = (usize, (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream));

/// One keep-alive round trip on the lease's stream (opened on first use).
async fn renew(
    etcd: &Etcd,
    lease_id: i64,
    stream: &mut Option<KeepAlive>,
) -> std::result::Result<i64, etcd_client::Error> {
    if stream.is_none() {
        let (member, client) = etcd.client();
        let mut lease = client.lease_client();
        match lease.keep_alive(lease_id).await {
            Ok(s) => *stream = Some((member, s)),
            Err(e) => {
                etcd.demote(member);
                return Err(e);
            }
        }
    }
    let Some((_, (keeper, responses))) = stream.as_mut() else {
        return Err(etcd_client::Error::LeaseKeepAliveError("no stream".to_owned()));
    };
    keeper.keep_alive().await?;
    match responses.message().await? {
        Some(resp) => Ok(resp.ttl()),
        None => Err(etcd_client::Error::LeaseKeepAliveError("stream closed".to_owned())),
    }
}
