//! A threaded node: the state its threads share, how it starts, what it offers while it runs,
//! and how it stops.

use super::buffer::{BufferHandle, ImpatientBuffer};
use super::clock::Clock;
use super::dnp::{Dnp, DnpConfig, PeerInfo, SendError};
use super::packet::Received;
use super::rap::{ClientSlot, RapRequestError, ServerSlot};
use super::rmtp::{
    self as rmtp_layer, Layer, ReceiveHandle, ReceiveOptions, SendHandle, SendOptions,
};
use super::signal::Signal;
use super::stats::NodeStats;
use super::{drp, gmp, rap, receiver, schedule, sockopt};
use crate::host::{RunningNode, UnknownPeer};
use crate::node::{RAP_SERVER_SID, StartError};
use crate::rmtp::{RelayConfig, Sink, Source};
use crate::sync::{lock, read, write};
use control::drp::{Drp, RoutingTable};
use control::gmp::{Gmp, GmpError, MulticastTable};
use control::rap::{RapClient, RapServer, RapServerOptions, ServiceEntry};
use control::settings;
use control::topology::{Faults, Timers, Topology};
use control::wire::gmp::GmpMessage;
use control::{GroupAddr, NodeAddr};
use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// One RAP server to run: its service id and the list it offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RapServerConfig {
    pub sid: u16,
    pub services: Vec<ServiceEntry>,
}

/// How a threaded node runs, beyond what the topology file says.
#[derive(Clone, Debug)]
pub struct ThreadedOptions {
    /// Seed of the garbler's per-link random streams.
    pub seed: u64,
    /// Capacity of each impatient buffer (the seed's 100).
    pub buffer_capacity: usize,
    /// Most neighbours missing from the topology file learnt at once (beyond it their hellos
    /// are refused and counted as `dnp.learn_refused_full`).
    pub learned_peer_capacity: usize,
    /// Service id of this node's RAP client endpoint.
    pub rap_client_sid: u16,
    /// RAP servers started with the node (more can be added while it runs).
    pub rap_servers: Vec<RapServerConfig>,
    /// Apply the topology's schedule of link events that touch this node (see
    /// [`ThreadedNode::start`]); off by default, as harnesses usually drive faults themselves.
    pub apply_schedule: bool,
    /// How long the receiver blocks in `recvfrom` before it looks whether the node is stopping
    /// (a safety net: stopping also wakes it with a datagram).
    pub recv_timeout: Duration,
    /// Kernel receive and send buffer asked for the node's socket, bytes (capped by
    /// `net.core.rmem_max` / `wmem_max`; `dnp.socket_rcvbuf` says what was granted). A burst
    /// larger than the receive buffer is dropped by the kernel (`dnp.rx_queue_overflows`).
    pub socket_buffer_bytes: usize,
    /// NACK table entries per tree at this node's relay, and so the most missing sequences a
    /// local receiver tracks (the sans-IO node's `RmtpOptions::nack_entries`).
    pub nack_entries: usize,
    /// Run the RMTP middle-layer thread (seed §6.1) from the start, as every node must to
    /// relay; [`ThreadedNode::send`] and [`ThreadedNode::receive`] need it. Off only for tests
    /// that consume the RMTP buffer themselves ([`ThreadedNode::attach_rmtp`]).
    pub rmtp: bool,
}

impl Default for ThreadedOptions {
    fn default() -> Self {
        use settings::threaded as s;
        ThreadedOptions {
            seed: 0,
            buffer_capacity: s::BUFFER_CAPACITY,
            learned_peer_capacity: s::LEARNED_PEER_CAPACITY,
            rap_client_sid: s::RAP_CLIENT_SID,
            rap_servers: Vec::new(),
            apply_schedule: false,
            recv_timeout: s::RECV_TIMEOUT,
            socket_buffer_bytes: settings::host::SOCKET_BUFFER,
            nack_entries: settings::rmtp::NACK_ENTRIES,
            rmtp: true,
        }
    }
}

/// What every thread of a node shares.
pub(crate) struct Node {
    pub me: NodeAddr,
    pub dnp: Arc<Dnp>,
    pub clock: Clock,
    pub timers: Timers,
    /// Capacity of every impatient buffer.
    capacity: usize,
    rap_options: RapServerOptions,
    pub drp: Mutex<Drp>,
    /// The hello thread's condition variable (the seed's `DRP_emergency`): only stops it.
    pub hello_wake: Signal,
    /// "The topology has changed": wakes the LSP thread.
    pub lsp_wake: Signal,
    /// Only stops the schedule thread.
    pub schedule_wake: Signal,
    pub gmp: Mutex<Gmp>,
    rap_servers: RwLock<BTreeMap<u16, Arc<ServerSlot>>>,
    pub rap_client: ClientSlot,
    /// The RMTP middle layer and the local RMTP servers and clients.
    pub rmtp: Option<Layer>,
    stopping: AtomicBool,
    /// Buffers registered by layers added on top (RMTP), closed at shutdown.
    extra_buffers: Mutex<Vec<Arc<dyn BufferHandle>>>,
    /// Buffers whose consumers want a kick whenever a table is republished.
    table_watchers: Mutex<Vec<Arc<dyn BufferHandle>>>,
    /// Every thread but the receiver, joined at shutdown.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Node {
    /// DRP published a new routing table: GMP re-forms its trees, RAP resumes paused requests.
    pub fn routes_changed(&self) {
        gmp::routes_changed(self);
        rap::routes_changed(self);
        self.tables_changed();
    }

    /// Wakes the consumers that watch the tables (the RMTP middle layer prunes and re-routes).
    pub fn tables_changed(&self) {
        for w in lock(&self.table_watchers).iter() {
            w.kick();
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn spawn(
        self: &Arc<Self>,
        what: &str,
        f: impl FnOnce(&Node) + Send + 'static,
    ) -> io::Result<()> {
        let node = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name(format!("n{}-{what}", self.me))
            .spawn(move || f(&node))?;
        lock(&self.threads).push(handle);
        Ok(())
    }

    fn add_rap_server(self: &Arc<Self>, sid: u16, services: Vec<ServiceEntry>) -> io::Result<()> {
        let server = RapServer::with_options(self.me, sid, services, self.rap_options)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let inbox = Arc::new(ImpatientBuffer::new(format!("rap.{sid}"), self.capacity));
        if !self.dnp.register_rap(sid, Arc::clone(&inbox)) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("RAP service id {sid} is already in use on node {}", self.me),
            ));
        }
        let slot = Arc::new(ServerSlot {
            server: Mutex::new(server),
            inbox,
        });
        write(&self.rap_servers).insert(sid, Arc::clone(&slot));
        self.spawn(&format!("rap-server-{sid}"), move |node| {
            rap::server_thread(node, &slot)
        })
    }

    /// Adds `entry` to the list of RAP server [`RAP_SERVER_SID`] (started if need be), replacing
    /// an earlier entry of the same tree.
    pub(crate) fn announce(self: &Arc<Self>, entry: ServiceEntry) -> io::Result<()> {
        for _ in 0..2 {
            let slot = read(&self.rap_servers).get(&RAP_SERVER_SID).cloned();
            let Some(slot) = slot else {
                match self.add_rap_server(RAP_SERVER_SID, vec![entry.clone()]) {
                    // Another transfer started the server meanwhile: add to its list.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    other => return other,
                }
            };
            let mut server = lock(&slot.server);
            let mut list = server.services().to_vec();
            list.retain(|e| (e.group, e.sender) != (entry.group, entry.sender));
            list.push(entry);
            return server
                .set_services(list)
                .map_err(|e| invalid(e.to_string()));
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("RAP service id {RAP_SERVER_SID} is taken by this node's RAP client"),
        ))
    }

    /// Removes `entry` from RAP server [`RAP_SERVER_SID`]'s list (a transfer that ended).
    pub(crate) fn withdraw(&self, entry: &ServiceEntry) {
        let slot = read(&self.rap_servers).get(&RAP_SERVER_SID).cloned();
        if let Some(slot) = slot {
            let mut server = lock(&slot.server);
            let mut list = server.services().to_vec();
            list.retain(|e| e != entry);
            // A shorter list always fits.
            let _ = server.set_services(list);
        }
    }

    fn buffers(&self) -> Vec<Arc<dyn BufferHandle>> {
        let mut all: Vec<Arc<dyn BufferHandle>> = vec![
            Arc::clone(self.dnp.drp_in()) as Arc<dyn BufferHandle>,
            Arc::clone(self.dnp.gmp_in()) as Arc<dyn BufferHandle>,
        ];
        if let Some(b) = self.dnp.rmtp_in() {
            all.push(Arc::clone(b) as Arc<dyn BufferHandle>);
        }
        for slot in read(&self.rap_servers).values() {
            all.push(Arc::clone(&slot.inbox) as Arc<dyn BufferHandle>);
        }
        all.push(Arc::clone(&self.rap_client.inbox) as Arc<dyn BufferHandle>);
        all.extend(lock(&self.extra_buffers).iter().cloned());
        if let Some(layer) = &self.rmtp {
            all.extend(layer.buffers());
        }
        all
    }
}

/// A Burghers node on the seed's threaded design (see the module documentation).
pub struct ThreadedNode {
    node: Arc<Node>,
    /// Taken (and joined) by the first stop; behind a lock so that a node shared through an
    /// `Arc` ([`RunningNode::stop`]) can stop too.
    receiver: Mutex<Option<JoinHandle<()>>>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl ThreadedNode {
    /// Binds the node's UDP socket at its address in the topology file and starts its threads.
    /// The file's link faults toward each neighbour are applied by the garbler from the start;
    /// with [`ThreadedOptions::apply_schedule`] the file's `link_down`/`link_up` events for this
    /// node's links are applied at their times since the node started.
    pub fn start(
        topology: &Topology,
        me: NodeAddr,
        options: ThreadedOptions,
    ) -> io::Result<ThreadedNode> {
        let spec = topology
            .node(me)
            .ok_or_else(|| invalid(format!("node {me} is not in the topology")))?;
        let socket = UdpSocket::bind(spec.socket)?;
        Self::start_with_socket(topology, me, socket, options)
    }

    /// Starts the node on a socket the caller bound (tests bind every socket first, on port 0,
    /// and write the addresses into the topology, so no port is ever raced for).
    pub fn start_with_socket(
        topology: &Topology,
        me: NodeAddr,
        socket: UdpSocket,
        options: ThreadedOptions,
    ) -> io::Result<ThreadedNode> {
        if topology.node(me).is_none() {
            return Err(invalid(format!("node {me} is not in the topology")));
        }
        socket.set_read_timeout(Some(options.recv_timeout.max(Duration::from_millis(1))))?;
        let (rcvbuf, sndbuf) = sockopt::size_buffers(&socket, options.socket_buffer_bytes)?;
        sockopt::count_overflows(&socket)?;
        let clock = Clock::start();
        let now = clock.now();
        let timers = topology.network.timers;
        let capacity = options.buffer_capacity.max(1);
        let dnp = Arc::new(Dnp::new(
            me,
            topology,
            socket,
            clock,
            DnpConfig {
                seed: options.seed,
                capacity,
                learned_capacity: options.learned_peer_capacity,
            },
        )?);
        let counters = dnp.counters();
        counters
            .socket_rcvbuf
            .store(rcvbuf as u64, Ordering::Relaxed);
        counters
            .socket_sndbuf
            .store(sndbuf as u64, Ordering::Relaxed);
        let client_inbox = Arc::new(ImpatientBuffer::new(
            format!("rap.{}", options.rap_client_sid),
            capacity,
        ));
        dnp.register_rap(options.rap_client_sid, Arc::clone(&client_inbox));
        let rmtp = options.rmtp.then(|| {
            let mut relay = RelayConfig::new(me, dnp.mtu());
            relay.nack_entries = options.nack_entries;
            // The client threads' impatient buffers drop when full: the cache repairs that.
            relay.lossless_to_members = false;
            Layer::new(relay, dnp.claim_rmtp(), capacity)
        });
        let node = Arc::new(Node {
            me,
            clock,
            timers,
            capacity,
            rap_options: RapServerOptions {
                mtu: topology.network.mtu,
                resend_interval: timers.rap_retry,
                ..RapServerOptions::default()
            },
            drp: Mutex::new(Drp::new(me, topology, now)),
            hello_wake: Signal::default(),
            lsp_wake: Signal::default(),
            schedule_wake: Signal::default(),
            gmp: Mutex::new(Gmp::new(me, &timers)),
            rap_servers: RwLock::new(BTreeMap::new()),
            rap_client: ClientSlot::new(
                RapClient::with_mtu(me, options.rap_client_sid, &timers, topology.network.mtu),
                client_inbox,
            ),
            rmtp,
            stopping: AtomicBool::new(false),
            extra_buffers: Mutex::new(Vec::new()),
            table_watchers: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            dnp,
        });
        let this = ThreadedNode {
            node: Arc::clone(&node),
            receiver: Mutex::new(None),
        };
        // From here on a failure stops what was started (dropping `this` shuts it down).
        for s in options.rap_servers {
            node.add_rap_server(s.sid, s.services)?;
        }
        node.spawn("drp-rx", drp::receiver)?;
        node.spawn("drp-hello", drp::hello)?;
        node.spawn("drp-lsp", drp::lsp)?;
        node.spawn("gmp", gmp::thread)?;
        node.spawn("rap-client", rap::client_thread)?;
        if node.rmtp.is_some() {
            node.spawn("rmtp-middle", rmtp_layer::middle_thread)?;
            // Table changes kick the middle layer, which prunes and re-reads upstreams.
            lock(&node.table_watchers).push(Arc::clone(&node.dnp.claim_rmtp()) as _);
        }
        let events = crate::garbler::schedule::link_changes(me, &topology.schedule);
        if options.apply_schedule && !events.is_empty() {
            node.spawn("schedule", move |node| schedule::thread(node, events))?;
        }
        let rx = Arc::clone(&node);
        *lock(&this.receiver) = Some(
            std::thread::Builder::new()
                .name(format!("n{me}-dnp-rx"))
                .spawn(move || receiver::run(&rx.dnp, &rx.stopping))?,
        );
        Ok(this)
    }

    pub fn addr(&self) -> NodeAddr {
        self.node.me
    }

    /// The socket address the node is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.node.dnp.local_addr()
    }

    /// The DNP layer: sending (`send_to_neighbour`, `send_routed`), tables, peers, the garbler.
    pub fn dnp(&self) -> Arc<Dnp> {
        Arc::clone(&self.node.dnp)
    }

    pub fn clock(&self) -> Clock {
        self.node.clock
    }

    pub fn timers(&self) -> Timers {
        self.node.timers
    }

    // ---- inspection ----

    pub fn routes(&self) -> Arc<RoutingTable> {
        self.node.dnp.routes()
    }

    pub fn next_hop(&self, dst: NodeAddr) -> Option<NodeAddr> {
        self.node.dnp.next_hop(dst)
    }

    pub fn multicast(&self) -> Arc<MulticastTable> {
        self.node.dnp.multicast()
    }

    /// Live DRP neighbours, ascending.
    pub fn neighbours(&self) -> Vec<NodeAddr> {
        lock(&self.node.drp).neighbours()
    }

    /// Every node in DRP's link-state database, this one included.
    pub fn known_nodes(&self) -> Vec<NodeAddr> {
        lock(&self.node.drp).known_nodes()
    }

    /// Every node with a known socket address.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.node.dnp.peers()
    }

    // ---- the garbler ----

    /// Replaces the faults this node applies to what it sends to `neighbour`. A link's two
    /// directions are garbled by its two ends: set both to take a link down.
    pub fn set_faults(&self, neighbour: NodeAddr, faults: Faults) -> Result<(), SendError> {
        self.node.dnp.set_faults(neighbour, faults)
    }

    pub fn faults(&self, neighbour: NodeAddr) -> Option<Faults> {
        self.node.dnp.faults(neighbour)
    }

    // ---- GMP ----

    /// A local client (service id `sid`) joins the tree of (`group`, `sender`).
    pub fn subscribe(&self, group: GroupAddr, sender: NodeAddr, sid: u16) -> Result<(), GmpError> {
        gmp::subscribe(&self.node, group, sender, sid, true)
    }

    pub fn unsubscribe(
        &self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
    ) -> Result<(), GmpError> {
        gmp::subscribe(&self.node, group, sender, sid, false)
    }

    // ---- RAP ----

    /// Starts another RAP server thread. Fails if the id is in use or the list does not fit
    /// one packet.
    pub fn add_rap_server(&self, sid: u16, services: Vec<ServiceEntry>) -> io::Result<()> {
        self.node.add_rap_server(sid, services)
    }

    /// Replaces a running server's list (answers still pending carry it from their next
    /// re-send).
    pub fn set_rap_services(&self, sid: u16, services: Vec<ServiceEntry>) -> io::Result<()> {
        let slot = read(&self.node.rap_servers).get(&sid).cloned();
        let slot = slot.ok_or_else(|| invalid(format!("no RAP server with service id {sid}")))?;
        lock(&slot.server)
            .set_services(services)
            .map_err(|e| invalid(e.to_string()))
    }

    /// Asks RAP service `server_sid` on node `server` for its list, waiting at most `timeout`.
    pub fn request_services(
        &self,
        server: NodeAddr,
        server_sid: u16,
        timeout: Duration,
    ) -> Result<Vec<ServiceEntry>, RapRequestError> {
        rap::request_services(&self.node, server, server_sid, timeout)
    }

    pub fn rap_client_sid(&self) -> u16 {
        self.node.rap_client.sid
    }

    // ---- RMTP transfers ----

    /// Multicasts `source` to `group` from this node (an RMTP server thread) and announces it
    /// as `name` on this node's RAP server with service id [`RAP_SERVER_SID`] (created if it
    /// does not exist). Receivers that join later NACK what they missed. The server ends a
    /// moment after every receiver has everything, and its announcement goes with it.
    pub fn send(
        &self,
        group: GroupAddr,
        name: &str,
        source: Box<dyn Source + Send>,
        options: SendOptions,
    ) -> Result<SendHandle, StartError> {
        rmtp_layer::send(&self.node, group, name, source, options)
    }

    /// Joins (`group`, `sender`) as local client `sid` (an RMTP client thread) and writes the
    /// transfer to `sink`. The client leaves the group when the transfer completes (once the
    /// sender knows), fails, is aborted, or the node stops.
    pub fn receive(
        &self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
        sink: Box<dyn Sink + Send>,
        options: ReceiveOptions,
    ) -> Result<ReceiveHandle, StartError> {
        rmtp_layer::receive(&self.node, group, sender, sid, sink, options)
    }

    // ---- hooks for the layers above (RMTP) ----

    /// Attaches the RMTP middle layer: from now on DNP queues every RMTP packet (data,
    /// retransmissions, NACK, MAB, NCF, SPM) in the returned buffer, for the middle-layer
    /// thread (seed §6.1). Before this, RMTP packets for another node are forwarded by
    /// `next_hop` and the rest are dropped and counted. Calling it again returns the same buffer.
    pub fn attach_rmtp(&self) -> Arc<ImpatientBuffer<Received>> {
        self.node.dnp.claim_rmtp()
    }

    /// A new impatient buffer of the node's capacity, closed at shutdown and reported in the
    /// node's stats (for the RMTP client and server threads' inboxes).
    pub fn new_buffer<T: Send + 'static>(&self, name: &str) -> Arc<ImpatientBuffer<T>> {
        let buf = Arc::new(ImpatientBuffer::new(name, self.node.capacity));
        self.register_buffer(Arc::clone(&buf) as Arc<dyn BufferHandle>);
        buf
    }

    /// Closes `buf` at shutdown (waking its consumer) and reports it in the node's stats.
    pub fn register_buffer(&self, buf: Arc<dyn BufferHandle>) {
        lock(&self.node.extra_buffers).push(buf);
    }

    /// Kicks `buf`'s consumer ([`Pop::Kicked`](super::Pop::Kicked)) whenever the routing or
    /// multicast table is republished, so it can re-read them without polling.
    pub fn watch_tables(&self, buf: Arc<dyn BufferHandle>) {
        lock(&self.node.table_watchers).push(buf);
    }

    /// Starts a thread the node joins at shutdown. It must return once the buffers it waits
    /// on are closed (their `pop` returns `None` / `Pop::Closed`) or [`Self::is_stopping`].
    pub fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.node.spawn(name, move |_| f())
    }

    pub fn is_stopping(&self) -> bool {
        self.node.is_stopping()
    }

    // ---- counters ----

    /// Takes the node's locks one at a time, each in its own statement: a guard made inside
    /// the `NodeStats` literal would live until the literal is built, so `threads` was held
    /// while waiting for `rmtp.clients`, which `receive` holds while it waits for `threads`
    /// (the control socket's `info` and a starting `burghers recv` deadlocked).
    pub fn stats(&self) -> NodeStats {
        let n = &self.node;
        let receiving = lock(&self.receiver).is_some();
        let threads = lock(&n.threads).len() + usize::from(receiving) + 1;
        let servers: Vec<(u16, Arc<ServerSlot>)> = read(&n.rap_servers)
            .iter()
            .map(|(&sid, slot)| (sid, Arc::clone(slot)))
            .collect();
        let rap_servers = servers
            .iter()
            .map(|(sid, slot)| (*sid, *lock(&slot.server).stats()))
            .collect();
        let buffers = n
            .buffers()
            .iter()
            .map(|b| (b.name().to_string(), b.stats()))
            .collect();
        let drp = lock(&n.drp).stats().clone();
        let gmp = *lock(&n.gmp).stats();
        let rap_client = *lock(&n.rap_client.client).stats();
        let rmtp = n.rmtp.as_ref().map(Layer::stats);
        NodeStats {
            addr: n.me,
            uptime: n.clock.uptime(),
            threads,
            dnp: n.dnp.stats(),
            buffers,
            drp,
            gmp,
            rap_servers,
            rap_client,
            garbler: n.dnp.garbler_stats(),
            delay_line: n.dnp.delay_stats(),
            rmtp,
        }
    }

    // ---- shutdown ----

    /// Stops the node cleanly: every protocol thread is stopped and joined, then the node
    /// leaves every multicast tree it is in (a leave to each upstream) and sends DRP terminates
    /// to its live neighbours (which drop it at once instead of after the dead interval), then
    /// the receiver and the garbler's delay line stop.
    pub fn stop(self) {
        self.shutdown();
    }

    /// The stop itself: the first call does it, later ones return at once.
    fn shutdown(&self) {
        let n = &self.node;
        if n.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        for b in n.buffers() {
            b.close();
        }
        n.hello_wake.stop();
        n.lsp_wake.stop();
        n.schedule_wake.stop();
        n.rap_client.stop();
        let threads = std::mem::take(&mut *lock(&n.threads));
        for t in threads {
            // A thread that panicked has reported it; the others are still joined.
            let _ = t.join();
        }
        // Nobody else sends now, so no refresh can follow these last words.
        for e in n.dnp.multicast().entries() {
            if let Some(up) = e.upstream {
                let leave = GmpMessage::leave(e.group, e.sender).packet(up, n.me);
                let _ = n.dnp.send_to_neighbour(up, &leave);
            }
        }
        let mut drp = lock(&n.drp);
        drp.terminate(n.clock.now());
        drp::drain_final(n, drp);
        n.dnp.wake_receiver();
        let receiver = lock(&self.receiver).take();
        if let Some(t) = receiver {
            let _ = t.join();
        }
        n.dnp.shutdown_delay_line();
    }
}

/// The threaded engine as a host sees it: thin delegations to the methods above.
impl RunningNode for ThreadedNode {
    fn engine(&self) -> &'static str {
        "threaded"
    }

    fn addr(&self) -> NodeAddr {
        ThreadedNode::addr(self)
    }

    fn local_addr(&self) -> SocketAddr {
        ThreadedNode::local_addr(self)
    }

    fn routes(&self) -> Arc<RoutingTable> {
        ThreadedNode::routes(self)
    }

    fn multicast(&self) -> Arc<MulticastTable> {
        ThreadedNode::multicast(self)
    }

    fn neighbours(&self) -> Vec<NodeAddr> {
        ThreadedNode::neighbours(self)
    }

    fn subscribe(&self, group: GroupAddr, sender: NodeAddr, sid: u16) -> Result<(), GmpError> {
        ThreadedNode::subscribe(self, group, sender, sid)
    }

    fn unsubscribe(&self, group: GroupAddr, sender: NodeAddr, sid: u16) -> Result<(), GmpError> {
        ThreadedNode::unsubscribe(self, group, sender, sid)
    }

    fn send(
        &self,
        group: GroupAddr,
        name: &str,
        source: Box<dyn Source + Send>,
        options: SendOptions,
    ) -> Result<SendHandle, StartError> {
        ThreadedNode::send(self, group, name, source, options)
    }

    fn receive(
        &self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
        sink: Box<dyn Sink + Send>,
        options: ReceiveOptions,
    ) -> Result<ReceiveHandle, StartError> {
        ThreadedNode::receive(self, group, sender, sid, sink, options)
    }

    fn set_rap_services(&self, sid: u16, services: Vec<ServiceEntry>) -> io::Result<()> {
        ThreadedNode::set_rap_services(self, sid, services)
    }

    fn request_services(
        &self,
        server: NodeAddr,
        server_sid: u16,
        timeout: Duration,
    ) -> Result<Vec<ServiceEntry>, RapRequestError> {
        ThreadedNode::request_services(self, server, server_sid, timeout)
    }

    fn faults(&self, neighbour: NodeAddr) -> Option<Faults> {
        ThreadedNode::faults(self, neighbour)
    }

    fn set_faults(&self, neighbour: NodeAddr, faults: Faults) -> Result<(), UnknownPeer> {
        // DNP refuses a fault change only for a node it knows no socket address of.
        ThreadedNode::set_faults(self, neighbour, faults).map_err(|_| UnknownPeer(neighbour))
    }

    fn stats(&self) -> Vec<(String, u64)> {
        ThreadedNode::stats(self).lines()
    }

    fn stop(&self) {
        self.shutdown();
    }
}

impl Drop for ThreadedNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for ThreadedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadedNode")
            .field("addr", &self.node.me)
            .field("local_addr", &self.local_addr())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    //! No lock may be held across a system call that can block: a probe runs just before every
    //! `sendto` the test thread makes and looks at which of the node's locks it could take.

    use super::*;
    use crate::rmtp::MemSink;
    use crate::sync::BEFORE_LOCK;
    use crate::threaded::dnp::BEFORE_SENDTO;
    use control::topology::build;
    use std::sync::Weak;
    use std::sync::atomic::AtomicU64;
    use std::time::Instant as StdInstant;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    /// The node's locks this thread cannot take. Another thread may hold one for a moment, so
    /// each is retried until a deadline; one this thread holds never comes free.
    /// The locks never seen free over a short window while the caller waits in here: those the
    /// calling thread holds (it cannot release them before it returns), or that other threads
    /// held without a break for the whole window. Each lock need only be seen free once, not all
    /// at the same moment: on a loaded machine the node's busy threads rarely leave every lock
    /// free at once.
    fn held_here(node: &Node) -> Vec<&'static str> {
        let deadline = StdInstant::now() + Duration::from_secs(2);
        let mut never_free: Option<Vec<&'static str>> = None;
        loop {
            let mut free = node.dnp.locks_free();
            let layer = node.rmtp.as_ref().unwrap();
            free.extend([
                ("drp", node.drp.try_lock().is_ok()),
                ("gmp", node.gmp.try_lock().is_ok()),
                ("rap_servers", node.rap_servers.try_write().is_ok()),
                ("rap_client", node.rap_client.client.try_lock().is_ok()),
                ("rmtp.relay", layer.relay.try_lock().is_ok()),
                ("rmtp.servers", layer.servers.try_write().is_ok()),
                ("rmtp.clients", layer.clients.try_write().is_ok()),
                ("threads", node.threads.try_lock().is_ok()),
                ("extra_buffers", node.extra_buffers.try_lock().is_ok()),
                ("table_watchers", node.table_watchers.try_lock().is_ok()),
            ]);
            let held: Vec<_> = free.iter().filter(|(_, ok)| !ok).map(|(l, _)| *l).collect();
            let still = match never_free.take() {
                None => held,
                Some(before) => before.into_iter().filter(|l| held.contains(l)).collect(),
            };
            if still.is_empty() || StdInstant::now() >= deadline {
                return still;
            }
            never_free = Some(still);
            std::thread::yield_now();
        }
    }

    /// Nodes 1 and 2 linked, on loopback sockets bound first, once 2 has a route to 1.
    fn line_of_two() -> Vec<ThreadedNode> {
        let mut topology = build::line(2, 7001);
        let mut sockets = Vec::new();
        for spec in &mut topology.nodes {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            spec.socket = s.local_addr().unwrap();
            sockets.push((spec.addr, s));
        }
        let nodes: Vec<ThreadedNode> = sockets
            .into_iter()
            .map(|(a, s)| {
                ThreadedNode::start_with_socket(&topology, a, s, ThreadedOptions::default())
                    .unwrap()
            })
            .collect();
        let deadline = StdInstant::now() + Duration::from_secs(30);
        while nodes[1].next_hop(n(1)).is_none() {
            assert!(StdInstant::now() < deadline, "no route from 2 to 1");
            std::thread::sleep(Duration::from_millis(10));
        }
        nodes
    }

    /// Through the hosting trait, as the `burghers` command holds it: named, counted, refusing
    /// an unknown peer, and stopped (once, with its goodbye) while another `Arc` still holds it.
    #[test]
    fn a_node_hosted_through_the_trait_stops_while_shared() {
        use crate::host::counter;
        let mut nodes = line_of_two();
        let node2: Arc<dyn RunningNode> = Arc::new(nodes.pop().unwrap());
        let node1 = nodes.pop().unwrap();
        assert_eq!(node2.engine(), "threaded");
        let stats = node2.stats();
        assert_eq!(stats[0], ("node.addr".to_string(), 2));
        assert!(counter(&stats, "dnp.rx_datagrams").is_some_and(|v| v > 0));
        assert_eq!(
            node2.set_faults(n(9), Faults::default()),
            Err(UnknownPeer(n(9)))
        );
        assert!(node2.faults(n(1)).is_some());

        let held = Arc::clone(&node2);
        node2.stop();
        node2.stop();
        let refused = held.send(
            GroupAddr::from_index(1).unwrap(),
            "late",
            Box::new(crate::rmtp::MemSource::new(vec![1; 10])),
            SendOptions::default(),
        );
        assert!(matches!(refused, Err(StartError::Unavailable(_))));
        // Its terminate reached node 1, which dropped it at once.
        let deadline = StdInstant::now() + Duration::from_secs(30);
        while !node1.neighbours().is_empty() {
            assert!(StdInstant::now() < deadline, "node 1 still lists node 2");
            std::thread::sleep(Duration::from_millis(10));
        }
        node1.stop();
    }

    #[test]
    fn no_lock_is_held_across_sendto() {
        let nodes = line_of_two();
        let node2 = &nodes[1];

        let held = Arc::new(Mutex::new(Vec::new()));
        let probes = Arc::new(AtomicU64::new(0));
        let (shared, seen, calls): (Weak<Node>, _, _) = (
            Arc::downgrade(&node2.node),
            Arc::clone(&held),
            Arc::clone(&probes),
        );
        BEFORE_SENDTO.with(|p| {
            *p.borrow_mut() = Some(Box::new(move |_: &[u8]| {
                calls.fetch_add(1, Ordering::Relaxed);
                if let Some(node) = shared.upgrade() {
                    lock(&seen).extend(held_here(&node));
                }
            }))
        });
        // A direct send, a subscription (its join), and a receiver (its join).
        let hello = control::wire::dnp::frame(
            control::Addr::Node(n(1)),
            control::Addr::Node(n(2)),
            control::wire::Flag::Drp,
            &control::wire::drp::hello(),
        );
        node2.dnp().send_to_neighbour(n(1), &hello).unwrap();
        node2
            .subscribe(GroupAddr::from_index(1).unwrap(), n(1), 5)
            .unwrap();
        let receiving = node2.receive(
            GroupAddr::from_index(2).unwrap(),
            n(1),
            6,
            Box::new(MemSink::new()),
            Default::default(),
        );
        BEFORE_SENDTO.with(|p| p.borrow_mut().take());
        assert!(receiving.is_ok());
        assert_eq!(probes.load(Ordering::Relaxed), 3, "the hello and two joins");
        assert_eq!(*lock(&held), Vec::<&str>::new(), "locks held across sendto");
        for node in nodes {
            node.stop();
        }
    }

    /// `stats` (what the control socket's `info` and `stats` answer) takes each lock with no
    /// other held. It held `threads` while it waited for `rmtp.clients`, which `receive` holds
    /// while it waits for `threads`: a `burghers recv` asked for `info` as it started hung, its
    /// control socket dead. Before the fix this found `threads` (and more) held.
    #[test]
    fn stats_takes_one_lock_at_a_time() {
        let nodes = line_of_two();
        let node2 = &nodes[1];
        // Something in every map stats reads: a client, a server, a RAP server.
        let _receiving = node2
            .receive(
                GroupAddr::from_index(2).unwrap(),
                n(1),
                6,
                Box::new(MemSink::new()),
                Default::default(),
            )
            .unwrap();
        let _sending = node2
            .send(
                GroupAddr::from_index(3).unwrap(),
                "probe",
                Box::new(crate::rmtp::MemSource::new(vec![7; 4096])),
                Default::default(),
            )
            .unwrap();

        let held = Arc::new(Mutex::new(Vec::new()));
        let probes = Arc::new(AtomicU64::new(0));
        let (shared, seen, calls): (Weak<Node>, _, _) = (
            Arc::downgrade(&node2.node),
            Arc::clone(&held),
            Arc::clone(&probes),
        );
        BEFORE_LOCK.with(|p| {
            *p.borrow_mut() = Some(Box::new(move || {
                calls.fetch_add(1, Ordering::Relaxed);
                if let Some(node) = shared.upgrade() {
                    // Each link's garbler state is read under the peers' lock, the send
                    // path's order too: a leaf, under which nothing else is taken.
                    let now_held = held_here(&node).into_iter().filter(|&l| l != "dnp.peers");
                    let mut seen = seen.lock().unwrap();
                    for l in now_held {
                        if !seen.contains(&l) {
                            seen.push(l);
                        }
                    }
                }
            }))
        });
        let stats = node2.stats();
        BEFORE_LOCK.with(|p| p.borrow_mut().take());
        assert!(probes.load(Ordering::Relaxed) > 10, "stats took its locks");
        let rmtp = stats.rmtp.unwrap();
        assert_eq!((rmtp.clients.len(), rmtp.servers.len()), (1, 1));
        assert_eq!(
            *lock(&held),
            Vec::<&str>::new(),
            "locks held while stats took another"
        );
        for node in nodes {
            node.stop();
        }
    }
}
