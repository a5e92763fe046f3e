//! Shared by the `threaded_*` tests: short timers, networks of real nodes on 127.0.0.1 with
//! sockets bound before the topology is written (no port is ever raced for), bounded waits, and
//! the routes a breadth-first search says DRP must find.

#![allow(dead_code)]

use control::topology::{Timers, Topology};
use control::{GroupAddr, NodeAddr};
use dataplane::threaded::{ThreadedNode, ThreadedOptions};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

pub fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).expect("node address")
}

pub fn g(i: u16) -> GroupAddr {
    GroupAddr::from_index(i).expect("group index")
}

/// Protocol timers short enough for a fast suite, with a generous dead interval so that a busy
/// two-core machine does not make neighbours flap.
pub fn fast_timers() -> Timers {
    Timers {
        hello_interval: Duration::from_millis(100),
        dead_hellos: 10,
        lsp_retransmit: Duration::from_millis(200),
        former_probe_interval: Duration::from_millis(300),
        gmp_refresh: Duration::from_millis(200),
        gmp_expire: Duration::from_millis(2_000),
        rap_retry: Duration::from_millis(200),
    }
}

/// Protocol timers that stay quiet through a measured window: after the first exchange (which
/// finds the neighbours and routes at once), no hello, refresh or probe for a minute, so nothing
/// but the traffic measured builds a packet or allocates; nodes never declare each other dead
/// during a test.
pub fn quiet_timers() -> Timers {
    Timers {
        hello_interval: Duration::from_secs(60),
        dead_hellos: 10,
        lsp_retransmit: Duration::from_millis(200),
        former_probe_interval: Duration::from_secs(60),
        gmp_refresh: Duration::from_secs(60),
        gmp_expire: Duration::from_secs(600),
        rap_retry: Duration::from_millis(200),
    }
}

/// Binds one loopback socket per node and writes their addresses into the topology.
pub fn bind_all(topology: &mut Topology) -> BTreeMap<NodeAddr, UdpSocket> {
    let mut sockets = BTreeMap::new();
    for spec in &mut topology.nodes {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket");
        spec.socket = s.local_addr().expect("local address");
        sockets.insert(spec.addr, s);
    }
    sockets
}

/// A running network of threaded nodes.
pub struct Net {
    pub topology: Topology,
    pub nodes: BTreeMap<NodeAddr, ThreadedNode>,
    /// Sockets bound for nodes not started yet (see [`Net::start_some`]).
    pub idle: BTreeMap<NodeAddr, UdpSocket>,
}

impl Net {
    /// Every node of `topology` (fast timers), each started with `options(addr)` and reading
    /// the file `file(addr, &full_topology)` (the full one, unless a test gives a node less).
    pub fn start_with(
        topology: Topology,
        options: impl Fn(NodeAddr) -> ThreadedOptions,
        file: impl Fn(NodeAddr, &Topology) -> Topology,
    ) -> Net {
        Self::start_some(topology, |_| true, options, file)
    }

    /// Like [`Net::start_with`], but starts only the nodes `now` picks; the others' sockets are
    /// bound (their addresses are in the topology) and [`Net::start_node`] starts them later.
    pub fn start_some(
        mut topology: Topology,
        now: impl Fn(NodeAddr) -> bool,
        options: impl Fn(NodeAddr) -> ThreadedOptions,
        file: impl Fn(NodeAddr, &Topology) -> Topology,
    ) -> Net {
        topology.network.timers = fast_timers();
        let sockets = bind_all(&mut topology);
        let mut net = Net {
            topology,
            nodes: BTreeMap::new(),
            idle: BTreeMap::new(),
        };
        for (addr, socket) in sockets {
            if now(addr) {
                net.run(addr, socket, options(addr), &file(addr, &net.topology));
            } else {
                net.idle.insert(addr, socket);
            }
        }
        net
    }

    /// Starts a node [`Net::start_some`] left idle, reading `file`.
    pub fn start_node(&mut self, addr: NodeAddr, options: ThreadedOptions, file: &Topology) {
        let socket = self.idle.remove(&addr).expect("an idle node");
        self.run(addr, socket, options, file);
    }

    fn run(
        &mut self,
        addr: NodeAddr,
        socket: UdpSocket,
        options: ThreadedOptions,
        file: &Topology,
    ) {
        let node =
            ThreadedNode::start_with_socket(file, addr, socket, options).expect("start a node");
        self.nodes.insert(addr, node);
    }

    pub fn start(topology: Topology) -> Net {
        Self::start_with(
            topology,
            |a| ThreadedOptions {
                seed: u64::from(a.get()),
                ..ThreadedOptions::default()
            },
            |_, t| t.clone(),
        )
    }

    /// Nodes without the RMTP middle layer, for tests that consume the RMTP buffer themselves
    /// (`attach_rmtp`) or that need a node to forward RMTP unicast by `next_hop`.
    pub fn start_without_rmtp(topology: Topology) -> Net {
        Self::start_with(
            topology,
            |a| ThreadedOptions {
                seed: u64::from(a.get()),
                rmtp: false,
                ..ThreadedOptions::default()
            },
            |_, t| t.clone(),
        )
    }

    pub fn node(&self, a: u16) -> &ThreadedNode {
        &self.nodes[&n(a)]
    }

    /// Whether every node's routing table is exactly the BFS answer over `links`.
    pub fn routes_are(&self, links: &[(NodeAddr, NodeAddr)]) -> bool {
        self.nodes
            .iter()
            .all(|(&a, node)| next_hops_of(node) == expected_next_hops(links, a))
    }

    /// Waits (at most [`LIMIT`]) until every node's routes are the BFS answer over the
    /// topology's links, and fails the test with the routes if they never are. Returns the
    /// links, for later checks.
    pub fn converge(&self) -> Vec<(NodeAddr, NodeAddr)> {
        let links = links_of(&self.topology);
        assert!(
            wait_until(LIMIT, || self.routes_are(&links)).is_some(),
            "routes did not converge:\n{}",
            self.dump()
        );
        links
    }

    /// Every node's routes, for failure messages.
    pub fn dump(&self) -> String {
        self.nodes
            .values()
            .map(|node| node.routes().to_string())
            .collect()
    }

    pub fn stop(self) {
        for (_, node) in self.nodes {
            node.stop();
        }
    }
}

pub fn next_hops_of(node: &ThreadedNode) -> BTreeMap<NodeAddr, NodeAddr> {
    node.routes()
        .routes()
        .iter()
        .map(|r| (r.dst, r.next_hop))
        .collect()
}

pub fn links_of(topology: &Topology) -> Vec<(NodeAddr, NodeAddr)> {
    topology.links.iter().map(|l| (l.a, l.b)).collect()
}

fn hops_from(
    adj: &BTreeMap<NodeAddr, BTreeSet<NodeAddr>>,
    src: NodeAddr,
) -> BTreeMap<NodeAddr, u32> {
    let mut dist = BTreeMap::from([(src, 0u32)]);
    let mut queue = VecDeque::from([src]);
    while let Some(u) = queue.pop_front() {
        let d = dist[&u];
        for &v in adj.get(&u).into_iter().flatten() {
            if let Entry::Vacant(e) = dist.entry(v) {
                e.insert(d + 1);
                queue.push_back(v);
            }
        }
    }
    dist
}

/// Shortest-hop next hops from `me` over `links`, ties to the lowest-addressed first hop (DRP's
/// rule): for each destination, the smallest neighbour one hop closer to it.
pub fn expected_next_hops(
    links: &[(NodeAddr, NodeAddr)],
    me: NodeAddr,
) -> BTreeMap<NodeAddr, NodeAddr> {
    let mut adj: BTreeMap<NodeAddr, BTreeSet<NodeAddr>> = BTreeMap::new();
    for &(a, b) in links {
        adj.entry(a).or_default().insert(b);
        adj.entry(b).or_default().insert(a);
    }
    let mine = hops_from(&adj, me);
    let from_nbr: Vec<(NodeAddr, BTreeMap<NodeAddr, u32>)> = adj
        .get(&me)
        .into_iter()
        .flatten()
        .map(|&nb| (nb, hops_from(&adj, nb)))
        .collect();
    mine.iter()
        .filter(|&(&dst, _)| dst != me)
        .filter_map(|(&dst, &d)| {
            from_nbr
                .iter()
                .find(|(_, h)| h.get(&dst) == Some(&(d - 1)))
                .map(|(nb, _)| (dst, *nb))
        })
        .collect()
}

/// Polls `cond` every 10 ms until it holds (returns the time it took) or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Generous: convergence takes well under a second on an idle machine.
pub const LIMIT: Duration = Duration::from_secs(30);
