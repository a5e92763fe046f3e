//! The least work of a verified copy: what any tool must at least do to give N receivers on
//! this machine a copy they checked and kept, done with no protocol. One thread reads the
//! source in GSO batches (64 datagrams of 1024 bytes, read straight into the batch) and sends
//! each batch to every receiver; a thread per receiver takes GRO batches, hashes their bytes
//! with BLAKE3 and writes them from the receive buffer to a new file in the folder the
//! receivers' copies go to, with the hints the sink gives after each block, then syncs the
//! file and compares the hash. A window (bytes sent that the slowest receiver has not taken
//! yet) keeps the kernel from dropping: nothing is lost, nothing repaired. It pays only the
//! reads, the copies, the hash and the disk, with the system calls a user-space protocol uses,
//! so its CPU seconds per GB are a floor for every system here whose receivers verify and
//! write their copies, and the cores over that floor a ceiling on their goodput. Its own
//! goodput is that of the plainest pipeline (one thread per end), not a ceiling: a system that
//! spreads the same work over more threads can pass it.

use super::{Figures, Transfer};
use crate::machine::own_cpu;
use crate::runner::{Sample, Stop, System};
use crate::udp::{self, Batch, RawAddr};
use control::settings::receiver::{DROP_BEHIND, STAGED_BYTES};
use dataplane::rmtp::hints;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const NAME: &str = "verified-copy";

/// The datagram size: the DNP MTU the engines use.
const DATAGRAM: usize = super::fanout::DATAGRAM;
/// Receive buffer asked for each receiver's socket (capped by `net.core.rmem_max`).
const RECEIVE_BUFFER: usize = 8 << 20;
/// The most the window may be: what a receiver on a roomy socket has not taken yet.
const MAX_WINDOW: u64 = 2 << 20;
/// A receiver that gets nothing for this long lost datagrams (the window was too large for
/// its socket): its copy fails.
const STALL: Duration = Duration::from_secs(2);

pub struct Run<'a> {
    pub transfer: &'a Transfer,
    pub stop: Stop,
}

/// One receiver: its socket, where its copy goes and how many bytes it has taken.
struct Receiver {
    socket: std::net::UdpSocket,
    path: PathBuf,
    taken: AtomicU64,
}

impl System for Run<'_> {
    fn name(&self) -> String {
        NAME.to_string()
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let t = self.transfer;
        let dir = tempfile::Builder::new()
            .prefix("bench-multicast-verified-")
            .tempdir()?;
        let receivers = (0..t.receivers)
            .map(|i| {
                let socket = udp::bind_loopback()?;
                udp::enable_gro(&socket)?;
                udp::set_receive_buffer(&socket, RECEIVE_BUFFER)?;
                socket.set_read_timeout(Some(STALL))?;
                Ok(Receiver {
                    socket,
                    path: dir.path().join(format!("copy{i}")),
                    taken: AtomicU64::new(0),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        // A quarter of the smallest buffer granted: a GRO batch takes more of it than its
        // bytes.
        let granted = receivers
            .iter()
            .map(|r| udp::receive_buffer(&r.socket))
            .collect::<io::Result<Vec<_>>>()?;
        let window = granted
            .iter()
            .map(|&b| b as u64 / 4)
            .min()
            .unwrap_or(0)
            .clamp(DATAGRAM as u64 * 64, MAX_WINDOW);
        let failed = AtomicBool::new(false);
        t.warm_pages()?;
        let cpu_before = own_cpu();
        let start = Instant::now();
        let hashes = std::thread::scope(|s| {
            let takers: Vec<_> = receivers
                .iter()
                .map(|r| {
                    let failed = &failed;
                    s.spawn(move || {
                        let result = receive_copy(r, t.size);
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        result
                    })
                })
                .collect();
            let sent = self.send(&receivers, window, &failed);
            if sent.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            let copies = takers
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a receiver panicked")))
                })
                .collect::<io::Result<Vec<([u8; 32], Duration)>>>();
            sent.and(copies)
        })?;
        let (hashes, syncs): (Vec<[u8; 32]>, Vec<Duration>) = hashes.into_iter().unzip();
        let elapsed = start.elapsed();
        let cpu = own_cpu().saturating_sub(cpu_before);
        if hashes.iter().any(|h| *h != t.hash) {
            return Err(io::Error::other(
                "a receiver's BLAKE3 differs from the source's",
            ));
        }
        for r in &receivers {
            t.verify(&r.path)?;
        }
        let final_sync = syncs.iter().max().copied().unwrap_or_default();
        let figures = Figures {
            slowest_receiver: elapsed,
            last_copy: elapsed,
            cpu,
            counters: vec![("final_sync_s", final_sync.as_secs_f64())],
            ..Figures::default()
        };
        let mut sample = figures.sample(t);
        if let Some(&cpu_per_gb) = sample.details.get("cpu_s_per_gb") {
            sample
                .details
                .insert(CEILING.into(), ceiling(cpu_per_gb, t.receivers));
        }
        Ok(sample)
    }
}

/// The detail naming the most every receiver could get at once on this machine's cores, bytes
/// per second, if nothing but this floor's work were done.
pub const CEILING: &str = "ceiling_b_per_s";

/// `cores` ÷ the CPU seconds one GB of copies costs, shared by `receivers` copies.
fn ceiling(cpu_s_per_gb: f64, receivers: usize) -> f64 {
    crate::machine::cores() as f64 * 1e9 / (cpu_s_per_gb * receivers.max(1) as f64).max(1e-9)
}

impl Run<'_> {
    /// Reads the source a GSO batch at a time and sends each batch to every receiver, holding
    /// back while the slowest has `window` bytes or more yet to take.
    fn send(&self, receivers: &[Receiver], window: u64, failed: &AtomicBool) -> io::Result<()> {
        let t = self.transfer;
        let source = File::open(&t.source)?;
        let targets = receivers
            .iter()
            .map(|r| RawAddr::new(r.socket.local_addr()?))
            .collect::<io::Result<Vec<_>>>()?;
        let socket = udp::bind_loopback()?;
        let mut batch = vec![0u8; udp::segments_per_send(DATAGRAM) * DATAGRAM];
        let slowest = || {
            receivers
                .iter()
                .map(|r| r.taken.load(Ordering::Acquire))
                .min()
                .unwrap_or(0)
        };
        let deadline = Instant::now() + t.deadline();
        let mut offset = 0u64;
        while offset < t.size {
            let n = (t.size - offset).min(batch.len() as u64) as usize;
            source.read_exact_at(&mut batch[..n], offset)?;
            while offset + n as u64 - slowest() > window {
                if failed.load(Ordering::Relaxed) || self.stop.requested() {
                    return Err(io::Error::other(
                        "stopped: a receiver failed or was interrupted",
                    ));
                }
                if Instant::now() >= deadline {
                    return Err(io::Error::other("gave up: the receivers stopped taking"));
                }
                std::thread::sleep(Duration::from_micros(20));
            }
            for to in &targets {
                // A full local queue refuses the send: try again until it takes it.
                loop {
                    match udp::send_segments(&socket, &batch[..n], DATAGRAM as u16, to) {
                        Ok(_) => break,
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            std::thread::yield_now()
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            offset += n as u64;
        }
        Ok(())
    }
}

/// Takes `size` bytes on the receiver's socket into its copy, hashing them on the way; the
/// hash once the copy is synced, and how long that sync took.
fn receive_copy(r: &Receiver, size: u64) -> io::Result<([u8; 32], Duration)> {
    let mut file = File::create(&r.path)?;
    let mut hasher = blake3::Hasher::new();
    let mut batch = Batch::new(16, udp::SUPER_PACKET, true);
    let (mut written, mut written_back) = (0u64, 0u64);
    while written < size {
        let n = batch
            .recv(&r.socket)
            .map_err(|e| stalled(e, written, size))?;
        for i in 0..n {
            let bytes = batch.datagram(i);
            if written + bytes.len() as u64 > size {
                return Err(io::Error::other("more bytes than the file has"));
            }
            hasher.update(bytes);
            file.write_all(bytes)?;
            written += bytes.len() as u64;
        }
        r.taken.store(written, Ordering::Release);
        while written - written_back >= STAGED_BYTES as u64 {
            hints::after_write(&file, written_back, STAGED_BYTES, DROP_BEHIND);
            written_back += STAGED_BYTES as u64;
        }
    }
    let started = Instant::now();
    file.sync_all()?;
    let synced = started.elapsed();
    hints::after_sync(&file, DROP_BEHIND);
    Ok((*hasher.finalize().as_bytes(), synced))
}

/// A receive that timed out means datagrams were dropped (nothing here repairs them).
fn stalled(e: io::Error, written: u64, size: u64) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::other(format!(
            "nothing for {STALL:?} with {written} of {size} bytes: the kernel dropped datagrams"
        )),
        _ => e,
    }
}
