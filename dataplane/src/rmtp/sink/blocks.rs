//! What a [`FileSink`](super::FileSink) hands to whoever writes its file: full staging blocks,
//! each with its offset, then how the transfer ended; back come the written blocks (to be
//! filled again) and the outcome. The writer is the sink's own thread, or an engine that
//! writes the blocks itself ([`Sink::take_block_writes`](super::Sink::take_block_writes): the
//! uring engine writes them through its ring). Lock-free queues sized at start: handing a
//! block over allocates nothing and takes no lock.

use super::SinkError;
use super::hints;
use crossbeam_queue::ArrayQueue;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// What the sink hands its writer, in order.
#[derive(Debug)]
pub enum ToWriter {
    /// A full (or the last) block: write it at `offset`, give the buffer back.
    Block { bytes: Vec<u8>, offset: u64 },
    /// Every byte was handed in: once every block is written, compare the hash announced with
    /// the one the bytes have, then sync and rename.
    Finish {
        expected: [u8; 32],
        actual: [u8; 32],
    },
    /// The sink aborted (or was dropped unfinished): write what came before, keep the file
    /// partial.
    End,
}

/// The queues between one file sink and its writer, and the file.
pub struct FileBlocks {
    file: File,
    partial: PathBuf,
    final_path: PathBuf,
    to_write: ArrayQueue<ToWriter>,
    spare: ArrayQueue<Vec<u8>>,
    /// A write's failure (at most one is kept), then the outcome of a finish.
    outcome: ArrayQueue<Result<(), SinkError>>,
    /// A write failed: nothing more is written, and a finish fails.
    failed: AtomicBool,
    /// Wakes the receiving thread when a block comes back while it waits for one.
    spare_signal: SpareSignal,
    /// An engine took the writes: the sink's own writer thread ends.
    writer_detached: AtomicBool,
    /// Written pages leave the page cache this many bytes behind the writes (0: they stay).
    drop_behind: u64,
    /// How long the final sync took, once it did.
    final_sync: FinalSync,
}

/// How long a verified file's sync to the disk took before its rename, once it has: the part
/// of a transfer's time that was the disk catching up.
#[derive(Clone, Debug, Default)]
pub struct FinalSync(Arc<OnceLock<Duration>>);

impl FinalSync {
    /// The sync's time, once it is done.
    pub fn took(&self) -> Option<Duration> {
        self.0.get().copied()
    }
}

impl FileBlocks {
    /// `blocks` staging blocks of `block_bytes` each, all but one spare (the sink fills that
    /// one first); written pages dropped from the cache `drop_behind` bytes behind.
    pub(super) fn new(
        file: File,
        partial: PathBuf,
        final_path: PathBuf,
        (blocks, block_bytes): (usize, usize),
        drop_behind: u64,
    ) -> FileBlocks {
        let blocks = blocks.max(1);
        let spare = ArrayQueue::new(blocks);
        for _ in 1..blocks {
            let _ = spare.push(Vec::with_capacity(block_bytes));
        }
        FileBlocks {
            file,
            partial,
            final_path,
            // Every block, a finish and an end: no push ever finds it full.
            to_write: ArrayQueue::new(blocks + 2),
            spare,
            outcome: ArrayQueue::new(2),
            failed: AtomicBool::new(false),
            spare_signal: SpareSignal::default(),
            writer_detached: AtomicBool::new(false),
            drop_behind,
            final_sync: FinalSync::default(),
        }
    }

    /// How many staging blocks there are (each one in the sink, queued, or being written).
    pub fn blocks(&self) -> usize {
        self.spare.capacity()
    }

    /// The file the blocks go to.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// `NAME.partial`, where the blocks go.
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    /// `NAME`, which the file takes once verified.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    // ---- the writer's side ----

    /// The next thing to do, in the order the sink handed them over.
    pub fn next(&self) -> Option<ToWriter> {
        self.to_write.pop()
    }

    /// After a block of `len` bytes was written at `offset`: the range of the file to drop
    /// from the page cache once it is written back, if any.
    pub fn to_drop(&self, offset: u64, len: usize) -> Option<(u64, u64)> {
        hints::range_behind(offset, len, self.drop_behind)
    }

    /// The hints after a block of `len` bytes was written at `offset` on this thread.
    fn written(&self, offset: u64, len: usize) {
        hints::after_write(&self.file, offset, len, self.drop_behind);
    }

    /// How long the final sync takes, once it is done.
    pub fn final_sync(&self) -> FinalSync {
        self.final_sync.clone()
    }

    /// Whether a write failed (the writer then writes nothing more).
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// A block is written (or will not be): it goes back to the sink to be filled again.
    pub fn give_back(&self, mut block: Vec<u8>) {
        block.clear();
        // Never full: it holds every block there is. An aborted sink's blocks go with it.
        if self.spare.push(block).is_ok() {
            self.spare_signal.block_given_back();
        }
    }

    /// A write failed: the sink fails at its next block, and so does a finish.
    pub fn fail(&self, e: io::Error) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            let _ = self.outcome.push(Err(e.into()));
        }
    }

    /// Every block is written: checks the hashes, syncs the file to the disk and renames it
    /// (blocking: seconds on a slow disk), and gives the sink its outcome.
    pub fn make_final(&self, expected: [u8; 32], actual: [u8; 32]) {
        let outcome = self.check_sync_rename(expected, actual);
        let synced = outcome.is_ok();
        // A failed write's error may still be queued: the finish's outcome replaces it.
        let _ = self.outcome.pop();
        let _ = self.outcome.push(outcome);
        if synced {
            // After the outcome is told: the transfer does not wait for it.
            hints::after_sync(&self.file, self.drop_behind);
        }
    }

    /// [`FileBlocks::make_final`] on a thread of its own, for a writer that must not block.
    pub fn make_final_in_background(self: Arc<Self>, expected: [u8; 32], actual: [u8; 32]) {
        let blocks = Arc::clone(&self);
        let spawned = thread::Builder::new()
            .name("sink-final".into())
            .spawn(move || blocks.make_final(expected, actual));
        if let Err(e) = spawned {
            let _ = self.outcome.pop();
            let _ = self.outcome.push(Err(e.into()));
        }
    }

    fn check_sync_rename(&self, expected: [u8; 32], actual: [u8; 32]) -> Result<(), SinkError> {
        // The failed write was reported already; the receiver has failed on it.
        if self.has_failed() {
            return Err(io::Error::other("an earlier write failed").into());
        }
        SinkError::check_hash(&expected, actual)?;
        // Durable before it is renamed: a crash never leaves a short file under the final name.
        let started = Instant::now();
        self.file.sync_all()?;
        let _ = self.final_sync.0.set(started.elapsed());
        fs::rename(&self.partial, &self.final_path)?;
        Ok(())
    }

    // ---- the sink's side ----

    pub(super) fn hand_over(&self, message: ToWriter) -> Result<(), SinkError> {
        self.to_write.push(message).map_err(|_| {
            io::Error::other("the sink's writer is more blocks behind than exist").into()
        })
    }

    /// An engine writes the blocks from now on; the sink's own writer thread ends (the caller
    /// wakes it).
    pub(super) fn detach_writer(&self) {
        self.writer_detached.store(true, Ordering::Release);
    }

    pub(super) fn take_spare(&self) -> Option<Vec<u8>> {
        self.spare.pop()
    }

    /// A write's failure, or the outcome of a finish, once.
    pub(super) fn take_outcome(&self) -> Option<Result<(), SinkError>> {
        self.outcome.pop()
    }

    /// Writes `block` at `offset` on the caller's thread (a block no writer took in time).
    pub(super) fn write_here(&self, block: &[u8], offset: u64) -> Result<(), SinkError> {
        if self.has_failed() {
            return Err(io::Error::other("an earlier write failed").into());
        }
        if let Err(e) = self.file.write_all_at(block, offset) {
            self.failed.store(true, Ordering::Release);
            return Err(e.into());
        }
        self.written(offset, block.len());
        Ok(())
    }

    /// Parks the calling thread until a block comes back (the writer wakes it) or `wait` has
    /// passed; the block, if one came in time.
    pub(super) fn wait_for_spare(&self, wait: Duration) -> Option<Vec<u8>> {
        let signal = &self.spare_signal;
        signal.receiver.get_or_init(thread::current);
        signal.waiting.store(true, Ordering::Relaxed);
        // Pairs with the fence in `SpareSignal::block_given_back`: a block given back after
        // this look finds the flag set.
        fence(Ordering::SeqCst);
        let block = self.spare.pop().or_else(|| {
            thread::park_timeout(wait);
            None
        });
        signal.waiting.store(false, Ordering::Relaxed);
        block
    }
}

/// How the writer wakes the receiving thread when it gives a block back while that thread
/// waits for one (a park, not a sleep: woken the moment a block is free).
#[derive(Default)]
struct SpareSignal {
    waiting: AtomicBool,
    /// The thread that waits: the one that hands the sink its bytes.
    receiver: OnceLock<Thread>,
}

impl SpareSignal {
    /// The writer's side, after giving a block back.
    fn block_given_back(&self) {
        // Pairs with the fence in `FileBlocks::wait_for_spare`: either that look finds the
        // block, or this one finds the flag.
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed)
            && let Some(receiver) = self.receiver.get()
        {
            receiver.unpark();
        }
    }
}

/// The sink's own writer thread: writes each block in order (they come in order), then checks, syncs and renames.
/// It sleeps (parked) while there is nothing to write; the sink wakes it at each hand-over.
pub(super) fn run_writer(blocks: &FileBlocks) {
    loop {
        // An engine took the writes before any block came: it writes them, not this thread.
        if blocks.writer_detached.load(Ordering::Acquire) {
            return;
        }
        match blocks.next() {
            Some(ToWriter::Block { bytes, offset }) => {
                if !blocks.has_failed() {
                    // In order, so a plain write (the file may be a pipe, which has no
                    // offsets).
                    match (&blocks.file).write_all(&bytes) {
                        Ok(()) => blocks.written(offset, bytes.len()),
                        Err(e) => blocks.fail(e),
                    }
                }
                blocks.give_back(bytes);
            }
            Some(ToWriter::Finish { expected, actual }) => {
                blocks.make_final(expected, actual);
                return;
            }
            Some(ToWriter::End) => return,
            None => thread::park(),
        }
    }
}
