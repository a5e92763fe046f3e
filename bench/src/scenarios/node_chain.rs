//! A line of nodes on 127.0.0.1, the path a `forward` run measures:
//!
//! ```text
//! source socket ──► node 2 ──► … ──► node k+1 ──► node k+2
//! (node 1's)        └──── k forwarding nodes ───┘  (sink node)
//! ```
//!
//! Nodes 1 and k+2 are nodes too, so that DRP finds the routes; the source sends from node 1's
//! own socket (node 2 knows it as a neighbour). The forwarding nodes are hosted as
//! [`RunningNode`]s of the engine measured, so nothing here depends on the engine. The sink
//! node is the bench's instrument, the same whatever the engine measured ([`NodeChain::start`]:
//! a uring node without the RMTP layer, which accepts each RMTP packet for it (checksum,
//! neighbour, flag) and counts it in its data plane, see [`super::rmtp_packet`]; or the caller's,
//! [`NodeChain::start_with`]).

use control::NodeAddr;
use control::topology::{Timers, Topology, build};
use dataplane::host::{Engine, EngineOptions, RunningNode, counter};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the routes may take to appear before the run gives up.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(20);

/// The bench's sink node's counter of accepted benchmark packets (RMTP packets for it, no RMTP
/// layer: [`super::rmtp_packet`]).
const RMTP_DELIVERED: &str = "dnp.rmtp_unclaimed";
/// A caller's sink node's counter of accepted benchmark packets (RAP packets for a service id
/// it lacks: [`super::dnp_packet`]).
const RAP_DELIVERED: &str = "dnp.rap_no_endpoint";

/// Short protocol timers, so that the routes are up in well under a second, and a long dead
/// interval: a saturated node drops hellos with everything else, and must not lose its
/// neighbours while it is measured.
fn timers() -> Timers {
    Timers {
        hello_interval: Duration::from_millis(100),
        dead_hellos: 100,
        lsp_retransmit: Duration::from_millis(200),
        former_probe_interval: Duration::from_millis(300),
        gmp_refresh: Duration::from_millis(500),
        gmp_expire: Duration::from_secs(30),
        rap_retry: Duration::from_millis(500),
    }
}

fn node(n: usize) -> NodeAddr {
    NodeAddr::new(n as u16).expect("a small node address")
}

/// `forwarders + 2` nodes in a line with loopback sockets bound on ports the kernel picks
/// (written into the topology before any node starts, so no port is raced for).
pub(super) fn line_on_loopback(forwarders: usize) -> io::Result<(Topology, Vec<UdpSocket>)> {
    let mut topology = build::line(forwarders + 2, 7001);
    topology.network.timers = timers();
    let mut sockets = Vec::new();
    for spec in &mut topology.nodes {
        let socket = crate::udp::bind_loopback()?;
        spec.socket = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok((topology, sockets))
}

/// Starts the sink node of a chain: node `me` of the topology on the socket bound for it.
pub type SinkStart<'a> =
    dyn FnMut(&Topology, NodeAddr, UdpSocket) -> io::Result<Arc<dyn RunningNode>> + 'a;

/// How the chain's nodes of the engine measured run.
#[derive(Clone, Copy, Debug)]
pub struct How {
    /// With the RMTP layer, or passing RMTP packets on by `next_hop` like any datagram.
    pub rmtp: bool,
    /// Spinning rather than sleeping (`EngineOptions::busy_poll`).
    pub busy_poll: bool,
    /// Moving datagrams in batches where the engine can (`EngineOptions::batching`).
    pub batching: bool,
    /// Dataplane workers of each forwarding node (`EngineOptions::workers`); the source's and
    /// the sink's nodes run one.
    pub workers: usize,
}

/// A running chain of nodes.
pub struct NodeChain {
    nodes: Vec<Arc<dyn RunningNode>>,
    source: UdpSocket,
    /// The sink's counter of the benchmark packets it accepted.
    delivered_counter: &'static str,
}

impl NodeChain {
    /// Starts `forwarders` nodes of `engine` (and node 1), run as `how` says, ending in the
    /// bench's sink node, and waits until every forwarding node routes toward the sink.
    ///
    /// The sink is a uring node with batching on and no RMTP layer for every engine measured:
    /// the same instrument in every row, and the cheapest correct one (GRO receives, each
    /// datagram's checksum verified and counted on its worker). A sink of the engine measured
    /// was not: a uring sink handed each RAP packet to its control thread's bounded inbox and
    /// counted a fraction of what the forwarding node delivered (docs/BENCHMARKS.md, `forward`).
    pub fn start(engine: Engine, forwarders: usize, how: How) -> io::Result<NodeChain> {
        let sink_how = How {
            rmtp: false,
            busy_poll: false,
            batching: true,
            workers: 1,
        };
        let mut chain = Self::start_with(engine, forwarders, how, &mut |topology, me, socket| {
            start_node(Engine::Uring, topology, me, socket, sink_how)
        })?;
        chain.delivered_counter = RMTP_DELIVERED;
        Ok(chain)
    }

    /// The same with the sink node started by `sink` (a measuring instrument of the bench, the
    /// same for every engine compared), which counts the RAP packets of [`super::dnp_packet`].
    pub fn start_with(
        engine: Engine,
        forwarders: usize,
        how: How,
        sink: &mut SinkStart<'_>,
    ) -> io::Result<NodeChain> {
        let (topology, sockets) = line_on_loopback(forwarders)?;
        let source = sockets[0].try_clone()?;
        let last = sockets.len() - 1;
        let mut nodes = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            let me = node(i + 1);
            let one_worker = How { workers: 1, ..how };
            nodes.push(if i == last {
                sink(&topology, me, socket)?
            } else if i == 0 {
                start_node(engine, &topology, me, socket, one_worker)?
            } else {
                start_node(engine, &topology, me, socket, how)?
            });
        }
        let chain = NodeChain {
            nodes,
            source,
            delivered_counter: RAP_DELIVERED,
        };
        chain.wait_for_routes()?;
        Ok(chain)
    }

    /// The sink node (the last of the line).
    fn sink(&self) -> &dyn RunningNode {
        self.nodes.last().expect("a chain has nodes").as_ref()
    }

    fn wait_for_routes(&self) -> io::Result<()> {
        let sink = self.sink().addr();
        let forwarding = &self.nodes[1..self.nodes.len() - 1];
        let routed = || {
            forwarding
                .iter()
                .all(|n| n.routes().next_hop(sink) == NodeAddr::new(n.addr().get() + 1))
        };
        let start = Instant::now();
        while !routed() {
            if start.elapsed() > CONVERGENCE_LIMIT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the chain's routes did not converge",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The socket the source sends from (node 1's).
    pub fn source(&self) -> &UdpSocket {
        &self.source
    }

    /// The sink node's address (the last of the line).
    pub fn sink_addr(&self) -> usize {
        self.nodes.len()
    }

    /// The first forwarding node's socket.
    pub fn entry(&self) -> SocketAddr {
        self.nodes[1].local_addr()
    }

    /// Benchmark packets the sink node has accepted since it started.
    pub fn delivered(&self) -> u64 {
        counter(&self.sink().stats(), self.delivered_counter).unwrap_or(0)
    }

    /// The counters of the first forwarding node (the one a 1-hop run measures).
    pub fn first_forwarder_stats(&self) -> Vec<(String, u64)> {
        self.nodes[1].stats()
    }

    /// The sink node's counters.
    pub fn sink_stats(&self) -> Vec<(String, u64)> {
        self.sink().stats()
    }

    /// Each receiving socket in path order with the datagrams the kernel has dropped there
    /// since it was bound.
    pub fn drops(&self) -> Vec<(String, u64)> {
        let last = self.nodes.len() - 1;
        self.nodes[1..]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let role = if i + 1 == last {
                    format!("node {} (sink)", n.addr())
                } else {
                    format!("node {} (hop {})", n.addr(), i + 1)
                };
                (role, crate::udp::socket_drops(n.local_addr()).unwrap_or(0))
            })
            .collect()
    }

    pub fn stop(self) {
        for n in self.nodes {
            n.stop();
        }
    }
}

/// Node `me` of the chain on `engine`, on the socket bound for it; each node's seed is its own.
fn start_node(
    engine: Engine,
    topology: &Topology,
    me: NodeAddr,
    socket: UdpSocket,
    how: How,
) -> io::Result<Arc<dyn RunningNode>> {
    let options = EngineOptions {
        seed: u64::from(me.get()),
        rmtp: how.rmtp,
        busy_poll: how.busy_poll,
        batching: how.batching,
        workers: how.workers,
        socket: Some(socket),
        ..EngineOptions::default()
    };
    engine.start(topology, me, options)
}
