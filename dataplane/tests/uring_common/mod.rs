//! Shared by the `uring_*` tests: networks whose nodes run on either real engine (the
//! threaded baseline or io_uring), on loopback sockets bound before the topology is written,
//! with the threaded tests' timers, waits and route checks; and files in a temporary
//! directory, verified byte for byte.

// Each test binary uses part of what is here (and of what it re-exports).
#![allow(dead_code, unused_imports)]

#[path = "../threaded_common/mod.rs"]
mod threaded_common;

pub use threaded_common::{
    LIMIT, bind_all, expected_next_hops, fast_timers, g, links_of, n, quiet_timers, wait_until,
};

use control::drp::RoutingTable;
use control::gmp::MulticastTable;
use control::topology::{Faults, Topology};
use control::{GroupAddr, NodeAddr};
use dataplane::node::StartError;
use dataplane::rmtp::{FileSink, FileSource, Sink, Source};
use dataplane::threaded::{
    ReceiveHandle, ReceiveOptions, ReceiveState, SendHandle, SendOptions, ThreadedNode,
    ThreadedOptions,
};
use dataplane::uring::{UringNode, UringOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Which engine runs a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Threaded,
    Uring,
}

/// A node on either engine.
pub enum AnyNode {
    Threaded(ThreadedNode),
    Uring(UringNode),
}

impl AnyNode {
    pub fn routes(&self) -> Arc<RoutingTable> {
        match self {
            AnyNode::Threaded(n) => n.routes(),
            AnyNode::Uring(n) => n.routes(),
        }
    }

    pub fn multicast(&self) -> Arc<MulticastTable> {
        match self {
            AnyNode::Threaded(n) => n.multicast(),
            AnyNode::Uring(n) => n.multicast(),
        }
    }

    pub fn send(
        &self,
        group: GroupAddr,
        name: &str,
        source: Box<dyn Source + Send>,
    ) -> Result<SendHandle, StartError> {
        match self {
            AnyNode::Threaded(n) => n.send(group, name, source, SendOptions::default()),
            AnyNode::Uring(n) => n.send(group, name, source, SendOptions::default()),
        }
    }

    pub fn receive(
        &self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
        sink: Box<dyn Sink + Send>,
    ) -> Result<ReceiveHandle, StartError> {
        let options = ReceiveOptions {
            sender_timeout: Duration::from_secs(20),
            ..ReceiveOptions::default()
        };
        match self {
            AnyNode::Threaded(n) => n.receive(group, sender, sid, sink, options),
            AnyNode::Uring(n) => n.receive(group, sender, sid, sink, options),
        }
    }

    pub fn uring(&self) -> Option<&UringNode> {
        match self {
            AnyNode::Uring(n) => Some(n),
            AnyNode::Threaded(_) => None,
        }
    }

    pub fn stop(self) {
        match self {
            AnyNode::Threaded(n) => n.stop(),
            AnyNode::Uring(n) => n.stop(),
        }
    }
}

/// A running network of nodes on loopback, each on the engine the test chose for it.
pub struct Net {
    pub topology: Topology,
    pub nodes: BTreeMap<NodeAddr, AnyNode>,
}

impl Net {
    /// Every node of `topology` (fast timers, every link with `faults`), on `engine(addr)`.
    pub fn start(topology: Topology, faults: Faults, engine: impl Fn(NodeAddr) -> Engine) -> Net {
        Net::start_with(topology, faults, engine, UringOptions::default)
    }

    /// As [`Net::start`], the io_uring nodes with `uring()`'s options (their seed set here).
    pub fn start_with(
        mut topology: Topology,
        faults: Faults,
        engine: impl Fn(NodeAddr) -> Engine,
        uring: impl Fn() -> UringOptions,
    ) -> Net {
        topology.network.timers = fast_timers();
        for l in &mut topology.links {
            l.faults = faults;
        }
        let sockets = bind_all(&mut topology);
        let mut nodes = BTreeMap::new();
        for (addr, socket) in sockets {
            let seed = u64::from(addr.get());
            let node = match engine(addr) {
                Engine::Threaded => AnyNode::Threaded(
                    ThreadedNode::start_with_socket(
                        &topology,
                        addr,
                        socket,
                        ThreadedOptions {
                            seed,
                            ..ThreadedOptions::default()
                        },
                    )
                    .expect("start a threaded node"),
                ),
                Engine::Uring => AnyNode::Uring(
                    UringNode::start_with_socket(
                        &topology,
                        addr,
                        socket,
                        UringOptions { seed, ..uring() },
                    )
                    .expect("start an io_uring node"),
                ),
            };
            nodes.insert(addr, node);
        }
        Net { topology, nodes }
    }

    pub fn node(&self, a: u16) -> &AnyNode {
        &self.nodes[&n(a)]
    }

    /// Waits until every node's routes are the shortest paths over the topology's links.
    pub fn converge(&self) {
        let links = links_of(&self.topology);
        let converged = wait_until(LIMIT, || {
            self.nodes.iter().all(|(&a, node)| {
                let hops: BTreeMap<NodeAddr, NodeAddr> = node
                    .routes()
                    .routes()
                    .iter()
                    .map(|r| (r.dst, r.next_hop))
                    .collect();
                hops == expected_next_hops(&links, a)
            })
        });
        assert!(converged.is_some(), "routes did not converge");
    }

    /// Waits until every receiver's branch reaches the sender (each node on the way lists the
    /// one below it as downstream), so that no receiver joins late.
    pub fn wait_for_members(&self, group: GroupAddr, sender: NodeAddr, receivers: &[NodeAddr]) {
        let joined = |r: NodeAddr| {
            let mut at = r;
            for _ in 0..self.nodes.len() {
                if at == sender {
                    return true;
                }
                let Some(up) = self.nodes[&at]
                    .multicast()
                    .lookup(group, sender)
                    .and_then(|e| e.upstream)
                else {
                    return false;
                };
                let listed = self.nodes[&up]
                    .multicast()
                    .lookup(group, sender)
                    .is_some_and(|e| e.downstream.contains(&at));
                if !listed {
                    return false;
                }
                at = up;
            }
            false
        };
        let formed = wait_until(LIMIT, || receivers.iter().all(|&r| joined(r)));
        assert!(formed.is_some(), "the tree never reached every receiver");
    }

    pub fn stop(self) {
        for (_, node) in self.nodes {
            node.stop();
        }
    }
}

/// A directory of its own under the system's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("burghers-uring-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    /// The output directory of receiver `r`.
    pub fn of(&self, r: NodeAddr) -> PathBuf {
        let d = self.0.join(format!("node{r}"));
        std::fs::create_dir_all(&d).expect("create an output directory");
        d
    }

    /// `data` written to a file and opened as a source.
    pub fn source(&self, data: &[u8]) -> FileSource {
        let path = self.0.join("source.bin");
        std::fs::write(&path, data).expect("write the source file");
        FileSource::open(&path).expect("open the source file")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const NAME: &str = "payload.bin";

/// Every receiver joins (group, sender) as client 1, writing `dir/node<r>/NAME`; waits until
/// the tree reaches them all.
pub fn join_all(
    net: &Net,
    dir: &TempDir,
    group: GroupAddr,
    sender: NodeAddr,
    receivers: &[NodeAddr],
) -> Vec<(NodeAddr, ReceiveHandle)> {
    let handles = receivers
        .iter()
        .map(|&r| {
            let sink = FileSink::create(&dir.of(r), NAME).expect("create the sink");
            let h = net.nodes[&r]
                .receive(group, sender, 1, Box::new(sink))
                .expect("start a receiver");
            (r, h)
        })
        .collect();
    net.wait_for_members(group, sender, receivers);
    handles
}

/// Every receiver completes, and its file (renamed from `.partial` once the sink verified the
/// transfer's BLAKE3) holds exactly `data`.
pub fn assert_all_received(dir: &TempDir, rx: &[(NodeAddr, ReceiveHandle)], data: &[u8]) {
    for (r, h) in rx {
        let state = h.wait(Duration::from_secs(300));
        assert_eq!(
            state,
            ReceiveState::Complete,
            "node {r}: {:?}",
            h.progress()
        );
        let out = dir.of(*r);
        let got = std::fs::read(out.join(NAME)).expect("the final file exists");
        assert!(
            got == data,
            "node {r}: content differs ({} bytes)",
            got.len()
        );
        assert!(!out.join(format!("{NAME}.partial")).exists(), "node {r}");
    }
}
