//! The topology file: nodes (16-bit address, UDP socket address), links between them, network
//! options (MTU, timers), per-link fault settings, and a schedule of link/node events.
//!
//! This module holds the model; `parse` reads it from TOML (errors name file, line and column),
//! `write` writes it back, `build` makes the standard shapes and random connected graphs, and
//! `graph` answers connectedness and diameter questions about the links.

pub mod build;
pub mod graph;
pub mod parse;
mod write;

pub use parse::{ConfigError, Position};

use crate::addr::NodeAddr;
use std::net::SocketAddr;
use std::time::Duration;

/// A whole network as described by one topology file.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    pub network: NetworkOptions,
    /// Sorted by address; addresses are unique.
    pub nodes: Vec<NodeSpec>,
    /// Each unordered pair at most once, `a < b`.
    pub links: Vec<LinkSpec>,
    /// Timed link/node events, sorted by time (used by the simulator and test harnesses).
    pub schedule: Vec<ScheduledEvent>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetworkOptions {
    /// Largest DNP packet, header included.
    pub mtu: usize,
    pub timers: Timers,
}

/// Protocol timers; the defaults are the seed's values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timers {
    /// DRP hello period (seed: 1 s).
    pub hello_interval: Duration,
    /// A neighbour is dead after this many hello periods without a hello (seed: 3).
    pub dead_hellos: u32,
    /// Period of re-forwarding unacknowledged LSPs (seed: 1 s).
    pub lsp_retransmit: Duration,
    /// Period of hellos to former neighbours, to notice a healed link (lower rate than hellos).
    pub former_probe_interval: Duration,
    /// GMP join refresh period (seed: 1 s).
    pub gmp_refresh: Duration,
    /// A downstream GMP entry expires after this long without a join (seed: 10 s).
    pub gmp_expire: Duration,
    /// RAP client retry period.
    pub rap_retry: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        use crate::settings::network as s;
        Timers {
            hello_interval: s::HELLO_INTERVAL,
            dead_hellos: s::DEAD_HELLOS,
            lsp_retransmit: s::LSP_RETRANSMIT,
            former_probe_interval: s::FORMER_PROBE_INTERVAL,
            gmp_refresh: s::GMP_REFRESH,
            gmp_expire: s::GMP_EXPIRE,
            rap_retry: s::RAP_RETRY,
        }
    }
}

impl Timers {
    /// How long without a hello before a neighbour is declared dead.
    /// `hello_interval × dead_hellos`; past the largest `Duration`, the largest (never).
    pub fn dead_interval(&self) -> Duration {
        self.hello_interval
            .checked_mul(self.dead_hellos)
            .unwrap_or(Duration::MAX)
    }
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            mtu: crate::wire::DEFAULT_MTU,
            timers: Timers::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub addr: NodeAddr,
    /// Where the node's UDP socket is bound (loopback in every shipped topology).
    pub socket: SocketAddr,
}

/// An undirected link between two nodes, with the faults applied to traffic in both directions.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSpec {
    pub a: NodeAddr,
    pub b: NodeAddr,
    pub faults: Faults,
}

/// What a link does to packets (simulator links, and the real-socket garbler).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability a packet is dropped.
    pub loss: f64,
    /// Probability a packet has bytes flipped (which the DNP checksum then catches).
    pub corrupt: f64,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Probability a packet is held back behind later ones.
    pub reorder: f64,
    /// One-way latency.
    pub delay: Duration,
    /// Extra uniform random latency in `[0, jitter]`.
    pub jitter: Duration,
    /// A down link carries nothing.
    pub down: bool,
    /// Serialisation rate, bytes per second (simulator only); `None`: infinitely fast.
    pub rate: Option<u64>,
    /// Drop-tail queue in front of the rate, bytes (simulator only, like a socket buffer): a
    /// packet that would make the backlog exceed it is dropped and counted. `None`: unbounded.
    pub queue_bytes: Option<u64>,
    /// The far end takes what the link brought once per interval of this length, all of it
    /// at once (simulator only): a NIC's interrupt coalescing with GRO, so that packets spaced
    /// by a rate still reach a node as batches. Zero: each as it arrives.
    pub coalesce: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledEvent {
    /// Time since the start of the run.
    pub at: Duration,
    pub action: Action,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    LinkDown(NodeAddr, NodeAddr),
    LinkUp(NodeAddr, NodeAddr),
    NodeDown(NodeAddr),
    NodeUp(NodeAddr),
}

impl Topology {
    pub fn node(&self, addr: NodeAddr) -> Option<&NodeSpec> {
        self.nodes
            .binary_search_by_key(&addr, |n| n.addr)
            .ok()
            .map(|i| &self.nodes[i])
    }

    pub fn link(&self, x: NodeAddr, y: NodeAddr) -> Option<&LinkSpec> {
        let (a, b) = if x < y { (x, y) } else { (y, x) };
        self.links.iter().find(|l| l.a == a && l.b == b)
    }

    /// The file a node would have if it knew only itself, its neighbours and the links between
    /// itself and them: what DRP must learn the rest of the network from.
    pub fn local_view(&self, me: NodeAddr) -> Topology {
        let neighbours = self.neighbours(me);
        Topology {
            network: self.network.clone(),
            nodes: self
                .nodes
                .iter()
                .filter(|n| n.addr == me || neighbours.contains(&n.addr))
                .cloned()
                .collect(),
            links: self
                .links
                .iter()
                .filter(|l| l.a == me || l.b == me)
                .cloned()
                .collect(),
            schedule: Vec::new(),
        }
    }

    /// The neighbours of `addr` according to the file, ascending.
    pub fn neighbours(&self, addr: NodeAddr) -> Vec<NodeAddr> {
        let mut out: Vec<NodeAddr> = self
            .links
            .iter()
            .filter_map(|l| {
                if l.a == addr {
                    Some(l.b)
                } else if l.b == addr {
                    Some(l.a)
                } else {
                    None
                }
            })
            .collect();
        out.sort_unstable();
        out
    }
}
