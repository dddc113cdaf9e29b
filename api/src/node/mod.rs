//! Cluster mode's controller (build feature `cluster`): this node's life in the cluster.
//!
//! - It joins (its key `/surge/nodes/{id}` under a lease) and watches the partition table.
//! - Every round ([`ROUND_MS`], and at once when the partition table changes) it takes free
//!   partitions up to its fair share of the live nodes (`partition::assignment`), gives one
//!   up when it holds more than its share (so a joining node finds partitions to take), and
//!   gives up every partition whose lease was lost or whose log failed (the engine names
//!   those).
//! - Taking a partition: the owner key (its create revision is the fencing token), then the
//!   partition's state to the end of its log (from the hot standby when there is one, else
//!   rebuilt from etcd), then a `Committer` behind the engine's shard. From then on every
//!   write is acknowledged only once etcd committed it on a majority, guarded by the token.
//! - Every partition it does not own has a hot standby here (a task following its log), so a
//!   takeover reads only the tail and this node knows those merchants' API keys, which it
//!   needs to authenticate a request before forwarding it to the owner.
//! - Each owned partition has its readers (`readers`): with `--kafka-brokers` its relay,
//!   with `--gateway-url` its card gateway worker, the single-node code reading the
//!   partition's log in etcd from the checkpoints the previous owner's stored there.
//! - A partition that logged `snapshot_every_records` records since its last snapshot gets
//!   one through its committer (which then deletes the batches it covers and its readers
//!   have), and the node with
//!   the lowest id compacts etcd's history once a minute, to the revision it saw a minute
//!   before (watchers and followers that far behind restart from the newest snapshot).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use surge_cluster::{
    membership, ownership, Etcd, EtcdConfig, LeaseState, LogReader, NodeInfo, Owned, PartitionLog, PartitionTable,
};
use surge_partition::{assignment, rebuild, Committer, CommitterConfig, Rebuilt, Standby};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cluster_http::{ClusterNode, ClusterTable, ClusterView, PartitionOwner};
use crate::engine::{Engine, ReplicatedLog, Verdict};

mod history;
pub mod readers;

/// How often the controller looks at the table, its leases and its partitions.
const ROUND_MS: u64 = 200;
/// A standby's wait for new batches before it lets a takeover have it.
const STANDBY_WAIT_MS: u64 = 250;
/// Groups a partition's committer queues at most: above the engine's per-shard permits
/// (4,096 requests) plus the ticker's groups, so a busy shard never finds it full.
const COMMIT_QUEUE_GROUPS_MAX: usize = 8_192;
/// Log bytes a partition appends at most before its next snapshot (unless its last
/// snapshot was larger: see `snapshot_due`), so that etcd, whose database is bounded (2 GiB
/// by default), holds little more than each partition's snapshot and the log after it.
const LOG_BYTES_BETWEEN_SNAPSHOTS_MAX: u64 = 8 * 1024 * 1024;
/// The longest a partition handed over waits for its submitted groups' verdicts (an etcd
/// append that hangs gives up within the client's request timeout, 5 s by default).
const DRAIN_MS_MAX: u64 = 5_000;
/// How often the lowest node compacts etcd's history.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

pub struct NodeConfig {
    pub etcd_endpoints: Vec<String>,
    pub node_id: String,
    /// Where the other nodes reach this one's HTTP API (`host:port`).
    pub advertise: String,
    pub partitions: u32,
    pub lease_ttl_s: i64,
    /// Snapshot a partition after this many records (0: never).
    pub snapshot_every_records: u64,
    pub settings: surge_core::Settings,
    /// What reads each owned partition's log: the Kafka relay, the gateway worker.
    pub readers: readers::ReaderConfig,
    /// The SHA-256 of this node's admin token: every node must have the same token (a
    /// forwarded admin request is checked by the node that answers it).
    pub admin_token_hash: [u8; 32],
}

/// A running node; [`Node::stop`] hands its partitions back.
pub struct Node {
    pub view: Arc<dyn ClusterView>,
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Node {
    /// Joins the cluster and starts taking partitions. Fails when etcd does not answer or a
    /// live node already runs with this id.
    /// `state` shows the readers of the partitions it owns in /metrics.
    pub async fn start(
        engine: Arc<Engine>,
        failures: crossbeam_channel::Receiver<u32>,
        cfg: NodeConfig,
        state: crate::AppState,
    ) -> Result<Node, String> {
        cfg.readers.check()?;
        let mut etcd_config = EtcdConfig::new(cfg.etcd_endpoints.clone());
        // An append rides out an etcd leader election (its tries go on, same batch, same
        // seq) for as long as two leases: past that the partition is rebuilt.
        etcd_config.append_patience_ms = 2 * cfg.lease_ttl_s.unsigned_abs() * 1_000;
        let etcd = Etcd::connect(etcd_config).await.map_err(|e| format!("connecting to etcd: {e}"))?;
        let stored = membership::partition_count(&etcd, cfg.partitions)
            .await
            .map_err(|e| format!("reading the partition count: {e}"))?;
        if stored != cfg.partitions {
            return Err(format!("the cluster has {stored} partitions; this node was started with {}", cfg.partitions));
        }
        // What every node must share, checked before this node takes anything.
        let admin = crate::auth::sha256(&[b"surge cluster admin token\0".as_slice(), &cfg.admin_token_hash].concat());
        agree(&etcd, "admin_token", &crate::auth::hex(&admin), "admin token (--admin-token)").await?;
        if let Some(gateway) = &cfg.readers.gateway {
            // A card number sealed by one node is opened by whichever node owns its
            // partition next.
            agree(&etcd, "card_key_id", &gateway.card_key.id(), "card key (--card-key-file)").await?;
        }
        let me = NodeInfo { node_id: cfg.node_id.clone(), address: cfg.advertise.clone() };
        // A node restarted right after a crash finds its previous life's key until that
        // lease expires: wait that long (bounded) before calling the id taken.
        let deadline = Instant::now() + Duration::from_secs(cfg.lease_ttl_s.unsigned_abs() + 2);
        let member = loop {
            match membership::join(&etcd, &me, cfg.lease_ttl_s).await {
                Ok(Some(member)) => break member,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(ROUND_MS)).await,
                Ok(None) => return Err(format!("a live node already runs as {:?}", cfg.node_id)),
                Err(e) => return Err(format!("joining the cluster: {e}")),
            }
        };
        let table = PartitionTable::start(&etcd, cfg.partitions).await.map_err(|e| format!("partition table: {e}"))?;
        let view = Arc::new(View {
            etcd: etcd.clone(),
            partitions: cfg.partitions,
            node_id: cfg.node_id.clone(),
            table: Mutex::new(ClusterTable {
                mode: "cluster",
                node_id: cfg.node_id.clone(),
                partitions: cfg.partitions,
                nodes: vec![],
                owners: vec![],
                merchant: None,
            }),
        });
        let stop = Arc::new(Notify::new());
        let controller = Controller {
            etcd,
            me,
            cfg,
            engine,
            state,
            failures,
            table,
            view: view.clone(),
            held: BTreeMap::new(),
            standbys: BTreeMap::new(),
            compaction: Compaction { next_at: Instant::now() + COMPACT_EVERY, revision: None },
            member,
        };
        let task = tokio::spawn(controller.run(stop.clone()));
        Ok(Node { view, stop, task })
    }

    /// Gives every partition up (so the others take them at once instead of after the
    /// lease) and leaves the cluster.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Stores `mine` as the cluster's `name` if no node did yet; else refuses to start unless the
/// stored one is the same. `what` names it in the error.
async fn agree(etcd: &Etcd, name: &str, mine: &str, what: &str) -> Result<(), String> {
    let key = surge_cluster::keys::setting_key(name);
    let stored =
        membership::agreed(etcd, &key, mine).await.map_err(|e| format!("reading the cluster's {what}: {e}"))?;
    if stored != mine {
        return Err(format!(
            "the cluster runs with another {what} than this node (etcd key {key}): every node needs the same one"
        ));
    }
    Ok(())
}

struct View {
    node_id: String,
    table: Mutex<ClusterTable>,
    /// For the events look-up, which reads partitions' logs.
    etcd: Etcd,
    partitions: u32,
}

impl ClusterView for View {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn table(&self) -> ClusterTable {
        self.table.lock().clone()
    }

    fn aggregate_events(
        &self,
        merchant: &str,
        aggregate: &str,
        limit: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<crate::lookup::AggregateEvents, String>> + Send>>
    {
        let (etcd, partitions) = (self.etcd.clone(), self.partitions);
        let (merchant, aggregate) = (merchant.to_owned(), aggregate.to_owned());
        Box::pin(async move { history::aggregate_events(&etcd, partitions, &merchant, &aggregate, limit).await })
    }
}

/// A partition's committer as the engine's shard uses it; counts records and bytes for
/// snapshots.
struct CommitterLog {
    committer: Committer,
    records: AtomicU64,
    bytes: AtomicU64,
}

impl ReplicatedLog for CommitterLog {
    fn submit(&self, records: Vec<Vec<u8>>, done: Verdict) -> Result<(), String> {
        let n = records.len() as u64;
        let bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
        self.committer
            .submit(records, Box::new(move |r| done(r.map(|_| ()).map_err(|e| e.to_string()))))
            .map_err(|e| e.to_string())?;
        self.records.fetch_add(n, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn snapshot(&self, bytes: Vec<u8>, done: Verdict) -> Result<(), String> {
        self.committer
            .snapshot(bytes, Box::new(move |r| done(r.map(|_| ()).map_err(|e| e.to_string()))))
            .map_err(|e| e.to_string())
    }
}

/// A partition this node owns.
struct Held {
    owned: Owned,
    /// Follows the lease (`follow_lease`): stops the partition in the engine the moment it
    /// lapses, without waiting for the next round (which may be stuck on an etcd call after
    /// a pause), and serves it again if it is renewed after all.
    lease_follower: JoinHandle<()>,
    log: Arc<CommitterLog>,
    /// Its relay and gateway worker, as configured.
    readers: readers::PartitionReaders,
    /// The log's counts when the last snapshot was queued, and that snapshot's size.
    records_at_snapshot: u64,
    bytes_at_snapshot: u64,
    snapshot_bytes: u64,
    snapshot_in_flight: Arc<AtomicBool>,
}

/// How a partition is given up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Handover {
    /// Handed over on purpose (a node joined, this node is stopping): new requests are
    /// turned away first and the groups already submitted are settled before the key goes.
    Drain,
    /// Lost (lease) or failed (log): nothing more can be committed; drop it at once.
    Drop,
}

/// A partition owned elsewhere, followed by a task; `None` in the slot until it is built.
struct StandbyTask {
    slot: Arc<tokio::sync::Mutex<Option<Standby>>>,
    task: JoinHandle<()>,
}

struct Compaction {
    next_at: Instant,
    /// The revision seen at the previous round: the next compaction goes up to it.
    revision: Option<i64>,
}

struct Controller {
    etcd: Etcd,
    me: NodeInfo,
    cfg: NodeConfig,
    engine: Arc<Engine>,
    state: crate::AppState,
    failures: crossbeam_channel::Receiver<u32>,
    table: PartitionTable,
    view: Arc<View>,
    held: BTreeMap<u32, Held>,
    standbys: BTreeMap<u32, StandbyTask>,
    compaction: Compaction,
    /// This node's membership key, kept alive for as long as the node runs (and taken again
    /// when a pause cost it the lease).
    member: membership::Member,
}

impl Controller {
    async fn run(mut self, stop: Arc<Notify>) {
        let mut round = tokio::time::interval(Duration::from_millis(ROUND_MS));
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = self.table.changes();
        // Bounded by `stop`; a round runs per tick, and at once when the table changes (a
        // partition released or expired is taken without waiting for the next tick).
        loop {
            tokio::select! {
                _ = stop.notified() => break,
                _ = round.tick() => self.round().await,
                Ok(()) = changes.changed() => {
                    changes.borrow_and_update();
                    self.round().await;
                    round.reset();
                }
            }
        }
        let partitions: Vec<u32> = self.held.keys().copied().collect();
        let mut stopping_readers = Vec::new();
        for p in partitions {
            stopping_readers.push(self.give_up(p, Handover::Drain, "the node is stopping").await);
        }
        // Their threads call etcd on this runtime: they end before it does.
        for stopping in stopping_readers.into_iter().flatten() {
            let _ = stopping.await;
        }
        for (_, standby) in std::mem::take(&mut self.standbys) {
            standby.task.abort();
        }
    }

    async fn round(&mut self) {
        if self.member.leased.is_lost() && !self.rejoin().await {
            return;
        }
        // Partitions whose log failed (the engine answers nothing from them now) or whose
        // lease ran out: another node may own them already.
        let failed: Vec<u32> = self.failures.try_iter().collect();
        for p in failed {
            self.give_up(p, Handover::Drop, "its replicated log failed").await;
        }
        let lost: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.owned.is_lost() || !h.log.committer.is_running())
            .map(|(&p, _)| p)
            .collect();
        for p in lost {
            self.give_up(p, Handover::Drop, "its lease was lost").await;
        }
        let members = match membership::members(&self.etcd).await {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!("cluster round: reading the members: {e}");
                return;
            }
        };
        let table = self.table.current();
        self.publish(&members, &table);
        let all: Vec<u32> = (0..self.cfg.partitions).collect();
        let live = members.len().max(1);
        for p in assignment::to_take(&all, &table, &self.me.node_id, live) {
            self.take(p).await;
        }
        // More than its share (a node joined): hand one partition back per round.
        if self.held.len() > assignment::fair_share(all.len(), live) {
            if let Some(&p) = self.held.keys().next_back() {
                self.give_up(p, Handover::Drain, "a node joined: handing over").await;
            }
        }
        self.keep_standbys();
        self.snapshot_due();
        self.compact_due(&members).await;
    }

    /// Takes the membership key again after its lease was lost (a pause longer than the
    /// TTL). False while the old key has not expired yet or etcd does not answer: the node
    /// takes no partition until it is a member again.
    async fn rejoin(&mut self) -> bool {
        match membership::join(&self.etcd, &self.me, self.cfg.lease_ttl_s).await {
            Ok(Some(member)) => {
                tracing::warn!("the membership lease was lost; joined again");
                self.member = member;
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!("joining the cluster again: {e}");
                false
            }
        }
    }

    /// Tells the engine (for forwarding) and `GET /v1/cluster` who owns what.
    fn publish(&self, members: &[NodeInfo], table: &surge_cluster::table::Table) {
        let mut owners = Vec::with_capacity(self.cfg.partitions as usize);
        for p in 0..self.cfg.partitions {
            let owner = table.get(&p);
            let mine = self.held.contains_key(&p);
            let elsewhere = owner.filter(|o| o.node.node_id != self.me.node_id);
            self.engine.set_partition_owner(p, elsewhere.map(|o| Arc::from(o.node.address.as_str())));
            owners.push(PartitionOwner {
                partition: p,
                state: if mine {
                    "serving"
                } else if elsewhere.is_some() {
                    "remote"
                } else {
                    "moving"
                },
                node_id: owner.map(|o| o.node.node_id.clone()),
                address: owner.map(|o| o.node.address.clone()),
                token: owner.map(|o| o.token),
                records_logged: self.held.get(&p).map(|h| h.log.records.load(Ordering::Relaxed)),
            });
        }
        let mut view = self.view.table.lock();
        view.nodes =
            members.iter().map(|n| ClusterNode { node_id: n.node_id.clone(), address: n.address.clone() }).collect();
        view.owners = owners;
    }

    /// Takes `p` if it is still free: token, state to the end of the log, committer.
    async fn take(&mut self, p: u32) {
        let started = Instant::now();
        let owned = match ownership::acquire(&self.etcd, p, &self.me, self.cfg.lease_ttl_s).await {
            Ok(Some(owned)) => owned,
            Ok(None) => return, // another node was faster
            Err(e) => {
                tracing::warn!(partition = p, "taking the partition: {e}");
                return;
            }
        };
        // The token now fences every earlier owner: the log's end does not move any more.
        let standby = match self.standbys.remove(&p) {
            Some(s) => {
                s.task.abort();
                s.slot.lock().await.take()
            }
            None => None,
        };
        let from_standby = standby.is_some();
        let rebuilt = match standby {
            Some(standby) => match standby.catch_up().await {
                Ok(rebuilt) => Ok(rebuilt),
                Err(e) => {
                    tracing::warn!(partition = p, "the standby could not catch up ({e}); rebuilding from etcd");
                    rebuild(&LogReader::new(&self.etcd, p), p).await
                }
            },
            None => rebuild(&LogReader::new(&self.etcd, p), p).await,
        };
        let log = match rebuilt {
            Ok(rebuilt) => {
                PartitionLog::open(&self.etcd, &owned).await.map(|log| (rebuilt, log)).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let (Rebuilt { shard, next_seq, batches_applied }, log) = match log {
            Ok((rebuilt, log)) if rebuilt.next_seq == log.next_seq() => (rebuilt, log),
            Ok((rebuilt, log)) => {
                tracing::error!(
                    partition = p,
                    read_to = rebuilt.next_seq,
                    log_next = log.next_seq(),
                    "the partition's state does not reach its log's end; giving it back"
                );
                let _ = owned.release().await;
                return;
            }
            Err(e) => {
                tracing::warn!(partition = p, "reading the partition: {e}; giving it back");
                let _ = owned.release().await;
                return;
            }
        };
        let positions = self.cfg.readers.positions();
        let mut committer_config = CommitterConfig::new(self.etcd.config(), COMMIT_QUEUE_GROUPS_MAX);
        committer_config.readers = positions.clone();
        let committer = Committer::start(log, committer_config);
        let log = Arc::new(CommitterLog { committer, records: AtomicU64::new(0), bytes: AtomicU64::new(0) });
        self.engine.take_partition(p, shard, self.cfg.settings, log.clone());
        tracing::info!(
            partition = p,
            token = owned.token(),
            next_seq,
            batches_applied,
            from_standby,
            took_ms = started.elapsed().as_millis() as u64,
            "serving the partition"
        );
        let generation = self.engine.partition_generation(p);
        let lease = owned.state_signal();
        let lease_follower =
            tokio::spawn(follow_lease(lease, self.engine.clone(), p, generation, Arc::downgrade(&log)));
        let readers = match &positions {
            Some(positions) => self.cfg.readers.start(&self.etcd, p, positions, &self.engine).await,
            None => readers::PartitionReaders::default(),
        };
        let held = Held {
            owned,
            lease_follower,
            log,
            readers,
            records_at_snapshot: 0,
            bytes_at_snapshot: 0,
            snapshot_bytes: 0,
            snapshot_in_flight: Arc::new(AtomicBool::new(false)),
        };
        self.held.insert(p, held);
        self.publish_readers();
    }

    /// Shows the readers of the partitions owned now in /metrics.
    fn publish_readers(&self) {
        self.cfg.readers.publish(&self.state, self.held.values().map(|h| &h.readers));
    }

    /// Stops serving `p` and releases its key (if it is still this node's). Returns the
    /// partition's readers stopping in the background (the caller may wait for them).
    async fn give_up(&mut self, p: u32, handover: Handover, why: &str) -> Option<tokio::task::JoinHandle<()>> {
        let held = self.held.remove(&p)?;
        tracing::warn!(partition = p, "giving the partition up: {why}");
        // Before the release, whose end of the keep-alive would set the signal too.
        held.lease_follower.abort();
        if handover == Handover::Drain {
            // New requests answer 503 partition_moving (nothing applied: a safe retry); the
            // groups already submitted are answered by their etcd verdicts, not left unknown.
            self.engine.drain_partition(p);
            let started = Instant::now();
            match Arc::try_unwrap(held.log) {
                Ok(log) => {
                    let closed = tokio::time::timeout(Duration::from_millis(DRAIN_MS_MAX), log.committer.close());
                    if closed.await.is_err() {
                        tracing::warn!(partition = p, "the partition's last groups did not settle in time");
                    }
                }
                Err(_) => tracing::warn!(partition = p, "the partition's log is still in use; not drained"),
            }
            tracing::info!(partition = p, took_ms = started.elapsed().as_millis() as u64, "partition drained");
        } else {
            // The committer ends once its last handle (this one) is gone; what waits on it is
            // answered as not acknowledged (outcome unknown) by the engine below.
            drop(held.log);
        }
        self.engine.give_up_partition(p);
        if let Err(e) = held.owned.release().await {
            tracing::warn!(partition = p, "releasing the partition (its lease expires by itself): {e}");
        }
        self.publish_readers();
        // Stopping joins their threads after their current calls (a read waits up to a
        // second, a gateway call up to its response timeout): off the controller's task.
        let readers = held.readers;
        Some(tokio::task::spawn_blocking(move || drop(readers)))
    }

    /// Starts a standby for every partition this node neither owns nor follows.
    fn keep_standbys(&mut self) {
        self.standbys.retain(|_, s| !s.task.is_finished());
        for p in 0..self.cfg.partitions {
            if self.held.contains_key(&p) || self.standbys.contains_key(&p) {
                continue;
            }
            let slot = Arc::new(tokio::sync::Mutex::new(None));
            let task = tokio::spawn(follow(LogReader::new(&self.etcd, p), p, slot.clone(), self.engine.clone()));
            self.standbys.insert(p, StandbyTask { slot, task });
        }
    }

    /// Queues a snapshot for every owned partition that logged enough since its last one:
    /// `snapshot_every_records` records or [`LOG_BYTES_BETWEEN_SNAPSHOTS_MAX`] bytes, and at
    /// least as many bytes as its last snapshot held, so that snapshotting costs in
    /// proportion to the traffic as the state grows (the single-node rule).
    fn snapshot_due(&mut self) {
        let every = self.cfg.snapshot_every_records;
        if every == 0 {
            return;
        }
        for (&p, held) in &mut self.held {
            let records = held.log.records.load(Ordering::Relaxed);
            let bytes = held.log.bytes.load(Ordering::Relaxed);
            let (records_since, bytes_since) = (records - held.records_at_snapshot, bytes - held.bytes_at_snapshot);
            let due = (records_since >= every || bytes_since >= LOG_BYTES_BETWEEN_SNAPSHOTS_MAX)
                && bytes_since >= held.snapshot_bytes;
            if !due || held.snapshot_in_flight.swap(true, Ordering::AcqRel) {
                continue;
            }
            let in_flight = held.snapshot_in_flight.clone();
            let done: Verdict = Box::new(move |r| {
                match r {
                    Ok(()) => tracing::info!(partition = p, records, "snapshot stored, the log it covers deleted"),
                    Err(e) => tracing::warn!(partition = p, "snapshot not stored: {e}"),
                }
                in_flight.store(false, Ordering::Release);
            });
            match self.engine.snapshot_partition(p, done) {
                Some(Ok(len)) => {
                    held.records_at_snapshot = records;
                    held.bytes_at_snapshot = bytes;
                    held.snapshot_bytes = len as u64;
                }
                Some(Err(e)) => {
                    tracing::warn!(partition = p, "snapshot not queued: {e}");
                    held.snapshot_in_flight.store(false, Ordering::Release);
                }
                None => held.snapshot_in_flight.store(false, Ordering::Release),
            }
        }
    }

    /// The lowest live node compacts etcd's history up to the revision of a minute ago.
    async fn compact_due(&mut self, members: &[NodeInfo]) {
        if Instant::now() < self.compaction.next_at || members.first().is_none_or(|n| n.node_id != self.me.node_id) {
            return;
        }
        self.compaction.next_at = Instant::now() + COMPACT_EVERY;
        if let Some(revision) = self.compaction.revision.take() {
            if let Err(e) = surge_cluster::log::compact(&self.etcd, revision).await {
                tracing::warn!(revision, "compacting etcd: {e}");
            }
        }
        match surge_cluster::log::current_revision(&self.etcd).await {
            Ok(revision) => self.compaction.revision = Some(revision),
            Err(e) => tracing::warn!("reading etcd's revision: {e}"),
        }
    }
}

/// Follows the lease of owned partition `p` (a task of its own, so a pause or a stuck etcd
/// call does not delay it): lapsed, the partition stops taking requests (503
/// `partition_moving`) while its submitted groups still settle; renewed after all, it serves
/// again as it was; lost, it is given up here at once (the controller then releases it).
async fn follow_lease(
    mut state: tokio::sync::watch::Receiver<LeaseState>,
    engine: Arc<Engine>,
    p: u32,
    generation: u64,
    log: std::sync::Weak<CommitterLog>,
) {
    // Bounded by the lease: its keep-alive task ends (closing the channel) once it is lost.
    loop {
        if state.changed().await.is_err() {
            return;
        }
        let now = *state.borrow_and_update();
        match now {
            LeaseState::Lapsed => {
                tracing::warn!(partition = p, "lease lapsed: the partition stops taking requests here");
                engine.drain_partition(p);
            }
            LeaseState::Held => {
                let Some(log) = log.upgrade() else { return };
                if engine.resume_partition(p, generation, log) {
                    tracing::warn!(partition = p, "lease renewed: the partition serves again");
                }
            }
            LeaseState::Lost => {
                tracing::warn!(partition = p, "lease lost: the partition stops serving here");
                engine.give_up_partition(p);
                return;
            }
        }
    }
}

/// A standby's task: builds it, then follows the log until a takeover aborts it or the log
/// was truncated past it (the controller then starts a new one).
async fn follow(reader: LogReader, p: u32, slot: Arc<tokio::sync::Mutex<Option<Standby>>>, engine: Arc<Engine>) {
    let standby = match Standby::start(reader, p).await {
        Ok(standby) => standby,
        Err(e) => {
            tracing::warn!(partition = p, "starting a standby: {e}");
            tokio::time::sleep(Duration::from_millis(ROUND_MS * 5)).await;
            return;
        }
    };
    engine.learn_keys(standby.shard().merchants().map(|m| (m.api_key_hash, m.id.clone())));
    *slot.lock().await = Some(standby);
    loop {
        let mut guard = slot.lock().await;
        let Some(standby) = guard.as_mut() else { return };
        match standby.poll(STANDBY_WAIT_MS).await {
            Ok((0, _)) => {}
            Ok(_) => engine.learn_keys(standby.take_learned_keys()),
            Err(e) => {
                tracing::warn!(partition = p, "the standby stopped: {e}");
                *guard = None;
                return;
            }
        }
        drop(guard);
        // The lock is fair: a takeover waiting for it gets it now.
        tokio::task::yield_now().await;
    }
}
