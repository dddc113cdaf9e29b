//! The cluster crate against a real three-member etcd on loopback (`scripts/etcd.sh`):
//! ownership, fencing of a deposed owner, the log, snapshots and truncation.

mod common;

use std::time::{Duration, Instant};

use surge_cluster::{acquire, ClusterError, LogReader, PartitionLog, PartitionTable};

const TTL_S: i64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_is_taken_kept_released_and_lost() {
    let Some(etcd) = common::etcd().await else { return };
    let p = common::fresh_partition();
    let (a, b) = (common::node("node-a"), common::node("node-b"));
    let mut table = PartitionTable::start(&etcd, u32::MAX).await.expect("table");

    let owned_a = acquire(&etcd, p, &a, TTL_S).await.expect("acquire").expect("free partition taken");
    assert!(acquire(&etcd, p, &b, TTL_S).await.expect("acquire").is_none(), "a held partition is not taken");
    let t = table
        .wait_for(5_000, |t| t.get(&p).is_some_and(|o| o.token == owned_a.token()))
        .await
        .expect("the table shows the owner");
    assert_eq!(t[&p].node, a);

    // Kept: past twice the TTL, the keep-alive holds the key.
    tokio::time::sleep(Duration::from_millis(2 * TTL_S as u64 * 1000 + 500)).await;
    assert!(!owned_a.is_lost());
    assert!(acquire(&etcd, p, &b, TTL_S).await.expect("acquire").is_none(), "kept alive past the TTL");

    // Released: free at once, and the next token is larger.
    let token_a = owned_a.token();
    owned_a.release().await.expect("release");
    let mut owned_b = acquire(&etcd, p, &b, TTL_S).await.expect("acquire").expect("taken after release");
    assert!(owned_b.token() > token_a, "tokens grow: {} then {}", token_a, owned_b.token());
    table
        .wait_for(5_000, |t| t.get(&p).is_some_and(|o| o.node == b && o.token == owned_b.token()))
        .await
        .expect("the table shows the new owner");

    // Lost, seen by the keep-alive: the lease is revoked behind the owner's back (as when
    // etcd expired it during a pause); the owner notices within a TTL and the key is gone.
    let mut raw = etcd_client_for(&etcd).await;
    raw.lease_revoke(owned_b.lease_id()).await.expect("revoke");
    tokio::time::timeout(Duration::from_secs(TTL_S as u64 + 1), owned_b.lost())
        .await
        .expect("the keep-alive notices the lease is gone");
    assert!(owned_b.is_lost());
    table.wait_for(5_000, |t| !t.contains_key(&p)).await.expect("the key went with its lease");

    // Lost by silence: an owner that stops renewing (a paused process) loses the key after
    // the TTL, not before.
    let owned_c = acquire(&etcd, p, &a, TTL_S).await.expect("acquire").expect("free again");
    table.wait_for(5_000, |t| t.get(&p).is_some_and(|o| o.token == owned_c.token())).await.expect("shown");
    let stopped = Instant::now();
    owned_c.stop_keep_alive();
    table.wait_for(10_000, |t| !t.contains_key(&p)).await.expect("the key expires with its lease");
    let gone = stopped.elapsed();
    assert!(gone >= Duration::from_secs(TTL_S as u64 - 1), "not before the TTL: {gone:?}");
    let again = acquire(&etcd, p, &a, TTL_S).await.expect("acquire").expect("free again");
    again.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_owner_cannot_append_after_a_new_owner_took_the_key() {
    let Some(etcd) = common::etcd().await else { return };
    let (p, old, mut old_log) = common::owned_log(&etcd, "old", TTL_S).await;
    assert_eq!(old_log.append(&[b"before"]).await.expect("append"), 1);

    // The old owner stops renewing, as a SIGSTOPped process would; it still has its token.
    old.stop_keep_alive();
    let paused = Instant::now();
    let new = loop {
        if let Some(o) = acquire(&etcd, p, &common::node("new"), TTL_S).await.expect("acquire") {
            break o;
        }
        assert!(paused.elapsed() < Duration::from_secs(15), "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("takeover {:?} after the keep-alive stopped (TTL {TTL_S} s)", paused.elapsed());
    assert!(new.token() > old.token());
    let mut new_log = PartitionLog::open(&etcd, &new).await.expect("open");
    assert_eq!(new_log.next_seq(), 2, "the new owner continues after the old owner's batches");

    // The old owner wakes up and appends: refused, nothing written, and refused from then on.
    let late = old_log.append(&[b"late write of the old owner"]).await;
    assert!(matches!(late, Err(ClusterError::Fenced { .. })), "{late:?}");
    assert!(matches!(old_log.append(&[b"again"]).await, Err(ClusterError::Fenced { .. })));
    assert!(matches!(old_log.truncate_before(1).await, Err(ClusterError::Fenced { .. })));
    assert_eq!(new_log.append(&[b"after"]).await.expect("append"), 2);

    let page = LogReader::new(&etcd, p).read_from(0).await.expect("read");
    let got: Vec<(u64, i64, Vec<Vec<u8>>)> =
        page.entries.into_iter().map(|e| (e.seq, e.batch.token, e.batch.records)).collect();
    assert_eq!(got, vec![(1, old.token(), vec![b"before".to_vec()]), (2, new.token(), vec![b"after".to_vec()])]);
    new.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_appends_read_back_in_order_in_bounded_pages() {
    let Some(etcd) = common::etcd().await else { return };
    let (p, owned, mut log) = common::owned_log(&etcd, "writer", TTL_S).await;
    assert_eq!(LogReader::new(&etcd, p).last_seq().await.expect("last"), None);

    let mut written = Vec::new();
    for i in 0..50u32 {
        let records: Vec<Vec<u8>> = (0..(i % 5 + 1)).map(|j| format!("b{i}-r{j}").into_bytes()).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let seq = log.append(&refs).await.expect("append");
        assert_eq!(seq, u64::from(i) + 1);
        written.push((seq, records));
    }
    // Bounds refuse before writing anything.
    assert!(matches!(log.append(&[]).await, Err(ClusterError::EmptyBatch)));
    let big = vec![0u8; etcd.config().batch_bytes_max];
    assert!(matches!(log.append(&[&big]).await, Err(ClusterError::TooLarge { .. })));

    let reader = LogReader::new(&etcd, p);
    let page_max = etcd.config().read_page_batches;
    let mut read = Vec::new();
    let mut seq = 1;
    for _ in 0..100 {
        let page = reader.read_from(seq).await.expect("read");
        assert!(page.entries.len() <= page_max);
        seq = page.next_seq;
        read.extend(page.entries.into_iter().map(|e| (e.seq, e.batch.records)));
        if !page.more {
            break;
        }
    }
    assert_eq!(read, written);
    assert_eq!(reader.last_seq().await.expect("last"), Some(50));
    let tail = reader.read_from(48).await.expect("read");
    assert_eq!(tail.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![48, 49, 50]);
    assert!(!tail.more);

    // A reopened writer continues the sequence.
    let mut reopened = PartitionLog::open(&etcd, &owned).await.expect("open");
    assert_eq!(reopened.append(&[b"51"]).await.expect("append"), 51);
    owned.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_round_trip_in_chunks_and_replace_older_ones() {
    let mut config = common::config();
    config.snapshot_chunk_bytes = 1_000;
    let Some(etcd) = common::etcd_with(config).await else { return };
    let (p, owned, mut log) = common::owned_log(&etcd, "snap", TTL_S).await;
    let reader = LogReader::new(&etcd, p);
    assert_eq!(reader.get_snapshot().await.expect("get"), None);
    for i in 0..5u8 {
        log.append(&[&[i]]).await.expect("append");
    }
    // Not past the log's end.
    assert!(matches!(log.put_snapshot(6, b"x").await, Err(ClusterError::Precondition(_))));

    let first: Vec<u8> = (0..10_500u32).map(|i| (i * 7 % 251) as u8).collect();
    log.put_snapshot(3, &first).await.expect("put");
    let got = reader.get_snapshot().await.expect("get").expect("a snapshot");
    assert_eq!((got.covers_seq, got.bytes.len()), (3, first.len()));
    assert_eq!(got.bytes, first);
    assert_eq!(count_keys(&etcd, &surge_cluster::keys::snapshot_prefix(p)).await, 11);

    let second: Vec<u8> = (0..2_500u32).map(|i| (i % 13) as u8).collect();
    log.put_snapshot(4, &second).await.expect("put");
    let got = reader.get_snapshot().await.expect("get").expect("a snapshot");
    assert_eq!((got.covers_seq, got.bytes), (4, second));
    assert_eq!(count_keys(&etcd, &surge_cluster::keys::snapshot_prefix(p)).await, 3, "older chunks deleted");

    // An empty snapshot is a snapshot too.
    log.put_snapshot(5, b"").await.expect("put empty");
    let got = reader.get_snapshot().await.expect("get").expect("a snapshot");
    assert!(got.bytes.is_empty());
    owned.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_needs_a_snapshot_and_keeps_the_sequence() {
    let Some(etcd) = common::etcd().await else { return };
    let (p, owned, mut log) = common::owned_log(&etcd, "trunc", TTL_S).await;
    for i in 1..=20u64 {
        assert_eq!(log.append(&[&i.to_le_bytes()]).await.expect("append"), i);
    }
    let refused = log.truncate_before(11).await;
    assert!(matches!(refused, Err(ClusterError::Precondition(_))), "{refused:?}");

    log.put_snapshot(10, b"state after 10").await.expect("snapshot");
    log.truncate_before(11).await.expect("truncate");
    let reader = LogReader::new(&etcd, p);
    let page = reader.read_from(0).await.expect("read");
    assert_eq!(page.entries.first().map(|e| e.seq), Some(11), "batches 1-10 are gone");

    // Everything truncated: the sequence continues from the snapshot.
    log.put_snapshot(20, b"state after 20").await.expect("snapshot");
    log.truncate_before(21).await.expect("truncate");
    assert_eq!(reader.last_seq().await.expect("last"), None);
    let mut reopened = PartitionLog::open(&etcd, &owned).await.expect("open");
    assert_eq!(reopened.next_seq(), 21);
    assert_eq!(reopened.append(&[b"21"]).await.expect("append"), 21);

    // The history of the deleted keys is freed by a compaction.
    let rev = surge_cluster::log::current_revision(&etcd).await.expect("revision");
    surge_cluster::log::compact(&etcd, rev).await.expect("compact");
    owned.release().await.expect("release");
}

async fn count_keys(etcd: &surge_cluster::Etcd, prefix: &str) -> usize {
    let mut client = etcd_client_for(etcd).await;
    let resp =
        client.get(prefix, Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await.expect("count");
    resp.count() as usize
}

async fn etcd_client_for(etcd: &surge_cluster::Etcd) -> etcd_client::Client {
    etcd_client::Client::connect(etcd.config().endpoints.clone(), None).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_appends_in_order_as_they_happen() {
    let Some(etcd) = common::etcd().await else { return };
    let (p, owned, mut log) = common::owned_log(&etcd, "leader", TTL_S).await;
    let mut follower = LogReader::new(&etcd, p).follow(1);

    // Idle: an empty page after the wait, not before.
    let idle = Instant::now();
    let page = follower.next(300).await.expect("follow");
    assert!(page.entries.is_empty());
    assert!(idle.elapsed() >= Duration::from_millis(250), "returned after {:?}", idle.elapsed());

    const BATCHES: u64 = 30;
    let writer = tokio::spawn(async move {
        for i in 1..=BATCHES {
            assert_eq!(log.append(&[&i.to_le_bytes()]).await.expect("append"), i);
            if i % 3 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let mut seen = Vec::new();
    // Bounded: every round returns a page or waits at most 2 s.
    for _ in 0..200 {
        let page = follower.next(2_000).await.expect("follow");
        seen.extend(page.entries.into_iter().map(|e| (e.seq, e.batch.records)));
        if seen.len() as u64 >= BATCHES {
            break;
        }
    }
    writer.await.expect("writer");
    let expected: Vec<(u64, Vec<Vec<u8>>)> = (1..=BATCHES).map(|i| (i, vec![i.to_le_bytes().to_vec()])).collect();
    assert_eq!(seen, expected);
    assert_eq!(follower.next_seq(), BATCHES + 1);

    // A wait that an append ends early.
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let page = follower.next(10_000).await.expect("follow");
        (page, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut log = PartitionLog::open(&etcd, &owned).await.expect("open");
    log.append(&[b"wake"]).await.expect("append");
    let (page, waited) = waiting.await.expect("follower");
    assert_eq!(page.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![BATCHES + 1]);
    assert!(waited < Duration::from_secs(5), "woken by the append, not the timeout: {waited:?}");
    owned.release().await.expect("release");
}

/// Follows until it has seen batches up to `last`, each page waiting at most 2 s.
async fn follow_to(follower: &mut surge_cluster::Follower, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    // Bounded: 50 pages of at most 2 s each.
    for _ in 0..50 {
        let page = follower.next(2_000).await.expect("follow");
        seen.extend(page.entries.iter().map(|e| e.seq));
        if seen.last().is_some_and(|&s| s >= last) {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailing_follower_keeps_up_through_truncation_and_compaction() {
    let Some(etcd) = common::etcd().await else { return };
    let (p, owned, mut log) = common::owned_log(&etcd, "tail", TTL_S).await;
    let mut follower = LogReader::new(&etcd, p).follow(1);
    for i in 1..=5u64 {
        log.append(&[&i.to_le_bytes()]).await.expect("append");
    }
    assert_eq!(follow_to(&mut follower, 5).await, vec![1, 2, 3, 4, 5]);

    // While it waits on its watch: the batches it read are deleted under a snapshot, their
    // history compacted, and the log goes on. It sees the new batches, in order, once each.
    let tailing = tokio::spawn(async move {
        let seen = follow_to(&mut follower, 9).await;
        (follower, seen)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    log.put_snapshot(5, b"state after 5").await.expect("snapshot");
    log.truncate_before(6).await.expect("truncate");
    let rev = surge_cluster::log::current_revision(&etcd).await.expect("revision");
    surge_cluster::log::compact(&etcd, rev).await.expect("compact");
    for i in 6..=9u64 {
        log.append(&[&i.to_le_bytes()]).await.expect("append");
    }
    let (mut follower, seen) = tailing.await.expect("follower");
    assert_eq!(seen, vec![6, 7, 8, 9]);
    assert_eq!(follower.next_seq(), 10);
    let idle = follower.next(200).await.expect("follow");
    assert!(idle.entries.is_empty(), "nothing twice: {:?}", idle.entries.first().map(|e| e.seq));

    // A follower behind the snapshot is shown where the log starts now (its gap).
    let mut late = LogReader::new(&etcd, p).follow(1);
    let page = late.next(2_000).await.expect("follow");
    assert_eq!(page.entries.first().map(|e| e.seq), Some(6));
    owned.release().await.expect("release");
}
