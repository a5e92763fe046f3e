//! Where a receiver's bytes go. Data arrives contiguous and in order; the sink hashes what it
//! is given and makes the result final only when the whole transfer's BLAKE3 hash matches.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};

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
}

// Bytes gathered before they are hashed and written in one piece: BLAKE3 hashes a long run
// several times faster than segment-sized pieces (it hashes many 1 KiB chunks at once), and
// one write per block spares the system calls.
use control::settings::receiver::STAGED_BYTES;

/// Writes `NAME.partial` in a directory and renames it to `NAME` only after a verified hash.
pub struct FileSink {
    file: Option<File>,
    /// What was handed in since the last block went out (at most [`STAGED_BYTES`]).
    staged: Vec<u8>,
    partial: PathBuf,
    final_path: PathBuf,
    written: u64,
    hasher: blake3::Hasher,
    /// The sync to disk and the rename of a verified file, on a thread of their own.
    finishing: Option<JoinHandle<io::Result<()>>>,
}

impl FileSink {
    /// Creates (or truncates) `dir/NAME.partial`. `name` must be a plain file name.
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
        let file = File::create(&partial)?;
        Ok(FileSink {
            file: Some(file),
            staged: Vec::with_capacity(STAGED_BYTES),
            partial,
            final_path: dir.join(name),
            written: 0,
            hasher: blake3::Hasher::new(),
            finishing: None,
        })
    }

    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Hashes and writes what is staged.
    fn write_staged(&mut self) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("sink already closed"))?;
        self.hasher.update(&self.staged);
        let written = file.write_all(&self.staged);
        self.staged.clear();
        written
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
        if self.file.is_none() {
            return Err(io::Error::other("sink already closed").into());
        }
        let mut rest = data;
        while !rest.is_empty() {
            let room = STAGED_BYTES - self.staged.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.staged.extend_from_slice(now);
            if self.staged.len() == STAGED_BYTES {
                self.write_staged()?;
            }
            rest = later;
        }
        self.written += data.len() as u64;
        Ok(())
    }

    fn finish(&mut self, hash: &[u8; 32]) -> Result<Finished, SinkError> {
        self.write_staged()?;
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("sink already closed"))?;
        let actual = *self.hasher.finalize().as_bytes();
        if actual != *hash {
            return Err(SinkError::HashMismatch {
                expected: *hash,
                actual,
            });
        }
        drop(file);
        let (partial, final_path) = (self.partial.clone(), self.final_path.clone());
        let make_final = move || -> io::Result<()> {
            // Durable before it is renamed: a crash never leaves a short file under the
            // final name. Any descriptor of the file syncs its data.
            File::open(&partial)?.sync_all()?;
            fs::rename(&partial, &final_path)
        };
        match thread::Builder::new()
            .name("sink-sync".into())
            .spawn(make_final)
        {
            Ok(handle) => {
                self.finishing = Some(handle);
                Ok(Finished::Pending)
            }
            // No thread to be had: do it here.
            Err(_) => {
                File::open(&self.partial)?.sync_all()?;
                fs::rename(&self.partial, &self.final_path)?;
                Ok(Finished::Done)
            }
        }
    }

    fn poll_finished(&mut self) -> Option<Result<(), SinkError>> {
        let handle = self.finishing.take_if(|h| h.is_finished())?;
        Some(match handle.join() {
            Ok(result) => result.map_err(SinkError::Io),
            Err(_) => Err(io::Error::other("the thread syncing the file panicked").into()),
        })
    }

    fn abort(&mut self) {
        // Best effort: the partial file is kept for inspection whatever happens here.
        let _ = self.write_staged();
        self.file = None;
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
