//! A sink that writes a file: staged in blocks, hashed as it is staged, each full block
//! written by the sink's own thread or by an engine that takes the writes.

use super::blocks::{FileBlocks, FinalSync, ToWriter, run_writer};
use super::{Finished, Sink, SinkError};
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

// Bytes gathered before they are written in one piece (one write per block spares the system
// calls), and hashed in runs of HASH_RUN: BLAKE3 hashes a long run several times faster than
// segment-sized pieces (it hashes many 1 KiB chunks at once).
use control::settings::receiver::{
    DROP_BEHIND, HASH_RUN, STAGED_BLOCKS, STAGED_BYTES, WRITER_WAIT,
};

/// Writes `NAME.partial` in a directory and renames it to `NAME` only after a verified hash.
/// The bytes handed in are staged in blocks of [`STAGED_BYTES`] and hashed there every
/// [`HASH_RUN`] bytes, while the receiving thread still has them in its caches. Each full block
/// is written by a thread of the sink's own, which also syncs and renames the verified file,
/// so that the receiving thread makes no system call; or, on an engine that takes the writes
/// ([`Sink::take_block_writes`]), by the engine (the uring engine writes through its ring).
/// [`STAGED_BLOCKS`] blocks are made at start and go back and forth: the receiving thread
/// waits only when the disk is that many blocks behind.
pub struct FileSink {
    /// The block being filled (`None` once the sink has finished or aborted).
    staged: Option<Vec<u8>>,
    /// Where the staged block goes in the file.
    staged_at: u64,
    /// The hash of every byte handed in up to the block's first `hashed` bytes (boxed: about
    /// 2 KiB).
    hasher: Box<blake3::Hasher>,
    hashed: usize,
    blocks: Arc<FileBlocks>,
    /// The sink's own writer thread; `None` once it is joined, or once an engine took the
    /// writes.
    writer: Option<JoinHandle<()>>,
    /// An engine writes the blocks: nothing here can wait for it (it runs on this thread).
    engine_writes: bool,
    /// `poll_finished` told the outcome (it tells it once).
    told: bool,
    written: u64,
    /// Times the receiving thread waited for the disk.
    waits: u64,
}

impl FileSink {
    /// Creates (or truncates) `dir/NAME.partial` and starts the sink's writer thread. `name`
    /// must be a plain file name. Written pages leave the page cache [`DROP_BEHIND`] bytes
    /// behind the writes.
    pub fn create(dir: &Path, name: &str) -> io::Result<Self> {
        Self::with_drop_behind(dir, name, DROP_BEHIND)
    }

    /// [`FileSink::create`], dropping written pages from the page cache `drop_behind` bytes
    /// behind the writes (0: they stay cached).
    pub fn with_drop_behind(dir: &Path, name: &str, drop_behind: u64) -> io::Result<Self> {
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
        let blocks = Arc::new(FileBlocks::new(
            file,
            partial,
            final_path,
            (STAGED_BLOCKS, STAGED_BYTES),
            drop_behind,
        ));
        let writer = {
            let blocks = Arc::clone(&blocks);
            thread::Builder::new()
                .name("sink-writer".into())
                .spawn(move || run_writer(&blocks))?
        };
        Ok(FileSink {
            staged: Some(Vec::with_capacity(STAGED_BYTES)),
            staged_at: 0,
            hasher: Box::default(),
            hashed: 0,
            blocks,
            writer: Some(writer),
            engine_writes: false,
            told: false,
            written: 0,
            waits: 0,
        })
    }

    /// How long the verified file's sync before its rename took, once it is done (the sink
    /// may have moved into an engine by then).
    pub fn final_sync(&self) -> FinalSync {
        self.blocks.final_sync()
    }

    pub fn partial_path(&self) -> &Path {
        self.blocks.partial_path()
    }

    pub fn final_path(&self) -> &Path {
        self.blocks.final_path()
    }

    fn closed() -> SinkError {
        io::Error::other("sink already closed").into()
    }

    fn writer_ended() -> SinkError {
        io::Error::other("the sink's writer thread ended").into()
    }

    /// Hands `message` to the writer, and wakes it if it is the sink's thread.
    fn send(&self, message: ToWriter) -> Result<(), SinkError> {
        self.blocks.hand_over(message)?;
        if let Some(writer) = &self.writer {
            writer.thread().unpark();
        }
        Ok(())
    }

    /// Hands the staged block to the writer and takes an empty one: waiting for it if the
    /// sink's writer thread is every block behind; writing the block here if an engine that
    /// writes is (the engine runs on this thread, so waiting would never end).
    fn hand_over(&mut self) -> Result<(), SinkError> {
        // A write the writer failed ends the transfer at the next block, not at its end
        // (looked at per block, not per segment).
        if let Some(Err(e)) = self.blocks.take_outcome() {
            return Err(e);
        }
        self.hash_staged(0);
        self.hashed = 0;
        let mut block = self.staged.take().ok_or_else(Self::closed)?;
        let offset = self.staged_at;
        self.staged_at += block.len() as u64;
        let next = match self.blocks.take_spare() {
            Some(next) => {
                self.send(ToWriter::Block {
                    bytes: block,
                    offset,
                })?;
                next
            }
            None if self.engine_writes => {
                self.waits += 1;
                self.blocks.write_here(&block, offset)?;
                block.clear();
                block
            }
            None => {
                self.send(ToWriter::Block {
                    bytes: block,
                    offset,
                })?;
                self.wait_for_spare()?
            }
        };
        self.staged = Some(next);
        Ok(())
    }

    /// Waits until the sink's writer thread gives a block back.
    fn wait_for_spare(&mut self) -> Result<Vec<u8>, SinkError> {
        loop {
            if let Some(next) = self.blocks.take_spare() {
                return Ok(next);
            }
            if self.writer.as_ref().is_none_or(JoinHandle::is_finished) {
                return Err(Self::writer_ended());
            }
            self.waits += 1;
            if let Some(next) = self.blocks.wait_for_spare(WRITER_WAIT) {
                return Ok(next);
            }
        }
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

    /// Hands what is staged to the writer, then how the transfer ended.
    fn close(&mut self, finish: Option<[u8; 32]>) -> Result<(), SinkError> {
        self.hash_staged(0);
        let result = match self.staged.take() {
            Some(block) if !block.is_empty() => self.send(ToWriter::Block {
                bytes: block,
                offset: self.staged_at,
            }),
            _ => Ok(()),
        };
        let end = match finish {
            Some(expected) => ToWriter::Finish {
                expected,
                actual: *self.hasher.finalize().as_bytes(),
            },
            None => ToWriter::End,
        };
        // The end is handed over even after a failed hand-over: the writer must stop.
        let ended = self.send(end);
        result.and(ended)
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
        let outcome = match self.blocks.take_outcome() {
            Some(outcome) => outcome,
            // The writer thread ended without an outcome: it can give none now.
            None if self.writer.as_ref().is_some_and(JoinHandle::is_finished) => {
                match self.blocks.take_outcome() {
                    Some(outcome) => outcome,
                    None => Err(Self::writer_ended()),
                }
            }
            None => return None,
        };
        self.told = true;
        Some(outcome)
    }

    fn waits(&self) -> u64 {
        self.waits
    }

    /// With the sink's own writer, what was handed in is written before this returns: the
    /// partial file holds it all. An engine that writes writes it once it next looks.
    fn abort(&mut self) {
        // Best effort: the partial file is kept for inspection whatever happens here.
        let _ = self.close(None);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }

    fn take_block_writes(&mut self) -> Option<Arc<FileBlocks>> {
        // Only before the first byte: the writer thread has written nothing then.
        if self.engine_writes || self.written > 0 || self.staged.is_none() {
            return None;
        }
        let writer = self.writer.take()?;
        self.blocks.detach_writer();
        writer.thread().unpark();
        self.engine_writes = true;
        Some(Arc::clone(&self.blocks))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::fs;
    use std::time::{Duration, Instant};

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
        let dir = TestDir::new("sink-verified");
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
        let dir = TestDir::new("sink-wrong");
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
        let dir = TestDir::new("sink-abort");
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

    /// An engine that takes the writes gets every block with its offset and may write them
    /// in any order; when it has fallen every block behind, the sink writes the next block
    /// itself (counted as a wait) rather than wait for an engine that runs on its own thread.
    #[test]
    fn an_engine_that_takes_the_writes_gets_every_block_at_its_offset() {
        use std::os::unix::fs::FileExt;
        let dir = TestDir::new("sink-engine");
        let data = content(STAGED_BYTES * (STAGED_BLOCKS + 3) + 4_321);
        let mut sink = FileSink::create(&dir.0, "f").unwrap();
        let blocks = sink
            .take_block_writes()
            .expect("a file sink hands its writes over");
        assert!(sink.take_block_writes().is_none(), "only once");
        // The engine does not look until every byte is in: the sink runs out of blocks.
        write_all(&mut sink, &data);
        let inline = sink.waits();
        assert_eq!(
            inline, 4,
            "the blocks beyond the spare ones were written inline"
        );
        assert_eq!(
            sink.finish(blake3::hash(&data).as_bytes()).unwrap(),
            Finished::Pending
        );
        let mut handed = Vec::new();
        let end = loop {
            match blocks.next().expect("the sink's end follows its blocks") {
                ToWriter::Block { bytes, offset } => handed.push((offset, bytes)),
                end => break end,
            }
        };
        let last = (data.len() - data.len() % STAGED_BYTES) as u64;
        assert_eq!(handed.last().map(|(o, _)| *o), Some(last));
        assert_eq!(handed.len() as u64, STAGED_BLOCKS as u64);
        // Written last block first.
        for (offset, bytes) in handed.into_iter().rev() {
            blocks.file().write_all_at(&bytes, offset).unwrap();
            blocks.give_back(bytes);
        }
        let ToWriter::Finish { expected, actual } = end else {
            panic!("a finish, not {end:?}");
        };
        assert_eq!(
            sink.poll_finished().map(|o| o.is_ok()),
            None,
            "not yet final"
        );
        blocks.make_final_in_background(expected, actual);
        outcome(&mut sink).unwrap();
        assert_eq!(fs::read(dir.0.join("f")).unwrap(), data);
    }

    /// Writes are taken before the first byte or not at all (the sink's thread has written).
    #[test]
    fn writes_are_taken_before_the_first_byte_only() {
        let dir = TestDir::new("sink-late");
        let mut sink = FileSink::create(&dir.0, "f").unwrap();
        sink.write_at(0, b"early").unwrap();
        assert!(sink.take_block_writes().is_none());
        sink.finish(blake3::hash(b"early").as_bytes()).unwrap();
        outcome(&mut sink).unwrap();
        assert_eq!(fs::read(dir.0.join("f")).unwrap(), b"early");
    }
}
