//! Counters for what the links did to the packets offered to them.

use std::fmt;
use std::ops::AddAssign;

/// What one direction of a link (or, summed, the whole network) did with the packets offered.
///
/// Every offered packet ends in exactly one of `delivered`, `lost`, `dropped_queue`,
/// `dropped_down`, `dropped_node_down`, or is still in flight; a duplicated packet adds one more
/// copy to account for. So, per direction: `offered + duplicated == delivered + lost +
/// dropped_queue + dropped_down + dropped_node_down + in_flight` (see [`super::Sim::in_flight`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Transmits handed to this direction of the link (down or not).
    pub offered: u64,
    /// Copies handed to the receiving node.
    pub delivered: u64,
    /// Dropped by the loss fault.
    pub lost: u64,
    /// Copies with 1..=3 bits flipped (meant to be caught by the DNP checksum).
    pub corrupted: u64,
    /// Of `corrupted`, the copies that DNP parsing still accepts: the flips cancelled out in the
    /// RFC 1071 sum (e.g. one bit set and the same bit of another word cleared). A property of
    /// the checksum, measured so tests can account for it exactly.
    pub corrupted_escaped: u64,
    /// Copies whose payload was changed with the checksum recomputed (the checksum-defeating
    /// corrupter): DNP accepts them, only an end-to-end check can notice.
    pub corrupted_undetected: u64,
    /// Packets delivered twice (one extra copy each).
    pub duplicated: u64,
    /// Copies held back by an extra delay so that later packets may overtake them.
    pub reordered: u64,
    /// Offered while the link was down, or in flight when it went down.
    pub dropped_down: u64,
    /// Refused by the link's drop-tail queue (`queue_bytes`): the backlog was full.
    pub dropped_queue: u64,
    /// In flight to or from a node that went down (or rebooted) before the copy arrived.
    pub dropped_node_down: u64,
    /// Transmits to an address that is not a neighbour by the topology. Only counted in totals
    /// (there is no link to charge them to).
    pub dropped_no_link: u64,
}

impl LinkStats {
    /// Fraction of offered packets lost (0 when nothing was offered).
    pub fn loss_rate(&self) -> f64 {
        ratio(self.lost, self.offered)
    }
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

impl AddAssign<&LinkStats> for LinkStats {
    fn add_assign(&mut self, o: &LinkStats) {
        self.offered += o.offered;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.dropped_queue += o.dropped_queue;
        self.corrupted += o.corrupted;
        self.corrupted_escaped += o.corrupted_escaped;
        self.corrupted_undetected += o.corrupted_undetected;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.dropped_down += o.dropped_down;
        self.dropped_node_down += o.dropped_node_down;
        self.dropped_no_link += o.dropped_no_link;
    }
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "offered {} delivered {} lost {} dropped_queue {} corrupted {} (escaped {}) undetected {} \
             duplicated {} reordered {} dropped_down {} dropped_node_down {} dropped_no_link {}",
            self.offered,
            self.delivered,
            self.lost,
            self.dropped_queue,
            self.corrupted,
            self.corrupted_escaped,
            self.corrupted_undetected,
            self.duplicated,
            self.reordered,
            self.dropped_down,
            self.dropped_node_down,
            self.dropped_no_link
        )
    }
}

/// What the engine itself did: how many events it processed, of which kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Every event popped from the queue, stale timers included.
    pub events: u64,
    /// Packet arrivals processed (delivered or dropped on arrival).
    pub arrivals: u64,
    /// Hand-ins of more than one arrival at once ([`super::SimNode::handle_batch`]).
    pub arrival_batches: u64,
    /// Calls to `handle_timeout`.
    pub timeouts: u64,
    /// Timer entries that fired for a deadline the node had moved later (re-armed, no call).
    pub timers_rearmed: u64,
    /// Timer entries superseded by an earlier deadline or by a reboot (discarded unseen).
    pub timers_stale: u64,
    /// Scheduled link/node actions applied.
    pub scheduled: u64,
    /// Nodes built (start and every reboot).
    pub boots: u64,
}

impl fmt::Display for EngineStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "events {} arrivals {} (batches {}) timeouts {} rearmed {} stale {} scheduled {} boots {}",
            self.events,
            self.arrivals,
            self.arrival_batches,
            self.timeouts,
            self.timers_rearmed,
            self.timers_stale,
            self.scheduled,
            self.boots
        )
    }
}
