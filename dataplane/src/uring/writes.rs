//! Local receivers' files, written through the worker's ring: each full staging block a file
//! sink hands over becomes one write at its offset, then a hint to start its write-back to the
//! disk, and for an older range a wait for its write-back linked to a drop from the page
//! cache; the block goes back to the sink when the write completes. The worker thread makes no
//! blocking call for a file: the final sync and rename run on a thread of their own.

use crate::rmtp::{FileBlocks, ToWriter, hints};
use io_uring::opcode;
use io_uring::squeue::{self, Entry};
use io_uring::types::Fd;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// A write or write-back the ring has: what it refers to stays alive until it completes.
enum Op {
    /// `block[done..]` is being written at `offset + done`.
    Write {
        file: usize,
        block: Vec<u8>,
        offset: u64,
        done: usize,
    },
    /// A hint about written pages: start their write-back to the disk, or drop them from the
    /// page cache (its result is ignored).
    Hint { file: usize },
}

/// One sink's file.
struct Writing {
    /// Names this file in its ops (indices in `files` move as files end).
    id: usize,
    blocks: Arc<FileBlocks>,
    /// Ops the ring has for this file: its descriptor stays open until they are done.
    in_flight: usize,
    /// How the sink ended, once it did: acted on when the last op completes.
    end: Option<ToWriter>,
}

/// What the worker counts of its file writes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WriteCounts {
    pub writes: u64,
    pub bytes: u64,
    pub short: u64,
    pub errors: u64,
    /// Write-back starts and page-cache drops asked for.
    pub hints: u64,
}

#[derive(Default)]
pub(crate) struct FileWrites {
    files: Vec<Writing>,
    next_id: usize,
    /// Ops in flight by slot (the completion's tag), and the free slots.
    ops: Vec<Option<Op>>,
    free: Vec<usize>,
    pub counts: WriteCounts,
}

impl FileWrites {
    /// From now on the worker writes `blocks`' file. Room for a write and three hints for each
    /// block of every file is made now (and kept for the next files): a transfer's writes
    /// allocate nothing in steady state.
    pub fn add(&mut self, blocks: Arc<FileBlocks>) {
        const OPS_PER_BLOCK: usize = 4;
        let room: usize = OPS_PER_BLOCK
            * (blocks.blocks() + self.files.iter().map(|w| w.blocks.blocks()).sum::<usize>());
        self.free.reserve(room.saturating_sub(self.free.len()));
        while self.ops.len() < room {
            self.free.push(self.ops.len());
            self.ops.push(None);
        }
        self.files.push(Writing {
            id: self.next_id,
            blocks,
            in_flight: 0,
            end: None,
        });
        self.next_id = self.next_id.wrapping_add(1);
    }

    /// Nothing in flight: the ring refers to no block and no file.
    pub fn idle(&self) -> bool {
        self.ops.len() == self.free.len()
    }

    /// Submits a write for each block the sinks handed over since the last look, and ends the
    /// files whose sinks ended and whose writes are done. `push` queues an entry on the ring;
    /// `tag` makes a slot the completion's user data.
    pub fn submit(&mut self, push: &mut impl FnMut(&Entry), tag: impl Fn(usize) -> u64) {
        for at in 0..self.files.len() {
            while let Some(message) = self.files[at].blocks.next() {
                match message {
                    ToWriter::Block { bytes, offset } => {
                        let writing = &self.files[at];
                        if writing.blocks.has_failed() {
                            writing.blocks.give_back(bytes);
                            continue;
                        }
                        let op = Op::Write {
                            file: writing.id,
                            block: bytes,
                            offset,
                            done: 0,
                        };
                        self.start(at, op, push, &tag);
                    }
                    end => self.files[at].end = Some(end),
                }
            }
        }
        self.retire();
    }

    /// The ring completed the op in `slot` with `result`.
    pub fn complete(
        &mut self,
        slot: usize,
        result: i32,
        push: &mut impl FnMut(&Entry),
        tag: impl Fn(usize) -> u64,
    ) {
        let Some(op) = self.ops.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        let id = match &op {
            Op::Write { file, .. } | Op::Hint { file } => *file,
        };
        let Some(at) = self.files.iter().position(|w| w.id == id) else {
            return;
        };
        self.files[at].in_flight -= 1;
        if let Op::Write {
            file,
            block,
            offset,
            done,
        } = op
        {
            let blocks = Arc::clone(&self.files[at].blocks);
            match usize::try_from(result) {
                Err(_) if -result == libc::EINTR || -result == libc::EAGAIN => {
                    let op = Op::Write {
                        file,
                        block,
                        offset,
                        done,
                    };
                    self.start(at, op, push, &tag);
                }
                Err(_) => {
                    self.counts.errors += 1;
                    blocks.fail(io::Error::from_raw_os_error(-result));
                    blocks.give_back(block);
                }
                Ok(0) => {
                    self.counts.errors += 1;
                    blocks.fail(io::Error::from(io::ErrorKind::WriteZero));
                    blocks.give_back(block);
                }
                Ok(n) if done + n < block.len() => {
                    self.counts.short += 1;
                    let op = Op::Write {
                        file,
                        block,
                        offset,
                        done: done + n,
                    };
                    self.start(at, op, push, &tag);
                }
                Ok(n) => {
                    self.counts.writes += 1;
                    self.counts.bytes += (done + n) as u64;
                    let fd = Fd(blocks.file().as_raw_fd());
                    let write_back =
                        opcode::SyncFileRange::new(fd, u32::try_from(block.len()).unwrap_or(0))
                            .offset(offset)
                            .flags(libc::SYNC_FILE_RANGE_WRITE)
                            .build();
                    // The range behind leaves the cache once its write-back is done (on an
                    // io-wq thread, linked): a drop that finds pages still being written back
                    // makes the kernel drain every core's page lists and try again. The ops'
                    // length is 32 bits wide: a longer range is left cached.
                    let drop = blocks
                        .to_drop(offset, block.len())
                        .and_then(|(from, len)| Some((from, u32::try_from(len).ok()?)))
                        .map(|(from, len)| {
                            let written_back = opcode::SyncFileRange::new(fd, len)
                                .offset(from)
                                .flags(hints::WAIT_WRITTEN_BACK)
                                .build()
                                .flags(squeue::Flags::IO_LINK);
                            let drop =
                                opcode::Fadvise::new(fd, len.into(), libc::POSIX_FADV_DONTNEED)
                                    .offset(from)
                                    .build();
                            [written_back, drop]
                        });
                    blocks.give_back(block);
                    for hint in std::iter::once(write_back).chain(drop.into_iter().flatten()) {
                        let slot = self.slot(Op::Hint { file: id });
                        self.files[at].in_flight += 1;
                        self.counts.hints += 1;
                        push(&hint.user_data(tag(slot)));
                    }
                }
            }
        }
        self.retire();
    }

    /// Queues `op` (a write) for the file at `at`.
    fn start(
        &mut self,
        at: usize,
        op: Op,
        push: &mut impl FnMut(&Entry),
        tag: &impl Fn(usize) -> u64,
    ) {
        let fd = Fd(self.files[at].blocks.file().as_raw_fd());
        let Op::Write {
            ref block,
            offset,
            done,
            ..
        } = op
        else {
            return;
        };
        let rest = &block[done..];
        // The block's heap memory does not move when the op moves into its slot.
        let entry = opcode::Write::new(
            fd,
            rest.as_ptr(),
            u32::try_from(rest.len()).unwrap_or(u32::MAX),
        )
        .offset(offset + done as u64)
        .build();
        let slot = self.slot(op);
        self.files[at].in_flight += 1;
        push(&entry.user_data(tag(slot)));
    }

    fn slot(&mut self, op: Op) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.ops[slot] = Some(op);
                slot
            }
            None => {
                self.ops.push(Some(op));
                self.ops.len() - 1
            }
        }
    }

    /// Ends the files whose sinks ended and whose ops are all done: a finished one is checked,
    /// synced and renamed off this thread; an aborted one is left partial.
    fn retire(&mut self) {
        let mut at = 0;
        while at < self.files.len() {
            let writing = &self.files[at];
            if writing.in_flight > 0 || writing.end.is_none() {
                at += 1;
                continue;
            }
            let writing = self.files.swap_remove(at);
            if let Some(ToWriter::Finish { expected, actual }) = writing.end {
                writing.blocks.make_final_in_background(expected, actual);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rmtp::{FileSink, Sink, SinkError};
    use crate::test_dir::TestDir;
    use control::settings::receiver::STAGED_BYTES;
    use io_uring::IoUring;
    use std::time::{Duration, Instant};

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 + i / 5003) as u8).collect()
    }

    fn hand_in(sink: &mut FileSink, from: usize, data: &[u8]) -> Result<(), SinkError> {
        for (k, piece) in data.chunks(994).enumerate() {
            sink.write_at((from + k * 994) as u64, piece)?;
        }
        Ok(())
    }

    /// Blocks written through a real ring, the last one first in line with the others: the
    /// file is verified, synced and renamed once every write and its hints completed (a
    /// write-back for each block, a drop from the page cache for the range a block behind),
    /// and the worker holds nothing after.
    #[test]
    fn blocks_written_through_the_ring_make_the_verified_file() {
        let dir = TestDir::new("writes-ring");
        let data = content(STAGED_BYTES * 3 + 777);
        let mut sink = FileSink::with_drop_behind(&dir.0, "f", STAGED_BYTES as u64).unwrap();
        let mut writes = FileWrites::default();
        writes.add(sink.take_block_writes().unwrap());
        let mut ring = IoUring::new(64).unwrap();
        let push = |ring: &mut IoUring, e: &Entry| {
            // SAFETY: the entries refer to blocks `writes` keeps until their completion.
            unsafe { ring.submission().push(e) }.expect("room in the ring");
        };
        hand_in(&mut sink, 0, &data).unwrap();
        sink.finish(blake3::hash(&data).as_bytes()).unwrap();
        writes.submit(&mut |e| push(&mut ring, e), |slot| slot as u64);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !writes.idle() {
            assert!(Instant::now() < deadline, "the ring never completed");
            ring.submit_and_wait(1).unwrap();
            let done: Vec<(u64, i32)> = ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (slot, result) in done {
                writes.complete(slot as usize, result, &mut |e| push(&mut ring, e), |s| {
                    s as u64
                });
            }
        }
        assert_eq!(writes.counts.writes, 4);
        assert_eq!(writes.counts.bytes, data.len() as u64);
        assert_eq!(
            writes.counts.hints,
            4 + 3 * 2,
            "4 write-backs started, 3 ranges waited for and dropped"
        );
        assert!(writes.files.is_empty(), "the file ended with its last op");
        let outcome = loop {
            if let Some(outcome) = sink.poll_finished() {
                break outcome;
            }
            assert!(Instant::now() < deadline, "never final");
            std::thread::sleep(Duration::from_millis(1));
        };
        outcome.unwrap();
        assert_eq!(std::fs::read(dir.0.join("f")).unwrap(), data);
    }

    /// A write the kernel refuses fails the sink at its next block; a short one is continued
    /// where it stopped; the file's blocks stay with the worker until their ops complete.
    #[test]
    fn a_failed_write_fails_the_sink_and_a_short_one_is_continued() {
        let dir = TestDir::new("writes-fail");
        let data = content(STAGED_BYTES * 2);
        let mut sink = FileSink::create(&dir.0, "f").unwrap();
        let mut writes = FileWrites::default();
        writes.add(sink.take_block_writes().unwrap());
        let mut pushed = Vec::new();
        hand_in(&mut sink, 0, &data[..STAGED_BYTES + 1]).unwrap();
        writes.submit(&mut |e| pushed.push(e.get_user_data()), |slot| slot as u64);
        assert_eq!(pushed.len(), 1, "one write for the one full block");

        // Half the block was taken: the rest is asked for in a write of its own.
        let half = i32::try_from(STAGED_BYTES / 2).unwrap();
        writes.complete(
            pushed[0] as usize,
            half,
            &mut |e| pushed.push(e.get_user_data()),
            |s| s as u64,
        );
        assert_eq!(writes.counts.short, 1);
        assert_eq!(pushed.len(), 2);
        assert!(!writes.idle());

        // The rest fails: no space left.
        let slot = pushed[1] as usize;
        writes.complete(
            slot,
            -libc::ENOSPC,
            &mut |e| pushed.push(e.get_user_data()),
            |s| s as u64,
        );
        assert_eq!(writes.counts.errors, 1);
        assert!(writes.idle());
        let e = hand_in(&mut sink, STAGED_BYTES + 1, &data[STAGED_BYTES + 1..])
            .expect_err("the next block reports the failed write");
        assert!(
            matches!(&e, SinkError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC)),
            "{e}"
        );
        sink.abort();
        writes.submit(&mut |e| pushed.push(e.get_user_data()), |slot| slot as u64);
        assert!(
            writes.files.is_empty(),
            "an aborted file with nothing in flight ends"
        );
        assert!(dir.0.join("f.partial").exists() && !dir.0.join("f").exists());
    }
}
