//! A file sink whose disk falls behind makes the receiving thread wait, and that wait allocates
//! nothing: on the uring engine the receiving thread is a worker, which allocates nothing per
//! packet. (A blocking receive on a channel allocates its waiter's record the first time a
//! thread waits: two allocations seen mid-transfer under load before the sink waited by
//! sleeping.)
//!
//! The "disk" is a FIFO in place of the partial file: the sink's writer blocks once the pipe is
//! full, until this test reads it.

mod counting;
mod uring_common;

use control::settings::receiver::{STAGED_BLOCKS, STAGED_BYTES};
use dataplane::rmtp::{FileSink, Sink};
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uring_common::TempDir;

const PIECE: usize = 1024;

#[test]
fn a_sink_behind_the_network_makes_the_caller_wait_without_allocating() {
    let dir = TempDir::new("sink-wait");
    let fifo = dir.0.join("f.partial");
    let path = CString::new(fifo.as_os_str().as_bytes()).expect("a path without NUL");
    // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    // A reader is open before the sink opens the FIFO to write, so that open does not wait.
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open the FIFO to read");
    let mut sink = FileSink::create(&dir.0, "f").expect("create the sink");

    // Every block the sink has can be in the writer's hands (one stuck writing) before the
    // caller must wait: the disk is read only once the caller has stopped making progress.
    let total = (STAGED_BLOCKS + 4) * STAGED_BYTES;
    let stall_from = (STAGED_BLOCKS * STAGED_BYTES - PIECE) as u64;
    let written = Arc::new(AtomicU64::new(0));
    let reader = {
        let written = Arc::clone(&written);
        std::thread::spawn(move || {
            let mut last = u64::MAX;
            loop {
                let now = written.load(Ordering::Relaxed);
                if now >= stall_from && now == last {
                    break;
                }
                last = now;
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut got = Vec::with_capacity(total);
            let mut buf = vec![0u8; 1 << 16];
            while got.len() < total {
                match disk.read(&mut buf) {
                    Ok(0) => std::thread::sleep(Duration::from_millis(1)),
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => panic!("read the FIFO: {e}"),
                }
            }
            got
        })
    };

    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4093) as u8).collect();
    let mut allocations = 0;
    for (k, piece) in data.chunks(PIECE).enumerate() {
        let offset = (k * PIECE) as u64;
        let (result, allocated) = counting::counted(|| sink.write_at(offset, piece));
        result.expect("write to the sink");
        allocations += allocated;
        written.store(offset + piece.len() as u64, Ordering::Relaxed);
    }
    let waits = sink.waits();
    sink.abort();
    let got = reader.join().expect("the reader");

    assert!(waits > 0, "the caller never waited for the disk");
    assert_eq!(allocations, 0, "allocations while waiting {waits} times");
    assert!(
        got == data,
        "the disk got other bytes ({} bytes)",
        got.len()
    );
}
