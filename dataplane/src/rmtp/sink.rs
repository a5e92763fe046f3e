//! Where a receiver's bytes go. Data arrives contiguous and in order; the sink hashes what it
//! is given and makes the result final only when the whole transfer's BLAKE3 hash matches.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle, Thread};

#[derive(Debug)]
pub enum SinkError {
    Io(io::Error),
    /// The bytes written do not hash to what the sender announced.
    HashMismatch {
        expected: [u8; 32],
        actual: [u8; 32],
    },
    /// A write that does not continue where the last one ended (a receiver bug).
    OutOfOrder {
        expected: u64,
        got: u64,
    },
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkError::Io(e) => write!(f, "i/o error: {e}"),
            SinkError::HashMismatch { expected, actual } => write!(
                f,
                "content hash mismatch: sender announced {}, received data hashes to {}",
                hex(expected),
                hex(actual)
            ),
            SinkError::OutOfOrder { expected, got } => {
                write!(f, "write at offset {got}, expected {expected}")
            }
        }
    }
}

impl std::error::Error for SinkError {}

impl From<io::Error> for SinkError {
    fn from(e: io::Error) -> Self {
        SinkError::Io(e)
    }
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// How far [`Sink::finish`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// The result is final.
    Done,
    /// The hash matched; making the result final goes on off the caller's thread (a file's
    /// sync to disk can take seconds, and the thread that called is a whole node's on the
    /// uring engine): [`Sink::poll_finished`] tells when it is.
    Pending,
}

/// The receiving end of one transfer.
pub trait Sink {
    /// Appends `data`; `offset` is always the number of bytes written so far.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError>;
    /// Every byte was written: check the content hash and make the result final (or start
    /// to, [`Finished::Pending`]).
    fn finish(&mut self, hash: &[u8; 32]) -> Result<Finished, SinkError>;
    /// After a [`Finished::Pending`] finish: `None` while it goes on, then its outcome once.
    fn poll_finished(&mut self) -> Option<Result<(), SinkError>> {
        Some(Ok(()))
    }
    /// Give up; what was written stays clearly partial.
    fn abort(&mut self);
    /// Times the caller's thread waited for the sink to catch up (the disk behind the
    /// network).
    fn waits(&self) -> u64 {
        0
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        (**self).write_at(offset, data)
    }

    fn finish(&mut self, hash: &[u8; 32]) -> Result<Finished, SinkError> {
        (**self).finish(hash)
    }

    fn poll_finished(&mut self) -> Option<Result<(), SinkError>> {
        (**self).poll_finished()
    }

    fn abort(&mut self) {
        (**self).abort()
    }

    fn waits(&self) -> u64 {
        (**self).waits()
    }
}

// Bytes gathered before they are written in one piece (one write per block spares the system
// calls), and hashed in runs of HASH_RUN: BLAKE3 hashes a long run several times faster than
// segment-sized pieces (it hashes many 1 KiB chunks at once).
use control::settings::receiver::{HASH_RUN, STAGED_BLOCKS, STAGED_BYTES, WRITER_WAIT};

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
        // Pairs with the fence in `FileSink::wait_for_spare`: either that look finds the
        // block, or this one finds the flag.
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed)
            && let Some(receiver) = self.receiver.get()
        {
            receiver.unpark();
        }
    }
}

/// What the receiver's thread hands the sink's writer thread.
enum ToWriter {
    /// A full (or the last) block: write it, give the buffer back.
    Block(Vec<u8>),
    /// Every byte was handed in: once written, compare the hash announced with the one the
    /// bytes have, then sync and rename.
    Finish {
        expected: [u8; 32],
        actual: [u8; 32],
    },
}

/// Writes `NAME.partial` in a directory and renames it to `NAME` only after a verified hash.
/// The bytes handed in are staged in blocks of [`STAGED_BYTES`] and hashed there every
/// [`HASH_RUN`] bytes, while the receiving thread still has them in its caches; a thread of the
/// sink's own writes each full block, and syncs and renames the verified file, so the thread
/// that receives (a whole node's, on the uring engine) makes no system call.
/// [`STAGED_BLOCKS`] blocks are made at start and go back and forth: the receiving thread
/// waits only when the disk is that many blocks behind the network.
pub struct FileSink {
    /// The block being filled (`None` once the sink has finished or aborted).
    staged: Option<Vec<u8>>,
    /// The hash of every byte handed in up to the block's first `hashed` bytes (boxed: about
    /// 2 KiB).
    hasher: Box<blake3::Hasher>,
    hashed: usize,
    to_writer: Option<SyncSender<ToWriter>>,
    /// Blocks the writer is done with.
    spare: Receiver<Vec<u8>>,
    spare_signal: Arc<SpareSignal>,
    /// The writer's first failure, or its outcome after a finish.
    outcome: Receiver<Result<(), SinkError>>,
    writer: Option<JoinHandle<()>>,
    /// `poll_finished` told the outcome (it tells it once).
    told: bool,
    partial: PathBuf,
    final_path: PathBuf,
    written: u64,
    /// Times the receiving thread waited for a spare block.
    waits: u64,
}

impl FileSink {
    /// Creates (or truncates) `dir/NAME.partial` and starts the sink's writer thread. `name`
    /// must be a plain file name.
    pub fn create(dir: &Path, name: &str) -> io::Result<Self> {
        let plain = Path::new(name)
            .file_name()
            .is_some_and(|f| f == std::ffi::OsStr::new(name));
        if !plain || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a plain file name"),
            ));
        }
        let partial = dir.join(format!("{name}.partial"));
        let final_path = dir.join(name);
        let file = File::create(&partial)?;
        let blocks = STAGED_BLOCKS.max(1);
        // Bounded channels, each with room for every block: no send ever waits, and none
        // allocates.
        let (to_writer, from_sink) = mpsc::sync_channel(blocks + 1);
        let (spare_tx, spare) = mpsc::sync_channel(blocks);
        let (outcome_tx, outcome) = mpsc::sync_channel(2);
        for _ in 1..blocks {
            let _ = spare_tx.send(Vec::with_capacity(STAGED_BYTES));
        }
        let spare_signal = Arc::new(SpareSignal::default());
        let writer = Writer {
            file: Some(file),
            spare_signal: Arc::clone(&spare_signal),
            written: 0,
            partial: partial.clone(),
            final_path: final_path.clone(),
            spare: spare_tx,
            outcome: outcome_tx,
        };
        let writer = thread::Builder::new()
            .name("sink-writer".into())
            .spawn(move || writer.run(from_sink))?;
        Ok(FileSink {
            staged: Some(Vec::with_capacity(STAGED_BYTES)),
            hasher: Box::default(),
            hashed: 0,
            to_writer: Some(to_writer),
            spare,
            spare_signal,
            outcome,
            writer: Some(writer),
            told: false,
            partial,
            final_path,
            written: 0,
            waits: 0,
        })
    }

    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    fn closed() -> SinkError {
        io::Error::other("sink already closed").into()
    }

    fn send(&self, message: ToWriter) -> Result<(), SinkError> {
        self.to_writer
            .as_ref()
            .ok_or_else(Self::closed)?
            .send(message)
            .map_err(|_| io::Error::other("the sink's writer thread ended").into())
    }

    /// Hands the staged block to the writer and takes an empty one (waiting for it if the
    /// writer is every block behind).
    fn hand_over(&mut self) -> Result<(), SinkError> {
        // A write the writer thread failed ends the transfer at the next block, not at its
        // end (looked at per block: a channel receive per segment showed in profiles).
        if let Ok(Err(e)) = self.outcome.try_recv() {
            return Err(e);
        }
        self.hash_staged(0);
        self.hashed = 0;
        let block = self.staged.take().ok_or_else(Self::closed)?;
        self.send(ToWriter::Block(block))?;
        let next = loop {
            match self.spare.try_recv() {
                Ok(next) => break next,
                Err(TryRecvError::Empty) => {
                    self.waits += 1;
                    if let Some(next) = self.wait_for_spare() {
                        break next;
                    }
                }
                Err(TryRecvError::Disconnected) => {
                    return Err(io::Error::other("the sink's writer thread ended").into());
                }
            }
        };
        self.staged = Some(next);
        Ok(())
    }

    /// Parks the receiving thread until the writer gives a block back (it unparks it) or
    /// [`WRITER_WAIT`] has passed; the block, if one came in time.
    fn wait_for_spare(&self) -> Option<Vec<u8>> {
        let signal = &self.spare_signal;
        signal.receiver.get_or_init(thread::current);
        signal.waiting.store(true, Ordering::Relaxed);
        // Pairs with the fence in `SpareSignal::block_given_back`: a block given back after
        // this look finds the flag set.
        fence(Ordering::SeqCst);
        let block = match self.spare.try_recv() {
            Ok(block) => Some(block),
            Err(TryRecvError::Empty) => {
                thread::park_timeout(WRITER_WAIT);
                None
            }
            // The caller's next look reports it.
            Err(TryRecvError::Disconnected) => None,
        };
        signal.waiting.store(false, Ordering::Relaxed);
        block
    }

    /// Hashes the staged bytes not hashed yet, in runs of `run` bytes (0: all of them).
    fn hash_staged(&mut self, run: usize) {
        let Some(staged) = self.staged.as_ref() else {
            return;
        };
        let ready = staged.len() - self.hashed;
        let take = if run == 0 { ready } else { ready - ready % run };
        if take > 0 {
            self.hasher.update(&staged[self.hashed..self.hashed + take]);
            self.hashed += take;
        }
    }

    /// Hands what is staged to the writer, then lets it end, and waits for it.
    fn close(&mut self, finish: Option<[u8; 32]>) -> Result<(), SinkError> {
        self.hash_staged(0);
        let result = match self.staged.take() {
            Some(block) if !block.is_empty() => self.send(ToWriter::Block(block)),
            _ => Ok(()),
        };
        let result = result.and_then(|()| match finish {
            Some(expected) => self.send(ToWriter::Finish {
                expected,
                actual: *self.hasher.finalize().as_bytes(),
            }),
            None => Ok(()),
        });
        self.to_writer = None;
        result
    }
}

impl Sink for FileSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        if offset != self.written {
            return Err(SinkError::OutOfOrder {
                expected: self.written,
                got: offset,
            });
        }
        let mut rest = data;
        while !rest.is_empty() {
            let staged = self.staged.as_mut().ok_or_else(Self::closed)?;
            let room = STAGED_BYTES - staged.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            staged.extend_from_slice(now);
            if staged.len() == STAGED_BYTES {
                self.hand_over()?;
            } else {
                self.hash_staged(HASH_RUN);
            }
            rest = later;
        }
        self.written += data.len() as u64;
        Ok(())
    }

    /// The writer checks the hash and makes the file final: always [`Finished::Pending`].
    fn finish(&mut self, hash: &[u8; 32]) -> Result<Finished, SinkError> {
        if self.staged.is_none() {
            return Err(Self::closed());
        }
        self.close(Some(*hash))?;
        Ok(Finished::Pending)
    }

    fn poll_finished(&mut self) -> Option<Result<(), SinkError>> {
        if self.told {
            return None;
        }
        let outcome = match self.outcome.try_recv() {
            Ok(outcome) => outcome,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => {
                Err(io::Error::other("the sink's writer thread ended").into())
            }
        };
        self.told = true;
        Some(outcome)
    }

    fn waits(&self) -> u64 {
        self.waits
    }

    /// What was handed in is written before this returns: the partial file holds it all.
    fn abort(&mut self) {
        // Best effort: the partial file is kept for inspection whatever happens here.
        let _ = self.close(None);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // A sink dropped unfinished keeps what it was given, like an aborted one; a finished
        // one's writer ends on its own once the file is final.
        if self.staged.is_some() {
            self.abort();
        }
    }
}

/// The sink's own thread: writes each block in order, then checks, syncs and renames.
struct Writer {
    /// `None` after the first failed write: nothing more is written.
    file: Option<File>,
    spare_signal: Arc<SpareSignal>,
    /// Bytes written so far: where the next block goes.
    written: u64,
    partial: PathBuf,
    final_path: PathBuf,
    spare: SyncSender<Vec<u8>>,
    outcome: SyncSender<Result<(), SinkError>>,
}

impl Writer {
    fn run(mut self, from_sink: Receiver<ToWriter>) {
        for message in from_sink {
            match message {
                ToWriter::Block(mut block) => {
                    if let Some(file) = self.file.as_mut() {
                        match file.write_all(&block) {
                            Ok(()) => {
                                start_write_back(file, self.written, block.len());
                                self.written += block.len() as u64;
                            }
                            Err(e) => {
                                self.file = None;
                                let _ = self.outcome.try_send(Err(e.into()));
                            }
                        }
                    }
                    block.clear();
                    // The sink may be gone (aborted): then the block goes too.
                    if self.spare.try_send(block).is_ok() {
                        self.spare_signal.block_given_back();
                    }
                }
                ToWriter::Finish { expected, actual } => {
                    let outcome = self.make_final(expected, actual);
                    let _ = self.outcome.try_send(outcome);
                    return;
                }
            }
        }
    }

    fn make_final(&mut self, expected: [u8; 32], actual: [u8; 32]) -> Result<(), SinkError> {
        // A failed write was reported already; the receiver has failed on it.
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("an earlier write failed"))?;
        if actual != expected {
            return Err(SinkError::HashMismatch { expected, actual });
        }
        // Durable before it is renamed: a crash never leaves a short file under the final name.
        file.sync_all()?;
        drop(file);
        fs::rename(&self.partial, &self.final_path)?;
        Ok(())
    }
}

/// Asks the kernel to start writing a block just written to the disk, without waiting: the
/// disk works while the transfer goes on, and the sync before the rename finds little left
/// (it took 0.13-0.2 s after a 256 MiB transfer of ~0.5 s on the 2-core VM's disk otherwise).
/// Only a hint: where the file system cannot (a pipe, some file systems), the sync does it all.
pub fn start_write_back(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: a plain system call on a descriptor `file` owns; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// An in-memory sink for tests: the bytes, and whether `finish` verified them.
#[derive(Debug, Default)]
pub struct MemSink {
    pub data: Vec<u8>,
    hasher: blake3::Hasher,
    /// `Some(true)` after a verified finish, `Some(false)` after a mismatch or abort.
    pub verified: Option<bool>,
}

impl MemSink {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Sink for MemSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        if offset != self.data.len() as u64 {
            return Err(SinkError::OutOfOrder {
                expected: self.data.len() as u64,
                got: offset,
            });
        }
        self.data.extend_from_slice(data);
        self.hasher.update(data);
        Ok(())
    }

    fn finish(&mut self, hash: &[u8; 32]) -> Result<Finished, SinkError> {
        let actual = *self.hasher.finalize().as_bytes();
        let ok = actual == *hash;
        self.verified = Some(ok);
        if ok {
            Ok(Finished::Done)
        } else {
            Err(SinkError::HashMismatch {
                expected: *hash,
                actual,
            })
        }
    }

    fn abort(&mut self) {
        self.verified = Some(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A fresh directory under the system's temporary one, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(test: &str) -> Dir {
            let path =
                std::env::temp_dir().join(format!("burghers-sink-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Bytes that differ from block to block.
    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    /// Hands `data` in, in segments of 994 bytes, as a receiver does.
    fn write_all(sink: &mut FileSink, data: &[u8]) {
        let mut offset = 0u64;
        for segment in data.chunks(994) {
            sink.write_at(offset, segment).unwrap();
            offset += segment.len() as u64;
        }
    }

    fn outcome(sink: &mut FileSink) -> Result<(), SinkError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(outcome) = sink.poll_finished() {
                return outcome;
            }
            assert!(Instant::now() < deadline, "the writer never finished");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// More blocks than the sink has go through its writer: the verified file appears under
    /// its final name, byte for byte, and the partial one is gone.
    #[test]
    fn a_verified_file_is_renamed_after_its_writer_wrote_every_block() {
        let dir = Dir::new("verified");
        let data = content(STAGED_BYTES * (STAGED_BLOCKS + 3) + 12_345);
        let mut sink = FileSink::create(&dir.0, "f").unwrap();
        write_all(&mut sink, &data);
        let hash = *blake3::hash(&data).as_bytes();
        assert_eq!(sink.finish(&hash).unwrap(), Finished::Pending);
        outcome(&mut sink).unwrap();
        assert_eq!(fs::read(dir.0.join("f")).unwrap(), data);
        assert!(!dir.0.join("f.partial").exists());
    }

    /// A hash that does not match is the writer's outcome; nothing takes the final name.
    #[test]
    fn a_wrong_hash_fails_and_keeps_the_file_partial() {
        let dir = Dir::new("wrong");
        let data = content(STAGED_BYTES + 1);
        let mut sink = FileSink::create(&dir.0, "f").unwrap();
        write_all(&mut sink, &data);
        sink.finish(&[0; 32]).unwrap();
        let e = outcome(&mut sink).unwrap_err();
        assert!(matches!(e, SinkError::HashMismatch { .. }), "{e}");
        assert!(!dir.0.join("f").exists());
        assert_eq!(fs::read(dir.0.join("f.partial")).unwrap(), data);
    }

    /// An aborted sink has written everything it was given once `abort` returns; a write
    /// after it is refused; so is one that does not continue where the last ended.
    #[test]
    fn an_abort_leaves_every_byte_given_in_the_partial_file() {
        let dir = Dir::new("abort");
        let data = content(STAGED_BYTES * 2 + 777);
        let mut sink = FileSink::create(&dir.0, "f").unwrap();
        let skipped = sink.write_at(5, b"x").unwrap_err();
        assert!(matches!(
            skipped,
            SinkError::OutOfOrder {
                expected: 0,
                got: 5
            }
        ));
        write_all(&mut sink, &data);
        sink.abort();
        assert_eq!(fs::read(dir.0.join("f.partial")).unwrap(), data);
        assert!(sink.write_at(data.len() as u64, b"more").is_err());
        assert!(sink.finish(&[0; 32]).is_err());
    }
}
