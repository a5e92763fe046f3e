//! Packets as the threaded engine passes them between threads: each received datagram in its own
//! heap buffer (seed §1.2: "the DNP allocates memory space for the incoming packet, and a pointer
//! to the packet is stored in the buffer"), shared by reference count, so that handing one packet
//! to several local clients copies nothing and the last user frees it.

use control::wire::{DNP_HEADER_LEN, DnpError, Flag, Packet};
use control::{Addr, Instant, NodeAddr};
use std::ops::Deref;
use std::sync::Arc;

/// One datagram's bytes in a reference-counted heap buffer. Cloning shares the buffer.
#[derive(Clone)]
pub struct PacketBuf {
    buf: Arc<[u8]>,
    len: usize,
}

impl PacketBuf {
    /// A zeroed receive buffer of `capacity` bytes, in one allocation, not yet shared.
    pub(crate) fn alloc(capacity: usize) -> Arc<[u8]> {
        std::iter::repeat_n(0u8, capacity).collect()
    }

    /// The first `len` bytes of a receive buffer.
    pub(crate) fn filled(buf: Arc<[u8]>, len: usize) -> Self {
        let len = len.min(buf.len());
        PacketBuf { buf, len }
    }

    /// A packet built locally (delivered to a protocol of this node without the network).
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        PacketBuf {
            buf: Arc::from(bytes),
            len,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// How many holders share this buffer (for tests of the sharing between local clients).
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.buf)
    }
}

impl Deref for PacketBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PacketBuf({} bytes, {} refs)",
            self.len,
            self.ref_count()
        )
    }
}

/// A packet DNP accepted (length, checksum and flag checked), with the header fields the
/// consumers dispatch on, as it sits in a protocol buffer.
#[derive(Clone, Debug)]
pub struct Received {
    /// The neighbour it came from (the previous hop; this node for a local delivery).
    pub from: NodeAddr,
    /// When DNP received it.
    pub at: Instant,
    pub flag: Flag,
    /// End-to-end destination and source, as in the header.
    pub dst: Addr,
    pub src: Addr,
    /// The whole datagram, header included: what a relay forwards unchanged.
    pub packet: PacketBuf,
}

impl Received {
    /// Everything after the DNP header.
    pub fn body(&self) -> &[u8] {
        self.packet.get(DNP_HEADER_LEN..).unwrap_or(&[])
    }

    /// The packet as a DNP view, for cores that take one. This checks the packet again
    /// (checksum included); it passed once already, so it cannot fail unless `mtu` is smaller
    /// than the node's.
    pub fn view(&self, mtu: usize) -> Result<Packet<'_>, DnpError> {
        Packet::parse(self.packet.bytes(), mtu)
    }
}
