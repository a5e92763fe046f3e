//! An RMTP client thread (seed §6.2): one per local client. It wakes on its buffer (data, SPMs,
//! repairs and NCFs the middle layer hands it by reference) or on the core's next deadline
//! (a NACK retry, the periodic MAB); writes contiguous data to its sink; and puts its NACKs and
//! MABs in the middle layer's `rmtp.local` buffer.
//!
//! The transfer fails when the sender is unreachable by routing for the options'
//! `sender_timeout`, or silent that long: both rules are the core's sender watch, on the time
//! passed in ([`FailReason`](crate::rmtp::receiver::FailReason)); this thread only looks at the
//! routing table every [`ROUTE_CHECK`] and tells the core. The sink is aborted, so a file stays
//! `NAME.partial`. Once complete it stays in the group until the core
//! says it may leave (the sender's SPM shows that every receiver has everything, or the sender
//! fell silent), so that its last MAB, the one that completes the sender, is not cut off by
//! its own leave.

use super::handle::{ReceiveOptions, ReceiveProgress, ReceiveState};
use super::{ClientSlot, Upward};
use crate::rmtp::{ReceiverEvent, RmtpReceiver, Sink};
use crate::threaded::buffer::Pop;
use crate::threaded::gmp;
use crate::threaded::node::Node;
use crate::threaded::packet::{PacketBuf, Received};
use control::Instant;
use std::time::Duration;

use control::settings::threaded::{BATCH, ROUTE_CHECK};

type Core = RmtpReceiver<Box<dyn Sink + Send>>;

/// What the thread knows beyond its core.
struct Watch {
    next_route_check: Instant,
    total: Option<u64>,
    complete: bool,
}

pub(crate) fn thread(node: &Node, slot: &ClientSlot, mut core: Core, options: ReceiveOptions) {
    let Some(layer) = node.rmtp.as_ref() else {
        return;
    };
    let timeout = options.sender_timeout;
    let mtu = node.dnp.mtu();
    let mut buf = vec![0u8; mtu];
    let mut w = Watch {
        next_route_check: node.clock.now(),
        total: None,
        complete: false,
    };
    let check_every = ROUTE_CHECK.min(timeout / 4).max(Duration::from_millis(1));
    let mut failure: Option<String> = None;
    loop {
        let core_due = core.poll_timeout();
        let deadline = match (core_due, w.complete) {
            (Some(d), true) => d,
            (Some(d), false) => d.min(w.next_route_check),
            (None, _) => w.next_route_check,
        };
        match slot.inbox.pop_until(node.clock.to_std(deadline)) {
            Pop::Item(r) => {
                let now = node.clock.now();
                on_packet(node, &mut core, &mut w, now, &r);
                for _ in 1..BATCH {
                    let Some(r) = slot.inbox.try_pop() else { break };
                    on_packet(node, &mut core, &mut w, now, &r);
                }
            }
            Pop::Timeout | Pop::Kicked => {}
            Pop::Closed => {
                if !w.complete {
                    failure = Some("the node stopped".into());
                }
                break;
            }
        }
        if !w.complete && slot.shared.abort_requested() {
            failure = Some("aborted".into());
            break;
        }
        let now = node.clock.now();
        if !w.complete && now >= w.next_route_check {
            w.next_route_check = now + check_every;
            let reachable = slot.sender == node.me || node.dnp.routes().is_reachable(slot.sender);
            core.sender_route(now, reachable);
        }
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        let mut sent = false;
        while let Some(len) = core.poll_transmit(now, &mut buf) {
            layer.local.push(Upward {
                sid: slot.sid,
                packet: PacketBuf::from_vec(buf[..len].to_vec()),
            });
            sent = true;
        }
        if sent {
            layer.inbox.kick();
        }
        let mut may_leave = false;
        while let Some(e) = core.poll_event() {
            match e {
                ReceiverEvent::Complete { .. } => w.complete = true,
                ReceiverEvent::Failed(reason) => failure = Some(reason.to_string()),
                ReceiverEvent::MayLeave => may_leave = true,
            }
        }
        if failure.is_some() || may_leave {
            break;
        }
        slot.shared
            .publish(progress(&core, &w, &failure), core.stats());
    }
    // An incomplete transfer is given up here: the sink keeps its partial output.
    core.abort();
    let _ = gmp::subscribe(node, slot.group, slot.sender, slot.sid, false);
    slot.inbox.close();
    slot.shared
        .publish(progress(&core, &w, &failure), core.stats());
    slot.shared.ended();
}

/// Hands a packet to the core (which counts malformed and foreign ones, and watches the
/// sender on what it accepts).
fn on_packet(node: &Node, core: &mut Core, w: &mut Watch, now: Instant, r: &Received) {
    let Ok(view) = r.view(node.dnp.mtu()) else {
        return;
    };
    let _ = core.handle_packet(now, &view);
    // What the core believed, not what one (possibly forged) SPM said.
    w.total = core.total();
}

fn progress(core: &Core, w: &Watch, failure: &Option<String>) -> ReceiveProgress {
    let s = core.stats();
    let state = match (failure, w.complete) {
        (_, true) => ReceiveState::Complete,
        (Some(f), false) => ReceiveState::Failed(f.clone()),
        (None, false) => ReceiveState::Receiving,
    };
    ReceiveProgress {
        delivered: core.delivered(),
        total: w.total,
        repairs: s.repairs_received,
        nacks: s.nacks_sent,
        crc_failures: s.crc_failures,
        state,
    }
}
