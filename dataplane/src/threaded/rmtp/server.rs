//! An RMTP server thread (seed §6.3): one per transfer this node multicasts. It loops sending
//! DATA while the window (the tree's minimum MAB) allows, paced by its rate, with repairs
//! first and an SPM when its timer says; between rounds it takes the NACKs and MABs the middle
//! layer left in its buffer. Its deadline is the core's (the next paced packet or SPM, the end
//! of its linger); it ends when the core has ended (failed, or complete and lingered).
//!
//! Its packets are distributed by the middle layer's relay, called from this thread under the
//! relay's mutex: the decision is the one the middle-layer thread would make, and the packet
//! goes straight to `sendto`, rather than through an impatient buffer that could drop the
//! node's own data before it ever left.

use super::middle::{Tables, ThreadedEnds};
use super::{Layer, ServerSlot};
use crate::node::worker::decisions::carry_out;
use crate::rmtp::{RmtpSender, Source};
use crate::sync::lock;
use crate::threaded::buffer::Pop;
use crate::threaded::node::Node;
use crate::threaded::packet::Received;
use control::Instant;
use control::wire::dnp::Packet;

use super::handle::SendProgress;

use control::settings::threaded::BATCH;

pub(crate) fn thread(node: &Node, slot: &ServerSlot, mut core: RmtpSender<Box<dyn Source + Send>>) {
    let Some(layer) = node.rmtp.as_ref() else {
        return;
    };
    let mtu = node.dnp.mtu();
    let mut buf = vec![0u8; mtu];
    loop {
        // The core's deadline includes the end of its linger once it is complete.
        let deadline = core.poll_timeout().and_then(|t| node.clock.to_std(t));
        match slot.inbox.pop_until(deadline) {
            Pop::Item(r) => {
                let now = node.clock.now();
                feedback(node, &mut core, now, &r);
                for _ in 1..BATCH {
                    let Some(r) = slot.inbox.try_pop() else { break };
                    feedback(node, &mut core, now, &r);
                }
            }
            Pop::Timeout | Pop::Kicked => {}
            Pop::Closed => break,
        }
        let now = node.clock.now();
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        let tables = Tables::read(node);
        while let Some(len) = core.poll_transmit(now, &mut buf) {
            originate(node, layer, &tables, now, &buf[..len]);
        }
        slot.shared.publish(progress(&core), core.stats());
        // Failed, or complete and lingered (`SenderConfig::linger`, on the time passed in).
        if core.has_ended() {
            break;
        }
    }
    slot.shared.publish(progress(&core), core.stats());
    node.withdraw(slot.shared.entry());
    slot.inbox.close();
    slot.shared.ended();
}

/// A NACK or MAB for this server, from the middle layer.
fn feedback(
    node: &Node,
    core: &mut RmtpSender<Box<dyn Source + Send>>,
    now: Instant,
    r: &Received,
) {
    if let Ok(view) = r.view(node.dnp.mtu()) {
        // Malformed or foreign packets are counted by the core.
        let _ = core.handle_packet(now, &view);
    }
}

/// Distributes a packet this node's server built: the relay decides who gets it.
fn originate(node: &Node, layer: &Layer, tables: &Tables, now: Instant, bytes: &[u8]) {
    let Ok(view) = Packet::parse(bytes, node.dnp.mtu()) else {
        return;
    };
    let (action, earlier) = {
        let mut relay = lock(&layer.relay);
        let before = relay.poll_timeout();
        let action = relay.handle_local(now, &view, &tables.mcast, &tables.routes);
        let after = relay.poll_timeout();
        let earlier = after.is_some_and(|a| before.is_none_or(|b| a < b));
        (action, earlier)
    };
    // A tree the relay just started tracking has timers: the middle layer must re-read them.
    if earlier {
        layer.inbox.kick();
    }
    carry_out(&mut ThreadedEnds { node, layer, now }, action, &view);
}

fn progress(core: &RmtpSender<Box<dyn Source + Send>>) -> SendProgress {
    let s = core.stats();
    SendProgress {
        total: core.total(),
        sent: core.sent_offset(),
        acked: s.bytes_acked,
        retransmissions: s.retransmissions,
        nacks: s.nacks_received,
        complete: core.is_complete(),
        failed: core.failure().map(ToString::to_string),
    }
}
