//! [`Engine`]: the one list of engines a node can run on, and starting a node on one of them.
//! The `burghers` command and the benchmarks both pick engines from it by name, so another
//! engine is a variant here and an arm in [`Engine::start`].

use super::RunningNode;
use crate::node::RAP_SERVER_SID;
use crate::threaded::{RapServerConfig, ThreadedNode, ThreadedOptions};
use crate::uring::{UringNode, UringOptions};
use control::NodeAddr;
use control::topology::Topology;
use std::io;
use std::net::UdpSocket;
use std::sync::Arc;

/// An engine that runs nodes over real UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    /// The seed's thread-per-protocol design on blocking UDP sockets (the baseline).
    Threaded,
    /// The product: the node on one io_uring event loop with batched (GSO/GRO) datagrams.
    Uring,
}

/// What every engine is started with, beyond the topology and the node's address.
#[derive(Debug)]
pub struct EngineOptions {
    /// Seed of the garbler's random streams.
    pub seed: u64,
    /// Apply the topology's schedule of link events for this node.
    pub apply_schedule: bool,
    /// RAP servers started with the node (service ids), each announcing nothing yet. The uring
    /// engine runs one, on [`crate::node::RAP_SERVER_SID`], and refuses any other.
    pub rap_servers: Vec<u16>,
    /// Run the RMTP layer (relay, send, receive). Off, RMTP packets for another node are
    /// forwarded by `next_hop` like any other: the benchmarks' way to time the forwarding path.
    pub rmtp: bool,
    /// Spin instead of sleeping while waiting for packets, on an engine that can
    /// ([`Engine::can_busy_poll`]; the threaded engine's threads sleep by design): for
    /// latency benchmarks on dedicated cores.
    pub busy_poll: bool,
    /// Move datagrams in batches where the engine can (the uring engine's `UDP_GRO` receives
    /// and `UDP_SEGMENT` sends, as its settings say); off, one datagram per receive and per
    /// send: the benchmarks' way to compare it with a bare forwarder of the same calls. The
    /// threaded engine moves one datagram per call either way.
    pub batching: bool,
    /// Dataplane workers ([`crate::uring::UringOptions::workers`]); the threaded engine runs
    /// the seed's threads and refuses more than one.
    pub workers: usize,
    /// With several workers, hand datagrams of another worker's tree over to it rather than
    /// steer them in the kernel ([`crate::uring::UringOptions::hand_off`]); the threaded
    /// engine has no workers to hand to.
    pub hand_off: bool,
    /// Pin worker i to core `pin + i` ([`crate::uring::UringOptions::core`]); the threaded
    /// engine's threads are not pinned and it refuses this.
    pub pin: Option<usize>,
    /// A socket the caller bound at the node's address in `topology` (harnesses bind on port 0
    /// first and write the ports into the topology, so no port is raced for); `None`: the
    /// engine binds the topology's address itself.
    pub socket: Option<UdpSocket>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            seed: 0,
            apply_schedule: false,
            rap_servers: Vec::new(),
            rmtp: true,
            busy_poll: false,
            batching: true,
            workers: control::settings::uring::WORKERS,
            hand_off: control::settings::uring::HAND_OFF,
            pin: None,
            socket: None,
        }
    }
}

impl Engine {
    /// Every engine, in the order tables list them.
    pub const ALL: [Engine; 2] = [Engine::Threaded, Engine::Uring];

    /// The name `--engine` and `--engines` take.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Threaded => "threaded",
            Engine::Uring => "uring",
        }
    }

    /// Whether [`EngineOptions::busy_poll`] makes this engine spin.
    pub fn can_busy_poll(self) -> bool {
        match self {
            Engine::Threaded => false,
            Engine::Uring => true,
        }
    }

    /// The engine called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Starts node `me` of `topology` on this engine.
    pub fn start(
        self,
        topology: &Topology,
        me: NodeAddr,
        options: EngineOptions,
    ) -> io::Result<Arc<dyn RunningNode>> {
        match self {
            Engine::Threaded => {
                if options.workers > 1 {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "the threaded engine runs the seed's threads, not {} dataplane \
                             workers (--cores is for --engine uring)",
                            options.workers
                        ),
                    ));
                }
                if options.pin.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "the threaded engine runs the seed's threads unpinned (--pin is for \
                         --engine uring)",
                    ));
                }
                let threaded = ThreadedOptions {
                    seed: options.seed,
                    apply_schedule: options.apply_schedule,
                    rap_servers: options
                        .rap_servers
                        .iter()
                        .map(|&sid| RapServerConfig {
                            sid,
                            services: Vec::new(),
                        })
                        .collect(),
                    rmtp: options.rmtp,
                    ..ThreadedOptions::default()
                };
                let node = match options.socket {
                    Some(socket) => ThreadedNode::start_with_socket(topology, me, socket, threaded),
                    None => ThreadedNode::start(topology, me, threaded),
                }?;
                Ok(Arc::new(node))
            }
            Engine::Uring => {
                if let Some(&sid) = options.rap_servers.iter().find(|&&s| s != RAP_SERVER_SID) {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "the uring engine serves RAP on service id {RAP_SERVER_SID} only, \
                             not {sid}"
                        ),
                    ));
                }
                let mut uring = UringOptions {
                    seed: options.seed,
                    apply_schedule: options.apply_schedule,
                    busy_poll: options.busy_poll,
                    workers: options.workers,
                    hand_off: options.hand_off,
                    core: options.pin,
                    ..UringOptions::default()
                };
                uring.rmtp.enabled = options.rmtp;
                uring.gro &= options.batching;
                uring.gso &= options.batching;
                let node = match options.socket {
                    Some(socket) => UringNode::start_with_socket(topology, me, socket, uring),
                    None => UringNode::start(topology, me, uring),
                }?;
                Ok(Arc::new(node))
            }
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_is_found_by_its_name_and_no_other() {
        for engine in Engine::ALL {
            assert_eq!(Engine::from_name(engine.name()), Some(engine));
        }
        assert_eq!(Engine::from_name("warp"), None);
    }
}
