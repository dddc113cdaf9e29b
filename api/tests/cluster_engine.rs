//! Cluster mode's engine side without etcd: a partition's shard on a replicated log (an
//! in-memory log whose verdicts the test gives), and partitions owned elsewhere. The real
//! log (etcd, through the `partition` crate) is exercised end to end in `cluster_e2e.rs`.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use surge_api::engine::{Engine, ExecError, ReplicatedLog, StorageError, Verdict};
use surge_core::{shard_of, Command, Request, Settings, Shard};

const PARTITIONS: usize = 4;

/// Holds every group until the test settles it.
#[derive(Default)]
struct HeldLog {
    groups: Mutex<Vec<(usize, Verdict)>>,
    snapshots: Mutex<Vec<Vec<u8>>>,
}

impl HeldLog {
    fn settle_all(&self, outcome: Result<(), String>) -> usize {
        let groups: Vec<_> = self.groups.lock().drain(..).collect();
        let n = groups.len();
        for (_, done) in groups {
            done(outcome.clone());
        }
        n
    }
}

impl ReplicatedLog for HeldLog {
    fn submit(&self, records: Vec<Vec<u8>>, done: Verdict) -> Result<(), String> {
        assert!(!records.is_empty(), "an empty group is never submitted");
        self.groups.lock().push((records.len(), done));
        Ok(())
    }

    fn snapshot(&self, bytes: Vec<u8>, done: Verdict) -> Result<(), String> {
        self.snapshots.lock().push(bytes);
        done(Ok(()));
        Ok(())
    }
}

fn settings() -> Settings {
    Settings::new(24 * 3_600_000, 7 * 24 * 3_600_000).expect("settings")
}

fn create(merchant: &str) -> Request {
    Request {
        merchant: merchant.into(),
        idempotency: None,
        command: Command::CreateMerchant { name: "Shop".into(), currency: "KRW".into(), api_key_hash: [7; 32] },
    }
}

/// A cluster engine that owns `merchant`'s partition on a held log: (engine, partition, log).
fn owning(merchant: &str) -> (Arc<Engine>, u32, Arc<HeldLog>) {
    let (engine, _failures) = Engine::start_cluster(PARTITIONS, settings()).expect("engine");
    let engine = Arc::new(engine);
    let p = shard_of(merchant, PARTITIONS) as u32;
    let log = Arc::new(HeldLog::default());
    engine.take_partition(p, Shard::new(), settings(), log.clone());
    (engine, p, log)
}

/// Starts `req` on its own task (the test settles the log's verdicts meanwhile).
async fn run(engine: &Arc<Engine>, req: Request) -> tokio::task::JoinHandle<Result<(), ExecError>> {
    let engine = engine.clone();
    tokio::spawn(async move { engine.execute(req).await.map(|_| ()) })
}

/// The answer of a started request, waited for at most 2 s.
async fn answer(task: tokio::task::JoinHandle<Result<(), ExecError>>) -> Result<(), ExecError> {
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("answered").expect("task")
}

#[tokio::test]
async fn a_partition_elsewhere_names_its_owner_and_an_owned_one_answers_once_replicated() {
    let (engine, failures) = Engine::start_cluster(PARTITIONS, settings()).expect("engine");
    let engine = Arc::new(engine);
    let merchant = "m-1";
    let p = shard_of(merchant, PARTITIONS) as u32;

    // Nobody owns it yet, then another node does: requests say so, nothing is applied.
    match answer(run(&engine, create(merchant)).await).await {
        Err(ExecError::Storage(StorageError::NotOwner { partition, owner: None })) => assert_eq!(partition, p),
        other => panic!("expected NotOwner without an owner, got {other:?}"),
    }
    engine.set_partition_owner(p, Some("127.0.0.1:9".into()));
    match answer(run(&engine, create(merchant)).await).await {
        Err(ExecError::Storage(StorageError::NotOwner { owner: Some(owner), .. })) => {
            assert_eq!(&*owner, "127.0.0.1:9")
        }
        other => panic!("expected NotOwner with its owner, got {other:?}"),
    }
    assert!(engine.owned_elsewhere(merchant).is_some());

    // Taken: the answer waits for the replicated log's verdict.
    let log = Arc::new(HeldLog::default());
    engine.take_partition(p, Shard::new(), settings(), log.clone());
    assert!(engine.owned_elsewhere(merchant).is_none());
    let pending = run(&engine, create(merchant)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "answered before the log acknowledged");
    assert_eq!(log.settle_all(Ok(())), 1);
    answer(pending).await.expect("created once replicated");
    assert_eq!(engine.merchant_for_key(&[7; 32]).as_deref(), None, "keys are registered by the HTTP layer");

    // A snapshot goes through the same log, after the groups before it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let queued = engine.snapshot_partition(p, Box::new(move |r| drop(tx.send(r))));
    assert!(matches!(queued, Some(Ok(len)) if len > 0), "{queued:?}");
    assert_eq!(rx.await.expect("verdict"), Ok(()));
    let restored = Shard::restore(&log.snapshots.lock()[0]).expect("the snapshot restores");
    assert_eq!(restored.merchants().count(), 1);

    // A refusal writes nothing to the log.
    match answer(run(&engine, create(merchant)).await).await {
        Err(ExecError::Core(_)) => {}
        other => panic!("a second create of {merchant} is refused, got {other:?}"),
    }
    assert!(log.groups.lock().is_empty());

    // A failed verdict: the answer is a storage error, the partition stops answering from
    // memory and is named to the controller.
    let other = (0..1_000).map(|i| format!("o-{i}")).find(|m| shard_of(m, PARTITIONS) as u32 == p).expect("an id");
    let pending = run(&engine, create(&other)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(log.settle_all(Err("etcd did not answer".into())), 1);
    match answer(pending).await {
        Err(ExecError::Storage(StorageError::Replication(reason))) => assert!(reason.contains("etcd"), "{reason}"),
        other => panic!("expected a replication error, got {other:?}"),
    }
    assert_eq!(failures.try_recv().ok(), Some(p), "the controller hears of the failed partition");
    match answer(run(&engine, create(merchant)).await).await {
        Err(ExecError::Storage(StorageError::ShardStale)) => {}
        other => panic!("a failed partition answers nothing from memory, got {other:?}"),
    }

    // Given up: its state is gone and its requests go elsewhere again.
    engine.give_up_partition(p);
    assert!(engine.owned_elsewhere(merchant).is_some());
    engine.shutdown();
}

#[tokio::test]
async fn a_drained_partition_turns_new_requests_away_and_answers_those_already_submitted() {
    let merchant = "m-drain";
    let (engine, p, log) = owning(merchant);
    let submitted = run(&engine, create(merchant)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(log.groups.lock().len(), 1, "the group is in the log, its verdict pending");

    engine.drain_partition(p);
    let other = (0..1_000).map(|i| format!("d-{i}")).find(|m| shard_of(m, PARTITIONS) as u32 == p).expect("an id");
    match answer(run(&engine, create(&other)).await).await {
        Err(ExecError::Storage(StorageError::NotOwner { partition, owner: None })) => assert_eq!(partition, p),
        other => panic!("a request after the drain is turned away (partition moving), got {other:?}"),
    }
    assert_eq!(log.groups.lock().len(), 1, "nothing more was submitted");
    assert!(!submitted.is_finished(), "the submitted request waits for its verdict");
    assert_eq!(log.settle_all(Ok(())), 1);
    answer(submitted).await.expect("the request submitted before the drain is answered with its verdict");

    engine.give_up_partition(p);
    assert!(engine.owned_elsewhere(merchant).is_some());
    engine.shutdown();
}

#[tokio::test]
async fn a_lapsed_partition_serves_again_when_renewed_unless_it_changed_hands_meanwhile() {
    let merchant = "m-lapse";
    let (engine, p, log) = owning(merchant);
    let generation = engine.partition_generation(p);
    let created = run(&engine, create(merchant)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(log.settle_all(Ok(())), 1);
    answer(created).await.expect("created");

    // Lapsed: turned away; renewed: the same state serves again, on the same log.
    engine.drain_partition(p);
    assert!(engine.owned_elsewhere(merchant).is_some(), "a lapsed partition takes no request");
    assert!(engine.resume_partition(p, generation, log.clone()), "renewed: it serves again");
    assert!(engine.owned_elsewhere(merchant).is_none());
    match answer(run(&engine, create(merchant)).await).await {
        Err(ExecError::Core(_)) => {}
        other => panic!("the merchant created before the lapse is still there, got {other:?}"),
    }

    // Given up and taken again meanwhile (a new generation): a late renewal of the old
    // lease must not put the old log back.
    engine.drain_partition(p);
    engine.give_up_partition(p);
    let newer = Arc::new(HeldLog::default());
    engine.take_partition(p, Shard::new(), settings(), newer.clone());
    engine.drain_partition(p);
    assert!(!engine.resume_partition(p, generation, log.clone()), "a stale generation resumes nothing");
    assert!(engine.owned_elsewhere(merchant).is_some());
    engine.shutdown();
}
