//! Compares the three ways to make a small append durable on this machine:
//! pwrite + fdatasync, io_uring linked write + fsync(DATASYNC), io_uring write(RWF_DSYNC).
//! `cargo run --release -p surge-wal --example io_probe [dir]`
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp".into());
    let path = std::path::Path::new(&dir).join("surge-io-probe.dat");
    let n = 2000usize;
    let size = 152usize;
    for round in 0..4 {
        // Rounds 0 and 1: file zero-filled (written extents); 2 and 3: fallocated (unwritten
        // extents, like a fresh WAL segment).
        let falloc = round >= 2;
        for mode in ["pwrite+fdatasync", "uring write->fsync linked", "uring write RWF_DSYNC"] {
            let f = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
            if falloc {
                // SAFETY: plain syscall on an fd we own.
                let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 64 << 20) };
                assert_eq!(rc, 0, "fallocate");
            } else {
                f.write_all_at(&vec![0u8; 64 << 20], 0)?;
            }
            f.sync_all()?;
            let mut ring = IoUring::new(4)?;
            let buf = vec![1u8; size];
            let mut lat = Vec::with_capacity(n);
            for i in 0..n {
                let off = (i * size) as u64;
                let t = Instant::now();
                match mode {
                    "pwrite+fdatasync" => {
                        f.write_all_at(&buf, off)?;
                        f.sync_data()?;
                    }
                    _ => {
                        let fd = types::Fd(f.as_raw_fd());
                        let linked = mode.contains("linked");
                        let mut w = opcode::Write::new(fd, buf.as_ptr(), size as u32).offset(off);
                        if !linked {
                            w = w.rw_flags(libc::RWF_DSYNC);
                        }
                        let mut w = w.build().user_data(1);
                        if linked {
                            w = w.flags(squeue::Flags::IO_LINK);
                        }
                        unsafe { ring.submission().push(&w).unwrap() };
                        let want = if linked {
                            let s = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(2);
                            unsafe { ring.submission().push(&s).unwrap() };
                            2
                        } else {
                            1
                        };
                        ring.submit_and_wait(want)?;
                        let c: Vec<i32> = ring.completion().map(|c| c.result()).collect();
                        assert!(c.len() == want && c.iter().all(|&r| r >= 0), "{c:?}");
                    }
                }
                lat.push(t.elapsed());
            }
            lat.sort();
            println!(
                "round {round} {} {mode:28} p50 {:6.1} us  p99 {:7.1} us",
                if falloc { "fallocated " } else { "zero-filled" },
                lat[n / 2].as_secs_f64() * 1e6,
                lat[n * 99 / 100].as_secs_f64() * 1e6
            );
        }
    }
    std::fs::remove_file(&path)
}
