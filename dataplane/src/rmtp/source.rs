//! Where a sender's bytes come from: random access, so repairs re-read instead of buffering.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The bytes of one transfer. `read_at` may be called for any offset below `len`, in any order
/// (repairs), so a sender keeps no copy of what it sent.
pub trait Source {
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; returns the bytes read (short only at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A transfer held in memory.
#[derive(Clone, Debug, Default)]
pub struct MemSource {
    data: Vec<u8>,
}

impl MemSource {
    pub fn new(data: Vec<u8>) -> Self {
        MemSource { data }
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

impl Source for MemSource {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        let Ok(start) = usize::try_from(offset) else {
            return 0;
        };
        let Some(rest) = self.data.get(start..) else {
            return 0;
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        n
    }
}

// Bytes a `FileSource` reads ahead at once for a sender going forward.
use control::settings::sender::READ_AHEAD;

/// A transfer read from a file with positional reads (`pread`), so a sender and its repairs need
/// no shared cursor. Reading forward it reads [`READ_AHEAD`] bytes at once and serves the
/// segments from them (one system call per segment cost more than the segment's send); a read
/// elsewhere (a repair) is one `pread` of its own and keeps the block. The length is taken when
/// the file is opened; a file that shrinks later yields short reads, which the content hash then
/// reports to the receivers.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
    ahead: RefCell<ReadAhead>,
}

/// The bytes of the file at `start..start + filled`.
#[derive(Debug)]
struct ReadAhead {
    start: u64,
    filled: usize,
    bytes: Box<[u8]>,
}

impl ReadAhead {
    fn end(&self) -> u64 {
        self.start + self.filled as u64
    }

    /// The block's bytes from `offset` on, if it holds `offset`.
    fn from(&self, offset: u64) -> Option<&[u8]> {
        let at = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        (at < self.filled).then(|| &self.bytes[at..self.filled])
    }
}

impl FileSource {
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(FileSource {
            file,
            len: meta.len(),
            ahead: RefCell::new(ReadAhead {
                start: 0,
                filled: 0,
                bytes: vec![0; READ_AHEAD].into_boxed_slice(),
            }),
        })
    }

    /// Fills `buf` from `offset` with positional reads, as far as the file goes.
    fn pread(&self, offset: u64, buf: &mut [u8]) -> usize {
        let want = usize::try_from(self.len.saturating_sub(offset)).unwrap_or(usize::MAX);
        let buf_len = buf.len().min(want);
        let mut done = 0;
        while done < buf_len {
            match self
                .file
                .read_at(&mut buf[done..buf_len], offset + done as u64)
            {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The trait has no error path: a short read is what the sender can act on.
                Err(_) => break,
            }
        }
        done
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        let mut ahead = self.ahead.borrow_mut();
        if ahead.from(offset).is_none() {
            // Going forward (the next block, or the first read): read ahead from here.
            // Anywhere else (a repair behind): a read of its own, the block kept.
            let forward = ahead.filled == 0
                || (offset >= ahead.end() && offset - ahead.end() < READ_AHEAD as u64);
            if !forward {
                return self.pread(offset, buf);
            }
            let mut bytes = std::mem::take(&mut ahead.bytes);
            ahead.filled = self.pread(offset, &mut bytes);
            ahead.start = offset;
            ahead.bytes = bytes;
        }
        let held = ahead.from(offset).unwrap_or(&[]);
        let n = held.len().min(buf.len());
        buf[..n].copy_from_slice(&held[..n]);
        if n < buf.len() && !held.is_empty() {
            // The request runs past the block: the rest from the file.
            return n + self.pread(offset + n as u64, &mut buf[n..]);
        }
        n
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        (**self).read_at(offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_source_reads_any_offset_and_stops_at_the_end() {
        let dir = std::env::temp_dir().join(format!("burghers-filesource-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let src = FileSource::open(&path).unwrap();
        assert_eq!(src.len(), 5000);
        let mut buf = [0u8; 1000];
        assert_eq!(src.read_at(4500, &mut buf), 500);
        assert_eq!(&buf[..500], &data[4500..]);
        assert_eq!(src.read_at(1234, &mut buf), 1000);
        assert_eq!(&buf[..], &data[1234..2234]);
        assert_eq!(src.read_at(5000, &mut buf), 0);
        assert_eq!(src.read_at(u64::MAX, &mut buf), 0);
        assert!(
            FileSource::open(&dir).is_err(),
            "a directory is not a source"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_source_reads_ahead_forward_and_serves_repairs_behind() {
        let dir = std::env::temp_dir().join(format!("burghers-readahead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data: Vec<u8> = (0..600_000u32).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let src = FileSource::open(&path).unwrap();
        let mut buf = [0u8; 1400];
        let mut offset = 0u64;
        let mut sent = Vec::new();
        while offset < src.len() {
            let n = src.read_at(offset, &mut buf);
            assert!(n > 0, "short read at {offset}");
            sent.extend_from_slice(&buf[..n]);
            offset += n as u64;
            if offset.is_multiple_of(100 * 1400) {
                // A repair far behind, then on forward.
                let back = offset / 3;
                let m = src.read_at(back, &mut buf);
                assert_eq!(&buf[..m], &data[back as usize..back as usize + m]);
            }
        }
        assert_eq!(sent, data, "segments read forward are the file");
        // A read across the end of the block held.
        let mut wide = vec![0u8; 3000];
        let at = READ_AHEAD as u64 - 1000;
        assert_eq!(src.read_at(at, &mut wide), 3000);
        assert_eq!(&wide[..], &data[at as usize..at as usize + 3000]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
