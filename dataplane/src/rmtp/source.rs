//! Where a sender's bytes come from: random access, so repairs re-read instead of buffering.

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

/// A transfer read from a file with positional reads (`pread`), so a sender thread and its
/// repairs need no shared cursor and nothing of the file is held in memory. The length is taken
/// when the file is opened; a file that shrinks later yields short reads, which the content hash
/// then reports to the receivers.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
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
        })
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
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
}
