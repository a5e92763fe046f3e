//! io_uring: one multishot receive fills buffers the kernel picks from a provided buffer ring;
//! each datagram goes on with its own send, and its buffer returns to the ring when that send
//! completes. One `io_uring_enter` submits a run of sends and reaps a run of completions.

use crate::udp::{self, RawAddr};
use io_uring::types::{BufRingEntry, Fd};
use io_uring::{IoUring, cqueue, opcode, squeue};
use std::alloc::{self, Layout};
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

/// Buffers in the ring (a power of two, as the kernel requires).
const BUFFERS: u16 = 256;
const BUFFER_LEN: usize = 2048;
const GROUP: u16 = 1;
const QUEUE_DEPTH: u32 = 1024;
/// The receive's user data; a send's is the id of the buffer it sends.
const RECEIVE: u64 = u64::MAX;

/// The provided buffer ring: page-aligned entries shared with the kernel, and the buffers
/// they point at.
struct BufferRing {
    entries: *mut BufRingEntry,
    layout: Layout,
    data: Vec<u8>,
    tail: u16,
}

impl BufferRing {
    fn new() -> io::Result<BufferRing> {
        let layout = Layout::from_size_align(
            usize::from(BUFFERS) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut ring = BufferRing {
            entries,
            layout,
            data: vec![0; usize::from(BUFFERS) * BUFFER_LEN],
            tail: 0,
        };
        for id in 0..BUFFERS {
            ring.give_back(id);
        }
        Ok(ring)
    }

    fn register(&self, uring: &IoUring) -> io::Result<()> {
        // SAFETY: the entries stay allocated until after the ring is dropped (field order of
        // `Uring`), and are unregistered first.
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(self.entries as u64, BUFFERS, GROUP, 0)
        }
    }

    fn buffer(&self, id: u16) -> *const u8 {
        self.data[usize::from(id) * BUFFER_LEN..].as_ptr()
    }

    fn bytes(&self, id: u16, len: usize) -> &[u8] {
        let start = usize::from(id) * BUFFER_LEN;
        &self.data[start..start + len.min(BUFFER_LEN)]
    }

    /// Hands buffer `id` to the kernel again.
    fn give_back(&mut self, id: u16) {
        let slot = usize::from(self.tail & (BUFFERS - 1));
        let addr = self.buffer(id) as u64;
        // SAFETY: `slot` is inside the allocation; the kernel reads only entries before the
        // published tail, and this one is past it until the store below.
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(addr);
        entry.set_len(BUFFER_LEN as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is a u16 inside the first entry, aligned, shared with the kernel.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.entries).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.entries.cast(), self.layout) }
    }
}

/// The ring first: dropped (and so closed) before the buffers it points at.
struct Uring {
    ring: IoUring,
    buffers: BufferRing,
}

impl Uring {
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry names lives in `self.buffers`, which outlives the ring.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_receive(&mut self, fd: Fd) -> io::Result<()> {
        self.push(&opcode::RecvMulti::new(fd, GROUP).build().user_data(RECEIVE))
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        let _ = self.ring.submitter().unregister_buf_ring(GROUP);
    }
}

pub fn run(socket: &UdpSocket, to: RawAddr, forwarded: &AtomicU64) -> io::Result<()> {
    let mut uring = Uring {
        ring: IoUring::new(QUEUE_DEPTH)?,
        buffers: BufferRing::new()?,
    };
    uring.buffers.register(&uring.ring)?;
    let fd = Fd(socket.as_raw_fd());
    uring.arm_receive(fd)?;
    let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(QUEUE_DEPTH as usize);
    let mut sends_in_flight = 0usize;
    let mut stopping = false;
    loop {
        uring.ring.submit_and_wait(1)?;
        completions.clear();
        completions.extend(
            uring
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let mut rearm = false;
        for &(user_data, result, flags) in &completions {
            if user_data != RECEIVE {
                sends_in_flight -= 1;
                uring.buffers.give_back(user_data as u16);
                if result >= 0 {
                    forwarded.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            rearm |= !cqueue::more(flags);
            if result < 0 {
                // Every buffer is out in a send: the receive ends and is armed again.
                if -result == libc::ENOBUFS {
                    continue;
                }
                return Err(io::Error::from_raw_os_error(-result));
            }
            let Some(id) = cqueue::buffer_select(flags) else {
                return Err(io::Error::other("a receive completed without a buffer"));
            };
            let len = result as usize;
            if stopping || udp::is_stop(uring.buffers.bytes(id, len)) {
                stopping = true;
                uring.buffers.give_back(id);
                continue;
            }
            let send = opcode::Send::new(fd, uring.buffers.buffer(id), len as u32)
                .dest_addr(to.as_ptr())
                .dest_addr_len(RawAddr::len())
                .build()
                .user_data(u64::from(id));
            uring.push(&send)?;
            sends_in_flight += 1;
        }
        if stopping && sends_in_flight == 0 {
            return Ok(());
        }
        if rearm && !stopping {
            uring.arm_receive(fd)?;
        }
    }
}
