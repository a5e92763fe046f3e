//! Where a sender's bytes come from: random access, so repairs re-read instead of buffering.

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

impl<S: Source + ?Sized> Source for Box<S> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        (**self).read_at(offset, buf)
    }
}
