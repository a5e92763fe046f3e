//! Send slots: each holds one `sendmsg` in flight (its packets, their iovecs, the destination
//! and the `UDP_SEGMENT` control message) until its completion. Consecutive packets of one
//! size to one destination share a slot and leave as one segmented (GSO) send: the kernel
//! reads the packets where they are, through one iovec each, and cuts them back into datagrams.

use super::socket::{self, SegmentControl};
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types::Fd;
use std::collections::VecDeque;
use std::mem::zeroed;
use std::net::SocketAddr;

// The kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels, 128 on newer.
pub(crate) use control::settings::uring::MAX_SEGMENTS;
/// Most payload bytes in one segmented send: one UDP datagram's worth.
const MAX_GSO_BYTES: usize = 65_000;

/// A packet ready to leave.
pub(crate) struct Outgoing {
    pub dest: SocketAddr,
    pub packet: Vec<u8>,
}

struct Slot {
    packets: Vec<Vec<u8>>,
    iov: Vec<libc::iovec>,
    addr: libc::sockaddr_storage,
    msg: libc::msghdr,
    control: SegmentControl,
}

pub(crate) struct SendSlots {
    /// Boxed and never resized: the kernel reads a slot's header, iovecs and address while its
    /// send is in flight.
    slots: Box<[Slot]>,
    free: Vec<usize>,
    gso: bool,
}

impl SendSlots {
    pub fn new(count: usize, gso: bool) -> SendSlots {
        let count = count.max(1);
        let slots = (0..count)
            .map(|_| Slot {
                packets: Vec::with_capacity(MAX_SEGMENTS),
                iov: Vec::with_capacity(MAX_SEGMENTS),
                // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
                addr: unsafe { zeroed() },
                msg: unsafe { zeroed() },
                control: [0; 4],
            })
            .collect();
        SendSlots {
            slots,
            free: (0..count).rev().collect(),
            gso,
        }
    }

    pub fn disable_gso(&mut self) {
        self.gso = false;
    }

    /// No send in flight.
    pub fn idle(&self) -> bool {
        self.free.len() == self.slots.len()
    }

    /// Takes a free slot and the longest run at the front of `pending` that can leave as one
    /// send: one destination, one size (the last may be shorter), within the kernel's limits.
    /// Returns the slot and its `sendmsg` entry (without user data), or `None` when every slot
    /// is in flight.
    pub fn fill(
        &mut self,
        pending: &mut VecDeque<Outgoing>,
        fd: i32,
    ) -> Option<(usize, squeue::Entry)> {
        let first = pending.front()?;
        let index = self.free.pop()?;
        let (dest, size) = (first.dest, first.packet.len());
        let slot = &mut self.slots[index];
        let mut total = 0usize;
        while let Some(next) = pending.front() {
            let len = next.packet.len();
            let fits = slot.packets.is_empty()
                || (self.gso
                    && next.dest == dest
                    && len <= size
                    && len > 0
                    && slot.packets.len() < MAX_SEGMENTS
                    && total + len <= MAX_GSO_BYTES
                    && size <= usize::from(u16::MAX));
            if !fits {
                break;
            }
            let Some(out) = pending.pop_front() else {
                break;
            };
            total += len;
            slot.packets.push(out.packet);
            if len < size {
                // Only the last segment may be short.
                break;
            }
        }
        slot.iov.clear();
        for p in &slot.packets {
            slot.iov.push(libc::iovec {
                iov_base: p.as_ptr().cast_mut().cast(),
                iov_len: p.len(),
            });
        }
        let (addr, addr_len) = socket::sockaddr(dest);
        slot.addr = addr;
        // SAFETY: all-zero is a valid msghdr.
        slot.msg = unsafe { zeroed() };
        slot.msg.msg_name = (&raw mut slot.addr).cast();
        slot.msg.msg_namelen = addr_len;
        slot.msg.msg_iov = slot.iov.as_mut_ptr();
        slot.msg.msg_iovlen = slot.iov.len() as _;
        if slot.packets.len() > 1 {
            let len = socket::write_segment(&mut slot.control, size as u16);
            slot.msg.msg_control = slot.control.as_mut_ptr().cast();
            slot.msg.msg_controllen = len as _;
        }
        let entry = opcode::SendMsg::new(Fd(fd), &raw const slot.msg).build();
        Some((index, entry))
    }

    /// The send of `index` completed: its packets go to `recycle` (whose buffers the node
    /// writes its next packets into) and the slot is free again. Returns how many datagrams it
    /// carried.
    pub fn complete(&mut self, index: usize, mut recycle: impl FnMut(Vec<u8>)) -> u64 {
        let Some(slot) = self.slots.get_mut(index) else {
            return 0;
        };
        let datagrams = slot.packets.len() as u64;
        for packet in slot.packets.drain(..) {
            recycle(packet);
        }
        slot.iov.clear();
        if datagrams > 0 {
            self.free.push(index);
        }
        datagrams
    }
}
