//! An RMTP client thread (seed §6.2): one per local client. It wakes on its buffer (data, SPMs,
//! repairs and NCFs the middle layer hands it by reference) or on the core's next deadline
//! (a NACK retry, the periodic MAB); writes contiguous data to its sink; and puts its NACKs and
//! MABs in the middle layer's `rmtp.local` buffer.
//!
//! It watches its sender: unreachable by routing, or silent (no DATA or SPM of the transfer),
//! for the options' `sender_timeout`, and the transfer fails (the sink is aborted, so a file
//! stays `NAME.partial`). Once complete it stays in the group until the sender's SPM shows that
//! every receiver has everything (or the sender falls silent), so that its last MAB, the one
//! that completes the sender, is not cut off by its own leave.

use super::handle::{ReceiveOptions, ReceiveProgress, ReceiveState};
use super::{ClientSlot, Upward};
use crate::rmtp::receiver::FailReason;
use crate::rmtp::{ReceiverEvent, RmtpReceiver, Sink};
use crate::threaded::buffer::Pop;
use crate::threaded::gmp;
use crate::threaded::node::Node;
use crate::threaded::packet::{PacketBuf, Received};
use control::wire::dnp::Flag;
use control::{Addr, Instant};
use std::time::{Duration, Instant as StdInstant};

/// Items taken from the buffer per round.
const BATCH: usize = 64;
/// After completion, a sender silent this long has ended (it sends SPMs every 100 ms).
const LINGER_SILENCE: Duration = Duration::from_millis(500);
/// How often the routing table is asked whether the sender is reachable.
const ROUTE_CHECK: Duration = Duration::from_millis(100);

type Core = RmtpReceiver<Box<dyn Sink + Send>>;

/// What the thread knows beyond its core.
struct Watch {
    last_heard: StdInstant,
    unreachable_since: Option<StdInstant>,
    next_route_check: StdInstant,
    total: Option<u64>,
    /// The sender's SPM says every receiver has everything.
    all_acked: bool,
    complete_at: Option<StdInstant>,
}

pub(crate) fn thread(node: &Node, slot: &ClientSlot, mut core: Core, options: ReceiveOptions) {
    let Some(layer) = node.rmtp.as_ref() else {
        return;
    };
    let timeout = options.sender_timeout;
    let mtu = node.dnp.mtu();
    let mut buf = vec![0u8; mtu];
    let start = StdInstant::now();
    let mut w = Watch {
        last_heard: start,
        unreachable_since: None,
        next_route_check: start,
        total: None,
        all_acked: false,
        complete_at: None,
    };
    let check_every = ROUTE_CHECK.min(timeout / 4).max(Duration::from_millis(1));
    let mut failure: Option<String> = None;
    loop {
        let watch_until = match w.complete_at {
            None => (w.last_heard + timeout).min(w.next_route_check),
            Some(c) => (w.last_heard + LINGER_SILENCE).min(c + timeout),
        };
        let deadline = core
            .poll_timeout()
            .and_then(|t| node.clock.to_std(t))
            .map_or(watch_until, |d| d.min(watch_until));
        match slot.inbox.pop_until(Some(deadline)) {
            Pop::Item(r) => {
                let now = node.clock.now();
                on_packet(node, slot, &mut core, &mut w, now, &r);
                for _ in 1..BATCH {
                    let Some(r) = slot.inbox.try_pop() else { break };
                    on_packet(node, slot, &mut core, &mut w, now, &r);
                }
            }
            Pop::Timeout | Pop::Kicked => {}
            Pop::Closed => {
                if w.complete_at.is_none() {
                    failure = Some("the node stopped".into());
                }
                break;
            }
        }
        if w.complete_at.is_none() && slot.shared.abort_requested() {
            failure = Some("aborted".into());
            break;
        }
        let now = node.clock.now();
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
        while let Some(e) = core.poll_event() {
            match e {
                ReceiverEvent::Complete { .. } => {
                    w.complete_at.get_or_insert_with(StdInstant::now);
                }
                ReceiverEvent::Failed(reason) => failure = Some(describe(&reason)),
            }
        }
        if failure.is_some() {
            break;
        }
        let t = StdInstant::now();
        match w.complete_at {
            None => {
                if t >= w.next_route_check {
                    w.next_route_check = t + check_every;
                    let reachable =
                        slot.sender == node.me || node.dnp.routes().is_reachable(slot.sender);
                    w.unreachable_since = match (reachable, w.unreachable_since) {
                        (true, _) => None,
                        (false, since) => Some(since.unwrap_or(t)),
                    };
                }
                if w.unreachable_since.is_some_and(|u| t - u >= timeout) {
                    failure = Some(format!("sender unreachable (no route for {timeout:?})"));
                    break;
                }
                if t - w.last_heard >= timeout {
                    failure = Some(format!("sender silent (no data or SPM for {timeout:?})"));
                    break;
                }
            }
            Some(c) => {
                if w.all_acked || t - w.last_heard >= LINGER_SILENCE || t - c >= timeout {
                    break;
                }
            }
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

/// Hands a packet to the core; only one the core accepted (well formed, of this tree, its data
/// CRC right) moves the sender watch, so that a packet refused there cannot keep a silent
/// sender looking alive.
fn on_packet(
    node: &Node,
    slot: &ClientSlot,
    core: &mut Core,
    w: &mut Watch,
    now: Instant,
    r: &Received,
) {
    let Ok(view) = r.view(node.dnp.mtu()) else {
        return;
    };
    let crc_failures = core.stats().crc_failures;
    // Malformed and foreign packets are counted by the core.
    if core.handle_packet(now, &view).is_err() || core.stats().crc_failures > crc_failures {
        return;
    }
    let ours = r.dst == Addr::Group(slot.group) && r.src == Addr::Node(slot.sender);
    match r.flag {
        Flag::RmtpData | Flag::RmtpRetransmit if ours => w.last_heard = StdInstant::now(),
        Flag::RmtpSpm if ours => w.last_heard = StdInstant::now(),
        _ => {}
    }
    // What the core believed, not what one (possibly forged) SPM said.
    w.total = core.total();
    w.all_acked = core.everyone_has_everything();
}

fn progress(core: &Core, w: &Watch, failure: &Option<String>) -> ReceiveProgress {
    let s = core.stats();
    let state = match (failure, w.complete_at) {
        (_, Some(_)) => ReceiveState::Complete,
        (Some(f), None) => ReceiveState::Failed(f.clone()),
        (None, None) => ReceiveState::Receiving,
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

fn describe(reason: &FailReason) -> String {
    match reason {
        FailReason::Unrecoverable { sequence, trailing } => format!(
            "sequence {sequence} is lost for good (the sender no longer repairs below {trailing})"
        ),
        FailReason::HashMismatch => "the content hash does not match the sender's".into(),
        FailReason::Sink(e) => format!("cannot write: {e}"),
    }
}
