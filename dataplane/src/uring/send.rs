//! Send slots: each holds one `sendmsg` in flight (what keeps its packets' bytes alive, their
//! iovecs, the destination and the `UDP_SEGMENT` control message) until its completion.
//! Consecutive packets of one size and one group to one destination share a slot and leave as
//! one segmented (GSO) send: the kernel reads the packets where they are (a receive buffer, a node's
//! outgoing buffer, a buffer of their own), through one iovec per contiguous run, and cuts
//! them back into datagrams.

use super::socket::{self, SegmentControl};
use crate::node::BufferId;
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

/// What keeps a packet's bytes where they are until its send completed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// A buffer of its own, dropped after the send.
    Owned(Vec<u8>),
    /// The node's outgoing buffer of this id, one reference of which the send holds.
    Node(BufferId),
    /// The receive buffer of this id, one reference of which the send holds.
    Receive(u16),
}

/// A packet ready to leave: `len` bytes at `at`, which `holder` keeps alive.
pub(crate) struct Outgoing {
    pub dest: SocketAddr,
    pub at: *const u8,
    pub len: usize,
    /// The group the packet is steered by at its next hop (0: none): a segmented send holds
    /// one group's packets only, as the receiving node's kernel steers it whole, by its first.
    pub group: u16,
    pub holder: Holder,
}

impl Outgoing {
    /// `bytes`, which `holder` keeps where they are until the send completed.
    pub fn held(dest: SocketAddr, bytes: &[u8], holder: Holder) -> Outgoing {
        Outgoing {
            dest,
            at: bytes.as_ptr(),
            len: bytes.len(),
            group: steer_group(bytes),
            holder,
        }
    }

    pub fn owned(dest: SocketAddr, packet: Vec<u8>) -> Outgoing {
        Outgoing {
            dest,
            at: packet.as_ptr(),
            len: packet.len(),
            group: steer_group(&packet),
            holder: Holder::Owned(packet),
        }
    }
}

fn steer_group(bytes: &[u8]) -> u16 {
    control::wire::steer::group_of(bytes).map_or(0, |g| g.get())
}

struct Slot {
    holders: Vec<Holder>,
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
                holders: Vec::with_capacity(MAX_SEGMENTS),
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
        let (dest, size, group) = (first.dest, first.len, first.group);
        let slot = &mut self.slots[index];
        slot.iov.clear();
        let mut total = 0usize;
        while let Some(next) = pending.front() {
            let len = next.len;
            let fits = slot.holders.is_empty()
                || (self.gso
                    && next.dest == dest
                    && next.group == group
                    && len <= size
                    && len > 0
                    && slot.holders.len() < MAX_SEGMENTS
                    && total + len <= MAX_GSO_BYTES
                    && size <= usize::from(u16::MAX));
            if !fits {
                break;
            }
            let Some(out) = pending.pop_front() else {
                break;
            };
            total += len;
            // The segments of one coalesced receive forwarded whole lie end to end: one iovec.
            match slot.iov.last_mut() {
                Some(last)
                    if last
                        .iov_base
                        .cast_const()
                        .cast::<u8>()
                        .wrapping_add(last.iov_len)
                        == out.at =>
                {
                    last.iov_len += len;
                }
                _ => slot.iov.push(libc::iovec {
                    iov_base: out.at.cast_mut().cast(),
                    iov_len: len,
                }),
            }
            slot.holders.push(out.holder);
            if len < size {
                // Only the last segment may be short.
                break;
            }
        }
        let (addr, addr_len) = socket::sockaddr(dest);
        slot.addr = addr;
        // SAFETY: all-zero is a valid msghdr.
        slot.msg = unsafe { zeroed() };
        slot.msg.msg_name = (&raw mut slot.addr).cast();
        slot.msg.msg_namelen = addr_len;
        slot.msg.msg_iov = slot.iov.as_mut_ptr();
        slot.msg.msg_iovlen = slot.iov.len() as _;
        if slot.holders.len() > 1 {
            let len = socket::write_segment(&mut slot.control, size as u16);
            slot.msg.msg_control = slot.control.as_mut_ptr().cast();
            slot.msg.msg_controllen = len as _;
        }
        let entry = opcode::SendMsg::new(Fd(fd), &raw const slot.msg).build();
        Some((index, entry))
    }

    /// The send of `index` completed (or failed): what held its packets' bytes goes to
    /// `release` (a reference to a receive or outgoing buffer, which may then be written
    /// again) and the slot is free again. Returns how many datagrams it carried.
    pub fn complete(&mut self, index: usize, mut release: impl FnMut(Holder)) -> u64 {
        let Some(slot) = self.slots.get_mut(index) else {
            return 0;
        };
        let datagrams = slot.holders.len() as u64;
        for holder in slot.holders.drain(..) {
            release(holder);
        }
        slot.iov.clear();
        if datagrams > 0 {
            self.free.push(index);
        }
        datagrams
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest() -> SocketAddr {
        "127.0.0.1:9".parse().expect("an address")
    }

    /// Three packets of one size to one destination lying end to end in one buffer (the
    /// segments of a coalesced receive) leave as one send through one iovec; its completion
    /// releases each packet's holder exactly once, and a second completion of the same slot
    /// releases nothing.
    #[test]
    fn a_completed_send_releases_each_holder_once() {
        let buffer = [7u8; 300];
        let mut pending: VecDeque<Outgoing> = (0..3)
            .map(|i| Outgoing::held(dest(), &buffer[i * 100..(i + 1) * 100], Holder::Receive(4)))
            .collect();
        pending.push_back(Outgoing::owned(dest(), vec![1; 100]));
        let mut slots = SendSlots::new(2, true);
        let (index, _) = slots.fill(&mut pending, -1).expect("a free slot");
        assert!(pending.is_empty());
        assert_eq!(
            slots.slots[index].iov.len(),
            2,
            "the receive's run is one iovec"
        );
        assert_eq!(slots.slots[index].iov[0].iov_len, 300);
        let mut released = Vec::new();
        assert_eq!(slots.complete(index, |h| released.push(h)), 4);
        assert_eq!(
            released,
            [
                Holder::Receive(4),
                Holder::Receive(4),
                Holder::Receive(4),
                Holder::Owned(vec![1; 100])
            ]
        );
        assert!(slots.idle());
        released.clear();
        assert_eq!(slots.complete(index, |h| released.push(h)), 0);
        assert!(released.is_empty());
        assert!(slots.idle(), "the slot is free once, not twice");
    }

    /// Packets to two destinations take two slots; with GSO off, one packet per send.
    #[test]
    fn a_send_carries_one_destination_and_one_size() {
        let other: SocketAddr = "127.0.0.1:10".parse().expect("an address");
        let mut pending = VecDeque::from([
            Outgoing::owned(dest(), vec![0; 100]),
            Outgoing::owned(other, vec![0; 100]),
            Outgoing::owned(other, vec![0; 200]),
        ]);
        let mut slots = SendSlots::new(4, true);
        let (first, _) = slots.fill(&mut pending, -1).expect("a slot");
        assert_eq!(slots.slots[first].holders.len(), 1);
        let (second, _) = slots.fill(&mut pending, -1).expect("a slot");
        assert_eq!(
            slots.slots[second].holders.len(),
            1,
            "a larger packet starts a send"
        );
        slots.disable_gso();
        let (third, _) = slots.fill(&mut pending, -1).expect("a slot");
        assert_eq!(slots.slots[third].holders.len(), 1);
        assert!(pending.is_empty());
    }
}
