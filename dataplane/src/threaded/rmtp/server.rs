//! An RMTP server thread (seed §6.3): one per transfer this node multicasts. It loops sending
//! DATA while the window (the tree's minimum MAB) allows, paced by its rate, with repairs
//! first and an SPM when its timer says; between rounds it takes the NACKs and MABs the middle
//! layer left in its buffer. Its deadline is the core's (the next paced packet or SPM).
//!
//! Its packets are distributed by the middle layer's relay, called from this thread under the
//! relay's mutex: the decision is the one the middle-layer thread would make, and the packet
//! goes straight to `sendto`, rather than through an impatient buffer that could drop the
//! node's own data before it ever left.

use super::middle::{self, Tables};
use super::{Layer, ServerSlot};
use crate::rmtp::{RelayAction, RmtpSender, Source};
use crate::sync::lock;
use crate::threaded::buffer::Pop;
use crate::threaded::node::Node;
use crate::threaded::packet::{PacketBuf, Received};
use control::wire::dnp::Packet;
use control::{Addr, Instant};
use std::time::{Duration, Instant as StdInstant};

use super::handle::SendProgress;

/// How long a server keeps sending SPMs after every receiver has everything, so that the
/// receivers see the final trailing edge and leave the group.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// Items taken from the buffer per round.
const BATCH: usize = 64;

pub(crate) fn thread(node: &Node, slot: &ServerSlot, mut core: RmtpSender<Box<dyn Source + Send>>) {
    let Some(layer) = node.rmtp.as_ref() else {
        return;
    };
    let mtu = node.dnp.mtu();
    let mut buf = vec![0u8; mtu];
    let mut complete_at: Option<StdInstant> = None;
    loop {
        let mut deadline = core.poll_timeout().and_then(|t| node.clock.to_std(t));
        if let Some(c) = complete_at {
            let end = c + LINGER;
            deadline = Some(deadline.map_or(end, |d| d.min(end)));
        }
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
        if core.failure().is_some() {
            break;
        }
        if core.is_complete() {
            let at = *complete_at.get_or_insert_with(StdInstant::now);
            if at.elapsed() >= LINGER {
                break;
            }
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
    let RelayAction::Forward { to, deliver_local } = action else {
        return;
    };
    for n in to.iter() {
        middle::send(node, layer, n, bytes);
    }
    if deliver_local && let (Addr::Group(g), Addr::Node(s)) = (view.dst(), view.src()) {
        // A client on the sender's own node: the only copy of a packet this engine makes.
        let r = Received {
            from: node.me,
            at: now,
            flag: view.flag(),
            dst: view.dst(),
            src: view.src(),
            packet: PacketBuf::from_vec(bytes.to_vec()),
        };
        middle::to_clients(layer, g, s, &r);
    }
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
