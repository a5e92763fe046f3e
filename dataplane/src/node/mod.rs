//! One Burghers node as a single sans-IO state machine: DNP validation and dispatch by flag,
//! DRP, GMP, RAP (a server announcing this node's transfers and a client to ask others), and the
//! RMTP parts. The simulator runs it directly; it is also the reference composition the real
//! engines are checked against.

mod stats;
mod transfers;

pub use stats::NodeStats;
pub use transfers::{Ctx, RmtpOptions, TransferEvent, Transfers};

use crate::rmtp::{Sink, Source};

use crate::sim::{Boot, SimNode};
use control::drp::{Drp, DrpEvent, RoutingTable};
use control::gmp::{Gmp, GmpError, MulticastTable};
use control::rap::{RapClient, RapEvent, RapServer};
use control::topology::Topology;
use control::wire::dnp::{Flag, Packet};
use control::wire::rap::{RapMessage, ServiceEntry};
use control::{Addr, GroupAddr, Instant, NodeAddr, Transmit};
use std::collections::VecDeque;
use std::sync::Arc;

/// Service id of every node's RAP server.
pub const RAP_SERVER_SID: u16 = 1;
/// Service id of every node's RAP client.
pub const RAP_CLIENT_SID: u16 = 2;

/// What a node tells whoever drives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A RAP server answered our request.
    Services {
        server: NodeAddr,
        list: Vec<ServiceEntry>,
    },
    /// A local transfer completed or failed.
    Transfer(TransferEvent),
}

/// Why a transfer could not be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartError {
    /// This node already sends to that group, or that client id is already receiving.
    Busy,
    /// The service list no longer fits one RAP packet.
    Announce(String),
    Membership(GmpError),
    /// The engine cannot run it now (it is stopping, or runs no RMTP layer).
    Unavailable(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Busy => write!(f, "already sending to that group or receiving on that id"),
            StartError::Announce(e) => write!(f, "cannot announce the transfer: {e}"),
            StartError::Membership(e) => write!(f, "cannot join the group: {e:?}"),
            StartError::Unavailable(why) => write!(f, "cannot start the transfer: {why}"),
        }
    }
}

impl std::error::Error for StartError {}

pub struct Node {
    me: NodeAddr,
    mtu: usize,
    drp: Drp,
    gmp: Gmp,
    rap_server: RapServer,
    rap_client: RapClient,
    transfers: Transfers,
    routes: Arc<RoutingTable>,
    mcast: Arc<MulticastTable>,
    out: VecDeque<Transmit>,
    events: VecDeque<NodeEvent>,
    stats: NodeStats,
}

impl Node {
    pub fn new(me: NodeAddr, topology: &Topology, now: Instant) -> Node {
        Node::with_options(me, topology, now, RmtpOptions::default())
    }

    pub fn with_options(
        me: NodeAddr,
        topology: &Topology,
        now: Instant,
        options: RmtpOptions,
    ) -> Node {
        let timers = &topology.network.timers;
        let drp = Drp::new(me, topology, now);
        let routes = drp.routes();
        let mut gmp = Gmp::new(me, timers);
        let mcast = gmp.table();
        let rap_server = RapServer::with_options(
            me,
            RAP_SERVER_SID,
            Vec::new(),
            control::rap::RapServerOptions {
                mtu: topology.network.mtu,
                ..Default::default()
            },
        )
        .expect("an empty service list always fits");
        let mut node = Node {
            me,
            mtu: topology.network.mtu,
            drp,
            gmp,
            rap_server,
            rap_client: RapClient::with_mtu(me, RAP_CLIENT_SID, timers, topology.network.mtu),
            transfers: Transfers::new(me, topology.network.mtu, options),
            routes,
            mcast,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: NodeStats::default(),
        };
        node.sync(now);
        node
    }

    pub fn me(&self) -> NodeAddr {
        self.me
    }

    pub fn routes(&self) -> &Arc<RoutingTable> {
        &self.routes
    }

    pub fn multicast(&self) -> &Arc<MulticastTable> {
        &self.mcast
    }

    pub fn drp(&self) -> &Drp {
        &self.drp
    }

    pub fn gmp(&self) -> &Gmp {
        &self.gmp
    }

    pub fn rap_server(&self) -> &RapServer {
        &self.rap_server
    }

    pub fn rap_client(&self) -> &RapClient {
        &self.rap_client
    }

    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    pub fn transfers(&self) -> &Transfers {
        &self.transfers
    }

    /// Starts multicasting `source` to `group` from this node, and announces it over RAP as
    /// `name`. Receivers that joined before the start get it all; later ones NACK what they missed.
    pub fn start_send(
        &mut self,
        now: Instant,
        group: GroupAddr,
        name: &str,
        source: Box<dyn Source>,
    ) -> Result<ServiceEntry, StartError> {
        let entry = ServiceEntry {
            group,
            sender: self.me,
            size: source.len(),
            hash: content_hash(source.as_ref()),
            segment_size: u16::try_from(control::wire::rmtp::max_payload(self.mtu))
                .unwrap_or(u16::MAX),
            name: name.to_string(),
        };
        let mut services = self.rap_server.services().to_vec();
        services.push(entry.clone());
        self.rap_server
            .set_services(services)
            .map_err(|e| StartError::Announce(format!("{e:?}")))?;
        if !self.transfers.add_sender(now, group, source) {
            return Err(StartError::Busy);
        }
        self.sync(now);
        Ok(entry)
    }

    /// Joins (`group`, `sender`) as local client `sid` and writes what arrives to `sink`.
    pub fn start_receive(
        &mut self,
        now: Instant,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
        sink: Box<dyn Sink>,
    ) -> Result<(), StartError> {
        if !self.transfers.add_receiver(now, sid, group, sender, sink) {
            return Err(StartError::Busy);
        }
        if let Err(e) = self.gmp.subscribe(now, group, sender, sid, &self.routes) {
            self.transfers.remove_receiver(sid);
            return Err(StartError::Membership(e));
        }
        self.sync(now);
        Ok(())
    }

    /// Stops local receiver `sid` and leaves its group; an incomplete output stays partial.
    pub fn stop_receive(&mut self, now: Instant, group: GroupAddr, sender: NodeAddr, sid: u16) {
        self.transfers.remove_receiver(sid);
        let _ = self.gmp.unsubscribe(now, group, sender, sid, &self.routes);
        self.sync(now);
    }

    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Subscribes local client `sid` to the tree of (`group`, `sender`).
    pub fn subscribe(
        &mut self,
        now: Instant,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
    ) -> Result<(), GmpError> {
        let result = self.gmp.subscribe(now, group, sender, sid, &self.routes);
        self.sync(now);
        result
    }

    pub fn unsubscribe(
        &mut self,
        now: Instant,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
    ) -> Result<(), GmpError> {
        let result = self.gmp.unsubscribe(now, group, sender, sid, &self.routes);
        self.sync(now);
        result
    }

    /// Asks `server`'s RAP server for its services; the answer comes as [`NodeEvent::Services`].
    pub fn request_services(&mut self, now: Instant, server: NodeAddr) {
        self.rap_client.request(now, server, RAP_SERVER_SID);
        self.rap_client.handle_timeout(now, &self.routes);
        self.sync(now);
    }

    /// Replaces what this node's RAP server announces.
    pub fn set_services(
        &mut self,
        services: Vec<ServiceEntry>,
    ) -> Result<(), control::rap::RapError> {
        self.rap_server.set_services(services)
    }

    /// Leaves the network cleanly: terminate packets to every neighbour.
    pub fn terminate(&mut self, now: Instant) {
        self.drp.terminate(now);
        self.sync(now);
    }

    /// A datagram from neighbour `from`: validated, then handed to its protocol.
    pub fn handle_datagram(&mut self, now: Instant, from: NodeAddr, datagram: &[u8]) {
        let packet = match Packet::parse(datagram, self.mtu) {
            Ok(p) => p,
            Err(e) => {
                self.stats.count_dnp_error(&e);
                return;
            }
        };
        self.stats.accepted += 1;
        match packet.flag() {
            Flag::Drp => {
                if self.drp.handle_body(now, from, packet.body()).is_err() {
                    self.stats.malformed_body += 1;
                }
            }
            Flag::Gmp => {
                if self
                    .gmp
                    .handle_body(now, from, packet.body(), &self.routes)
                    .is_err()
                {
                    self.stats.malformed_body += 1;
                }
            }
            Flag::Rap => self.handle_rap(now, from, &packet),
            Flag::RmtpData
            | Flag::RmtpRetransmit
            | Flag::RmtpNack
            | Flag::RmtpMab
            | Flag::RmtpNcf
            | Flag::RmtpSpm => {
                let ctx = Ctx {
                    mcast: &self.mcast,
                    routes: &self.routes,
                    out: &mut self.out,
                };
                self.transfers.handle_packet(now, from, &packet, ctx);
            }
        }
        self.sync(now);
    }

    fn handle_rap(&mut self, now: Instant, from: NodeAddr, packet: &Packet<'_>) {
        match packet.dst() {
            Addr::Node(dst) if dst == self.me => {}
            Addr::Node(dst) => return self.forward_unicast(from, dst, packet.bytes()),
            _ => {
                self.stats.misaddressed += 1;
                return;
            }
        }
        let Addr::Node(src) = packet.src() else {
            self.stats.misaddressed += 1;
            return;
        };
        match RapMessage::parse(packet.body()) {
            Ok(msg) if msg.dst_sid == RAP_SERVER_SID => {
                self.rap_server.handle_packet(now, src, msg)
            }
            Ok(msg) if msg.dst_sid == RAP_CLIENT_SID => {
                self.rap_client.handle_packet(now, src, msg)
            }
            Ok(_) => self.stats.unknown_service += 1,
            Err(_) => self.stats.malformed_body += 1,
        }
    }

    /// An end-to-end packet for another node, arrived from neighbour `from`, goes on unchanged
    /// toward its destination, but never back to `from`: that neighbour's route runs through
    /// us, a loop (forged link states can make one for a flood's round trip; DNP has no hop
    /// limit, so the packet would circle until the routes heal).
    fn forward_unicast(&mut self, from: NodeAddr, dst: NodeAddr, bytes: &[u8]) {
        match self.routes.next_hop(dst) {
            Some(to) if to == from => self.stats.looped += 1,
            Some(to) => {
                self.stats.forwarded += 1;
                self.out.push_back(Transmit {
                    to,
                    packet: bytes.to_vec(),
                });
            }
            None => self.stats.no_route += 1,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.drp.poll_timeout().is_some_and(|t| t <= now) {
            self.drp.handle_timeout(now);
        }
        // Routes may have just changed: let GMP and RAP see the new table before their timers.
        self.sync(now);
        if self.gmp.poll_timeout().is_some_and(|t| t <= now) {
            self.gmp.handle_timeout(now, &self.routes);
        }
        if self.rap_server.poll_timeout().is_some_and(|t| t <= now) {
            self.rap_server.handle_timeout(now);
        }
        if self.rap_client.poll_timeout().is_some_and(|t| t <= now) {
            self.rap_client.handle_timeout(now, &self.routes);
        }
        self.sync(now);
        if self.transfers.poll_timeout().is_some_and(|t| t <= now) {
            let ctx = Ctx {
                mcast: &self.mcast,
                routes: &self.routes,
                out: &mut self.out,
            };
            self.transfers.handle_timeout(now, ctx);
            self.sync(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.drp.poll_timeout(),
            self.gmp.poll_timeout(),
            self.rap_server.poll_timeout(),
            self.rap_client.poll_timeout(),
            self.transfers.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Moves what the cores produced to where it goes: route changes to GMP and RAP, tables to
    /// their published snapshots, packets to the outgoing queue.
    fn sync(&mut self, now: Instant) {
        while let Some(event) = self.drp.poll_event() {
            if event == DrpEvent::RoutesChanged {
                self.routes = self.drp.routes();
                self.gmp.routes_changed(now, &self.routes);
                self.rap_client.routes_changed(now, &self.routes);
            }
        }
        while let Some(t) = self.drp.poll_transmit() {
            self.out.push_back(t);
        }
        while let Some(t) = self.gmp.poll_transmit() {
            self.out.push_back(t);
        }
        while self.gmp.poll_event().is_some() {}
        self.mcast = self.gmp.table();
        while let Some(packet) = self.rap_server.poll_transmit() {
            self.send_routed(packet);
        }
        while let Some(packet) = self.rap_client.poll_transmit() {
            self.send_routed(packet);
        }
        while let Some(RapEvent::Services { server, list, .. }) = self.rap_client.poll_event() {
            self.events.push_back(NodeEvent::Services { server, list });
        }
        while let Some(e) = self.transfers.poll_event() {
            self.events.push_back(NodeEvent::Transfer(e));
        }
    }

    /// Sends a sealed packet toward its DNP destination.
    fn send_routed(&mut self, packet: Vec<u8>) {
        let dst = u16::from_be_bytes([packet[2], packet[3]]);
        match NodeAddr::new(dst).and_then(|d| self.routes.next_hop(d)) {
            Some(to) => self.out.push_back(Transmit { to, packet }),
            None => self.stats.no_route += 1,
        }
    }
}

impl SimNode for Node {
    fn handle_datagram(&mut self, now: Instant, from: NodeAddr, datagram: &[u8]) {
        Node::handle_datagram(self, now, from, datagram)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        Node::poll_transmit(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Node::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) {
        Node::handle_timeout(self, now)
    }
}

/// True when every up node's routing table equals the true shortest paths
/// ([`Topology::expected_routes`]) over the links that are up in `sim`.
pub fn routes_converged(sim: &crate::sim::Sim<Node>, topology: &Topology) -> bool {
    let expected =
        topology.expected_routes(|a, b| sim.is_link_up(a, b) && sim.is_up(a) && sim.is_up(b));
    topology.nodes.iter().zip(&expected).all(|(spec, want)| {
        !sim.is_up(spec.addr)
            || sim
                .node(spec.addr)
                .is_some_and(|node| node.routes().routes() == want.routes())
    })
}

/// The `make_node` function the simulator needs: every node built from the same topology.
pub fn sim_factory(topology: &Topology) -> impl FnMut(Boot) -> Node + 'static {
    let topology = topology.clone();
    move |boot: Boot| Node::new(boot.addr, &topology, boot.now)
}

/// BLAKE3 of a whole source, read in 64 KiB pieces.
pub(crate) fn content_hash(source: &dyn Source) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0;
    while offset < source.len() {
        let n = source.read_at(offset, &mut buf);
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    *hasher.finalize().as_bytes()
}
