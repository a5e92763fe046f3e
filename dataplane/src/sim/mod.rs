//! The simulator engine: many nodes in one thread, on virtual time, joined by in-memory links
//! that lose, corrupt, duplicate, delay and reorder packets from a seeded random stream. One seed
//! gives one run, bit for bit.
//!
//! # Event model
//!
//! The engine owns a clock ([`Sim::now`]) and one queue of timed events, ordered by
//! (time, insertion sequence). There are three kinds of event:
//!
//! - **arrival**: a copy of a packet reaches the far end of a directed link and is handed to the
//!   receiving node's [`SimNode::handle_datagram`], with `from` set to the neighbour it came
//!   from. Copies that reach the same node over the same link at the same instant, one after
//!   the other, are handed in together as a [`SimNode::handle_batch`] when they would make one
//!   `UDP_GRO` receive (equal sizes, the last possibly shorter, at most
//!   [`MAX_ARRIVAL_BATCH`]), as a real engine receives them; on a link that coalesces (its
//!   arrivals moved to the end of their interval) wherever other events of that instant fall
//!   between them;
//! - **timer**: a node's deadline (from [`SimNode::poll_timeout`]) has come and
//!   [`SimNode::handle_timeout`] runs;
//! - **scheduled action**: a link or node goes down or up, from the topology's `schedule`.
//!
//! Running means popping the earliest event, setting the clock to its time and applying it.
//! After every call into a node the engine drains [`SimNode::poll_transmit`] and queries
//! [`SimNode::poll_timeout`] again, for that node only. Each transmit goes to the link toward
//! `to`; the link applies its faults and schedules an arrival per surviving copy at
//! `now + delay + jitter (+ reorder hold-back)`. Nothing ever scans all nodes.
//!
//! Timers are kept lazily: a node has at most one live timer entry (identified by a generation
//! number). A deadline that moves earlier pushes a new entry and makes the old one stale; a
//! deadline that moves later leaves the entry in place, and when it fires the engine asks the
//! node again and re-arms instead of calling it early.
//!
//! # Failures
//!
//! A link that goes down discards what is on it (a per-link epoch is stamped on every copy). A
//! node that goes down loses its state (the value is dropped) and everything in flight to or
//! from it (a per-node incarnation is stamped on every copy); when it comes back up it is built
//! afresh by the `make_node` function, with a new seed.
//!
//! See `docs/SIMULATOR.md` for the faults, the determinism rules and how to use it in tests.

mod engine;
pub mod hostile;
mod link;
mod node;
mod queue;
pub mod scenario;
mod stats;
mod trace;

pub use engine::{NodeMut, Sim};
pub use node::{routes_converged, sim_factory};
pub use stats::{EngineStats, LinkStats};

use control::{Instant, NodeAddr, Transmit};
use std::fmt;

/// The most datagrams handed in as one batch: the kernel's most segments per `UDP_GRO` receive.
pub const MAX_ARRIVAL_BATCH: usize = 64;

/// A node as the simulator drives it: a sans-IO state machine that takes datagrams and time and
/// yields datagrams and deadlines.
pub trait SimNode {
    /// A datagram arrived over the link from neighbour `from` (the previous hop, not the DNP
    /// source). The bytes are what the link delivered, corrupted or not.
    fn handle_datagram(&mut self, now: Instant, from: NodeAddr, datagram: &[u8]);
    /// Datagrams that arrived together over the link from `from`, end to end in `payload`,
    /// each `segment` bytes but the last (which may be shorter): what one `UDP_GRO` receive
    /// hands an engine. By default, one datagram at a time.
    fn handle_batch(&mut self, now: Instant, from: NodeAddr, payload: &[u8], segment: usize) {
        for datagram in payload.chunks(segment.max(1)) {
            self.handle_datagram(now, from, datagram);
        }
    }
    /// The next packet to send to a neighbour; drained after every call into the node.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// When the node next wants [`SimNode::handle_timeout`]; `None` for never.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Called at (never before) the time last returned by `poll_timeout`.
    fn handle_timeout(&mut self, now: Instant);
}

/// What a node is built from, at the start of a run and at every reboot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boot {
    pub addr: NodeAddr,
    /// The virtual time the node starts at.
    pub now: Instant,
    /// A seed for the node's own randomness, derived from the run's seed, the address and the
    /// incarnation: deterministic, and different after a reboot.
    pub seed: u64,
    /// 0 at the start of the run, +1 for each time the node went down.
    pub incarnation: u32,
}

/// A topology the engine cannot run, or a request about a node or link it does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    UnknownNode(NodeAddr),
    NoLink(NodeAddr, NodeAddr),
    DuplicateNode(NodeAddr),
    DuplicateLink(NodeAddr, NodeAddr),
    SelfLink(NodeAddr),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::UnknownNode(a) => write!(f, "node {a} is not in the topology"),
            SimError::NoLink(a, b) => write!(f, "no link between {a} and {b} in the topology"),
            SimError::DuplicateNode(a) => write!(f, "node {a} appears twice in the topology"),
            SimError::DuplicateLink(a, b) => write!(f, "link {a}-{b} appears twice"),
            SimError::SelfLink(a) => write!(f, "link from node {a} to itself"),
        }
    }
}

impl std::error::Error for SimError {}
