//! The topology file's schedule on a real node: at each event's time since the node started,
//! a `link_down` / `link_up` naming one of this node's links sets or clears `down` in the
//! garbler for the direction this node sends (the other end does the same for its own). Node
//! events are for the harness that runs the processes (it stops and restarts them) and are
//! skipped here.

use super::node::Node;
use super::signal::Wake;
use control::topology::{Action, ScheduledEvent};
use control::{Instant, NodeAddr};

/// The far end of `(a, b)` if this node is one end.
fn other_end(me: NodeAddr, a: NodeAddr, b: NodeAddr) -> Option<NodeAddr> {
    if a == me {
        Some(b)
    } else if b == me {
        Some(a)
    } else {
        None
    }
}

/// The events that concern this node's links, in time order (the file keeps them sorted).
pub(crate) fn relevant(me: NodeAddr, events: &[ScheduledEvent]) -> Vec<ScheduledEvent> {
    events
        .iter()
        .filter(|e| match e.action {
            Action::LinkDown(a, b) | Action::LinkUp(a, b) => other_end(me, a, b).is_some(),
            Action::NodeDown(_) | Action::NodeUp(_) => false,
        })
        .copied()
        .collect()
}

pub(crate) fn thread(node: &Node, events: Vec<ScheduledEvent>) {
    for e in events {
        let at = node.clock.to_std(Instant::ZERO + e.at);
        loop {
            match node.schedule_wake.wait_until(at) {
                Wake::Stopped => return,
                Wake::Timeout => break,
                Wake::Signalled => {}
            }
        }
        let (a, b, down) = match e.action {
            Action::LinkDown(a, b) => (a, b, true),
            Action::LinkUp(a, b) => (a, b, false),
            Action::NodeDown(_) | Action::NodeUp(_) => continue,
        };
        if let Some(peer) = other_end(node.me, a, b)
            && let Some(mut faults) = node.dnp.faults(peer)
        {
            faults.down = down;
            // The peer exists (its faults were just read), so this cannot fail.
            let _ = node.dnp.set_faults(peer, faults);
        }
    }
}
