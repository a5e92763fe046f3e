//! A node on the io_uring engine: how it starts, what other threads may ask of it while it
//! runs (each request a command the engine thread runs with the node in hand), and how it
//! stops. The surface follows `ThreadedNode`'s, so a caller can hold either.

use super::engine::{Engine, EngineConfig};
use super::shared::{Command, Peer, Shared};
use super::stats::{EngineStats, UringStats};
use crate::garbler::schedule::link_changes;
use crate::garbler::{DelayLine, LinkGarbler, link_rng};
use crate::host::{
    RapRequestError, ReceiveHandle, ReceiveOptions, RunningNode, SendHandle, SendOptions,
    UnknownPeer,
};
use crate::node::{Node, RAP_SERVER_SID, RmtpOptions, StartError, service_entry};
use crate::rmtp::{Sink, Source};
use crate::sync::lock;
use crate::threaded::{Clock, SendError};
use control::drp::RoutingTable;
use control::gmp::{GmpError, MulticastTable};
use control::rap::ServiceEntry;
use control::topology::{Faults, Topology, build};
use control::{GroupAddr, NodeAddr};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How an io_uring node runs, beyond what the topology file says.
#[derive(Clone, Debug)]
pub struct UringOptions {
    /// Seed of the garbler's per-link random streams.
    pub seed: u64,
    /// Pin the engine thread to this core (`core_affinity`); `None`: the scheduler decides.
    pub core: Option<usize>,
    /// Never sleep in the kernel: submit and look for completions in a loop (yielding the core
    /// after a turn that found nothing). For benchmarks on dedicated cores only; the default
    /// sleeps until a completion or a deadline.
    pub busy_poll: bool,
    /// Let the kernel coalesce receives (`UDP_GRO`); a coalesced receive is split in place.
    pub gro: bool,
    /// Send runs of equal-size packets to one neighbour as one segmented send (`UDP_SEGMENT`).
    pub gso: bool,
    /// Receive buffers in the provided-buffer ring (a power of two). Each holds one receive:
    /// 64 KiB plus headers with GRO on, one MTU plus headers without. A buffer whose datagrams
    /// are passed on stays out of the ring until their sends completed; at most half of them
    /// do (beyond, datagrams are copied: `engine.rx_buffers_held_copies`).
    pub recv_buffers: u16,
    /// Submission queue entries of the ring.
    pub ring_entries: u32,
    /// Sends in flight at once (each may carry a segmented batch).
    pub send_slots: usize,
    /// Outgoing buffers of one MTU the node's local cores build their packets in (each shared
    /// by the sends to every next hop), allocated at start and free again after the last of
    /// those sends (more are allocated, and counted as `engine.send_buffers_allocated`, while
    /// every one is in flight). A relay holds a whole receiver window's burst in them (the
    /// default window, 2 MiB, is about 2,000 packets).
    pub send_buffers: usize,
    /// Kernel receive and send buffer asked for the socket, bytes (as the threaded engine).
    pub socket_buffer_bytes: usize,
    /// The RMTP tunables of the node (window, rate, caches): for every transfer of the node,
    /// as the sans-IO node takes them when it is built.
    pub rmtp: RmtpOptions,
    /// Apply the topology's schedule of `link_down`/`link_up` events for this node's links, at
    /// their times since the node started (as `ThreadedOptions::apply_schedule`).
    pub apply_schedule: bool,
}

impl Default for UringOptions {
    fn default() -> Self {
        use control::settings::uring as s;
        UringOptions {
            seed: 0,
            core: None,
            busy_poll: false,
            gro: s::GRO,
            gso: s::GSO,
            recv_buffers: s::RECV_BUFFERS,
            ring_entries: s::RING_ENTRIES,
            send_slots: s::SEND_SLOTS,
            send_buffers: s::SEND_BUFFERS,
            socket_buffer_bytes: control::settings::host::SOCKET_BUFFER,
            rmtp: RmtpOptions::default(),
            apply_schedule: false,
        }
    }
}

impl UringOptions {
    /// A bad option says what was expected.
    fn check(&self) -> io::Result<()> {
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > 32768 {
            return Err(invalid(format!(
                "recv_buffers must be a power of two from 1 to 32768, not {}",
                self.recv_buffers
            )));
        }
        if self.send_slots == 0 || self.ring_entries == 0 {
            return Err(invalid(format!(
                "send_slots and ring_entries must be at least 1, not {} and {}",
                self.send_slots, self.ring_entries
            )));
        }
        Ok(())
    }
}

/// A Burghers node on the io_uring engine (see the module documentation).
pub struct UringNode {
    shared: Arc<Shared>,
    /// The network's MTU, for the announcement a send builds on the caller's thread.
    mtu: usize,
    /// Taken by the first stop; behind a lock so that a node shared in an `Arc` can stop.
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// How long a bind waits for the kernel to release the port of a killed io_uring process: its
/// ring is torn down after the process exits, holding the socket a moment longer (about a
/// quarter second here), so a node restarted at once would otherwise find its port in use.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(2);

fn bind_after_teardown(addr: SocketAddr) -> io::Result<UdpSocket> {
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match UdpSocket::bind(addr) {
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

fn stopping() -> StartError {
    StartError::Unavailable("the node is stopping".into())
}

impl UringNode {
    /// Binds the node's UDP socket at its address in the topology file and starts its engine
    /// thread. The file's link faults toward each neighbour are applied from the start. Fails
    /// with one line naming the cause and the fix where the kernel refuses io_uring.
    pub fn start(
        topology: &Topology,
        me: NodeAddr,
        options: UringOptions,
    ) -> io::Result<UringNode> {
        let spec = topology
            .node(me)
            .ok_or_else(|| invalid(format!("node {me} is not in the topology")))?;
        let socket = bind_after_teardown(spec.socket)?;
        Self::start_with_socket(topology, me, socket, options)
    }

    /// Whether the io_uring engine can run here: a node alone on a loopback socket is started
    /// and stopped at once. The error is the one line [`Self::start`] would give (the cause and
    /// the fix), for a caller that falls back to the threaded engine.
    pub fn probe() -> io::Result<()> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // The file's port is replaced by the socket's own.
        let mut alone = build::line(1, build::DEFAULT_BASE_PORT);
        let me = alone.nodes[0].addr;
        alone.nodes[0].socket = socket.local_addr()?;
        UringNode::start_with_socket(&alone, me, socket, UringOptions::default())?.stop();
        Ok(())
    }

    /// Starts the node on a socket the caller bound (tests bind every socket first, on port 0,
    /// and write the addresses into the topology, so no port is ever raced for).
    pub fn start_with_socket(
        topology: &Topology,
        me: NodeAddr,
        socket: UdpSocket,
        options: UringOptions,
    ) -> io::Result<UringNode> {
        if topology.node(me).is_none() {
            return Err(invalid(format!("node {me} is not in the topology")));
        }
        options.check()?;
        let mtu = topology.network.mtu;
        let mut peers = BTreeMap::new();
        let mut by_socket = HashMap::new();
        for spec in topology.nodes.iter().filter(|n| n.addr != me) {
            let faults = topology
                .link(me, spec.addr)
                .map(|l| l.faults)
                .unwrap_or_default();
            let link = LinkGarbler::new(faults, link_rng(options.seed, me, spec.addr), mtu);
            peers.insert(
                spec.addr,
                Peer {
                    socket: spec.socket,
                    link,
                },
            );
            by_socket.insert(spec.socket, spec.addr);
        }
        let delay = {
            let tx = socket.try_clone()?;
            DelayLine::spawn(
                format!("n{me}-garbler"),
                move |dest: &SocketAddr, packet| tx.send_to(packet, dest).is_ok(),
            )?
        };
        let clock = Clock::start();
        let shared = Arc::new(Shared::new(me, socket.local_addr()?, clock, peers, delay)?);
        let config = EngineConfig {
            ring_entries: options.ring_entries.max(8),
            recv_buffers: options.recv_buffers,
            gro: options.gro,
            gso: options.gso,
            busy_poll: options.busy_poll,
            send_slots: options.send_slots,
            send_buffers: options.send_buffers,
            socket_buffer_bytes: options.socket_buffer_bytes,
            core: options.core,
            mtu,
            schedule: if options.apply_schedule {
                link_changes(me, &topology.schedule)
            } else {
                Vec::new()
            },
        };
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let thread_shared = Arc::clone(&shared);
        let topology = topology.clone();
        let rmtp = options.rmtp;
        let thread = std::thread::Builder::new()
            .name(format!("n{me}-uring"))
            .spawn(move || {
                let node = Node::with_options(me, &topology, clock.now(), rmtp);
                match Engine::new(node, Arc::clone(&thread_shared), socket, by_socket, &config) {
                    Ok(engine) => {
                        let _ = ready_tx.send(Ok(()));
                        engine.run();
                    }
                    Err(e) => {
                        thread_shared.close();
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        let node = UringNode {
            shared,
            mtu,
            thread: Mutex::new(Some(thread)),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(node),
            Ok(Err(e)) => {
                node.shutdown();
                Err(e)
            }
            Err(_) => {
                node.shutdown();
                Err(io::Error::other(
                    "the io_uring engine thread ended at start",
                ))
            }
        }
    }

    /// Runs `f` on the engine thread and waits for its answer; `None` once the engine ended.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let sent = self.shared.command(Command::Call(Box::new(move |engine| {
            let _ = tx.send(f(engine));
        })));
        if !sent {
            return None;
        }
        rx.recv().ok()
    }

    pub fn addr(&self) -> NodeAddr {
        self.shared.me
    }

    /// The socket address the node is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    pub fn clock(&self) -> Clock {
        self.shared.clock
    }

    // ---- inspection ----

    /// The routing table the engine last published (at most one loop turn old).
    pub fn routes(&self) -> Arc<RoutingTable> {
        Arc::clone(&lock(&self.shared.tables).routes)
    }

    pub fn next_hop(&self, dst: NodeAddr) -> Option<NodeAddr> {
        self.routes().next_hop(dst)
    }

    pub fn multicast(&self) -> Arc<MulticastTable> {
        Arc::clone(&lock(&self.shared.tables).multicast)
    }

    /// Live DRP neighbours, ascending.
    pub fn neighbours(&self) -> Vec<NodeAddr> {
        self.call(|e| e.node.drp().neighbours()).unwrap_or_default()
    }

    /// Every node in DRP's link-state database, this one included.
    pub fn known_nodes(&self) -> Vec<NodeAddr> {
        self.call(|e| e.node.drp().known_nodes())
            .unwrap_or_default()
    }

    // ---- the garbler ----

    /// Replaces the faults this node applies to what it sends to `neighbour`. A link's two
    /// directions are garbled by its two ends: set both to take a link down.
    pub fn set_faults(&self, neighbour: NodeAddr, faults: Faults) -> Result<(), SendError> {
        let peer = self
            .shared
            .peers
            .get(&neighbour)
            .ok_or(SendError::UnknownNeighbour(neighbour))?;
        peer.link.set_faults(faults);
        Ok(())
    }

    pub fn faults(&self, neighbour: NodeAddr) -> Option<Faults> {
        self.shared.peers.get(&neighbour).map(|p| p.link.faults())
    }

    // ---- GMP ----

    /// A local client (service id `sid`) joins the tree of (`group`, `sender`).
    pub fn subscribe(&self, group: GroupAddr, sender: NodeAddr, sid: u16) -> Result<(), GmpError> {
        self.call(move |e| {
            let now = e.shared.clock.now();
            e.node.subscribe(now, group, sender, sid)
        })
        .unwrap_or(Err(GmpError::NotMember))
    }

    pub fn unsubscribe(
        &self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
    ) -> Result<(), GmpError> {
        self.call(move |e| {
            let now = e.shared.clock.now();
            e.node.unsubscribe(now, group, sender, sid)
        })
        .unwrap_or(Err(GmpError::NotMember))
    }

    // ---- RAP ----

    /// Asks node `server`'s RAP server for its list, waiting at most `timeout`. This engine's
    /// node asks service id [`RAP_SERVER_SID`] (every node's server) only; another id times out.
    pub fn request_services(
        &self,
        server: NodeAddr,
        server_sid: u16,
        timeout: Duration,
    ) -> Result<Vec<ServiceEntry>, RapRequestError> {
        if server_sid != RAP_SERVER_SID {
            return Err(RapRequestError::TimedOut);
        }
        let (tx, rx) = mpsc::channel();
        let asked = self.call(move |e| {
            e.handles.wait_for_services(server, tx);
            let now = e.shared.clock.now();
            e.node.request_services(now, server);
        });
        if asked.is_none() {
            return Err(RapRequestError::Stopped);
        }
        rx.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => RapRequestError::TimedOut,
            mpsc::RecvTimeoutError::Disconnected => RapRequestError::Stopped,
        })
    }

    /// Replaces what the node's RAP server announces (to announce a transfer before its first
    /// byte). This engine's node runs one RAP server, service id [`RAP_SERVER_SID`].
    pub fn set_rap_services(&self, sid: u16, services: Vec<ServiceEntry>) -> io::Result<()> {
        if sid != RAP_SERVER_SID {
            return Err(invalid(format!(
                "no RAP server with service id {sid} (this engine runs only {RAP_SERVER_SID})"
            )));
        }
        self.call(move |e| e.node.set_services(services))
            .ok_or_else(|| io::Error::other("the node is stopping"))?
            .map_err(|e| invalid(e.to_string()))
    }

    // ---- RMTP transfers ----

    /// Multicasts `source` to `group` from this node and announces it as `name` on the node's
    /// RAP server. The transfer ends when the sender's core has ended (everyone has
    /// everything and its linger passed, or it failed), and its announcement goes with it; the
    /// group may then be sent to again. The source is read for its hash here, on the caller's
    /// thread, so that the engine never stalls on it.
    pub fn send(
        &self,
        group: GroupAddr,
        name: &str,
        source: Box<dyn Source + Send>,
        options: SendOptions,
    ) -> Result<SendHandle, StartError> {
        let entry = service_entry(self.shared.me, self.mtu, group, name, source.as_ref());
        self.call(move |e| e.start_send(entry, source, options))
            .unwrap_or_else(|| Err(stopping()))
    }

    /// Joins (`group`, `sender`) as local client `sid` and writes the transfer to `sink`. The
    /// client leaves the group a moment after it completes, when it fails, is aborted, or the
    /// node stops.
    pub fn receive(
        &self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
        sink: Box<dyn Sink + Send>,
        options: ReceiveOptions,
    ) -> Result<ReceiveHandle, StartError> {
        self.call(move |e| e.start_receive(group, sender, sid, sink, options))
            .unwrap_or_else(|| Err(stopping()))
    }

    // ---- counters ----

    /// The engine thread's own counters as it last published them (once per loop turn): read
    /// from atomics, without a call into the engine thread, so reading them costs that thread
    /// nothing (the allocation test watches a stream with them).
    pub fn engine_counters(&self) -> EngineStats {
        self.shared.counters.snapshot()
    }

    /// Every counter of the node (`UringStats::lines` gives `name value` pairs).
    pub fn stats(&self) -> UringStats {
        let engine = self.shared.counters.snapshot();
        let me = self.shared.me;
        let uptime = self.shared.clock.uptime();
        let garbler = self
            .shared
            .peers
            .iter()
            .map(|(&n, p)| (n, p.link.stats()))
            .filter(|(_, s)| *s != Default::default())
            .collect();
        let delay_line = self.shared.delay.stats();
        let from_engine = self.call(|e| {
            let control = (
                e.node.drp().stats().clone(),
                *e.node.gmp().stats(),
                *e.node.rap_server().stats(),
                *e.node.rap_client().stats(),
            );
            (
                *e.node.stats(),
                e.node.transfers().relay_stats().clone(),
                control,
                e.handles.progress(),
                e.stats,
            )
        });
        let (node, relay, (drp, gmp, rap_server, rap_client), (senders, receivers), engine) =
            match from_engine {
                Some(all) => all,
                None => (
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    engine,
                ),
            };
        UringStats {
            addr: me,
            uptime,
            engine,
            node,
            relay,
            drp,
            gmp,
            rap_server,
            rap_client,
            garbler,
            delay_line,
            senders,
            receivers,
        }
    }

    // ---- shutdown ----

    /// Stops the node: local transfers end (an incomplete receive stays partial), the node
    /// leaves every tree and sends DRP terminates to its neighbours, the engine thread is
    /// joined and the garbler's held-back copies are flushed.
    pub fn stop(self) {
        self.shutdown();
    }

    fn shutdown(&self) {
        let Some(thread) = lock(&self.thread).take() else {
            return;
        };
        self.shared.command(Command::Stop);
        // An engine that panicked has reported it; the rest still stops.
        let _ = thread.join();
        self.shared.delay.shutdown();
    }
}

impl RunningNode for UringNode {
    fn engine(&self) -> &'static str {
        "uring"
    }

    fn addr(&self) -> NodeAddr {
        UringNode::addr(self)
    }

    fn local_addr(&self) -> SocketAddr {
        UringNode::local_addr(self)
    }

    fn routes(&self) -> Arc<RoutingTable> {
        UringNode::routes(self)
    }

    fn multicast(&self) -> Arc<MulticastTable> {
        UringNode::multicast(self)
    }

    fn neighbours(&self) -> Vec<NodeAddr> {
        UringNode::neighbours(self)
    }

    fn subscribe(&self, group: GroupAddr, sender: NodeAddr, sid: u16) -> Result<(), GmpError> {
        UringNode::subscribe(self, group, sender, sid)
    }

    fn unsubscribe(&self, group: GroupAddr, sender: NodeAddr, sid: u16) -> Result<(), GmpError> {
        UringNode::unsubscribe(self, group, sender, sid)
    }

    fn send(
        &self,
        group: GroupAddr,
        name: &str,
        source: Box<dyn Source + Send>,
        options: SendOptions,
    ) -> Result<SendHandle, StartError> {
        UringNode::send(self, group, name, source, options)
    }

    fn receive(
        &self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
        sink: Box<dyn Sink + Send>,
        options: ReceiveOptions,
    ) -> Result<ReceiveHandle, StartError> {
        UringNode::receive(self, group, sender, sid, sink, options)
    }

    fn set_rap_services(&self, sid: u16, services: Vec<ServiceEntry>) -> io::Result<()> {
        UringNode::set_rap_services(self, sid, services)
    }

    fn request_services(
        &self,
        server: NodeAddr,
        server_sid: u16,
        timeout: Duration,
    ) -> Result<Vec<ServiceEntry>, RapRequestError> {
        UringNode::request_services(self, server, server_sid, timeout)
    }

    fn faults(&self, neighbour: NodeAddr) -> Option<Faults> {
        UringNode::faults(self, neighbour)
    }

    fn set_faults(&self, neighbour: NodeAddr, faults: Faults) -> Result<(), UnknownPeer> {
        UringNode::set_faults(self, neighbour, faults).map_err(|_| UnknownPeer(neighbour))
    }

    fn stats(&self) -> Vec<(String, u64)> {
        UringNode::stats(self).lines()
    }

    fn stop(&self) {
        self.shutdown();
    }
}

impl Drop for UringNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for UringNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringNode")
            .field("addr", &self.shared.me)
            .field("local_addr", &self.shared.local_addr)
            .finish()
    }
}
