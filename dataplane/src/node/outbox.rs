//! The node's outgoing packets, and the buffers they are written into. A packet the node passes
//! on (a forwarded datagram, a relay decision, a packet a local core built in the node's
//! scratch buffer) is copied into a spare buffer of MTU capacity rather than a fresh `Vec`;
//! the engine hands each buffer back with [`Outbox::recycle`] once its send completed, so a
//! node that forwards a steady stream allocates nothing per packet once its spares cover what
//! is in flight. An engine that sends from its own thread reserves them up front
//! ([`Outbox::reserve`]); one that keeps the packets (the simulator's links, the threaded
//! engine's threads) drops them, as before.

use control::{NodeAddr, Transmit};
use std::collections::VecDeque;

/// Most spare buffers an outbox keeps (beyond them, a recycled buffer is freed): enough for
/// every send slot of the io_uring engine full of segmented batches (64 slots × 64 datagrams).
pub const MAX_SPARE_BUFFERS: usize = 4096;
/// Packets the queue holds without growing, once reserved: a coalesced receive's worth of
/// forwards several times over.
const RESERVED_QUEUE: usize = 1024;

pub struct Outbox {
    queue: VecDeque<Transmit>,
    spare: Vec<Vec<u8>>,
    /// The capacity of a spare buffer: the topology's MTU.
    buffer_len: usize,
    /// Packets copied into an outgoing buffer ([`Outbox::push_copy`]).
    copies: u64,
    /// Buffers allocated because no spare was left.
    allocated: u64,
}

impl Outbox {
    pub fn new(mtu: usize) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            spare: Vec::new(),
            buffer_len: mtu,
            copies: 0,
            allocated: 0,
        }
    }

    /// Allocates `buffers` spares (at most [`MAX_SPARE_BUFFERS`]) and room for every spare and
    /// a long queue now, so that sending a stream allocates nothing while no more than that
    /// many packets are in flight.
    pub fn reserve(&mut self, buffers: usize) {
        self.spare.reserve_exact(MAX_SPARE_BUFFERS);
        self.queue.reserve(RESERVED_QUEUE);
        let missing = buffers
            .min(MAX_SPARE_BUFFERS)
            .saturating_sub(self.spare.len());
        for _ in 0..missing {
            self.spare.push(Vec::with_capacity(self.buffer_len));
        }
    }

    /// Queues a packet built elsewhere (a control-plane message) as it is.
    pub fn push_back(&mut self, t: Transmit) {
        self.queue.push_back(t);
    }

    /// Queues a copy of `bytes` for neighbour `to`, in a spare buffer when there is one.
    pub fn push_copy(&mut self, to: NodeAddr, bytes: &[u8]) {
        let mut packet = match self.spare.pop() {
            Some(spare) => spare,
            None => {
                self.allocated += 1;
                Vec::with_capacity(self.buffer_len.max(bytes.len()))
            }
        };
        packet.extend_from_slice(bytes);
        self.copies += 1;
        self.queue.push_back(Transmit { to, packet });
    }

    pub fn pop_front(&mut self) -> Option<Transmit> {
        self.queue.pop_front()
    }

    /// Takes back a packet's buffer once the engine is done with it, to be written again; one
    /// smaller than an MTU, or beyond [`MAX_SPARE_BUFFERS`], is freed.
    pub fn recycle(&mut self, mut packet: Vec<u8>) {
        if packet.capacity() >= self.buffer_len && self.spare.len() < MAX_SPARE_BUFFERS {
            packet.clear();
            self.spare.push(packet);
        }
    }

    /// Drops every queued packet (their buffers become spares).
    pub fn clear(&mut self) {
        while let Some(t) = self.queue.pop_front() {
            self.recycle(t.packet);
        }
    }

    /// Packets copied into an outgoing buffer since the node started.
    pub fn copies(&self) -> u64 {
        self.copies
    }

    /// Buffers allocated because every spare was in use, since the node started.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).expect("a node address")
    }

    /// A recycled buffer carries the next copy: same memory, the new bytes only.
    #[test]
    fn a_recycled_buffer_is_written_again() {
        let mut out = Outbox::new(1500);
        out.push_copy(n(1), &[1, 2, 3]);
        let first = out.pop_front().expect("a packet");
        assert_eq!(first.packet, [1, 2, 3]);
        let at = first.packet.as_ptr();
        out.recycle(first.packet);
        out.push_copy(n(2), &[4, 5]);
        let second = out.pop_front().expect("a packet");
        assert_eq!((second.to, second.packet.as_slice()), (n(2), &[4u8, 5][..]));
        assert_eq!(second.packet.as_ptr(), at);
        assert_eq!(out.copies(), 2);
        assert_eq!(out.allocated(), 1);
    }

    /// Reserved spares carry the first packets: nothing is allocated until they are all out.
    #[test]
    fn reserved_spares_come_first() {
        let mut out = Outbox::new(1500);
        out.reserve(2);
        out.push_copy(n(1), &[1]);
        out.push_copy(n(1), &[2]);
        assert_eq!(out.allocated(), 0);
        out.push_copy(n(1), &[3]);
        assert_eq!(out.allocated(), 1);
    }

    /// A buffer too small for an MTU is not kept: the next copy could outgrow it.
    #[test]
    fn a_small_buffer_is_not_kept() {
        let mut out = Outbox::new(1500);
        out.recycle(vec![0; 10]);
        assert!(out.spare.is_empty());
    }
}
