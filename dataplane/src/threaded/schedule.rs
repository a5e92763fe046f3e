//! The schedule thread: waits for each of this node's link changes
//! ([`crate::garbler::schedule`], shared with the io_uring engine) and applies it to the
//! garbler of that link's direction.

use super::node::Node;
use super::signal::Wake;
use crate::garbler::schedule::LinkChange;
use control::Instant;

pub(crate) fn thread(node: &Node, changes: Vec<LinkChange>) {
    for c in changes {
        let at = node.clock.to_std(Instant::ZERO + c.at);
        loop {
            match node.schedule_wake.wait_until(at) {
                Wake::Stopped => return,
                Wake::Timeout => break,
                Wake::Signalled => {}
            }
        }
        if let Some(faults) = node.dnp.faults(c.peer) {
            // The peer exists (its faults were just read), so this cannot fail.
            let _ = node.dnp.set_faults(c.peer, c.applied_to(faults));
        }
    }
}
