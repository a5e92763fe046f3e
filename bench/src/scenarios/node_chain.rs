//! A line of nodes of one engine on 127.0.0.1, the path a `forward` run measures:
//!
//! ```text
//! source socket ──► node 2 ──► … ──► node k+1 ──► node k+2
//! (node 1's)        └──── k forwarding nodes ───┘  (sink node)
//! ```
//!
//! Nodes 1 and k+2 are nodes too, so that DRP finds the routes; the source sends from node 1's
//! own socket (node 2 knows it as a neighbour), and the sink node accepts each packet (checksum,
//! neighbour, flag) and counts it (see [`super::UNCLAIMED_RAP_SID`]).

use control::NodeAddr;
use control::topology::{Timers, Topology, build};
use dataplane::threaded::{ThreadedNode, ThreadedOptions};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long the routes may take to appear before the run gives up.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(20);

/// What a `forward` run needs from a chain of nodes, whatever engine runs them.
pub trait NodeChain {
    /// The socket the source sends from (node 1's).
    fn source(&self) -> &UdpSocket;
    /// The first forwarding node's socket.
    fn entry(&self) -> SocketAddr;
    /// Benchmark packets the sink node has accepted since it started.
    fn delivered(&self) -> u64;
    /// Each receiving socket in path order with the datagrams the kernel has dropped there
    /// since it was bound.
    fn drops(&self) -> Vec<(String, u64)>;
}

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
fn line_on_loopback(forwarders: usize) -> io::Result<(Topology, Vec<UdpSocket>)> {
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

/// The chain on the threaded engine.
pub struct ThreadedChain {
    nodes: Vec<ThreadedNode>,
    source: UdpSocket,
}

impl ThreadedChain {
    /// Starts the nodes and waits until every forwarding node routes toward the sink.
    pub fn start(forwarders: usize) -> io::Result<ThreadedChain> {
        Self::start_with(forwarders, ThreadedOptions::default())
    }

    /// The same with every node's options from `base` (each node's seed is its own).
    pub fn start_with(forwarders: usize, base: ThreadedOptions) -> io::Result<ThreadedChain> {
        let (topology, sockets) = line_on_loopback(forwarders)?;
        let source = sockets[0].try_clone()?;
        let nodes = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| {
                let options = ThreadedOptions {
                    seed: i as u64 + 1,
                    ..base.clone()
                };
                ThreadedNode::start_with_socket(&topology, node(i + 1), socket, options)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let chain = ThreadedChain { nodes, source };
        chain.wait_for_routes()?;
        Ok(chain)
    }

    /// The sink node (the last of the line).
    pub fn sink(&self) -> &ThreadedNode {
        self.nodes.last().expect("a chain has nodes")
    }

    fn wait_for_routes(&self) -> io::Result<()> {
        let sink = self.sink().addr();
        let forwarding = &self.nodes[1..self.nodes.len() - 1];
        let routed = || {
            forwarding
                .iter()
                .all(|n| n.next_hop(sink) == NodeAddr::new(n.addr().get() + 1))
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

    pub fn stop(self) {
        for n in self.nodes {
            n.stop();
        }
    }
}

impl NodeChain for ThreadedChain {
    fn source(&self) -> &UdpSocket {
        &self.source
    }

    fn entry(&self) -> SocketAddr {
        self.nodes[1].local_addr()
    }

    fn delivered(&self) -> u64 {
        self.sink().dnp().stats().rap_no_endpoint
    }

    fn drops(&self) -> Vec<(String, u64)> {
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
}
