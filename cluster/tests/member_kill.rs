//! One etcd member of three killed while a partition appends: no acknowledged batch is lost
//! and appends go on. A test binary of its own, so no other test runs while a member is down
//! (cargo runs test binaries one after another).

mod common;

use std::time::{Duration, Instant};

use surge_cluster::{acquire, ClusterError, LogReader, PartitionTable};

/// Acknowledged appends before the kill, and after it.
const BEFORE: usize = 40;
const AFTER: usize = 60;
/// Bounds on the whole test, whatever etcd does.
const ATTEMPTS_MAX: usize = 2_000;
const DEADLINE: Duration = Duration::from_secs(60);

/// Restarts the killed member however the test ends, so the next test run finds three.
struct Restart;
impl Drop for Restart {
    fn drop(&mut self) {
        common::run_script(&[]);
    }
}

/// The member number (1-3, the script's order of endpoints) of the current leader.
async fn leader_member() -> usize {
    let endpoints = common::endpoints();
    for (i, ep) in endpoints.iter().enumerate() {
        let Ok(mut c) = etcd_client::Client::connect([ep.as_str()], None).await else { continue };
        let Ok(status) = c.status().await else { continue };
        if status.header().is_some_and(|h| h.member_id() == status.leader()) {
            return i + 1;
        }
    }
    panic!("no member says it is the leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_member_while_appending_loses_no_acknowledged_batch() {
    let Some(etcd) = common::etcd().await else { return };
    // All three members up first (a member left down by an interrupted run would make this
    // kill cost the majority); the script is idempotent.
    common::run_script(&[]);
    let _restart = Restart;
    // A TTL longer than an election: the lease must survive the leader's death.
    let (p, owned, mut log) = common::owned_log(&etcd, "writer", 6).await;
    // The partition table's watch runs on the pinned member too: it must come back after
    // the kill and show an owner that appears afterwards.
    let mut table = PartitionTable::start(&etcd, u32::MAX).await.expect("table");

    let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut killed_at: Option<(usize, Instant)> = None;
    let mut acked_after_kill = 0;
    let mut errors = Vec::new();
    let mut longest_gap = Duration::ZERO;
    // The kill itself (the script waits for the process to be gone) and the first append
    // acknowledged after it: the pause a writer sees when the leader dies.
    let mut kill_took = Duration::ZERO;
    let mut first_after_kill = None;
    let mut last_ack = Instant::now();
    let started = Instant::now();
    let mut n = 0usize;
    for _ in 0..ATTEMPTS_MAX {
        if acked_after_kill >= AFTER || started.elapsed() > DEADLINE {
            break;
        }
        if killed_at.is_none() && acked.len() >= BEFORE {
            let member = leader_member().await;
            let killing = Instant::now();
            common::run_script(&["kill", &member.to_string()]);
            kill_took = killing.elapsed();
            killed_at = Some((member, Instant::now()));
        }
        let payload = format!("batch {n} of partition {p}").into_bytes();
        match log.append(&[&payload]).await {
            Ok(seq) => {
                if let (Some((_, at)), None) = (killed_at, first_after_kill) {
                    first_after_kill = Some(at.elapsed());
                }
                longest_gap = longest_gap.max(last_ack.elapsed());
                last_ack = Instant::now();
                acked.push((seq, payload));
                n += 1;
                if killed_at.is_some() {
                    acked_after_kill += 1;
                }
            }
            // Not acknowledged: the same payload is appended again (it may then be in the
            // log twice, which an idempotent reader above this crate absorbs).
            Err(e @ (ClusterError::Indeterminate(_) | ClusterError::Unavailable(_))) => {
                errors.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("append failed for good: {e}"),
        }
    }
    let (member, at) = killed_at.expect("the member was killed");
    eprintln!(
        "killed member {member} (the leader) after {BEFORE} appends; {acked_after_kill} acknowledged after it, \
         {} errors meanwhile; the kill took {kill_took:?}, the first append after it was acknowledged \
         {first_after_kill:?} later; longest gap between acknowledgements {longest_gap:?}, kill to end {:?}",
        errors.len(),
        at.elapsed()
    );
    for e in errors.iter().take(5) {
        eprintln!("  error: {e}");
    }
    assert_eq!(acked_after_kill, AFTER, "appends continue with two members of three");

    // Every acknowledged batch is in the log at its seq with its bytes.
    let reader = LogReader::new(&etcd, p);
    let mut stored = std::collections::BTreeMap::new();
    let mut seq = 0;
    for _ in 0..ATTEMPTS_MAX {
        let page = reader.read_from(seq).await.expect("read");
        for e in page.entries {
            stored.insert(e.seq, e.batch.records);
        }
        seq = page.next_seq;
        if !page.more {
            break;
        }
    }
    for (seq, payload) in &acked {
        assert_eq!(stored.get(seq), Some(&vec![payload.clone()]), "acknowledged batch {seq} lost");
    }
    // Dense: no hole in the sequence.
    let seqs: Vec<u64> = stored.keys().copied().collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(!owned.is_lost(), "the lease survived the member's death");
    let q = common::fresh_partition();
    let later = acquire(&etcd, q, &common::node("later"), 6).await.expect("acquire").expect("taken");
    table
        .wait_for(10_000, |t| t.get(&q).is_some_and(|o| o.token == later.token()) && t.contains_key(&p))
        .await
        .expect("the table follows owners after the member's death");
    later.release().await.expect("release");
    owned.release().await.expect("release");
}
