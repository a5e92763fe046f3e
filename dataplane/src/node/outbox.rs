//! The node's outgoing packets, and the buffers they are written into.
//!
//! A packet the node passes on is queued by reference wherever its bytes already are:
//!
//! - bytes of the datagram being handled, when the engine handed it in with a token
//!   ([`Outbox::set_input`]): the engine sends them from its receive buffer ([`Payload::Input`]);
//! - bytes a local core built in the buffer the outbox lent it ([`Outbox::lend`]): every
//!   neighbour the packet goes to refers to that one buffer, which counts its references and
//!   becomes free again when the engine released the last ([`Payload::Shared`]).
//!
//! Anything else (a forward when the engine gave no token: the simulator) is copied once into
//! a free buffer of MTU capacity, counted as a payload copy. Buffers live in one table indexed
//! by id, reserved up front by an engine that sends from its own thread ([`Outbox::reserve`]),
//! so that a steady stream allocates nothing per packet; an engine that keeps its packets (the
//! simulator's links) takes owned copies instead ([`Outbox::pop_transmit`]).

use control::{NodeAddr, Transmit};
use std::collections::VecDeque;

/// Most free buffers an outbox keeps with their memory (beyond them, a released buffer's
/// memory is freed): enough for every send slot of the io_uring engine full of segmented
/// batches (64 slots × 64 datagrams).
pub const MAX_SPARE_BUFFERS: usize = 4096;
/// Most free batch buffers an outbox keeps with their memory: as many datagrams as
/// [`MAX_SPARE_BUFFERS`] at the default batch, so a burst of a receiver window's worth of
/// batches allocates nothing either.
pub const MAX_SPARE_BATCHES: usize = 128;
/// Packets the queue holds without growing, once reserved: a coalesced receive's worth of
/// forwards several times over.
const RESERVED_QUEUE: usize = 1024;

/// The index of one of the outbox's buffers.
pub type BufferId = u32;

/// Where a packet's bytes are within a buffer: `len` bytes from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub offset: u32,
    pub len: u32,
}

impl Span {
    pub fn range(self) -> std::ops::Range<usize> {
        let start = self.offset as usize;
        start..start + self.len as usize
    }

    /// The datagrams of a segmented packet run: `size` bytes each, the last possibly shorter
    /// (a size of 0 is the whole span).
    pub fn segments(self, size: usize) -> impl Iterator<Item = Span> {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        let size = if size == 0 { self.len.max(1) } else { size };
        (0..self.len.div_ceil(size)).map(move |i| {
            let at = i * size;
            Span {
                offset: self.offset + at,
                len: size.min(self.len - at),
            }
        })
    }
}

/// Where a queued packet's bytes are.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload {
    /// A buffer of its own (a control-plane message), handed over whole.
    Owned(Vec<u8>),
    /// Part of the outbox's buffer `id` ([`Outbox::bytes`]): the engine hands each such
    /// reference back with [`Outbox::release`] once its send completed (or failed).
    Shared { id: BufferId, span: Span },
    /// Part of the datagram the engine handed in with `token`: the engine keeps that receive
    /// buffer until this send completed.
    Input { token: u64, span: Span },
}

/// A packet for neighbour `to`, or with `segment_size`, a run of datagrams for it (as quinn's
/// `Transmit` describes a segmented send).
#[derive(Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: NodeAddr,
    pub payload: Payload,
    /// `Some(size)`: the payload is datagrams of `size` bytes laid end to end, the last
    /// possibly shorter, which can leave as one segmented send; each holds its own reference
    /// to a [`Payload::Shared`] buffer (released once per datagram). `None`: one datagram.
    pub segment_size: Option<usize>,
}

impl Outgoing {
    fn one(to: NodeAddr, payload: Payload) -> Outgoing {
        Outgoing {
            to,
            payload,
            segment_size: None,
        }
    }

    /// The datagrams it carries.
    pub fn datagrams(&self) -> usize {
        let len = match &self.payload {
            Payload::Owned(_) => return 1,
            Payload::Shared { span, .. } | Payload::Input { span, .. } => span.len as usize,
        };
        match self.segment_size {
            Some(size) if size > 0 => len.div_ceil(size).max(1),
            _ => 1,
        }
    }
}

/// A range of memory whose bytes are queued by reference rather than copied.
#[derive(Clone, Copy, Debug)]
struct Region {
    start: usize,
    len: usize,
}

impl Region {
    fn of(bytes: &[u8]) -> Region {
        Region {
            start: bytes.as_ptr() as usize,
            len: bytes.len(),
        }
    }

    /// Where `bytes` lie within this region, if they do (compared by address: the same memory,
    /// not equal contents).
    fn span_of(self, bytes: &[u8]) -> Option<Span> {
        let offset = (bytes.as_ptr() as usize).checked_sub(self.start)?;
        if offset.checked_add(bytes.len())? > self.len {
            return None;
        }
        Some(Span {
            offset: u32::try_from(offset).ok()?,
            len: u32::try_from(bytes.len()).ok()?,
        })
    }
}

struct Buffer {
    /// `buffer_len` bytes, or `batch_len` for a batch buffer (empty while lent, or once its
    /// memory was freed).
    bytes: Vec<u8>,
    /// Queued or in-flight sends that refer to it: free when none is left.
    refs: u32,
    /// One of the buffers a local sender builds a batch of datagrams in
    /// ([`Outbox::lend_batch`]), which go back to their own free list.
    batch: bool,
}

pub struct Outbox {
    queue: VecDeque<Outgoing>,
    /// Room for regrouping the end of the queue by neighbour ([`Outbox::group_by_neighbour`]).
    regroup: Vec<Option<Outgoing>>,
    /// The neighbours of the regrouped packets, in the order of their first.
    neighbours: Vec<NodeAddr>,
    buffers: Vec<Buffer>,
    free: Vec<BufferId>,
    /// Free batch buffers.
    batch_free: Vec<BufferId>,
    /// The capacity of a buffer: the topology's MTU.
    buffer_len: usize,
    /// The capacity of a batch buffer: a sender's batch of datagrams of one MTU.
    batch_len: usize,
    /// Packets the lent buffer holds (a batch's count; 1 otherwise), for `built`.
    lent_packets: u64,
    /// The datagram being handled, when the engine can send from where it lies.
    input: Option<(u64, Region)>,
    /// The buffer lent to a core, and where its bytes are while lent.
    lent: Option<(BufferId, Region)>,
    /// Packets copied into an outgoing buffer.
    copies: u64,
    /// Lent buffers that went out with at least one reference: packets built once.
    built: u64,
    /// Sends queued by reference to the input.
    input_references: u64,
    /// Buffers allocated because no free one was left.
    allocated: u64,
    /// The buffers [`Outbox::reserve`] was asked for, for [`Outbox::reserve_batches`].
    reserved: usize,
    batches_reserved: bool,
}

impl Outbox {
    pub fn new(mtu: usize) -> Outbox {
        Outbox::with_batches(mtu, 1)
    }

    /// An outbox whose batch buffers hold `batch` datagrams of one MTU ([`Outbox::lend_batch`]).
    pub fn with_batches(mtu: usize, batch: usize) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            regroup: Vec::new(),
            neighbours: Vec::new(),
            buffers: Vec::new(),
            free: Vec::new(),
            batch_free: Vec::new(),
            buffer_len: mtu,
            batch_len: mtu.saturating_mul(batch.max(1)),
            lent_packets: 1,
            input: None,
            lent: None,
            copies: 0,
            built: 0,
            input_references: 0,
            allocated: 0,
            reserved: 0,
            batches_reserved: false,
        }
    }

    /// Allocates `buffers` free buffers (at most [`MAX_SPARE_BUFFERS`]) and room for a long
    /// queue now, so that sending a stream allocates nothing while no more than that many
    /// packets are in flight. A local sender's batch buffers wait for
    /// [`Outbox::reserve_batches`]: a node that only relays never needs them.
    pub fn reserve(&mut self, buffers: usize) {
        self.reserved = self.reserved.max(buffers);
        self.buffers.reserve(MAX_SPARE_BUFFERS);
        self.free.reserve(MAX_SPARE_BUFFERS);
        self.queue.reserve(RESERVED_QUEUE);
        self.regroup.reserve(RESERVED_QUEUE);
        self.neighbours.reserve(crate::rmtp::relay::MAX_FANOUT);
        let missing = buffers
            .min(MAX_SPARE_BUFFERS)
            .saturating_sub(self.free.len());
        for _ in 0..missing {
            let id = self.new_buffer(false);
            self.free.push(id);
        }
    }

    /// Allocates, once, the batch buffers a local sender builds in: as many as the reserved
    /// buffers would hold datagrams one by one (none without batches: a sender then builds in
    /// the buffers [`Outbox::reserve`] made).
    pub fn reserve_batches(&mut self) {
        if std::mem::replace(&mut self.batches_reserved, true) {
            return;
        }
        let batches = if self.batch_len > self.buffer_len {
            (self.reserved * self.buffer_len)
                .div_ceil(self.batch_len)
                .min(MAX_SPARE_BATCHES)
        } else {
            0
        };
        self.batch_free.reserve(MAX_SPARE_BATCHES);
        for _ in self.batch_free.len()..batches {
            let id = self.new_buffer(true);
            self.batch_free.push(id);
        }
    }

    /// A buffer of `buffer_len` bytes (`batch_len` for a batch buffer) added to the table (not
    /// yet free or lent).
    fn new_buffer(&mut self, batch: bool) -> BufferId {
        let id = BufferId::try_from(self.buffers.len()).unwrap_or(BufferId::MAX);
        let len = if batch {
            self.batch_len
        } else {
            self.buffer_len
        };
        self.buffers.push(Buffer {
            bytes: vec![0; len],
            refs: 0,
            batch,
        });
        id
    }

    /// A free buffer of at least `len` bytes, allocated (and counted) when none is left.
    fn take_free(&mut self, len: usize) -> BufferId {
        let Some(id) = self.free.pop() else {
            self.allocated += 1;
            let id = self.new_buffer(false);
            self.grow(id, len);
            return id;
        };
        if self.buffers[id as usize].bytes.len() < len.max(self.buffer_len) {
            self.allocated += 1;
            self.grow(id, len);
        }
        id
    }

    /// A free batch buffer, allocated (and counted) when none is left.
    fn take_batch(&mut self) -> BufferId {
        let Some(id) = self.batch_free.pop() else {
            self.allocated += 1;
            return self.new_buffer(true);
        };
        if self.buffers[id as usize].bytes.len() < self.batch_len {
            self.allocated += 1;
            self.grow(id, self.batch_len);
        }
        id
    }

    fn grow(&mut self, id: BufferId, len: usize) {
        let bytes = &mut self.buffers[id as usize].bytes;
        bytes.resize(len.max(self.buffer_len), 0);
    }

    /// Queues a packet built elsewhere (a control-plane message) as it is.
    pub fn push_back(&mut self, t: Transmit) {
        self.queue
            .push_back(Outgoing::one(t.to, Payload::Owned(t.packet)));
    }

    /// Queues `bytes`, one whole packet, for neighbour `to`: by reference when they lie in the
    /// input or the lent buffer, else as a copy in a free buffer.
    pub fn push(&mut self, to: NodeAddr, bytes: &[u8]) {
        if let Some((token, input)) = self.input
            && let Some(span) = input.span_of(bytes)
        {
            self.input_references += 1;
            let payload = Payload::Input { token, span };
            self.queue.push_back(Outgoing::one(to, payload));
            return;
        }
        if let Some((id, lent)) = self.lent
            && let Some(span) = lent.span_of(bytes)
        {
            self.buffers[id as usize].refs += 1;
            let payload = Payload::Shared { id, span };
            self.queue.push_back(Outgoing::one(to, payload));
            return;
        }
        let id = self.take_free(bytes.len());
        let buffer = &mut self.buffers[id as usize];
        buffer.bytes[..bytes.len()].copy_from_slice(bytes);
        buffer.refs = 1;
        self.copies += 1;
        let span = Span {
            offset: 0,
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        };
        let payload = Payload::Shared { id, span };
        self.queue.push_back(Outgoing::one(to, payload));
    }

    /// Queues `bytes`, datagrams of `segment` bytes laid end to end (the last possibly
    /// shorter), for neighbour `to`: as one run referring to the lent buffer when they lie
    /// there (a reference per datagram), else datagram by datagram as [`Outbox::push`] does.
    pub fn push_segments(&mut self, to: NodeAddr, bytes: &[u8], segment: usize) {
        if let Some((id, lent)) = self.lent
            && let Some(span) = lent.span_of(bytes)
            && segment > 0
        {
            let datagrams = bytes.len().div_ceil(segment).max(1);
            let buffer = &mut self.buffers[id as usize];
            buffer.refs = buffer
                .refs
                .saturating_add(u32::try_from(datagrams).unwrap_or(u32::MAX));
            self.queue.push_back(Outgoing {
                to,
                payload: Payload::Shared { id, span },
                segment_size: Some(segment),
            });
            return;
        }
        for datagram in bytes.chunks(segment.max(1)) {
            self.push(to, datagram);
        }
    }

    /// The datagram the node handles next lies in an engine's receive buffer, which it keeps
    /// for the sends that refer to it: packets passed on unchanged are queued as
    /// [`Payload::Input`] with `token` (the engine's name for where `datagram` is) until
    /// [`Outbox::clear_input`].
    pub fn set_input(&mut self, token: u64, datagram: &[u8]) {
        self.input = Some((token, Region::of(datagram)));
    }

    pub fn clear_input(&mut self) {
        self.input = None;
    }

    /// A free buffer for a core to build a packet into (its bytes taken out of the table
    /// meanwhile): what [`Outbox::push`] is given from it is queued by reference. Hand it back
    /// with [`Outbox::give_back`], which keeps it while any reference is queued or in flight.
    pub fn lend(&mut self) -> Vec<u8> {
        self.forget_lent();
        let id = self.take_free(self.buffer_len);
        self.lend_buffer(id)
    }

    /// As [`Outbox::lend`], a batch buffer: room for a sender's batch of datagrams of one MTU
    /// each, end to end ([`Outbox::push_segments`]).
    pub fn lend_batch(&mut self) -> Vec<u8> {
        self.forget_lent();
        let id = self.take_batch();
        self.lend_buffer(id)
    }

    /// The lent buffer holds `packets` packets (a batch's): each counts as built once.
    pub fn lent_packets(&mut self, packets: usize) {
        self.lent_packets = packets as u64;
    }

    fn lend_buffer(&mut self, id: BufferId) -> Vec<u8> {
        let bytes = std::mem::take(&mut self.buffers[id as usize].bytes);
        self.lent = Some((id, Region::of(&bytes)));
        self.lent_packets = 1;
        bytes
    }

    /// A buffer lent and never given back: its bytes are gone with the caller, so it is a
    /// free buffer without memory once nothing refers to it.
    fn forget_lent(&mut self) {
        debug_assert!(self.lent.is_none(), "lent twice without a give-back");
        if let Some((id, _)) = self.lent.take()
            && self.buffers[id as usize].refs == 0
        {
            self.make_free(id);
        }
    }

    /// Buffer `id` (referred to by nothing, not lent) back on its free list.
    fn make_free(&mut self, id: BufferId) {
        if self.buffers[id as usize].batch {
            if self.batch_free.len() >= MAX_SPARE_BATCHES {
                self.buffers[id as usize].bytes = Vec::new();
            }
            self.batch_free.push(id);
        } else {
            if self.free.len() >= MAX_SPARE_BUFFERS {
                self.buffers[id as usize].bytes = Vec::new();
            }
            self.free.push(id);
        }
    }

    /// Whether a packet was queued from the lent buffer since it was lent: the next packet
    /// needs another one.
    pub fn lent_is_referenced(&self) -> bool {
        self.lent
            .is_some_and(|(id, _)| self.buffers[id as usize].refs > 0)
    }

    /// Takes back the buffer [`Outbox::lend`] gave out.
    pub fn give_back(&mut self, bytes: Vec<u8>) {
        let Some((id, _)) = self.lent.take() else {
            return;
        };
        self.buffers[id as usize].bytes = bytes;
        if self.buffers[id as usize].refs > 0 {
            self.built += self.lent_packets;
        } else {
            self.make_free(id);
        }
    }

    /// Packets queued now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Reorders the packets queued from position `from` on so that each neighbour's are
    /// together (neighbours in the order of their first packet; each neighbour's packets in
    /// the order they were queued). A batch fanned out to three neighbours queues them in
    /// turn, one packet each; grouped, each neighbour's run can leave as one segmented send.
    /// One pass finds the neighbours, one more per neighbour moves their packets: the work
    /// grows with the packets times the batch's fan-out, not with the packets squared.
    pub fn group_by_neighbour(&mut self, from: usize) {
        if self.queue.len().saturating_sub(from) < 3 {
            return;
        }
        // Already grouped when no change of destination returns to an earlier one: the
        // common case (one neighbour, or a sender's batches queued per neighbour), checked
        // without moving anything.
        self.neighbours.clear();
        let mut interleaved = false;
        let mut last = None;
        for o in self.queue.range(from..) {
            if last == Some(o.to) {
                continue;
            }
            last = Some(o.to);
            if self.neighbours.contains(&o.to) {
                interleaved = true;
            } else {
                self.neighbours.push(o.to);
            }
        }
        if !interleaved {
            return;
        }
        self.regroup.extend(self.queue.drain(from..).map(Some));
        for &to in &self.neighbours {
            for slot in &mut self.regroup {
                if slot.as_ref().is_some_and(|o| o.to == to)
                    && let Some(o) = slot.take()
                {
                    self.queue.push_back(o);
                }
            }
        }
        self.regroup.clear();
    }

    pub fn pop_front(&mut self) -> Option<Outgoing> {
        self.queue.pop_front()
    }

    /// The next packet as an owned buffer, for an engine that keeps its packets (the
    /// simulator): a shared buffer's bytes are copied out and its reference released. An
    /// input reference cannot be resolved here (the datagram is gone): such an engine hands
    /// datagrams in without a token, so there is none; one would be dropped.
    pub fn pop_transmit(&mut self) -> Option<Transmit> {
        loop {
            let Outgoing {
                to,
                payload,
                segment_size,
            } = self.queue.pop_front()?;
            match payload {
                Payload::Owned(packet) => return Some(Transmit { to, packet }),
                Payload::Shared { id, span } => {
                    let mut segments = span.segments(segment_size.unwrap_or(0));
                    let first = segments.next().unwrap_or(span);
                    // The rest of a run waits at the front, as datagrams of their own.
                    if first.len < span.len {
                        let rest = Span {
                            offset: first.offset + first.len,
                            len: span.len - first.len,
                        };
                        self.queue.push_front(Outgoing {
                            to,
                            payload: Payload::Shared { id, span: rest },
                            segment_size,
                        });
                    }
                    let packet = self.bytes(id, first).to_vec();
                    self.release(id);
                    return Some(Transmit { to, packet });
                }
                Payload::Input { .. } => debug_assert!(false, "an input reference without input"),
            }
        }
    }

    /// Drops every queued packet (their buffers are released).
    pub fn clear(&mut self) {
        while let Some(o) = self.queue.pop_front() {
            if let Payload::Shared { id, .. } = o.payload {
                for _ in 0..o.datagrams() {
                    self.release(id);
                }
            }
        }
    }

    /// The bytes of a [`Payload::Shared`] reference (empty for an id or span the outbox never
    /// gave out). They stay where they are until that reference is released.
    pub fn bytes(&self, id: BufferId, span: Span) -> &[u8] {
        self.buffers
            .get(id as usize)
            .and_then(|b| b.bytes.get(span.range()))
            .unwrap_or(&[])
    }

    /// One reference to buffer `id` is done with (its send completed, failed, or was dropped):
    /// after the last, the buffer is free to be written again.
    pub fn release(&mut self, id: BufferId) {
        let Some(buffer) = self.buffers.get_mut(id as usize) else {
            return;
        };
        if buffer.refs == 0 {
            return;
        }
        buffer.refs -= 1;
        let lent = self.lent.is_some_and(|(l, _)| l == id);
        if buffer.refs == 0 && !lent {
            self.release_unlent(id);
        }
    }

    /// Buffer `id` has no reference left and is not lent: free again (its memory too, beyond
    /// [`MAX_SPARE_BUFFERS`] free ones).
    fn release_unlent(&mut self, id: BufferId) {
        self.make_free(id);
    }

    /// Packets copied into an outgoing buffer since the node started.
    pub fn copies(&self) -> u64 {
        self.copies
    }

    /// Packets a local core built once in a lent buffer and queued (to any number of
    /// neighbours) by reference, since the node started.
    pub fn built(&self) -> u64 {
        self.built
    }

    /// Sends queued by reference to the datagram being handled, since the node started.
    pub fn input_references(&self) -> u64 {
        self.input_references
    }

    /// Buffers allocated because every one was in use, since the node started.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// Buffers neither free nor lent: queued or in flight.
    pub fn in_use(&self) -> usize {
        self.buffers.len()
            - self.free.len()
            - self.batch_free.len()
            - usize::from(self.lent.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).expect("a node address")
    }

    fn shared(o: &Outgoing) -> (BufferId, Span) {
        match o.payload {
            Payload::Shared { id, span } => (id, span),
            ref other => panic!("not a shared buffer: {other:?}"),
        }
    }

    /// A released buffer carries the next copy: same memory, the new bytes only.
    #[test]
    fn a_released_buffer_is_written_again() {
        let mut out = Outbox::new(1500);
        out.push(n(1), &[1, 2, 3]);
        let first = out.pop_front().expect("a packet");
        let (id, span) = shared(&first);
        assert_eq!(out.bytes(id, span), [1, 2, 3]);
        let at = out.bytes(id, span).as_ptr();
        out.release(id);
        out.push(n(2), &[4, 5]);
        let second = out.pop_front().expect("a packet");
        let (again, span) = shared(&second);
        assert_eq!((second.to, out.bytes(again, span)), (n(2), &[4u8, 5][..]));
        assert_eq!(out.bytes(again, span).as_ptr(), at);
        assert_eq!(out.copies(), 2);
        assert_eq!(out.allocated(), 1);
    }

    /// Reserved buffers carry the first packets: nothing is allocated until they are all out.
    #[test]
    fn reserved_buffers_come_first() {
        let mut out = Outbox::new(1500);
        out.reserve(2);
        out.push(n(1), &[1]);
        out.push(n(1), &[2]);
        assert_eq!(out.allocated(), 0);
        out.push(n(1), &[3]);
        assert_eq!(out.allocated(), 1);
    }

    /// Batch buffers are made when a local sender starts, not with the others: a relay's
    /// outbox holds none; the sender's first batches then allocate nothing.
    #[test]
    fn batch_buffers_wait_for_a_sender() {
        let mut out = Outbox::with_batches(1000, 64);
        out.reserve(256);
        assert_eq!((out.buffers.len(), out.batch_free.len()), (256, 0));
        out.reserve_batches();
        assert_eq!(
            out.batch_free.len(),
            4,
            "256 datagrams' worth of 64-datagram batches"
        );
        out.reserve_batches();
        assert_eq!(out.batch_free.len(), 4, "once");
        for _ in 0..4 {
            let buf = out.lend_batch();
            assert_eq!(buf.len(), 64_000);
            out.give_back(buf);
        }
        assert_eq!(out.allocated(), 0);
    }

    /// A packet built in the lent buffer goes to three neighbours by reference: written once,
    /// no copy; the buffer is free again only after its third release, exactly once.
    #[test]
    fn a_built_packet_is_shared_until_its_last_send() {
        let mut out = Outbox::new(1500);
        out.reserve(4);
        let mut buf = out.lend();
        buf[..4].copy_from_slice(&[9, 8, 7, 6]);
        for to in 1..=3 {
            out.push(n(to), &buf[..4]);
        }
        assert!(out.lent_is_referenced());
        out.give_back(buf);
        let sent: Vec<Outgoing> = std::iter::from_fn(|| out.pop_front()).collect();
        let ids: Vec<BufferId> = sent.iter().map(|o| shared(o).0).collect();
        assert!(ids.iter().all(|&id| id == ids[0]), "{ids:?}");
        let (id, span) = shared(&sent[0]);
        assert_eq!(out.bytes(id, span), [9, 8, 7, 6]);
        assert_eq!((out.copies(), out.built()), (0, 1));
        assert_eq!(out.in_use(), 1);
        out.release(id);
        out.release(id);
        assert_eq!(out.in_use(), 1, "one send still refers to it");
        out.release(id);
        assert_eq!(out.in_use(), 0);
        // A release too many changes nothing: the buffer is on the free list once.
        out.release(id);
        assert_eq!(out.free.iter().filter(|&&f| f == id).count(), 1);
    }

    /// A lent buffer nothing referred to is free again at once; one whose references were all
    /// released while still lent becomes free at its give-back.
    #[test]
    fn a_lent_buffer_is_freed_by_its_give_back_when_unreferenced() {
        let mut out = Outbox::new(1500);
        out.reserve(2);
        let buf = out.lend();
        assert!(!out.lent_is_referenced());
        out.give_back(buf);
        assert_eq!(out.in_use(), 0);

        let buf = out.lend();
        out.push(n(1), &buf[..10]);
        let (id, _) = shared(&out.pop_front().expect("a packet"));
        out.release(id);
        assert_eq!(out.free.len(), 1, "still lent");
        out.give_back(buf);
        assert_eq!((out.in_use(), out.free.len()), (0, 2));
    }

    /// Bytes of the input are queued by reference with the engine's token and their place in
    /// the datagram; anything else is copied; after `clear_input`, the input is copied too.
    #[test]
    fn the_input_is_sent_by_reference() {
        let mut out = Outbox::new(1500);
        let datagram = [0u8; 100];
        out.set_input(77, &datagram);
        out.push(n(1), &datagram);
        out.push(n(2), &datagram[10..20]);
        out.push(n(3), &[0u8; 100]);
        out.clear_input();
        out.push(n(4), &datagram);
        let spans: Vec<Payload> = std::iter::from_fn(|| out.pop_front())
            .map(|o| o.payload)
            .collect();
        let whole = Span {
            offset: 0,
            len: 100,
        };
        assert_eq!(
            spans[0],
            Payload::Input {
                token: 77,
                span: whole
            }
        );
        assert_eq!(
            spans[1],
            Payload::Input {
                token: 77,
                span: Span {
                    offset: 10,
                    len: 10
                }
            }
        );
        assert!(matches!(spans[2], Payload::Shared { .. }));
        assert!(matches!(spans[3], Payload::Shared { .. }));
        assert_eq!((out.input_references(), out.copies()), (2, 2));
    }

    /// A batch fanned out in turn (1, 2, 3, 1, 2, 3, ...) is regrouped by neighbour from the
    /// mark on, each neighbour's packets in their order; what was queued before the mark and
    /// a tail already grouped stay as they are.
    #[test]
    fn a_fanned_out_batch_is_grouped_by_neighbour() {
        let mut out = Outbox::new(1500);
        out.push_back(Transmit {
            to: n(2),
            packet: vec![0],
        });
        let mark = out.len();
        for seq in 1..=3u8 {
            for to in [3, 2, 4] {
                out.push_back(Transmit {
                    to: n(to),
                    packet: vec![seq],
                });
            }
        }
        out.group_by_neighbour(mark);
        out.group_by_neighbour(mark);
        let order: Vec<(u16, u8)> = std::iter::from_fn(|| out.pop_transmit())
            .map(|t| (t.to.get(), t.packet[0]))
            .collect();
        assert_eq!(
            order,
            [
                (2, 0),
                (3, 1),
                (3, 2),
                (3, 3),
                (2, 1),
                (2, 2),
                (2, 3),
                (4, 1),
                (4, 2),
                (4, 3)
            ]
        );
    }

    /// An engine that keeps its packets gets owned copies, and the shared buffer is released.
    #[test]
    fn an_owned_transmit_releases_its_buffer() {
        let mut out = Outbox::new(1500);
        let mut buf = out.lend();
        buf[0] = 5;
        out.push(n(1), &buf[..1]);
        out.push(n(2), &buf[..1]);
        out.give_back(buf);
        out.push_back(Transmit {
            to: n(3),
            packet: vec![6],
        });
        let got: Vec<Transmit> = std::iter::from_fn(|| out.pop_transmit()).collect();
        let packets: Vec<(NodeAddr, Vec<u8>)> = got.into_iter().map(|t| (t.to, t.packet)).collect();
        assert_eq!(packets, [(n(1), vec![5]), (n(2), vec![5]), (n(3), vec![6])]);
        assert_eq!(out.in_use(), 0);
    }
}
