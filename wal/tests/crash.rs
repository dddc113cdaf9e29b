//! Crash simulation: the real writer driven through `SimStorage`, which keeps the written
//! and the durable image apart. After a crash at every step, reopening must give exactly a
//! prefix of what was appended that contains every acknowledged record.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use surge_wal::sim::{CrashMode, SimStorage};
use surge_wal::{Config, IoMode, Wal, WalError, WhenFull};

fn sim_config() -> Config {
    Config {
        // Tiny segments so rolls, retention and snapshots all happen within ~100 records.
        segment_size_bytes: 8 * 1024,
        batch_bytes_max: 4096,
        queue_depth_max: 64,
        when_full: WhenFull::Wait { timeout_ms: 10_000 },
        io_mode: IoMode::Pwrite,
        tail_poll_interval_ms: 1,
        // Smaller than a segment: zeros are written several times per segment, so crashes
        // fall between a zero write and the batch behind it, and around every refill.
        zero_ahead_bytes: 2048,
    }
}

/// What a workload appended: LSN -> (type, payload, last LSN of its group).
#[derive(Default)]
struct Outcome {
    appended: BTreeMap<u64, (u8, Vec<u8>, u64)>,
    max_acked: u64,
}

fn record_payload(thread: usize, i: usize) -> Vec<u8> {
    let mut p = format!("t{thread}-i{i}-").into_bytes();
    p.resize(8 + (thread * 37 + i * 53) % 300, b'a' + (i % 26) as u8);
    p
}

/// `threads` appender threads, atomic groups, a snapshot and a reader checkpoint halfway.
fn workload(sim: &SimStorage, threads: usize, per_thread: usize) -> Outcome {
    let out = Arc::new(Mutex::new(Outcome::default()));
    let (wal, _rec) = match Wal::open_with_storage(Arc::new(sim.clone()), sim_config()) {
        Ok(x) => x,
        Err(_) => return Outcome::default(),
    };
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..threads)
        .map(|t| {
            let wal = wal.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let p1 = record_payload(t, i);
                    let p2 = record_payload(t, i + 1000);
                    let res = if i % 7 == 3 { wal.append_group(&[(2, &p1), (3, &p2)]) } else { wal.append(1, &p1) };
                    let h = match res {
                        Ok(h) => h,
                        Err(_) => return,
                    };
                    {
                        let mut o = out.lock();
                        o.appended.insert(h.first_lsn(), (if i % 7 == 3 { 2 } else { 1 }, p1, h.lsn()));
                        if h.lsn() != h.first_lsn() {
                            o.appended.insert(h.lsn(), (3, p2, h.lsn()));
                        }
                    }
                    match h.wait() {
                        Ok(lsn) => {
                            let mut o = out.lock();
                            o.max_acked = o.max_acked.max(lsn);
                        }
                        Err(_) => return,
                    }
                    if t == 0 && i == per_thread / 2 {
                        let d = wal.durable_lsn();
                        let _ = wal.write_snapshot(d, format!("snap@{d}").as_bytes());
                        let _ = wal.set_reader_checkpoint("relay", d / 2);
                        let _ = wal.run_retention();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(wal);
    Arc::try_unwrap(out).ok().unwrap().into_inner()
}

/// Reopens `image` and checks the prefix property against `outcome`.
fn verify(image: &SimStorage, outcome: &Outcome, what: &str) {
    let (wal, rec) = match Wal::open_with_storage(Arc::new(image.clone()), sim_config()) {
        Ok(x) => x,
        Err(e) => panic!("{what}: reopen failed: {e}"),
    };
    let mut expect = match rec.snapshot() {
        Some((lsn, state)) => {
            assert_eq!(state, format!("snap@{lsn}").as_bytes(), "{what}: snapshot state");
            lsn + 1
        }
        None => 1,
    };
    let mut group_open_until = 0;
    for r in rec.records() {
        let r = r.unwrap_or_else(|e| panic!("{what}: iterating: {e}"));
        assert_eq!(r.lsn, expect, "{what}: LSNs must be contiguous");
        let (ty, payload, group_last) =
            outcome.appended.get(&r.lsn).unwrap_or_else(|| panic!("{what}: LSN {} was never appended", r.lsn));
        assert_eq!((r.record_type, r.payload), (*ty, payload.as_slice()), "{what}: content of LSN {}", r.lsn);
        group_open_until = *group_last;
        expect += 1;
    }
    let last = expect - 1;
    assert!(
        last >= outcome.max_acked,
        "{what}: acknowledged LSN {} lost (recovered up to {last}, cut: {:?})",
        outcome.max_acked,
        rec.tail_cut
    );
    assert!(group_open_until <= last, "{what}: atomic group recovered partially");
    assert_eq!(rec.next_lsn, last + 1);
    // The log continues after recovery, and survives another clean reopen.
    let h = wal.append(9, b"after-crash").unwrap_or_else(|e| panic!("{what}: append: {e}"));
    assert_eq!(h.lsn(), last + 1);
    h.wait().unwrap_or_else(|e| panic!("{what}: wait: {e}"));
    drop(wal);
    let (_wal, rec2) = Wal::open_with_storage(Arc::new(image.clone()), sim_config())
        .unwrap_or_else(|e| panic!("{what}: second reopen: {e}"));
    assert_eq!(rec2.next_lsn, last + 2, "{what}: second reopen");
    assert!(rec2.tail_cut.is_none(), "{what}: clean log after recovery");
}

#[test]
fn crash_at_every_step_leaves_a_prefix_with_every_acknowledged_record() {
    // Concurrent appenders (group commit batches several records) ...
    crash_at_every_step(3, 30);
    // ... and one appender (one record per batch: many more steps).
    crash_at_every_step(1, 60);
}

fn crash_at_every_step(threads: usize, per_thread: usize) {
    let modes = [
        CrashMode::DropUnsynced,
        CrashMode::KeepUnsyncedPrefix(100),
        CrashMode::KeepUnsyncedPrefix(1000),
        CrashMode::KeepRandomSectors(7),
        CrashMode::ProcessCrash,
    ];
    let mut crash_points = 0;
    let mut recovery_crashes = 0;
    let mut op = 0u64;
    // Bounded: the workload finishes in well under 10,000 storage operations.
    while op < 10_000 {
        let sim = SimStorage::new();
        sim.crash_before_op(op);
        let outcome = workload(&sim, threads, per_thread);
        if !sim.is_crashed() {
            break; // the workload completed before reaching this operation
        }
        crash_points += 1;
        for (m, mode) in modes.iter().enumerate() {
            let mode = match mode {
                CrashMode::KeepRandomSectors(s) => CrashMode::KeepRandomSectors(s + op),
                other => *other,
            };
            let image = sim.crash_image(mode);
            // Crash again during recovery itself (removing a half-made segment, zeroing a
            // torn tail, creating the first segment), then recover from that.
            let mut j = 0u64;
            while j < 100 {
                let again = image.crash_image(CrashMode::ProcessCrash);
                again.crash_before_op(j);
                let _ = Wal::open_with_storage(Arc::new(again.clone()), sim_config());
                if !again.is_crashed() {
                    break;
                }
                recovery_crashes += 1;
                for mode2 in [CrashMode::DropUnsynced, CrashMode::KeepRandomSectors(j + op)] {
                    verify(
                        &again.crash_image(mode2),
                        &outcome,
                        &format!("crash before op {op}, mode {m} {mode:?}, then during recovery op {j} {mode2:?}"),
                    );
                }
                j += 1;
            }
            verify(&image, &outcome, &format!("crash before op {op}, mode {m} {mode:?}"));
        }
        op += 1;
    }
    assert!(crash_points > 50, "only {crash_points} crash points exercised");
    eprintln!(
        "exercised {crash_points} crash points x {} modes, {recovery_crashes} crashes during recovery",
        modes.len()
    );
}

/// Single-threaded log of `n` records, each acknowledged before the next (one per batch).
fn sequential_log(n: u64, record_len: usize) -> (SimStorage, Vec<Vec<u8>>) {
    let sim = SimStorage::new();
    let mut cfg = sim_config();
    cfg.segment_size_bytes = 64 << 10;
    let (wal, _) = Wal::open_with_storage(Arc::new(sim.clone()), cfg).unwrap();
    let mut payloads = Vec::new();
    for i in 1..=n {
        let p: Vec<u8> = (0..record_len).map(|j| (i as usize * 7 + j) as u8).collect();
        wal.append(1, &p).unwrap().wait().unwrap();
        payloads.push(p);
    }
    drop(wal);
    (sim, payloads)
}

const SEG0: &str = "wal-00000000000000000001.seg";
const HDR: usize = surge_wal::format::SEGMENT_HEADER_SIZE;

fn open_records(sim: &SimStorage) -> Result<(Vec<u64>, Option<surge_wal::TailCut>), WalError> {
    let mut cfg = sim_config();
    cfg.segment_size_bytes = 64 << 10;
    let (_wal, rec) = Wal::open_with_storage(Arc::new(sim.clone()), cfg)?;
    let lsns = rec.records().map(|r| r.unwrap().lsn).collect();
    Ok((lsns, rec.tail_cut.clone()))
}

#[test]
fn torn_tail_at_every_byte_offset_of_the_last_record() {
    let n = 12u64;
    let len = 200usize;
    let frame = surge_wal::format::frame_size(len);
    let last_start = HDR + (n as usize - 1) * frame;
    let last_end = last_start + surge_wal::format::FRAME_HEADER_SIZE + len;
    let (sim, _) = sequential_log(n, len);
    let full = sim.file(SEG0).unwrap();
    for cut in last_start..last_end {
        for fill in [0x00u8, 0xA5] {
            let image = sim.crash_image(CrashMode::ProcessCrash);
            // Torn: the bytes from `cut` on never reached the disk (or are garbage).
            let junk = vec![fill; last_end - cut];
            image.corrupt(SEG0, cut, &junk);
            // Read-only open reports the same cut and changes nothing.
            let before = image.file(SEG0).unwrap();
            let ro = Wal::open_read_only_with_storage(Arc::new(image.clone())).unwrap();
            assert_eq!(ro.record_count(), n - 1);
            assert_eq!(ro.tail_cut.is_some(), !(cut == last_start && fill == 0));
            assert_eq!(image.file(SEG0).unwrap(), before);
            let (lsns, tail) = open_records(&image).unwrap_or_else(|e| panic!("cut at {cut} fill {fill:#x}: {e}"));
            assert_eq!(lsns, (1..n).collect::<Vec<_>>(), "cut at {cut}");
            if cut == last_start && fill == 0 {
                assert!(tail.is_none(), "an all-zero header is a clean end");
            } else {
                let t = tail.unwrap_or_else(|| panic!("cut at {cut}: tail cut not reported"));
                assert_eq!((t.offset, t.lsn), (last_start as u64, n), "cut at {cut}");
                assert!(t.file.contains(SEG0));
            }
            // The cut region is zeroed, and the reopened log is clean and continues at n.
            let after = image.file(SEG0).unwrap();
            assert!(after[last_start..last_end].iter().all(|&b| b == 0));
            let (lsns2, tail2) = open_records(&image).unwrap();
            assert_eq!((lsns2.len() as u64, tail2), (n - 1, None));
        }
        // Out-of-order write-back: the end of the record made it, the start did not.
        let image = sim.crash_image(CrashMode::ProcessCrash);
        image.corrupt(SEG0, last_start, &vec![0u8; cut - last_start + 1]);
        let (lsns, tail) = open_records(&image).unwrap();
        assert_eq!(lsns.len() as u64, n - 1);
        if cut + 1 == last_end {
            assert!(tail.is_none(), "nothing of the record left: a clean end");
        } else {
            assert_eq!(tail.map(|t| t.lsn), Some(n));
        }
    }
    assert_eq!(full.len(), 64 << 10);
}

#[test]
fn flipped_byte_before_the_tail_is_detected_with_file_and_offset() {
    let n = 40u64;
    let len = 100usize;
    let frame = surge_wal::format::frame_size(len);
    let (sim, _) = sequential_log(n, len);
    for victim in [1u64, 10, 25, n - 1] {
        let frame_start = HDR + (victim as usize - 1) * frame;
        for byte in [0usize, 5, 9, 20, 24, 60, 123] {
            let image = sim.crash_image(CrashMode::ProcessCrash);
            let at = frame_start + byte;
            let old = image.file(SEG0).unwrap()[at];
            image.corrupt(SEG0, at, &[old ^ 0x10]);
            assert!(matches!(Wal::open_read_only_with_storage(Arc::new(image.clone())), Err(WalError::Corrupt { .. })));
            match open_records(&image) {
                Err(WalError::Corrupt { file, offset, .. }) => {
                    assert!(file.contains(SEG0));
                    assert_eq!(offset, frame_start as u64, "victim {victim} byte {byte}");
                }
                Err(e) => panic!("victim {victim} byte {byte}: wrong error {e}"),
                Ok((lsns, tail)) => {
                    panic!("victim {victim} byte {byte}: corruption accepted ({} records, {tail:?})", lsns.len())
                }
            }
        }
    }
    // A zeroed block in the middle is not a clean end either.
    let image = sim.crash_image(CrashMode::ProcessCrash);
    image.corrupt(SEG0, HDR + 5 * frame, &vec![0u8; frame * 2]);
    assert!(matches!(open_records(&image), Err(WalError::Corrupt { .. })));
}

#[test]
fn damage_in_a_sealed_segment_or_a_missing_segment_stops_open() {
    let sim = SimStorage::new();
    let (wal, _) = Wal::open_with_storage(Arc::new(sim.clone()), sim_config()).unwrap();
    for i in 0..200u64 {
        wal.append(1, &[i as u8; 100]).unwrap();
    }
    wal.wait_durable(200, 10_000).unwrap();
    drop(wal);
    let segs: Vec<String> = sim.names().into_iter().filter(|n| n.ends_with(".seg")).collect();
    assert!(segs.len() >= 3, "{segs:?}");
    // Flip a byte in the first (sealed) segment.
    let image = sim.crash_image(CrashMode::ProcessCrash);
    image.corrupt(&segs[0], HDR + 30, &[0xFF]);
    match Wal::open_with_storage(Arc::new(image), sim_config()) {
        Err(WalError::Corrupt { file, .. }) => assert!(file.contains(&segs[0])),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("corruption in a sealed segment accepted"),
    }
    // A middle segment missing: LSN gap.
    let image = sim.crash_image(CrashMode::ProcessCrash);
    use surge_wal::Storage;
    image.remove(&segs[1]).unwrap();
    assert!(matches!(Wal::open_with_storage(Arc::new(image), sim_config()), Err(WalError::Corrupt { .. })));
}

#[test]
fn io_errors_fail_every_waiter_and_nothing_more_is_acknowledged() {
    for (case, inject) in [("sync", 0u8), ("write", 1), ("disk full", 2)] {
        for after in [0u64, 3, 10] {
            let sim = SimStorage::new();
            let (wal, _) = Wal::open_with_storage(Arc::new(sim.clone()), sim_config()).unwrap();
            let wal = Arc::new(wal);
            for i in 0..5u64 {
                wal.append(1, &[i as u8; 64]).unwrap().wait().unwrap();
            }
            match inject {
                0 => sim.fail_sync_in(after),
                1 => sim.fail_write_in(after),
                _ => sim.set_full(true),
            }
            let acked = Arc::new(Mutex::new(Vec::new()));
            let failed = Arc::new(Mutex::new(0u32));
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let (wal, acked, failed) = (wal.clone(), acked.clone(), failed.clone());
                    std::thread::spawn(move || {
                        for i in 0..40u64 {
                            let res = wal.append(1, &[(t * 40 + i) as u8; 64]);
                            match res.and_then(|h| h.wait()) {
                                Ok(lsn) => acked.lock().push(lsn),
                                Err(e) => {
                                    assert!(matches!(e, WalError::Failed { .. }), "{case}: unexpected {e}");
                                    *failed.lock() += 1;
                                }
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let failure = wal.failure().expect("log must be failed");
            let durable = wal.durable_lsn();
            // Callbacks get the error too, and nothing is accepted any more.
            let (tx, rx) = std::sync::mpsc::channel();
            assert!(wal.append_with(1, b"late", move |r| tx.send(r).unwrap()).is_err());
            assert!(rx.try_recv().is_err());
            assert!(*failed.lock() > 0, "{case}/{after}: no waiter saw the failure");
            assert!(acked.lock().iter().all(|&l| l <= durable));
            drop(Arc::try_unwrap(wal).ok().unwrap());
            let max_acked = acked.lock().iter().copied().max().unwrap_or(5).max(5);
            // Storage healthy again: reopen (after a power cut) and find every ack.
            sim.set_full(false);
            for image in [sim.crash_image(CrashMode::DropUnsynced), sim.crash_image(CrashMode::ProcessCrash)] {
                let (wal2, rec) = Wal::open_with_storage(Arc::new(image), sim_config())
                    .unwrap_or_else(|e| panic!("{case}/{after}: reopen: {e} (failure was {failure})"));
                assert!(rec.last_lsn() >= max_acked, "{case}/{after}: acked record lost");
                wal2.append(1, b"healthy").unwrap().wait().unwrap();
            }
        }
    }
}

#[test]
fn callbacks_see_the_failure() {
    let sim = SimStorage::new();
    let (wal, _) = Wal::open_with_storage(Arc::new(sim.clone()), sim_config()).unwrap();
    sim.fail_sync_in(0);
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..10 {
        let tx = tx.clone();
        wal.append_with(1, b"x", move |r| tx.send(r).unwrap()).ok();
    }
    drop(tx);
    let results: Vec<_> = rx.iter().collect();
    assert!(!results.is_empty());
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
}

#[test]
fn per_thread_order_under_many_concurrent_appenders() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config { io_mode: IoMode::Auto, ..Config::default() };
    let threads = 32usize;
    let per_thread = 300u32;
    {
        let (wal, _) = Wal::open(dir.path(), cfg.clone()).unwrap();
        let wal = Arc::new(wal);
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    let mut last = None;
                    for seq in 0..per_thread {
                        let mut p = vec![t as u8];
                        p.extend_from_slice(&seq.to_le_bytes());
                        let h = wal.append(1, &p).unwrap();
                        // LSN order = append order within a thread.
                        if let Some(prev) = last {
                            assert!(h.lsn() > prev);
                        }
                        last = Some(h.lsn());
                        if seq % 50 == 49 {
                            h.wait().unwrap();
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        wal.wait_durable(wal.next_lsn() - 1, 10_000).unwrap();
    }
    let (_wal, rec) = Wal::open(dir.path(), cfg).unwrap();
    let mut next_seq = vec![0u32; threads];
    for r in rec.records() {
        let r = r.unwrap();
        let t = r.payload[0] as usize;
        let seq = u32::from_le_bytes(r.payload[1..5].try_into().unwrap());
        assert_eq!(seq, next_seq[t], "thread {t} out of order at LSN {}", r.lsn);
        next_seq[t] += 1;
    }
    assert!(next_seq.iter().all(|&s| s == per_thread));
}

#[test]
fn a_payload_that_embeds_a_frame_cannot_turn_a_torn_tail_into_corruption() {
    // A record whose payload is a well-formed frame of a "later write" (huge LSN,
    // batch_back 0), checksummed without the log's secret salt.
    let mut fake = Vec::new();
    let forged = b"forged";
    for salt in [0u64, 1, u64::MAX] {
        surge_wal::format::encode_frame(
            &mut fake,
            salt,
            1 << 60,
            1 << 60,
            1,
            0,
            forged,
            surge_wal::format::payload_crc(salt, forged),
        );
    }
    let sim = SimStorage::new();
    let mut cfg = sim_config();
    cfg.segment_size_bytes = 64 << 10;
    let (wal, _) = Wal::open_with_storage(Arc::new(sim.clone()), cfg).unwrap();
    for i in 0..5u8 {
        wal.append(1, &[i; 40]).unwrap().wait().unwrap();
    }
    let h = wal.append(1, &fake).unwrap();
    h.wait().unwrap();
    drop(wal);
    // Tear the header of that last record: the embedded frames now sit in a damaged tail.
    let last_start = HDR + 5 * surge_wal::format::frame_size(40);
    let image = sim.crash_image(CrashMode::ProcessCrash);
    image.corrupt(SEG0, last_start, &[0u8; 8]);
    let (lsns, tail) = open_records(&image).expect("a torn tail, not corruption");
    assert_eq!(lsns, vec![1, 2, 3, 4, 5]);
    assert_eq!(tail.map(|t| t.lsn), Some(6));
}

#[test]
fn a_torn_atomic_group_is_cut_as_a_whole() {
    let sim = SimStorage::new();
    let mut cfg = sim_config();
    cfg.segment_size_bytes = 64 << 10;
    let (wal, _) = Wal::open_with_storage(Arc::new(sim.clone()), cfg).unwrap();
    wal.append(1, &[1u8; 40]).unwrap().wait().unwrap();
    let h = wal.append_group(&[(2, &[2u8; 40][..]), (2, &[3u8; 40][..]), (2, &[4u8; 40][..])]).unwrap();
    assert_eq!((h.first_lsn(), h.lsn()), (2, 4));
    h.wait().unwrap();
    drop(wal);
    let frame = surge_wal::format::frame_size(40);
    // Tear only the group's last record: the first two are intact but must go too.
    let image = sim.crash_image(CrashMode::ProcessCrash);
    image.corrupt(SEG0, HDR + 3 * frame + 30, &[0xEE]);
    let (lsns, tail) = open_records(&image).unwrap();
    assert_eq!(lsns, vec![1]);
    let t = tail.unwrap();
    assert_eq!((t.lsn, t.offset), (2, (HDR + frame) as u64));
}

#[test]
fn invalid_newest_snapshot_falls_back_or_stops_with_a_clear_error() {
    let sim = SimStorage::new();
    let (wal, _) = Wal::open_with_storage(Arc::new(sim.clone()), sim_config()).unwrap();
    for i in 0..300u64 {
        wal.append(1, &[i as u8; 100]).unwrap();
    }
    wal.wait_durable(300, 10_000).unwrap();
    assert!(!wal.write_snapshot(200, b"at-200").unwrap().is_empty(), "segments below 200 deleted");
    drop(wal);
    let snap = "snap-00000000000000000200.snap";
    // Segments before LSN 20 are gone (no reader registered): a damaged snapshot cannot be
    // replaced by replaying from the start, so open must refuse, naming the problem.
    let image = sim.crash_image(CrashMode::ProcessCrash);
    image.corrupt(snap, 45, b"X");
    match Wal::open_with_storage(Arc::new(image), sim_config()) {
        Err(WalError::Corrupt { reason, .. }) => assert!(reason.contains("invalid snapshot"), "{reason}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a damaged snapshot with missing segments must not open"),
    }
    // With every segment still there, the damaged snapshot is skipped and reported.
    let sim = SimStorage::new();
    let (wal, _) = Wal::open_with_storage(Arc::new(sim.clone()), sim_config()).unwrap();
    wal.set_reader_checkpoint("relay", 0).unwrap();
    for i in 0..300u64 {
        wal.append(1, &[i as u8; 100]).unwrap();
    }
    wal.wait_durable(300, 10_000).unwrap();
    assert!(wal.write_snapshot(200, b"at-200").unwrap().is_empty(), "the reader at 0 keeps every segment");
    drop(wal);
    let image = sim.crash_image(CrashMode::ProcessCrash);
    image.corrupt(snap, 45, b"X");
    let (_wal, rec) = Wal::open_with_storage(Arc::new(image), sim_config()).unwrap();
    assert!(rec.snapshot().is_none());
    assert_eq!(rec.invalid_snapshots.len(), 1);
    assert_eq!(rec.record_count(), 300);
}

#[test]
fn unreadable_checkpoint_keeps_everything_and_bad_config_is_refused() {
    let sim = SimStorage::new();
    let (wal, _) = Wal::open_with_storage(Arc::new(sim.clone()), sim_config()).unwrap();
    wal.set_reader_checkpoint("relay", 1_000_000).unwrap();
    sim.corrupt("reader-relay.ckpt", 17, b"\xFF");
    for i in 0..100u64 {
        wal.append(1, &[i as u8; 100]).unwrap();
    }
    wal.wait_durable(100, 10_000).unwrap();
    assert!(wal.readers().unwrap().contains(&("relay".to_string(), 0)));
    assert!(wal.write_snapshot(100, b"s").unwrap().is_empty(), "a bad checkpoint must count as 0");
    assert!(wal.set_reader_checkpoint("../evil", 1).is_err());
    drop(wal);
    for bad in [
        Config { batch_bytes_max: 100, ..sim_config() },
        Config { segment_size_bytes: 4096, ..sim_config() },
        Config { queue_depth_max: 0, ..sim_config() },
    ] {
        assert!(matches!(Wal::open_with_storage(Arc::new(SimStorage::new()), bad), Err(WalError::InvalidArgument(_))));
    }
}

#[test]
fn tailer_follows_rolls_and_reports_positions_retention_removed() {
    let sim = SimStorage::new();
    let (wal, _) = Wal::open_with_storage(Arc::new(sim.clone()), sim_config()).unwrap();
    for i in 1..=200u64 {
        wal.append(1, &[i as u8; 120]).unwrap();
    }
    wal.wait_durable(200, 10_000).unwrap();
    let segments = sim.names().iter().filter(|n| n.ends_with(".seg")).count();
    assert!(segments >= 4, "{segments} segments");
    let mut t = wal.tail(1).unwrap();
    for lsn in 1..=200u64 {
        let r = t.try_next().unwrap().unwrap();
        assert_eq!((r.lsn, r.payload[0]), (lsn, lsn as u8));
    }
    assert!(t.try_next().unwrap().is_none());
    let removed = wal.write_snapshot(150, b"s").unwrap();
    assert!(!removed.is_empty());
    match wal.tail(1).unwrap().try_next() {
        Err(WalError::LsnNotAvailable { lsn: 1, oldest_lsn }) => assert!(oldest_lsn > 1),
        other => panic!("expected LsnNotAvailable, got {other:?}"),
    }
    let stats = wal.stats();
    assert_eq!(stats.segments_deleted as usize, removed.len());
    assert!(stats.segments_created >= 3);
}

#[test]
fn a_damaged_header_in_front_of_records_is_corruption_not_a_half_created_segment() {
    let (sim, _) = sequential_log(5, 50);
    let image = sim.crash_image(CrashMode::ProcessCrash);
    image.corrupt(SEG0, 3, b"?");
    match open_records(&image) {
        Err(WalError::Corrupt { file, offset: 0, .. }) => assert!(file.contains(SEG0)),
        other => panic!("expected Corrupt at offset 0, got {:?}", other.map(|(l, _)| l)),
    }
    assert!(image.file(SEG0).is_some(), "the segment must not be deleted");
}
