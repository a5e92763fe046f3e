//! Where a receiver's bytes go. Data arrives contiguous and in order; the sink hashes what it
//! is given and makes the result final only when the whole transfer's BLAKE3 hash matches.

mod blocks;
mod file;
pub mod hints;

pub use blocks::{FileBlocks, FinalSync, ToWriter};
pub use file::FileSink;

use std::io;
use std::sync::Arc;

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

impl SinkError {
    /// Whether the bytes' hash `actual` is the one the sender announced.
    pub fn check_hash(expected: &[u8; 32], actual: [u8; 32]) -> Result<(), SinkError> {
        if actual == *expected {
            Ok(())
        } else {
            Err(SinkError::HashMismatch {
                expected: *expected,
                actual,
            })
        }
    }
}

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
    /// An engine that writes files itself (the uring engine, through its ring) takes the
    /// sink's full blocks to write before the first byte is handed in; the sink then starts no
    /// writer of its own. `None`: the sink writes its bytes itself (the default).
    fn take_block_writes(&mut self) -> Option<Arc<FileBlocks>> {
        None
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

    fn take_block_writes(&mut self) -> Option<Arc<FileBlocks>> {
        (**self).take_block_writes()
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
        let checked = SinkError::check_hash(hash, actual);
        self.verified = Some(checked.is_ok());
        checked.map(|()| Finished::Done)
    }

    fn abort(&mut self) {
        self.verified = Some(false);
    }
}
