//! `sink`: how a receiver's DATA payloads reach its file and its hash, with no network and no
//! protocol, in CPU seconds per GB. The product's sink (`FileSink`) copies each payload into a
//! 1 MiB staging block, hashes it in runs as it fills and has its writer thread write each
//! block; the uring engine writes the same blocks through its ring (a row does as it does).
//! Beside them, one-thread prototypes that separate what that costs: staging as the sink
//! does but writing on the same thread, hashing the staging block or the written file mapped
//! read-only; and writing the payloads straight from the receive buffers (one `pwritev` of up
//! to 1,024 payloads, what an io_uring `writev` from the buffers asks of the kernel), hashing
//! each payload where it lies or the mapped file. The input is a ring of receive buffers
//! shaped as GRO batches of DATA datagrams (64 of 1,024 bytes: the DNP and DATA headers before
//! each 994-byte payload), reused round the ring as a receiver's buffer ring is. Every copy is
//! synced, its hash checked, read back and compared with the file, and deleted. Files go to the
//! system's temporary folder (`TMPDIR=/dev/shm` takes the disk out); written pages stay in the
//! page cache in every row (no drop-behind hints), so that only the copy paths differ.

use super::Outcome;
use crate::machine::own_cpu;
use crate::runner::{self, Comparison, Metric, Sample, Stop, System};
use control::settings::receiver::{HASH_RUN, STAGED_BYTES};
use control::wire::{DEFAULT_MTU, DNP_HEADER_LEN, rmtp::DATA_HEADER_LEN};
use dataplane::rmtp::{FileSink, Finished, Sink};
use serde_json::json;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const CPU_PER_GB: Metric = Metric {
    name: "CPU seconds per GB written and hashed",
    unit: "CPU-s/GB",
    higher_is_better: false,
};

/// Where a payload starts in its datagram.
const HEADERS: usize = DNP_HEADER_LEN + DATA_HEADER_LEN;
/// Payload bytes per DATA datagram: what a sender's segment is at the default MTU.
const PAYLOAD: usize = DEFAULT_MTU - HEADERS;
/// Datagrams per receive buffer: a full GRO batch.
const PER_BUFFER: usize = 64;
/// Receive buffers in the ring: what the uring engine registers (`uring.recv_buffers`).
const BUFFERS: usize = control::settings::uring::RECV_BUFFERS as usize;
/// The most payloads one vectored write takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// The copy's name in its run's folder (the product's sink renames it there once verified).
const COPY: &str = "copy";

/// The ring of receive buffers a run reads its payloads from, and the file those payloads
/// make (the ring's payloads over and over, cut at `size`).
struct Input {
    buffers: Vec<Vec<u8>>,
    size: u64,
    hash: [u8; 32],
}

impl Input {
    fn new(size: u64) -> Input {
        let buffers: Vec<Vec<u8>> = (0..BUFFERS)
            .map(|b| {
                (0..PER_BUFFER * DEFAULT_MTU)
                    .map(|i| (b.wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 10)) as u8)
                    .collect()
            })
            .collect();
        let mut input = Input {
            buffers,
            size,
            hash: [0; 32],
        };
        let mut hasher = blake3::Hasher::new();
        input.for_each_payload(|_, p| {
            hasher.update(p);
        });
        input.hash = *hasher.finalize().as_bytes();
        input
    }

    /// Every payload of the file in order with its offset, as the buffers of the ring hold
    /// it.
    fn for_each_payload<'a>(&'a self, mut f: impl FnMut(u64, &'a [u8])) {
        let mut offset = 0u64;
        'file: for buffer in self.buffers.iter().cycle() {
            for datagram in buffer.chunks_exact(DEFAULT_MTU) {
                let left = self.size - offset;
                if left == 0 {
                    break 'file;
                }
                let len = (PAYLOAD as u64).min(left) as usize;
                f(offset, &datagram[HEADERS..HEADERS + len]);
                offset += len as u64;
            }
        }
    }
}

/// How the payloads reach the file: the product's sink, or a one-thread prototype.
#[derive(Clone, Copy)]
enum WritePath {
    /// `FileSink`, as a receiver hands it each payload: staged, hashed in runs of
    /// `receiver.hash_run` as staged, written by its writer thread.
    Product,
    /// Staged and hashed as the sink does, each full block written through an io_uring of
    /// this thread (single issuer, deferred task running: the uring engine's ring), with
    /// `receiver.staged_blocks` blocks: how the uring engine writes a file sink's blocks.
    RingWrites,
    Prototype {
        /// Copy the payloads into a staging block and write it whole, or write them from the
        /// buffers (vectored).
        staged: bool,
        hash: HashFrom,
    },
}

/// Where a prototype's BLAKE3 reads the bytes.
#[derive(Clone, Copy, PartialEq)]
enum HashFrom {
    /// The staging block, in runs of `receiver.hash_run` as it fills (as `FileSink` does).
    Staging,
    /// Each payload where it lies in its receive buffer.
    Payloads,
    /// The written file, mapped read-only, a staging block's worth at a time.
    MappedFile,
}

impl WritePath {
    const ALL: [WritePath; 6] = [
        WritePath::Product,
        WritePath::RingWrites,
        WritePath::Prototype {
            staged: true,
            hash: HashFrom::Staging,
        },
        WritePath::Prototype {
            staged: true,
            hash: HashFrom::MappedFile,
        },
        WritePath::Prototype {
            staged: false,
            hash: HashFrom::Payloads,
        },
        WritePath::Prototype {
            staged: false,
            hash: HashFrom::MappedFile,
        },
    ];

    fn name(self) -> String {
        match self {
            WritePath::Product => "staged (FileSink)".into(),
            WritePath::RingWrites => "staged, ring writes".into(),
            WritePath::Prototype { staged, hash } => format!(
                "{}, hash {}",
                if staged { "staged" } else { "from-buffers" },
                match hash {
                    HashFrom::Staging => "staging",
                    HashFrom::Payloads => "payloads",
                    HashFrom::MappedFile => "mapped file",
                }
            ),
        }
    }
}

struct Run<'a> {
    path: WritePath,
    input: &'a Input,
    stop: Stop,
}

impl System for Run<'_> {
    fn name(&self) -> String {
        self.path.name()
    }

    fn measure(&mut self) -> io::Result<Sample> {
        if self.stop.requested() {
            return Err(io::Error::other("interrupted"));
        }
        let dir = tempfile::Builder::new().prefix("bench-sink-").tempdir()?;
        crate::machine::warm_free_pages(self.input.size)?;
        let cpu_before = own_cpu();
        let start = Instant::now();
        let hash = match self.path {
            WritePath::Product => product(self.input, dir.path())?,
            WritePath::RingWrites => ring_writes(self.input, dir.path())?,
            WritePath::Prototype { staged, hash } => {
                prototype(self.input, dir.path(), staged, hash)?
            }
        };
        let elapsed = start.elapsed();
        let cpu = own_cpu().saturating_sub(cpu_before);
        if hash != self.input.hash {
            return Err(io::Error::other(
                "the copy's BLAKE3 differs from the file's",
            ));
        }
        // What was hashed may not be what was written: read the copy back (not counted).
        match burghers_lab::lab::file_hash(&dir.path().join(COPY)) {
            Ok((size, hash)) if size == self.input.size && hash == self.input.hash => {}
            _ => return Err(io::Error::other("the copy on disk differs from the file")),
        }
        let gigabytes = self.input.size as f64 / 1e9;
        let mut sample = Sample {
            value: cpu.as_secs_f64() / gigabytes,
            ..Sample::default()
        };
        sample.details.insert(
            "bytes_per_s".into(),
            self.input.size as f64 / elapsed.as_secs_f64().max(1e-9),
        );
        Ok(sample)
    }
}

/// The product's sink: every payload handed in as a receiver does, then the sender's hash;
/// the sink syncs and checks it on its writer thread. The hash it computed.
fn product(input: &Input, dir: &Path) -> io::Result<[u8; 32]> {
    let mut sink = FileSink::with_drop_behind(dir, COPY, 0)?;
    let mut failed = None;
    input.for_each_payload(|offset, payload| {
        if failed.is_none()
            && let Err(e) = sink.write_at(offset, payload)
        {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(io::Error::other(e.to_string()));
    }
    let outcome = match sink.finish(&input.hash).map_err(io::Error::other)? {
        Finished::Pending => loop {
            if let Some(outcome) = sink.poll_finished() {
                break outcome;
            }
            std::thread::sleep(Duration::from_micros(200));
        },
        Finished::Done => Ok(()),
    };
    // The sink refuses a wrong hash: the one it was given is the one it computed.
    outcome.map_err(io::Error::other)?;
    Ok(input.hash)
}

/// Stages and hashes the payloads as the sink does and writes each full block through an
/// io_uring, reusing a block once its write completed; syncs the file.
fn ring_writes(input: &Input, dir: &Path) -> io::Result<[u8; 32]> {
    let file = File::create_new(dir.join(COPY))?;
    let mut ring = RingWriter::new(&file)?;
    let mut hasher = blake3::Hasher::new();
    let mut block = ring.spare()?;
    let (mut hashed, mut offset) = (0usize, 0u64);
    let mut result = Ok(());
    input.for_each_payload(|_, payload| {
        let mut rest = payload;
        while result.is_ok() && !rest.is_empty() {
            let (now, later) = rest.split_at((STAGED_BYTES - block.len()).min(rest.len()));
            block.extend_from_slice(now);
            rest = later;
            let ready = block.len() - hashed;
            let run = if block.len() == STAGED_BYTES {
                ready
            } else {
                ready - ready % HASH_RUN
            };
            hasher.update(&block[hashed..hashed + run]);
            hashed += run;
            if block.len() == STAGED_BYTES {
                let full = std::mem::take(&mut block);
                offset += full.len() as u64;
                result = ring
                    .write(full, offset - STAGED_BYTES as u64)
                    .and_then(|()| ring.spare())
                    .map(|next| block = next);
                hashed = 0;
            }
        }
    });
    result?;
    hasher.update(&block[hashed..]);
    if !block.is_empty() {
        ring.write(block, offset)?;
    }
    ring.drain()?;
    file.sync_all()?;
    Ok(*hasher.finalize().as_bytes())
}

/// Blocks written at their offsets through a ring, each back among the spares once written.
struct RingWriter<'a> {
    file: &'a File,
    ring: io_uring::IoUring,
    /// Blocks by slot: `Some` while the ring writes it.
    writing: Vec<Option<Vec<u8>>>,
    spares: Vec<Vec<u8>>,
}

impl<'a> RingWriter<'a> {
    fn new(file: &'a File) -> io::Result<RingWriter<'a>> {
        let blocks = control::settings::receiver::STAGED_BLOCKS;
        let ring = io_uring::IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(blocks.next_power_of_two() as u32)?;
        Ok(RingWriter {
            file,
            ring,
            writing: (0..blocks).map(|_| None).collect(),
            spares: (0..blocks)
                .map(|_| Vec::with_capacity(STAGED_BYTES))
                .collect(),
        })
    }

    /// An empty block, waiting for a write to complete if every block is being written.
    fn spare(&mut self) -> io::Result<Vec<u8>> {
        self.reap(0)?;
        while self.spares.is_empty() {
            self.reap(1)?;
        }
        Ok(self.spares.pop().expect("a spare block"))
    }

    fn write(&mut self, block: Vec<u8>, offset: u64) -> io::Result<()> {
        let slot = self
            .writing
            .iter()
            .position(Option::is_none)
            .expect("a free slot for every block");
        let len = u32::try_from(block.len()).map_err(io::Error::other)?;
        let op = io_uring::opcode::Write::new(
            io_uring::types::Fd(self.file.as_raw_fd()),
            block.as_ptr(),
            len,
        )
        .offset(offset)
        .build()
        .user_data(slot as u64);
        self.writing[slot] = Some(block);
        // SAFETY: the block's bytes live in `writing[slot]` until its completion is reaped.
        unsafe { self.ring.submission().push(&op) }.map_err(io::Error::other)?;
        self.ring.submit()?;
        Ok(())
    }

    /// Takes the completions there are, waiting for `wait` of them; a short write is an error
    /// (no prototype retries).
    fn reap(&mut self, wait: usize) -> io::Result<()> {
        self.ring.submit_and_wait(wait)?;
        for cqe in self.ring.completion() {
            let slot = cqe.user_data() as usize;
            let mut block = self.writing[slot].take().expect("a block in flight");
            if usize::try_from(cqe.result()).ok() != Some(block.len()) {
                return Err(io::Error::other(format!("ring write: {}", cqe.result())));
            }
            block.clear();
            self.spares.push(block);
        }
        Ok(())
    }

    /// Waits for every write in flight.
    fn drain(&mut self) -> io::Result<()> {
        while self.writing.iter().any(Option::is_some) {
            self.reap(1)?;
        }
        Ok(())
    }
}

/// Writes the payloads on this thread, staged or from the buffers, up to [`IOV_MAX`] payloads
/// or a staging block a write, hashed from where `hash` says; syncs the file.
fn prototype(input: &Input, dir: &Path, staged: bool, hash: HashFrom) -> io::Result<[u8; 32]> {
    // Readable too: a mapping reads it.
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(COPY))?;
    let mapping = if hash == HashFrom::MappedFile {
        file.set_len(input.size)?;
        Some(Mapping::new(&file, input.size)?)
    } else {
        None
    };
    let mut copy = Copy {
        file: &file,
        size: input.size,
        hash,
        mapping,
        hasher: blake3::Hasher::new(),
        staging: if staged {
            Vec::with_capacity(STAGED_BYTES)
        } else {
            Vec::new()
        },
        staged,
        pending: Vec::with_capacity(IOV_MAX),
        hashed_staging: 0,
        written: 0,
        hashed: 0,
    };
    let mut result = Ok(());
    input.for_each_payload(|_, payload| {
        if result.is_ok() {
            result = copy.take(payload);
        }
    });
    result?;
    copy.flush()?;
    file.sync_all()?;
    Ok(*copy.hasher.finalize().as_bytes())
}

/// A prototype's copy in progress.
struct Copy<'a> {
    file: &'a File,
    size: u64,
    hash: HashFrom,
    /// The file, mapped when the hash reads it from there.
    mapping: Option<Mapping>,
    hasher: blake3::Hasher,
    staged: bool,
    staging: Vec<u8>,
    /// Bytes of `staging` hashed.
    hashed_staging: usize,
    /// Payloads for the next vectored write.
    pending: Vec<&'a [u8]>,
    written: u64,
    /// Bytes of the mapped file hashed.
    hashed: u64,
}

impl<'a> Copy<'a> {
    fn take(&mut self, payload: &'a [u8]) -> io::Result<()> {
        if self.hash == HashFrom::Payloads {
            self.hasher.update(payload);
        }
        if !self.staged {
            self.pending.push(payload);
            if self.pending.len() == IOV_MAX {
                self.flush()?;
            }
            return Ok(());
        }
        let mut rest = payload;
        while !rest.is_empty() {
            let room = STAGED_BYTES - self.staging.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.staging.extend_from_slice(now);
            rest = later;
            if self.staging.len() == STAGED_BYTES {
                self.flush()?;
            } else if self.hash == HashFrom::Staging {
                self.hash_staging(HASH_RUN);
            }
        }
        Ok(())
    }

    /// Hashes the staged bytes not hashed yet, in runs of `run` bytes (0: all of them).
    fn hash_staging(&mut self, run: usize) {
        let ready = self.staging.len() - self.hashed_staging;
        let take = if run == 0 { ready } else { ready - ready % run };
        self.hasher
            .update(&self.staging[self.hashed_staging..self.hashed_staging + take]);
        self.hashed_staging += take;
    }

    /// Writes what is staged or pending, then hashes each whole staging block's worth now
    /// written (and the rest at the end) from the mapping, if there is one.
    fn flush(&mut self) -> io::Result<()> {
        if self.staged {
            if self.hash == HashFrom::Staging {
                self.hash_staging(0);
            }
            self.file.write_all_at(&self.staging, self.written)?;
            self.written += self.staging.len() as u64;
            self.staging.clear();
            self.hashed_staging = 0;
        } else {
            self.written += write_vectored_at(self.file, &self.pending, self.written)?;
            self.pending.clear();
        }
        let Some(m) = &self.mapping else {
            return Ok(());
        };
        let block = STAGED_BYTES as u64;
        while self.written - self.hashed >= block
            || (self.written == self.size && self.hashed < self.size)
        {
            let n = block.min(self.written - self.hashed);
            self.hasher.update(m.range(self.hashed, n));
            self.hashed += n;
        }
        Ok(())
    }
}

/// One `pwritev` of `slices` at `offset`, finished with plain writes if the kernel took less;
/// the bytes written.
fn write_vectored_at(file: &File, slices: &[&[u8]], offset: u64) -> io::Result<u64> {
    let iov: Vec<libc::iovec> = slices
        .iter()
        .map(|s| libc::iovec {
            iov_base: s.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        })
        .collect();
    let at = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
    // SAFETY: every iovec points into a slice that outlives the call; the kernel only reads.
    let n = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), iov.len() as i32, at) };
    let mut took = u64::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let total: u64 = slices.iter().map(|s| s.len() as u64).sum();
    let mut start = 0u64;
    for s in slices {
        let end = start + s.len() as u64;
        if end > took {
            let skip = took.saturating_sub(start) as usize;
            file.write_all_at(&s[skip..], offset + start + skip as u64)?;
            took = end;
        }
        start = end;
    }
    Ok(total)
}

/// A file mapped read-only, as the hash reads it back from the page cache.
struct Mapping {
    base: *const u8,
    len: usize,
}

impl Mapping {
    fn new(file: &File, len: u64) -> io::Result<Mapping> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large"))?;
        // SAFETY: a fresh read-only shared mapping of `len` bytes of a file this run made
        // `len` long and nobody else truncates; unmapped on drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            base: base as *const u8,
            len,
        })
    }

    fn range(&self, offset: u64, len: u64) -> &[u8] {
        let (offset, len) = (offset as usize, len as usize);
        assert!(offset + len <= self.len);
        // SAFETY: within the mapping, which lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.base.add(offset), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len.max(1)) };
    }
}

pub fn run(
    quick: bool,
    size: Option<u64>,
    repetitions: Option<usize>,
    stop: &Stop,
) -> io::Result<Outcome> {
    let size = size.unwrap_or(if quick { 16 << 20 } else { 256 << 20 });
    let repetitions = repetitions.unwrap_or(if quick { 1 } else { 5 });
    let input = Input::new(size);
    let systems: Vec<Box<dyn System + '_>> = WritePath::ALL
        .into_iter()
        .map(|path| {
            Box::new(Run {
                path,
                input: &input,
                stop: stop.clone(),
            }) as Box<dyn System + '_>
        })
        .collect();
    let comparison = Comparison {
        title: format!(
            "{} MiB of DATA payloads into a file and its hash",
            size >> 20
        ),
        metric: CPU_PER_GB,
        systems,
    };
    let result = runner::run(comparison, repetitions, stop);
    Ok(Outcome {
        settings: json!({
            "size_bytes": size,
            "repetitions": repetitions,
            "payload_bytes": PAYLOAD,
            "datagrams_per_buffer": PER_BUFFER,
            "buffers": BUFFERS,
            "staged_bytes": STAGED_BYTES,
            "folder": std::env::temp_dir(),
        }),
        comparisons: vec![result],
        summary: json!({}),
    })
}
