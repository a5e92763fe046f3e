//! What the worker sends: the data plane's packets routed to their next hops, from the
//! receive buffers they arrived in or from send buffers, batched into segmented sends.

use super::*;

impl Engine {
    /// Garbles what the node wants sent and submits it, a batch per send slot.
    pub(super) fn flush(&mut self) {
        self.take_outgoing();
        let fd = self.socket.as_raw_fd();
        while !self.pending.is_empty() {
            let Some((slot, entry)) = self.slots.fill(&mut self.pending, fd) else {
                break;
            };
            self.push(&entry.user_data(TAG_SEND | slot as u64));
        }
    }

    /// Routes every packet the node has queued; a run of datagrams (a sender's batch) is
    /// routed datagram by datagram from its one buffer, each holding its reference, and leaves
    /// as one segmented send through one iovec.
    pub(super) fn take_outgoing(&mut self) {
        while let Some(o) = self.data.poll_outgoing() {
            match (o.segment_size, o.payload) {
                (Some(size), Payload::Shared { id, span }) => {
                    for segment in span.segments(size) {
                        self.route(o.to, Payload::Shared { id, span: segment });
                    }
                }
                (_, payload) => self.route(o.to, payload),
            }
        }
    }

    /// The garbler's faults for the direction to `to`, then the pending queue (or the delay
    /// line for copies held back). A packet that goes on unchanged (a clean direction, or one
    /// whose faults only drop) is sent from where its bytes are, holding their buffer until
    /// the send completed; the garbler's copies are its own.
    fn route(&mut self, to: NodeAddr, payload: Payload) {
        let Some(peer) = self.shared.peers.get(&to) else {
            self.stats.tx_unknown_neighbour += 1;
            if let Payload::Shared { id, .. } = payload {
                self.data.release(id);
            }
            return;
        };
        let dest = peer.socket;
        let as_is = peer.link.is_clean() || {
            let bytes: &[u8] = match &payload {
                Payload::Owned(packet) => packet,
                Payload::Shared { id, span } => self.data.outgoing_bytes(*id, *span),
                Payload::Input { token, span } => {
                    input_bytes(&self.bufs, *token, *span).map_or(&[][..], |(_, b)| b)
                }
            };
            let as_is = peer.link.apply(bytes, &mut self.copies);
            self.stats.garbler_copies += self.copies.len() as u64;
            as_is
        };
        if as_is {
            let out = match payload {
                Payload::Owned(packet) => Outgoing::owned(dest, packet),
                Payload::Shared { id, span } => {
                    let bytes = self.data.outgoing_bytes(id, span);
                    Outgoing::held(dest, bytes, Holder::Node(id))
                }
                Payload::Input { token, span } => {
                    let Some((bid, bytes)) = input_bytes(&self.bufs, token, span) else {
                        debug_assert!(false, "an input reference beyond its receive buffer");
                        return;
                    };
                    let out = Outgoing::held(dest, bytes, Holder::Receive(bid));
                    self.holds.hold(bid);
                    self.stats.sends_from_receive_buffer += 1;
                    out
                }
            };
            self.pending.push_back(out);
            return;
        }
        if let Payload::Shared { id, .. } = payload {
            self.data.release(id);
        }
        let now = StdInstant::now();
        for copy in self.copies.drain(..) {
            if copy.delay.is_zero() {
                self.pending.push_back(Outgoing::owned(dest, copy.packet));
            } else {
                self.shared
                    .delay
                    .schedule(now + copy.delay, dest, copy.packet);
            }
        }
    }
}
