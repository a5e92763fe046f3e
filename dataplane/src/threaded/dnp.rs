//! DNP on a real UDP socket (seed §2): the service every protocol thread sends through, and the
//! demultiplexer the receiver thread hands accepted packets to.
//!
//! Sending is the seed's `send_DNP_packet`: look up the neighbour's socket address (for routed
//! packets, `next_hop` first, under the routing table's reader lock), pass the garbler, `sendto`
//! once per packet, and check that it went. Packets are sealed by the protocol that built them
//! (the cores seal), so nothing is copied or re-checksummed here; relays send received bytes
//! unchanged.
//!
//! Receiving: [`Dnp::accept`] checks a datagram with `Packet::parse` (dropped and counted per
//! `DnpError` name), maps its source socket address to the neighbour it came from, and
//! dispatches by flag into the protocol's impatient buffer, or forwards a packet for another node
//! by `next_hop`.

use super::buffer::ImpatientBuffer;
use super::clock::Clock;
use super::counters::{DnpCounters, DnpStats, error_index, flag_index, flag_of};
use super::packet::{PacketBuf, Received};
use crate::garbler::{DelayLine, DelayStats, GarblerStats, LinkGarbler, link_rng};
use crate::sync::{read, write};
use control::drp::RoutingTable;
use control::gmp::MulticastTable;
use control::topology::{Faults, Topology};
use control::wire::drp::DrpMessage;
use control::wire::{Flag, Packet};
use control::{Addr, NodeAddr};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant as StdInstant};

/// Why a packet was not sent. Every case is also counted in [`DnpStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The routing table has no route to this node.
    NoRoute(NodeAddr),
    /// No socket address is known for this node.
    UnknownNeighbour(NodeAddr),
    /// A routed send whose header has no node destination (a group, zero, or no header).
    NotRoutable,
    /// `sendto` failed.
    Io(io::ErrorKind),
    /// `sendto` sent fewer bytes than the packet has.
    Short { sent: usize, len: usize },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NoRoute(n) => write!(f, "no route to node {n}"),
            SendError::UnknownNeighbour(n) => write!(f, "no socket address known for node {n}"),
            SendError::NotRoutable => write!(f, "packet has no node destination to route by"),
            SendError::Io(k) => write!(f, "sendto failed: {k}"),
            SendError::Short { sent, len } => write!(f, "sendto sent {sent} of {len} bytes"),
        }
    }
}

impl std::error::Error for SendError {}

/// One node this node can send to directly: every node of the topology file (DRP decides which
/// are live neighbours) and every neighbour learned from its DRP packets.
#[derive(Debug)]
struct Peer {
    socket: SocketAddr,
    /// The faults of the direction toward it.
    link: LinkGarbler,
    /// Learned from a DRP packet rather than read from the file.
    learned: bool,
}

#[derive(Debug, Default)]
struct Peers {
    by_addr: BTreeMap<NodeAddr, Peer>,
    by_socket: BTreeMap<SocketAddr, NodeAddr>,
    /// The learnt ones and when each was learnt (bounded by the learnt-peer capacity).
    learned_at: BTreeMap<NodeAddr, StdInstant>,
}

impl Peers {
    fn insert(&mut self, addr: NodeAddr, peer: Peer) {
        self.by_socket.insert(peer.socket, addr);
        self.by_addr.insert(addr, peer);
    }

    /// Forgets a learnt peer; the file's peers stay for the node's life.
    fn forget_learned(&mut self, addr: NodeAddr) -> bool {
        if self.learned_at.remove(&addr).is_none() {
            return false;
        }
        if let Some(peer) = self.by_addr.remove(&addr) {
            self.by_socket.remove(&peer.socket);
        }
        true
    }
}

/// What [`Dnp::peers`] reports about one peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerInfo {
    pub addr: NodeAddr,
    pub socket: SocketAddr,
    pub learned: bool,
    pub faults: Faults,
}

/// How the DNP layer is set up (from the node's options).
pub(crate) struct DnpConfig {
    pub seed: u64,
    pub capacity: usize,
    /// Most peers learnt from their packets at once.
    pub learned_capacity: usize,
}

/// The DNP layer of one node, shared (by `Arc`) by every thread of the node.
pub struct Dnp {
    me: NodeAddr,
    mtu: usize,
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    clock: Clock,
    seed: u64,
    capacity: usize,
    learned_capacity: usize,
    peers: RwLock<Peers>,
    /// The tables, behind reader-writer locks (seed §3.1, §4); each holds an immutable snapshot
    /// that the publishing thread replaces whole.
    routes: RwLock<Arc<RoutingTable>>,
    multicast: RwLock<Arc<MulticastTable>>,
    delay: DelayLine<SocketAddr>,
    counters: Arc<DnpCounters>,
    drp_in: Arc<ImpatientBuffer<Received>>,
    gmp_in: Arc<ImpatientBuffer<Received>>,
    /// Set once an RMTP middle layer attaches; until then RMTP packets are not queued.
    rmtp_in: OnceLock<Arc<ImpatientBuffer<Received>>>,
    /// RAP endpoints (servers and the client) by service id.
    rap_in: RwLock<BTreeMap<u16, Arc<ImpatientBuffer<Received>>>>,
}

impl Dnp {
    pub(crate) fn new(
        me: NodeAddr,
        topology: &Topology,
        socket: UdpSocket,
        clock: Clock,
        config: DnpConfig,
    ) -> io::Result<Dnp> {
        let local_addr = socket.local_addr()?;
        let socket = Arc::new(socket);
        let mtu = topology.network.mtu;
        let mut peers = Peers::default();
        for node in topology.nodes.iter().filter(|n| n.addr != me) {
            let faults = topology
                .link(me, node.addr)
                .map(|l| l.faults)
                .unwrap_or_default();
            let link = LinkGarbler::new(faults, link_rng(config.seed, me, node.addr), mtu);
            peers.insert(
                node.addr,
                Peer {
                    socket: node.socket,
                    link,
                    learned: false,
                },
            );
        }
        let counters = Arc::new(DnpCounters::default());
        let delay = {
            let socket = Arc::clone(&socket);
            let counters = Arc::clone(&counters);
            DelayLine::spawn(format!("n{me}-garbler"), move |dest, packet| {
                send_raw(&socket, &counters, *dest, packet).is_ok()
            })?
        };
        let buffer = |name: &str| Arc::new(ImpatientBuffer::new(name, config.capacity));
        Ok(Dnp {
            me,
            mtu,
            socket,
            local_addr,
            clock,
            seed: config.seed,
            capacity: config.capacity,
            learned_capacity: config.learned_capacity,
            peers: RwLock::new(peers),
            routes: RwLock::new(Arc::new(RoutingTable::empty(me))),
            multicast: RwLock::new(Arc::new(MulticastTable::default())),
            delay,
            counters,
            drp_in: buffer("drp"),
            gmp_in: buffer("gmp"),
            rmtp_in: OnceLock::new(),
            rap_in: RwLock::new(BTreeMap::new()),
        })
    }

    pub fn me(&self) -> NodeAddr {
        self.me
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The address the node's socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    // ---- sending ----

    /// Sends a sealed packet to a neighbour (hop-by-hop protocols, relays). The garbler's faults
    /// for that direction apply. Ok means it appears sent (or the garbler took it).
    /// The peers' lock is released before `sendto`, which can block: the receiver thread may
    /// need it to learn a peer, and it never waits on anyone (seed §2).
    pub fn send_to_neighbour(&self, to: NodeAddr, packet: &[u8]) -> Result<(), SendError> {
        let peers = read(&self.peers);
        let Some(peer) = peers.by_addr.get(&to) else {
            DnpCounters::bump(&self.counters.tx_unknown_neighbour);
            return Err(SendError::UnknownNeighbour(to));
        };
        let dest = peer.socket;
        // Made only when the faults copy: a link that only drops sends `packet` itself.
        let mut copies = Vec::new();
        if peer.link.is_clean() || peer.link.apply(packet, &mut copies) {
            drop(peers);
            return send_raw(&self.socket, &self.counters, dest, packet);
        }
        drop(peers);
        let now = StdInstant::now();
        let mut result = Ok(());
        for copy in copies {
            if copy.delay.is_zero() {
                result = result.and(send_raw(&self.socket, &self.counters, dest, &copy.packet));
            } else {
                self.delay.schedule(now + copy.delay, dest, copy.packet);
            }
        }
        result
    }

    /// Sends a sealed end-to-end packet toward its header's destination by `next_hop` (the
    /// seed's `send_DNP_packet` with the DRP `lookup`). A packet for this node is delivered to
    /// its protocol here, without the network.
    pub fn send_routed(&self, packet: &[u8]) -> Result<(), SendError> {
        let dst = packet
            .get(2..4)
            .map(|b| Addr::from_raw(u16::from_be_bytes([b[0], b[1]])));
        match dst {
            Some(Addr::Node(n)) if n == self.me => {
                self.deliver_local(packet);
                Ok(())
            }
            Some(Addr::Node(n)) => match self.next_hop(n) {
                Some(hop) => self.send_to_neighbour(hop, packet),
                None => {
                    DnpCounters::bump(&self.counters.tx_no_route);
                    Err(SendError::NoRoute(n))
                }
            },
            _ => {
                DnpCounters::bump(&self.counters.tx_bad_packet);
                Err(SendError::NotRoutable)
            }
        }
    }

    /// The seed's one routing query, under the routing table's reader lock.
    pub fn next_hop(&self, dst: NodeAddr) -> Option<NodeAddr> {
        read(&self.routes).next_hop(dst)
    }

    // ---- tables ----

    /// The current routing table snapshot.
    pub fn routes(&self) -> Arc<RoutingTable> {
        Arc::clone(&read(&self.routes))
    }

    /// The current multicast table snapshot.
    pub fn multicast(&self) -> Arc<MulticastTable> {
        Arc::clone(&read(&self.multicast))
    }

    pub(crate) fn publish_routes(&self, table: Arc<RoutingTable>) {
        *write(&self.routes) = table;
    }

    /// Replaces the multicast table; false if it is the one already published.
    pub(crate) fn publish_multicast(&self, table: Arc<MulticastTable>) -> bool {
        let mut current = write(&self.multicast);
        if Arc::ptr_eq(&current, &table) {
            return false;
        }
        *current = table;
        true
    }

    // ---- peers and the garbler ----

    /// Every node this node has a socket address for, ascending.
    pub fn peers(&self) -> Vec<PeerInfo> {
        read(&self.peers)
            .by_addr
            .iter()
            .map(|(&addr, p)| PeerInfo {
                addr,
                socket: p.socket,
                learned: p.learned,
                faults: p.link.faults(),
            })
            .collect()
    }

    /// The neighbour a socket address belongs to.
    pub fn peer_at(&self, socket: SocketAddr) -> Option<NodeAddr> {
        read(&self.peers).by_socket.get(&socket).copied()
    }

    /// Replaces the faults of the direction toward `to`, at once.
    pub fn set_faults(&self, to: NodeAddr, faults: Faults) -> Result<(), SendError> {
        let peers = read(&self.peers);
        let peer = peers
            .by_addr
            .get(&to)
            .ok_or(SendError::UnknownNeighbour(to))?;
        peer.link.set_faults(faults);
        Ok(())
    }

    pub fn faults(&self, to: NodeAddr) -> Option<Faults> {
        read(&self.peers).by_addr.get(&to).map(|p| p.link.faults())
    }

    /// See [`LinkGarbler::set_undetected_corruption`].
    pub fn set_undetected_corruption(&self, to: NodeAddr, p: f64) -> Result<(), SendError> {
        let peers = read(&self.peers);
        let peer = peers
            .by_addr
            .get(&to)
            .ok_or(SendError::UnknownNeighbour(to))?;
        peer.link.set_undetected_corruption(p);
        Ok(())
    }

    /// Garbler counters of the directions that have garbled anything.
    pub fn garbler_stats(&self) -> Vec<(NodeAddr, GarblerStats)> {
        read(&self.peers)
            .by_addr
            .iter()
            .map(|(&n, p)| (n, p.link.stats()))
            .filter(|(_, s)| *s != GarblerStats::default())
            .collect()
    }

    pub fn delay_stats(&self) -> DelayStats {
        self.delay.stats()
    }

    pub fn stats(&self) -> DnpStats {
        self.counters.snapshot()
    }

    pub(crate) fn counters(&self) -> &DnpCounters {
        &self.counters
    }

    /// Learns the sender of a DRP packet from a socket address not in the file, so that a node
    /// whose file lacks a neighbour still works (seed §3.5). Only a DRP packet for this node
    /// from a node we have no address for is a candidate, and it teaches only if it is a whole
    /// hello or LSP: whoever can compute the two public checksums controls every other field,
    /// so a body DRP would refuse binds nothing. A refused claim is counted and changes nothing.
    fn learn(&self, source: SocketAddr, r: &Received) -> Option<NodeAddr> {
        let Addr::Node(n) = r.src else { return None };
        if r.flag != Flag::Drp || r.dst != Addr::Node(self.me) || n == self.me {
            return None;
        }
        let c = &self.counters;
        if !matches!(
            DrpMessage::parse(r.body()),
            Ok(DrpMessage::Hello | DrpMessage::Lsp(_))
        ) {
            DnpCounters::bump(&c.learn_refused_body);
            return None;
        }
        let mut peers = write(&self.peers);
        // The file's address always wins; a learnt one holds while its neighbour lives.
        if peers.by_addr.contains_key(&n) || peers.by_socket.contains_key(&source) {
            DnpCounters::bump(&c.learn_refused_taken);
            return None;
        }
        if peers.learned_at.len() >= self.learned_capacity {
            DnpCounters::bump(&c.learn_refused_full);
            return None;
        }
        let link = LinkGarbler::new(Faults::default(), link_rng(self.seed, self.me, n), self.mtu);
        peers.insert(
            n,
            Peer {
                socket: source,
                link,
                learned: true,
            },
        );
        peers.learned_at.insert(n, StdInstant::now());
        DnpCounters::bump(&c.peers_learned);
        Some(n)
    }

    /// DRP declared neighbour `n` dead: an address learnt for it goes with it, so that whoever
    /// proves to be `n` next (from any socket) can be learnt.
    pub(crate) fn neighbour_down(&self, n: NodeAddr) {
        if write(&self.peers).forget_learned(n) {
            DnpCounters::bump(&self.counters.peers_expired);
        }
    }

    /// Forgets learnt addresses older than `grace` whose node is not among DRP's `live`
    /// neighbours (the packet that taught one may never have reached DRP: its buffer drops the
    /// oldest when full).
    pub(crate) fn expire_learned(&self, live: &[NodeAddr], grace: Duration) {
        let now = StdInstant::now();
        let stale = |(&n, &at): (&NodeAddr, &StdInstant)| {
            (now.duration_since(at) >= grace && !live.contains(&n)).then_some(n)
        };
        if read(&self.peers)
            .learned_at
            .iter()
            .all(|e| stale(e).is_none())
        {
            return;
        }
        let mut peers = write(&self.peers);
        let expired: Vec<NodeAddr> = peers.learned_at.iter().filter_map(stale).collect();
        for n in expired {
            peers.forget_learned(n);
            DnpCounters::bump(&self.counters.peers_expired);
        }
    }

    // ---- receiving ----

    /// One datagram from the socket: check, map to its neighbour, dispatch (seed §2 steps 3-4).
    pub(crate) fn accept(&self, source: SocketAddr, packet: PacketBuf) {
        let c = &self.counters;
        DnpCounters::bump(&c.rx_datagrams);
        DnpCounters::add(&c.rx_bytes, packet.len() as u64);
        let (flag, dst, src) = match Packet::parse(packet.bytes(), self.mtu) {
            Ok(p) => (p.flag(), p.dst(), p.src()),
            Err(e) => {
                DnpCounters::bump(&c.rx_errors[error_index(&e)]);
                return;
            }
        };
        let mut r = Received {
            from: self.me,
            at: self.clock.now(),
            flag,
            dst,
            src,
            packet,
        };
        let Some(from) = self.peer_at(source).or_else(|| self.learn(source, &r)) else {
            DnpCounters::bump(&c.rx_unknown_peer);
            return;
        };
        r.from = from;
        self.dispatch(r);
    }

    /// A packet this node's own protocols addressed to this node.
    fn deliver_local(&self, bytes: &[u8]) {
        let Ok(p) = Packet::parse(bytes, self.mtu) else {
            DnpCounters::bump(&self.counters.tx_bad_packet);
            return;
        };
        let (flag, dst, src) = (p.flag(), p.dst(), p.src());
        DnpCounters::bump(&self.counters.local_deliveries);
        self.dispatch(Received {
            from: self.me,
            at: self.clock.now(),
            flag,
            dst,
            src,
            packet: PacketBuf::from_vec(bytes.to_vec()),
        });
    }

    /// Hands an accepted packet to the protocol its flag names, or forwards it.
    fn dispatch(&self, r: Received) {
        let c = &self.counters;
        DnpCounters::bump(&c.rx_by_flag[flag_index(r.flag)]);
        let for_me = r.dst == Addr::Node(self.me);
        match r.flag {
            Flag::Drp | Flag::Gmp => {
                if !for_me {
                    DnpCounters::bump(&c.rx_not_for_me);
                    return;
                }
                let buf = if r.flag == Flag::Drp {
                    &self.drp_in
                } else {
                    &self.gmp_in
                };
                buf.push(r);
            }
            Flag::Rap => match r.dst {
                _ if for_me => self.deliver_rap(r),
                Addr::Node(n) => self.forward(&r, n),
                _ => DnpCounters::bump(&c.rx_bad_address),
            },
            Flag::RmtpData
            | Flag::RmtpRetransmit
            | Flag::RmtpNack
            | Flag::RmtpMab
            | Flag::RmtpNcf
            | Flag::RmtpSpm => {
                if let Some(buf) = self.rmtp_in.get() {
                    buf.push(r);
                } else if let Addr::Node(n) = r.dst
                    && !for_me
                {
                    self.forward(&r, n);
                } else {
                    DnpCounters::bump(&c.rmtp_unclaimed);
                }
            }
        }
    }

    fn deliver_rap(&self, r: Received) {
        let Some(sid) = r.body().get(0..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            DnpCounters::bump(&self.counters.rap_malformed);
            return;
        };
        match read(&self.rap_in).get(&sid) {
            Some(buf) => {
                buf.push(r);
            }
            None => DnpCounters::bump(&self.counters.rap_no_endpoint),
        }
    }

    /// Sends a packet for another node on toward it, unchanged.
    fn forward(&self, r: &Received, dst: NodeAddr) {
        let c = &self.counters;
        match self.next_hop(dst) {
            None => DnpCounters::bump(&c.forward_no_route),
            Some(hop) if hop == r.from => DnpCounters::bump(&c.forward_loop),
            Some(hop) => {
                DnpCounters::bump(&c.forwarded);
                // Failures are counted by the send path; a relay has nobody to report them to.
                let _ = self.send_to_neighbour(hop, &r.packet);
            }
        }
    }

    // ---- buffers ----

    pub(crate) fn drp_in(&self) -> &Arc<ImpatientBuffer<Received>> {
        &self.drp_in
    }

    pub(crate) fn gmp_in(&self) -> &Arc<ImpatientBuffer<Received>> {
        &self.gmp_in
    }

    /// The RMTP buffer, created on first call; from then on every RMTP packet goes there.
    pub(crate) fn claim_rmtp(&self) -> Arc<ImpatientBuffer<Received>> {
        Arc::clone(
            self.rmtp_in
                .get_or_init(|| Arc::new(ImpatientBuffer::new("rmtp", self.capacity))),
        )
    }

    pub(crate) fn rmtp_in(&self) -> Option<&Arc<ImpatientBuffer<Received>>> {
        self.rmtp_in.get()
    }

    /// Routes RAP packets for service `sid` to `buf`. False if the id is taken.
    pub(crate) fn register_rap(&self, sid: u16, buf: Arc<ImpatientBuffer<Received>>) -> bool {
        let mut map = write(&self.rap_in);
        if map.contains_key(&sid) {
            return false;
        }
        map.insert(sid, buf);
        true
    }

    // ---- shutdown ----

    /// Unblocks the receiver thread's `recvfrom` with an empty datagram to our own socket.
    pub(crate) fn wake_receiver(&self) {
        let mut to = self.local_addr;
        if to.ip().is_unspecified() {
            to.set_ip(match to.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        // If this is lost the receiver still notices within its read timeout.
        let _ = self.socket.send_to(&[], to);
    }

    pub(crate) fn shutdown_delay_line(&self) {
        self.delay.shutdown();
    }

    /// Whether each of DNP's locks could be taken for writing at this moment (for tests of what
    /// a sender holds).
    #[cfg(test)]
    pub(crate) fn locks_free(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("dnp.peers", self.peers.try_write().is_ok()),
            ("dnp.routes", self.routes.try_write().is_ok()),
            ("dnp.multicast", self.multicast.try_write().is_ok()),
            ("dnp.rap_in", self.rap_in.try_write().is_ok()),
        ]
    }
}

/// What a test runs just before a `sendto`, given the packet.
#[cfg(test)]
pub(crate) type SendProbe = Box<dyn Fn(&[u8])>;

#[cfg(test)]
thread_local! {
    /// Called on this thread just before each `sendto` it makes: tests look at which locks the
    /// sender still holds at that moment.
    pub(crate) static BEFORE_SENDTO: std::cell::RefCell<Option<SendProbe>> =
        const { std::cell::RefCell::new(None) };
}

/// `sendto` once, counted, and checked (seed §2 step 6).
fn send_raw(
    socket: &UdpSocket,
    c: &DnpCounters,
    dest: SocketAddr,
    packet: &[u8],
) -> Result<(), SendError> {
    #[cfg(test)]
    BEFORE_SENDTO.with(|probe| {
        if let Some(probe) = &*probe.borrow() {
            probe(packet);
        }
    });
    DnpCounters::bump(&c.tx_packets);
    DnpCounters::add(&c.tx_bytes, packet.len() as u64);
    if let Some(flag) = flag_of(packet) {
        DnpCounters::bump(&c.tx_by_flag[flag_index(flag)]);
    }
    match socket.send_to(packet, dest) {
        Ok(n) if n == packet.len() => Ok(()),
        Ok(n) => {
            DnpCounters::bump(&c.tx_errors);
            Err(SendError::Short {
                sent: n,
                len: packet.len(),
            })
        }
        Err(e) => {
            DnpCounters::bump(&c.tx_errors);
            Err(SendError::Io(e.kind()))
        }
    }
}
