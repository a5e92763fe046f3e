//! A provided-buffer ring: receive buffers the kernel picks from for each multishot `recvmsg`
//! completion, handed back (recycled) once the engine has handled what they hold.

use io_uring::Submitter;
use io_uring::types::BufRingEntry;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// The kernel wants the ring of entries page-aligned.
const RING_ALIGN: usize = 4096;

pub(crate) struct BufRing {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    buffers: NonNull<u8>,
    buffers_layout: Layout,
    count: u16,
    buf_size: usize,
    /// Where the next recycled buffer goes; published to the kernel by [`BufRing::publish`].
    tail: u16,
    group: u16,
}

impl BufRing {
    /// `count` buffers (a power of two, at most 32768) of `buf_size` bytes each, registered as
    /// buffer group `group` and all handed to the kernel.
    pub fn register(
        submitter: &Submitter<'_>,
        count: u16,
        buf_size: usize,
        group: u16,
    ) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || buf_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("receive buffers: {count} is not a power of two up to 32768"),
            ));
        }
        let entries_layout =
            Layout::from_size_align(usize::from(count) * size_of::<BufRingEntry>(), RING_ALIGN)
                .map_err(io::Error::other)?;
        let buffers_layout =
            Layout::from_size_align(usize::from(count) * buf_size, 64).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size.
        let (entries, buffers) =
            unsafe { (alloc_zeroed(entries_layout), alloc_zeroed(buffers_layout)) };
        let (Some(entries), Some(buffers)) = (
            NonNull::new(entries.cast::<BufRingEntry>()),
            NonNull::new(buffers),
        ) else {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        };
        let mut ring = BufRing {
            entries,
            entries_layout,
            buffers,
            buffers_layout,
            count,
            buf_size,
            tail: 0,
            group,
        };
        // SAFETY: the ring memory is page-aligned, zeroed, `count` entries long, and lives
        // until `self` drops, after the io_uring that uses it (the engine drops its ring first).
        unsafe {
            submitter.register_buf_ring_with_flags(
                ring.entries.as_ptr() as u64,
                count,
                group,
                0,
            )?;
        }
        for bid in 0..count {
            ring.recycle(bid);
        }
        ring.publish();
        Ok(ring)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// The first `len` bytes of buffer `bid`, which the kernel filled and handed over in a
    /// completion (it does not touch it again until it is recycled).
    pub fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid % self.count);
        let len = len.min(self.buf_size);
        // SAFETY: in bounds of the buffers' allocation; the kernel is done with this buffer.
        unsafe { std::slice::from_raw_parts(self.buffers.as_ptr().add(bid * self.buf_size), len) }
    }

    /// `len` bytes from `offset` in buffer `bid` (which the kernel filled and the engine has
    /// not recycled yet); `None` beyond the buffer.
    pub fn bytes_at(&self, bid: u16, offset: usize, len: usize) -> Option<&[u8]> {
        if bid >= self.count || offset.checked_add(len)? > self.buf_size {
            return None;
        }
        // SAFETY: in bounds of buffer `bid`, which the kernel is done with until it is recycled.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.buffers
                    .as_ptr()
                    .add(usize::from(bid) * self.buf_size + offset),
                len,
            )
        })
    }

    /// Buffer `bid` as the ring numbers it (the kernel's ids are below the count).
    pub fn index(&self, bid: u16) -> u16 {
        bid % self.count
    }

    /// Gives buffer `bid` back to the kernel (seen once [`BufRing::publish`] runs).
    pub fn recycle(&mut self, bid: u16) {
        let bid = bid % self.count;
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot` is within the ring; the kernel reads entries only up to the published
        // tail, and this one is beyond it.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        // SAFETY: in bounds of the buffers' allocation.
        let addr = unsafe { self.buffers.as_ptr().add(usize::from(bid) * self.buf_size) };
        entry.set_addr(addr as u64);
        entry.set_len(u32::try_from(self.buf_size).unwrap_or(u32::MAX));
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    pub fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of the ring, which is valid and
        // aligned for a u16; the kernel reads it atomically.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `register` with these layouts; the ring that used them is gone.
        unsafe {
            dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            dealloc(self.buffers.as_ptr(), self.buffers_layout);
        }
    }
}
