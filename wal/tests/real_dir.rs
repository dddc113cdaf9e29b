//! The log on a real directory (tempdir): append, reopen, snapshots, retention, tailing.

use std::sync::Arc;

use surge_wal::{Config, IoMode, Tailer, Wal, WalError, WhenFull};

fn small_config(io_mode: IoMode) -> Config {
    Config {
        segment_size_bytes: 256 * 1024,
        batch_bytes_max: 64 * 1024,
        queue_depth_max: 4096,
        when_full: WhenFull::Wait { timeout_ms: 10_000 },
        io_mode,
        tail_poll_interval_ms: 1,
        zero_ahead_bytes: surge_wal::ZERO_AHEAD_BYTES_DEFAULT,
    }
}

fn payload(lsn: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (lsn as usize * 31 + i) as u8).collect()
}

fn roundtrip(io_mode: IoMode) {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, rec) = Wal::open(dir.path(), small_config(io_mode)).unwrap();
        assert_eq!(rec.record_count(), 0);
        assert_eq!(rec.next_lsn, 1);
        if io_mode == IoMode::Uring {
            assert!(wal.uses_io_uring());
        }
        for i in 1..=2000u64 {
            let h = wal.append((i % 3) as u8, &payload(i, (i % 300) as usize)).unwrap();
            assert_eq!(h.lsn(), i);
            if i % 100 == 0 {
                assert_eq!(h.wait().unwrap(), i);
            }
        }
        let h = wal.append_group(&[(9, b"a".as_slice()), (9, b"bb".as_slice())]).unwrap();
        assert_eq!((h.first_lsn(), h.lsn()), (2001, 2002));
        h.wait().unwrap();
        assert_eq!(wal.durable_lsn(), 2002);
        wal.close().unwrap();
    }
    let (wal, rec) = Wal::open(dir.path(), small_config(io_mode)).unwrap();
    assert!(rec.tail_cut.is_none());
    assert_eq!(rec.record_count(), 2002);
    for (n, r) in rec.records().enumerate() {
        let r = r.unwrap();
        let lsn = n as u64 + 1;
        assert_eq!(r.lsn, lsn);
        if lsn <= 2000 {
            assert_eq!(r.record_type, (lsn % 3) as u8);
            assert_eq!(r.payload, payload(lsn, (lsn % 300) as usize));
        }
    }
    assert_eq!(wal.append(1, b"next").unwrap().wait().unwrap(), 2003);
}

#[test]
fn roundtrip_pwrite() {
    roundtrip(IoMode::Pwrite);
}

#[test]
fn roundtrip_uring_or_auto() {
    if surge_wal::io_uring_available() {
        roundtrip(IoMode::Uring);
    } else {
        eprintln!("io_uring unavailable here: testing Auto (falls back to pwrite)");
        roundtrip(IoMode::Auto);
    }
}

#[test]
fn second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_wal, _) = Wal::open(dir.path(), small_config(IoMode::Auto)).unwrap();
    match Wal::open(dir.path(), small_config(IoMode::Auto)) {
        Err(WalError::Locked { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("second writer must be refused"),
    }
}

#[test]
fn callbacks_fire_in_lsn_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_config(IoMode::Auto)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..500u64 {
        let tx = tx.clone();
        let lsn = wal
            .append_with(2, &payload(i, 50), move |r| {
                let _ = tx.send(r);
            })
            .unwrap();
        assert_eq!(lsn, i + 1);
    }
    let got: Vec<u64> = (0..500).map(|_| rx.recv().unwrap().unwrap()).collect();
    assert_eq!(got, (1..=500).collect::<Vec<_>>());
    let st = wal.stats();
    assert_eq!((st.records, st.durable_lsn, st.queued_records), (500, 500, 0));
    assert!(st.commits >= 1 && st.commits <= 500 && st.bytes >= 500 * 72);
    assert!(st.sync_ns_max > 0 && st.sync_ns_total >= st.sync_ns_max);
}

#[test]
fn snapshot_retention_and_replay_after_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(IoMode::Auto);
    {
        let (wal, _) = Wal::open(dir.path(), cfg.clone()).unwrap();
        wal.set_reader_checkpoint("relay", 0).unwrap();
        for i in 1..=3000u64 {
            wal.append(1, &payload(i, 200)).unwrap();
        }
        wal.wait_durable(3000, 10_000).unwrap();
        // Reader at 0: nothing may go even with a snapshot.
        assert!(wal.write_snapshot(2500, b"state@2500").unwrap().is_empty());
        let segs_before = count_segments(dir.path());
        assert!(segs_before > 2);
        wal.set_reader_checkpoint("relay", 2999).unwrap();
        let removed = wal.run_retention().unwrap();
        assert!(!removed.is_empty());
        assert!(count_segments(dir.path()) < segs_before);
        // Snapshot beyond durable is refused.
        assert!(wal.write_snapshot(10_000, b"x").is_err());
        wal.close().unwrap();
    }
    let (_wal, rec) = Wal::open(dir.path(), cfg).unwrap();
    let (lsn, state) = rec.snapshot().unwrap();
    assert_eq!((lsn, state), (2500, &b"state@2500"[..]));
    let lsns: Vec<u64> = rec.records().map(|r| r.unwrap().lsn).collect();
    assert_eq!(lsns, (2501..=3000).collect::<Vec<_>>());
    assert_eq!(rec.next_lsn, 3001);
}

fn count_segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".seg"))
        .count()
}

#[test]
fn tailers_in_process_and_from_directory_see_only_durable_records() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_config(IoMode::Auto)).unwrap();
    let wal = Arc::new(wal);
    let total = 3000u64;
    let writer = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            for i in 1..=total {
                wal.append(4, &payload(i, 100)).unwrap();
                if i % 500 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        })
    };
    let mut local = wal.tail(1).unwrap();
    let mut remote = Tailer::open(dir.path(), 1).unwrap();
    for t in [&mut local, &mut remote] {
        for lsn in 1..=total {
            let r = t.next_timeout_ms(10_000).unwrap().expect("record");
            assert_eq!(r.lsn, lsn);
            assert!(r.lsn <= t.durable_lsn());
            assert_eq!(r.payload, payload(lsn, 100));
        }
    }
    writer.join().unwrap();
    // Caught up: nothing more, returns after the timeout.
    assert!(remote.next_timeout_ms(5).unwrap().is_none());
    // A late tailer from the middle.
    let mut mid = Tailer::open(dir.path(), 1234).unwrap();
    assert_eq!(mid.try_next().unwrap().unwrap().lsn, 1234);
    surge_wal::store_reader_checkpoint(dir.path(), "relay-2", 1233).unwrap();
    assert!(wal.readers().unwrap().contains(&("relay-2".to_string(), 1233)));
}

#[test]
fn queue_full_error_when_configured_to_fail() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(IoMode::Auto);
    cfg.when_full = WhenFull::Fail;
    cfg.queue_depth_max = 4;
    let (wal, _) = Wal::open(dir.path(), cfg).unwrap();
    let mut full = 0;
    let mut handles = Vec::new();
    for _ in 0..10_000 {
        match wal.append(1, b"x") {
            Ok(h) => handles.push(h),
            Err(WalError::QueueFull) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full > 0, "a depth-4 queue must report full under a burst");
    for h in handles {
        h.wait().unwrap();
    }
    assert!(matches!(wal.append(1, &vec![0u8; 100_000]), Err(WalError::RecordTooLarge { .. })));
}

/// The parent appends; a child process (this test binary, re-run in child mode) tails the
/// same directory through the watermark file and registers a checkpoint.
#[test]
fn tailer_in_another_process() {
    const N: u64 = 2000;
    if let Ok(dir) = std::env::var("SURGE_WAL_CHILD_TAIL_DIR") {
        let mut t = Tailer::open(&dir, 1).unwrap();
        for lsn in 1..=N {
            let r = t.next_timeout_ms(30_000).unwrap().expect("record in time");
            assert_eq!(r.lsn, lsn);
            assert!(r.lsn <= t.durable_lsn());
            assert_eq!(r.payload, payload(lsn, 64));
        }
        t.store_checkpoint("child", N).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_config(IoMode::Auto)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "tailer_in_another_process", "--test-threads=1"])
        .env("SURGE_WAL_CHILD_TAIL_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for lsn in 1..=N {
        let h = wal.append(1, &payload(lsn, 64)).unwrap();
        if lsn % 200 == 0 {
            h.wait().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    wal.wait_durable(N, 10_000).unwrap();
    assert!(child.wait().unwrap().success(), "child tailer failed");
    assert!(wal.readers().unwrap().contains(&("child".to_string(), N)));
}

#[test]
fn a_panicking_callback_does_not_take_the_log_down() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_config(IoMode::Auto)).unwrap();
    wal.append_with(1, b"boom", |_| panic!("callback bug (expected in this test)")).unwrap();
    let h = wal.append(1, b"after").unwrap();
    assert_eq!(h.wait().unwrap(), 2);
    assert!(wal.failure().is_none());
}

/// A real process crash: a child process appends from 4 threads and reports every
/// acknowledged LSN on stdout; the parent SIGKILLs it mid-stream and reopens the directory.
#[test]
fn kill_9_the_writer_process_and_recover_every_acknowledged_record() {
    use std::io::{BufRead, Write};
    if let Ok(dir) = std::env::var("SURGE_WAL_CHILD_WRITER_DIR") {
        let (wal, rec) = Wal::open(&dir, small_config(IoMode::Auto)).unwrap();
        assert_eq!(rec.record_count(), 0);
        let wal = Arc::new(wal);
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let (wal, out) = (wal.clone(), out.clone());
                std::thread::spawn(move || {
                    for seq in 0u32.. {
                        let mut p = vec![t];
                        p.extend_from_slice(&seq.to_le_bytes());
                        p.resize(40 + (seq % 200) as usize, t);
                        let lsn = wal.append(1, &p).unwrap().wait().unwrap();
                        let mut o = out.lock().unwrap();
                        writeln!(o, "acked {lsn} {t} {seq}").unwrap();
                        o.flush().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "kill_9_the_writer_process_and_recover_every_acknowledged_record",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SURGE_WAL_CHILD_WRITER_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = std::collections::BTreeMap::new();
    let reader = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in reader.lines() {
        let line = line.unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 4 && f[0] == "acked" {
            acked.insert(f[1].parse::<u64>().unwrap(), (f[2].parse::<u8>().unwrap(), f[3].parse::<u32>().unwrap()));
            if acked.len() >= 3000 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (_wal, rec) = Wal::open(dir.path(), small_config(IoMode::Auto)).unwrap();
    let mut next_seq = [0u32; 4];
    let mut expect = 1;
    for r in rec.records() {
        let r = r.unwrap();
        assert_eq!(r.lsn, expect);
        expect += 1;
        let t = r.payload[0];
        let seq = u32::from_le_bytes(r.payload[1..5].try_into().unwrap());
        assert_eq!(seq, next_seq[t as usize], "per-thread order");
        next_seq[t as usize] += 1;
        if let Some(&(at, aseq)) = acked.get(&r.lsn) {
            assert_eq!((t, seq), (at, aseq));
        }
    }
    let max_acked = *acked.keys().last().unwrap();
    assert!(expect > max_acked, "acked {max_acked} but recovered only {}", expect - 1);
}

#[test]
fn reopen_after_close_while_old_handles_and_tailers_are_alive() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_config(IoMode::Auto)).unwrap();
    let h = wal.append(1, b"one").unwrap();
    h.wait().unwrap();
    let mut t = wal.tail(1).unwrap();
    drop(wal);
    // The old handle and tailer still work on what is durable...
    assert!(h.is_durable());
    assert_eq!(t.try_next().unwrap().unwrap().payload, b"one");
    // ...and the directory can be reopened at once (the lock went with the Wal).
    let (wal2, rec) = Wal::open(dir.path(), small_config(IoMode::Auto)).unwrap();
    assert_eq!(rec.record_count(), 1);
    assert_eq!(wal2.append(1, b"two").unwrap().wait().unwrap(), 2);
}

#[test]
fn a_callback_that_appends_into_a_full_queue_gets_queue_full_instead_of_deadlocking() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(IoMode::Auto);
    cfg.queue_depth_max = 2;
    let (wal, _) = Wal::open(dir.path(), cfg).unwrap();
    let wal = Arc::new(wal);
    let (tx, rx) = std::sync::mpsc::channel();
    let inner = wal.clone();
    wal.append_with(1, b"first", move |_| {
        let results: Vec<bool> = (0..5).map(|_| inner.append(2, b"from callback").is_ok()).collect();
        tx.send(results).unwrap();
    })
    .unwrap();
    let results = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("callback finished");
    assert_eq!(results.iter().filter(|&&ok| ok).count(), 2, "{results:?}");
    assert!(wal.stats().queue_full >= 3);
    wal.wait_durable(3, 10_000).unwrap();
}

/// Damage inside the last (acknowledged) write looks like a torn tail in the segment alone;
/// the durable watermark left by the previous writer tells them apart.
#[test]
fn losing_an_acknowledged_tail_record_stops_open_unless_the_operator_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), small_config(IoMode::Auto)).unwrap();
        for i in 1..=10u64 {
            wal.append(1, &payload(i, 100)).unwrap().wait().unwrap();
        }
    }
    let seg = dir.path().join("wal-00000000000000000001.seg");
    let last_record = surge_wal::format::SEGMENT_HEADER_SIZE + 9 * surge_wal::format::frame_size(100);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[last_record + 50] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    match Wal::open(dir.path(), small_config(IoMode::Auto)) {
        Err(WalError::Corrupt { reason, .. }) => assert!(reason.contains("acknowledged"), "{reason}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("an acknowledged record was lost silently"),
    }
    assert!(matches!(Wal::open_read_only(dir.path()), Err(WalError::Corrupt { .. })));
    // The operator accepts the loss: without the watermark it is a cut tail.
    std::fs::remove_file(dir.path().join("durable.lsn")).unwrap();
    let (_wal, rec) = Wal::open(dir.path(), small_config(IoMode::Auto)).unwrap();
    assert_eq!(rec.record_count(), 9);
    assert_eq!(rec.tail_cut.as_ref().map(|c| c.lsn), Some(10));
}

#[test]
fn read_only_opens_while_a_writer_appends_see_a_durable_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_config(IoMode::Auto)).unwrap();
    let wal = Arc::new(wal);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (wal, stop) = (wal.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = None;
                // Bounded; many appends in flight, so writes land while the reader scans.
                for _ in 0..20_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    last = Some(wal.append(1, &payload(0, 300)).unwrap());
                }
                last.map(|h| h.wait().unwrap());
            })
        })
        .collect();
    let mut seen = 0;
    while wal.durable_lsn() < 1_000 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for _ in 0..50 {
        let recovery = Wal::open_read_only(dir.path()).expect("a read-only open of a live log never fails");
        assert!(recovery.last_lsn() <= wal.durable_lsn(), "only what was durable");
        assert!(recovery.tail_cut.is_none(), "a write in flight is not a torn tail");
        seen = seen.max(recovery.last_lsn());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(seen > 0);
}

#[test]
fn a_reader_stored_from_another_process_can_be_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_config(IoMode::Pwrite)).unwrap();
    surge_wal::store_reader_checkpoint(dir.path(), "gateway", 7).unwrap();
    assert_eq!(surge_wal::load_reader_checkpoint(dir.path(), "gateway").unwrap(), Some(7));
    assert!(wal.readers().unwrap().contains(&("gateway".to_string(), 7)));
    surge_wal::remove_reader_checkpoint(dir.path(), "gateway").unwrap();
    assert_eq!(surge_wal::load_reader_checkpoint(dir.path(), "gateway").unwrap(), None);
    assert!(wal.readers().unwrap().is_empty());
}
