//! Cluster mode's shard side against the real three-member etcd of `scripts/etcd.sh`:
//! group commits through `partition::Committer`, a partition rebuilt by a new owner, and a
//! fenced owner that acknowledges nothing. The records are the event batches of a random
//! command sequence (`surge_core::sim`), so they hold what orders, payments and the ledger
//! log. Without etcd the tests fail when `CI` is set and are skipped with a message elsewhere.

mod common;

use std::time::{Duration, Instant};

use surge_cluster::test_support::etcd;
use surge_cluster::{acquire, Etcd, LogReader, NodeInfo, Owned, PartitionLog};
use surge_core::encoding::encode_events;
use surge_core::event::{ApiKeyRotated, MerchantCreated};
use surge_core::image;
use surge_core::Shard;
use surge_core::{Event, EventBody};
use surge_partition::{rebuild, CommitError, Committer, CommitterConfig, Standby};
use tokio::sync::oneshot;

fn fresh_partition(salt: u32) -> u32 {
    common::fresh_partition(4_000_000_000, salt)
}

fn node(name: &str) -> NodeInfo {
    NodeInfo { node_id: name.to_owned(), address: format!("127.0.0.1:1{}", name.len()) }
}

/// Shard 0's event batches of a random command sequence (one record per applied request).
fn records() -> Vec<Vec<u8>> {
    common::sim_records(0x9E37_79B9_7F4A_7C15, 24_000, 100)
}

/// The shard that replaying `records` gives: what every rebuild must equal.
fn replayed(records: &[Vec<u8>]) -> Shard {
    let mut shard = Shard::new();
    for r in records {
        let events = image::record_events(image::EVENTS_RECORD_TYPE, r).expect("a logged batch decodes");
        image::apply_events(std::slice::from_mut(&mut shard), &events).expect("a logged batch applies");
    }
    shard
}

async fn take(etcd: &Etcd, partition: u32, name: &str, ttl_s: i64) -> (Owned, PartitionLog) {
    let owned = acquire(etcd, partition, &node(name), ttl_s).await.expect("acquire").expect("the partition is free");
    let log = PartitionLog::open(etcd, &owned).await.expect("open the partition's log");
    (owned, log)
}

type Verdict = oneshot::Receiver<Result<u64, CommitError>>;

/// A `done` for the committer and the receiver of its verdict.
fn verdict() -> (surge_partition::Committed, Verdict) {
    let (tx, rx) = oneshot::channel();
    let done = Box::new(move |result| {
        let _ = tx.send(result);
    });
    (done, rx)
}

/// Submits every record as its own group without waiting in between.
fn submit_all(committer: &Committer, records: &[Vec<u8>]) -> Vec<Verdict> {
    records
        .iter()
        .map(|r| {
            let (done, rx) = verdict();
            committer.submit(vec![r.clone()], done).unwrap_or_else(|e| panic!("submit: {e}"));
            rx
        })
        .collect()
}

async fn verdicts(answers: Vec<Verdict>) -> Vec<Result<u64, CommitError>> {
    let mut out = Vec::with_capacity(answers.len());
    for rx in answers {
        out.push(rx.await.expect("every group gets a verdict"));
    }
    out
}

/// Submits every record as its own group; returns each group's verdict in order.
async fn commit_all(committer: &Committer, records: &[Vec<u8>]) -> Vec<Result<u64, CommitError>> {
    verdicts(submit_all(committer, records)).await
}

fn config(etcd: &Etcd) -> CommitterConfig {
    CommitterConfig::new(etcd.config(), 4_096)
}

/// A fresh partition taken by "a" (lease TTL `ttl_s`) and its committer.
async fn owner_writing(etcd: &Etcd, salt: u32, ttl_s: i64) -> (u32, Owned, Committer) {
    let partition = fresh_partition(salt);
    let (owned, log) = take(etcd, partition, "a", ttl_s).await;
    (partition, owned, Committer::start(log, config(etcd)))
}

/// Takes `partition` for "b" as soon as its owner's lease is gone (polled every 50 ms),
/// within `deadline`.
async fn take_once_free(etcd: &Etcd, partition: u32, deadline: Instant) -> Owned {
    loop {
        if let Some(owned) = acquire(etcd, partition, &node("b"), 2).await.expect("acquire") {
            return owned;
        }
        assert!(Instant::now() < deadline, "an owner that stopped renewing loses its lease within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_rebuilds_exactly_what_was_acknowledged() {
    let Some(etcd) = etcd().await else { return };
    let records = records();
    let half = records.len() / 2;
    let partition = fresh_partition(1);
    let (owned, log) = take(&etcd, partition, "a", 5).await;

    // The first half, a snapshot of the state it gives, then the rest, all queued at once:
    // the snapshot must cover exactly the batches of the first half.
    let committer = Committer::start(log, config(&etcd));
    let started = Instant::now();
    let first = submit_all(&committer, &records[..half]);
    let (done, snapshot) = verdict();
    committer.snapshot(replayed(&records[..half]).snapshot(), done).expect("queue the snapshot");
    let second = submit_all(&committer, &records[half..]);
    let first = verdicts(first).await;
    let covers = snapshot.await.expect("the snapshot's verdict").expect("snapshot stored");
    let second = verdicts(second).await;
    let elapsed = started.elapsed();
    let seqs: Vec<u64> = first.iter().chain(&second).map(|r| *r.as_ref().expect("acknowledged")).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "groups are acknowledged in order");
    assert_eq!(covers, seqs[half - 1], "the snapshot covers the first half's batches");
    assert!(seqs[half] > covers, "no later group is in a batch the snapshot covers");
    let appends = seqs[seqs.len() - 1] - seqs[0] + 1;
    let after_snapshot = seqs[seqs.len() - 1] - covers;
    eprintln!(
        "{} groups in {appends} appends ({:.1} groups per append), {:.1} ms",
        seqs.len(),
        seqs.len() as f64 / appends as f64,
        elapsed.as_secs_f64() * 1e3
    );
    assert!(appends < seqs.len() as u64, "groups queued during an append share the next one");
    let reader = LogReader::new(&etcd, partition);
    let oldest = reader.read_from(1).await.expect("read").entries.first().map(|e| e.seq);
    assert_eq!(oldest, Some(covers + 1), "the batches the snapshot covers are deleted");
    let log = committer.close().await.expect("log back");

    // Another node takes the partition over and rebuilds it from etcd alone.
    owned.release().await.expect("release");
    let (_owned_b, log_b) = take(&etcd, partition, "b", 5).await;
    let rebuilt = rebuild(&LogReader::new(&etcd, partition), partition).await.expect("rebuild");
    assert_eq!(rebuilt.shard.digest(), replayed(&records).digest(), "the new owner holds every acknowledged group");
    assert_eq!(rebuilt.batches_applied, after_snapshot, "the rebuild starts after the snapshot");
    assert_eq!(rebuilt.next_seq, log.next_seq());
    assert_eq!(log_b.next_seq(), rebuilt.next_seq, "the new owner appends after the last batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_owner_acknowledges_nothing_more() {
    let Some(etcd) = etcd().await else { return };
    let records = records();
    let (partition, owned_a, committer) = owner_writing(&etcd, 2, 2).await;
    let before = commit_all(&committer, &records[..10]).await;
    assert!(before.iter().all(Result::is_ok), "{before:?}");

    // "a" stops renewing its lease, as a paused process does; "b" takes the partition once
    // the lease is gone.
    owned_a.stop_keep_alive();
    let owned_b = take_once_free(&etcd, partition, Instant::now() + Duration::from_secs(10)).await;

    // "a" resumes: what it decides now is refused, and it stops for good.
    let after = commit_all(&committer, &records[10..20]).await;
    assert!(
        after.iter().all(|r| matches!(r, Err(CommitError::Fenced { .. } | CommitError::Stopped { .. }))),
        "{after:?}"
    );
    assert!(matches!(after[0], Err(CommitError::Fenced { .. })), "{:?}", after[0]);
    assert!(!committer.is_running());
    let (tx, _rx) = oneshot::channel::<()>();
    let refused = committer.submit(vec![records[20].clone()], Box::new(move |_| drop(tx)));
    assert!(matches!(refused, Err(CommitError::Stopped { .. })), "{refused:?}");

    // The new owner's partition holds exactly what "a" acknowledged.
    let _log_b = PartitionLog::open(&etcd, &owned_b).await.expect("open");
    let rebuilt = rebuild(&LogReader::new(&etcd, partition), partition).await.expect("rebuild");
    assert_eq!(rebuilt.shard.digest(), replayed(&records[..10]).digest());
}

/// An owner writes while a standby on another "node" follows; the owner dies (stops renewing
/// its lease and writing, as a SIGKILLed process does); the standby takes the partition as
/// soon as the lease is gone, reads the tail, and holds every acknowledged group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_dead_owner_with_every_acknowledged_group() {
    let Some(etcd) = etcd().await else { return };
    let records = records();
    let (partition, owned_a, committer) = owner_writing(&etcd, 3, 2).await;
    let mut acknowledged = 0;
    for r in commit_all(&committer, &records[..40]).await {
        r.expect("acknowledged");
        acknowledged += 1;
    }

    // The standby starts from what is there and follows while the owner goes on writing.
    let mut standby = Standby::start(LogReader::new(&etcd, partition), partition).await.expect("standby");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let following = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                standby.poll(50).await.expect("follow");
            }
            standby
        })
    };
    let tail_from = records.len() - 30;
    for chunk in records[40..tail_from].chunks(10) {
        for r in commit_all(&committer, chunk).await {
            r.expect("acknowledged");
            acknowledged += 1;
        }
    }
    let followed = {
        stop.store(true, std::sync::atomic::Ordering::Release);
        following.await.expect("the follower task")
    };
    assert!(followed.batches_applied() > 0, "the standby applied batches while following");
    // A tail the standby has not read when the owner dies.
    for chunk in records[tail_from..].chunks(10) {
        for r in commit_all(&committer, chunk).await {
            r.expect("acknowledged");
            acknowledged += 1;
        }
    }

    // The owner dies: no more writes, no more renewals.
    let died = Instant::now();
    owned_a.stop_keep_alive();
    drop(committer);
    let _owned_b = take_once_free(&etcd, partition, died + Duration::from_secs(10)).await;
    let taken = died.elapsed();
    let tail_before = followed.batches_applied();
    let rebuilt = followed.catch_up().await.expect("catch up");
    let serving = died.elapsed();
    eprintln!(
        "failover: partition taken {:.2} s after the owner died, serving {:.2} s after ({} tail batches read)",
        taken.as_secs_f64(),
        serving.as_secs_f64(),
        rebuilt.batches_applied - tail_before
    );
    assert!(serving < Duration::from_secs(10), "serving again within 10 s: {serving:?}");
    assert!(rebuilt.batches_applied > tail_before, "the new owner read the tail the standby had not");
    assert_eq!(acknowledged, records.len());
    assert_eq!(rebuilt.shard.digest(), replayed(&records).digest(), "every acknowledged group is there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_learns_the_api_keys_its_batches_give() {
    let Some(etcd) = etcd().await else { return };
    let (partition, _owned, committer) = owner_writing(&etcd, 7, 2).await;
    let mut standby = Standby::start(LogReader::new(&etcd, partition), partition).await.expect("standby");
    let event = |merchant: &str, body| Event { merchant: merchant.into(), at_ms: 1, body };
    let created = |name: &str, hash: u8| {
        EventBody::MerchantCreated(MerchantCreated {
            name: name.into(),
            currency: "EUR".into(),
            api_key_hash: [hash; 32],
        })
    };
    let records = vec![
        encode_events(&[event("m-a", created("A", 1))]),
        encode_events(&[event("m-a", EventBody::ApiKeyRotated(ApiKeyRotated { api_key_hash: [2; 32] }))]),
        encode_events(&[event("m-b", created("B", 3))]),
    ];
    for r in commit_all(&committer, &records).await {
        r.expect("acknowledged");
    }
    let mut learned = Vec::new();
    // Bounded: 50 polls of at most 200 ms.
    for _ in 0..50 {
        standby.poll(200).await.expect("follow");
        learned.extend(standby.take_learned_keys().into_iter().map(|(hash, m)| (hash[0], m.to_string())));
        if learned.len() >= 3 {
            break;
        }
    }
    let expected = [(1, "m-a"), (2, "m-a"), (3, "m-b")].map(|(h, m)| (h, m.to_owned()));
    assert_eq!(learned, expected, "each key once, in log order");
    assert!(standby.take_learned_keys().is_empty());
}

/// Groups queued together beyond the batch bounds go out in several appends, each within
/// the bounds, in order; a group over the bounds on its own is refused at submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_groups_split_at_the_batch_bounds() {
    let Some(etcd) = etcd().await else { return };
    let records = records();
    let partition = fresh_partition(4);
    let (_owned, log) = take(&etcd, partition, "a", 5).await;
    let bytes_max = 4 * 1024;
    let committer = Committer::start(
        log,
        CommitterConfig { queue_groups_max: 4_096, batch_records_max: 16, batch_bytes_max: bytes_max, readers: None },
    );
    let seqs: Vec<u64> = commit_all(&committer, &records).await.into_iter().map(|r| r.expect("acknowledged")).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]));
    let reader = LogReader::new(&etcd, partition);
    let mut seq = 1;
    let mut appends = 0;
    loop {
        let page = reader.read_from(seq).await.expect("read");
        for entry in &page.entries {
            let refs: Vec<&[u8]> = entry.batch.records.iter().map(Vec::as_slice).collect();
            assert!(refs.len() <= 16, "batch {} holds {} records", entry.seq, refs.len());
            let size = surge_cluster::codec::batch_encoded_len(&refs);
            assert!(size <= bytes_max, "batch {} is {size} bytes", entry.seq);
            appends += 1;
        }
        seq = page.next_seq;
        if !page.more {
            break;
        }
    }
    assert!(appends >= records.len() as u64 / 16, "{appends} appends for {} groups", records.len());
    let rebuilt = rebuild(&reader, partition).await.expect("rebuild");
    assert_eq!(rebuilt.shard.digest(), replayed(&records).digest());

    let (done, _verdict) = verdict();
    let refused = committer.submit(vec![vec![0u8; bytes_max]], done);
    assert!(matches!(refused, Err(CommitError::TooLarge { .. })), "{refused:?}");
}

/// One node of the assignment test: its membership and the partitions it holds.
struct TestNode {
    info: NodeInfo,
    member: surge_cluster::Member,
    owned: std::collections::BTreeMap<u32, Owned>,
}

impl TestNode {
    /// One round: take the free partitions `to_take` offers, seen through `table` plus
    /// what this node holds (the watched table may not show its latest takes yet).
    async fn take_round(&mut self, etcd: &Etcd, partitions: &[u32], table: &surge_cluster::Table, live: usize) {
        let mut view = table.clone();
        view.retain(|p, o| o.node.node_id != self.info.node_id || self.owned.contains_key(p));
        for (p, owned) in &self.owned {
            view.insert(*p, surge_cluster::Owner { node: self.info.clone(), token: owned.token() });
        }
        for p in surge_partition::assignment::to_take(partitions, &view, &self.info.node_id, live) {
            if let Some(owned) = acquire(etcd, p, &self.info, 2).await.expect("acquire") {
                self.owned.insert(p, owned);
            }
        }
    }
}

/// Three nodes join and take their fair shares of six partitions; one dies (stops renewing
/// its membership and its owner keys); the other two take its partitions, each its new
/// share, within 10 s (printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_nodes_take_their_shares_and_a_dead_nodes_partitions() {
    let Some(etcd) = etcd().await else { return };
    let base = fresh_partition(5) + 100_000_000;
    let partitions: Vec<u32> = (base..base + 6).collect();
    let run = format!("assign-{base}");
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let info = NodeInfo { node_id: format!("{run}-n{i}"), address: format!("127.0.0.1:{}", 18_000 + i) };
        let member = surge_cluster::join(&etcd, &info, 2).await.expect("join").expect("a new node id is free");
        nodes.push(TestNode { info, member, owned: Default::default() });
    }
    let twin = surge_cluster::join(&etcd, &nodes[0].info, 2).await.expect("join");
    assert!(twin.is_none(), "a node id held by a live node is refused");
    let table = surge_cluster::PartitionTable::start(&etcd, u32::MAX).await.expect("table");
    let live = |etcd: Etcd| {
        let run = run.clone();
        async move {
            let members = surge_cluster::members(&etcd).await.expect("members");
            members.iter().filter(|n| n.node_id.starts_with(&run)).count()
        }
    };
    let owned_by = |nodes: &[TestNode]| nodes.iter().map(|n| n.owned.len()).collect::<Vec<_>>();

    // Rounds until every partition is owned (bounded: 50 rounds of 100 ms).
    for _ in 0..50 {
        let n = live(etcd.clone()).await;
        for node in &mut nodes {
            node.take_round(&etcd, &partitions, &table.current(), n).await;
        }
        if owned_by(&nodes).iter().sum::<usize>() == partitions.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(owned_by(&nodes), vec![2, 2, 2], "three live nodes own two partitions each");

    // n3 dies: no more renewals of its membership or its owner keys.
    let dead = nodes.pop().expect("three nodes");
    dead.member.leased.stop_keep_alive();
    for owned in dead.owned.values() {
        owned.stop_keep_alive();
    }
    let died = Instant::now();
    let deadline = died + Duration::from_secs(10);
    while owned_by(&nodes).iter().sum::<usize>() < partitions.len() {
        assert!(Instant::now() < deadline, "the survivors own every partition within 10 s: {:?}", owned_by(&nodes));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = live(etcd.clone()).await;
        for node in &mut nodes {
            node.take_round(&etcd, &partitions, &table.current(), n).await;
        }
    }
    eprintln!("a dead node's partitions all owned again {:.2} s after it died", died.elapsed().as_secs_f64());
    assert_eq!(owned_by(&nodes), vec![3, 3], "two live nodes own three partitions each");
    for node in &nodes {
        assert!(node.owned.values().all(|o| !o.is_lost()), "every partition held is still owned");
    }
}
