//! One Burghers node as a single sans-IO state machine, composed of two halves that know no
//! engine:
//!
//! - the [`ControlPlane`] (DRP, GMP, a RAP server and client), which publishes the routing,
//!   multicast and neighbour tables as immutable snapshots ([`SharedTables`]);
//! - the RMTP worker, [`Transfers`] (the relay plus the local senders and receivers), which
//!   reads them.
//!
//! [`Node`] validates each datagram (DNP), hands it to its half by flag, and moves what the
//! halves produce to one outgoing queue and one event queue. The simulator runs it as it is
//! (`crate::sim`); the threaded engine runs the same cores over the seed's threads, and carries
//! out the relay's decisions with the worker's own code ([`worker::decisions`]).

mod control_plane;
mod outbox;
mod stats;
mod tables;
pub mod worker;

pub use control_plane::{ControlEvent, ControlPlane, RAP_CLIENT_SID, RAP_SERVER_SID};
pub use outbox::{BufferId, MAX_SPARE_BUFFERS, Outbox, Outgoing, Payload, Span};
pub use stats::NodeStats;
pub use tables::{Neighbour, NeighbourTable, SharedTables, Tables};
pub use worker::{Ctx, RmtpOptions, TransferEvent, Transfers};
// The simulator's helpers for this node once lived here; the CLI still names them by this path.
pub use crate::sim::{routes_converged, sim_factory};

use crate::rmtp::{ReceiverConfig, SenderConfig, Sink, Source};
use control::drp::{Drp, RoutingTable};
use control::gmp::{Gmp, GmpError, MulticastTable};
use control::rap::{RapClient, RapServer};
use control::topology::Topology;
use control::wire::dnp::{Flag, Packet};
use control::wire::rap::ServiceEntry;
use control::{Addr, GroupAddr, Instant, NodeAddr, Transmit};
use std::collections::VecDeque;
use std::sync::Arc;

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
    /// [`RmtpOptions::enabled`].
    rmtp_enabled: bool,
    control: ControlPlane,
    transfers: Transfers,
    out: Outbox,
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
        let mut node = Node {
            me,
            mtu: topology.network.mtu,
            rmtp_enabled: options.enabled,
            control: ControlPlane::new(me, topology, now),
            transfers: Transfers::new(me, topology.network.mtu, options),
            out: Outbox::new(topology.network.mtu),
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
        self.control.routes()
    }

    pub fn multicast(&self) -> &Arc<MulticastTable> {
        self.control.multicast()
    }

    pub fn drp(&self) -> &Drp {
        self.control.drp()
    }

    pub fn gmp(&self) -> &Gmp {
        self.control.gmp()
    }

    pub fn rap_server(&self) -> &RapServer {
        self.control.rap_server()
    }

    pub fn rap_client(&self) -> &RapClient {
        self.control.rap_client()
    }

    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    pub fn transfers(&self) -> &Transfers {
        &self.transfers
    }

    /// The control plane half (its published tables: [`ControlPlane::shared_tables`]).
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control
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
        self.start_send_with(now, group, name, source, |_| {})
    }

    /// [`Self::start_send`] with `adjust` applied to the sender's configuration (a caller's
    /// per-transfer settings, e.g. [`crate::host::SendOptions::apply`]).
    pub fn start_send_with(
        &mut self,
        now: Instant,
        group: GroupAddr,
        name: &str,
        source: Box<dyn Source>,
        adjust: impl FnOnce(&mut SenderConfig),
    ) -> Result<ServiceEntry, StartError> {
        let entry = service_entry(self.me, self.mtu, group, name, source.as_ref());
        self.start_send_entry(now, entry, source, adjust)
    }

    /// Starts the transfer `entry` describes (built by [`service_entry`], whose hash reads the
    /// whole source: an engine builds it off its own thread, then hands it in here). An entry
    /// that does not describe `source` sent from this node is refused.
    pub fn start_send_entry(
        &mut self,
        now: Instant,
        entry: ServiceEntry,
        source: Box<dyn Source>,
        adjust: impl FnOnce(&mut SenderConfig),
    ) -> Result<ServiceEntry, StartError> {
        if entry.sender != self.me || entry.size != source.len() {
            return Err(StartError::Unavailable(format!(
                "the announcement is of {} bytes from node {}, not of this source ({} bytes) from node {}",
                entry.size,
                entry.sender,
                source.len(),
                self.me
            )));
        }
        if self.transfers.sender(entry.group).is_some() {
            return Err(StartError::Busy);
        }
        self.control
            .announce(entry.clone())
            .map_err(|e| StartError::Announce(format!("{e:?}")))?;
        // The announcement's hash: the sender need not hash the source again as it sends.
        let hash = entry.hash;
        let given_hash = |config: &mut SenderConfig| {
            config.content_hash = Some(hash);
            adjust(config);
        };
        if !self
            .transfers
            .add_sender_with(now, entry.group, source, given_hash)
        {
            return Err(StartError::Busy);
        }
        self.sync(now);
        Ok(entry)
    }

    /// Drops the local sender of `group` (its tree state at the relay stays, as for any tree).
    /// The simulator keeps ended senders, so that a forged leave cannot end a transfer early
    /// (docs/ARCHITECTURE.md); an engine drops one once it has ended ([`RmtpSender::has_ended`],
    /// after its linger), so that the group can be sent to again. False if there was none.
    ///
    /// [`RmtpSender::has_ended`]: crate::rmtp::RmtpSender::has_ended
    pub fn stop_send(&mut self, now: Instant, group: GroupAddr) -> bool {
        let removed = self.transfers.remove_sender(group);
        self.sync(now);
        removed
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
        self.start_receive_with(now, group, sender, sid, sink, |_| {})
    }

    /// [`Self::start_receive`] with `adjust` applied to the receiver's configuration (a
    /// caller's per-transfer settings, e.g. [`crate::host::ReceiveOptions::apply`]).
    pub fn start_receive_with(
        &mut self,
        now: Instant,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
        sink: Box<dyn Sink>,
        adjust: impl FnOnce(&mut ReceiverConfig),
    ) -> Result<(), StartError> {
        if !self
            .transfers
            .add_receiver_with(now, sid, group, sender, sink, adjust)
        {
            return Err(StartError::Busy);
        }
        if let Err(e) = self.control.subscribe(now, group, sender, sid) {
            self.transfers.remove_receiver(sid);
            return Err(StartError::Membership(e));
        }
        self.sync(now);
        Ok(())
    }

    /// Stops local receiver `sid` and leaves its group; an incomplete output stays partial.
    pub fn stop_receive(&mut self, now: Instant, group: GroupAddr, sender: NodeAddr, sid: u16) {
        self.transfers.remove_receiver(sid);
        let _ = self.control.unsubscribe(now, group, sender, sid);
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
        let result = self.control.subscribe(now, group, sender, sid);
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
        let result = self.control.unsubscribe(now, group, sender, sid);
        self.sync(now);
        result
    }

    /// Asks `server`'s RAP server for its services; the answer comes as [`NodeEvent::Services`].
    pub fn request_services(&mut self, now: Instant, server: NodeAddr) {
        self.control.request_services(now, server);
        self.sync(now);
    }

    /// Replaces what this node's RAP server announces.
    pub fn set_services(
        &mut self,
        services: Vec<ServiceEntry>,
    ) -> Result<(), control::rap::RapError> {
        self.control.set_services(services)
    }

    /// Leaves the network cleanly: terminate packets to every neighbour.
    pub fn terminate(&mut self, now: Instant) {
        self.control.terminate(now);
        self.sync(now);
    }

    /// A datagram from a socket that is no neighbour of this node: validated like any other (a
    /// refusal counted by its DNP error), then dropped. True when it passed DNP validation, so
    /// the engine counts it as from an unknown peer, the way the threaded engine's DNP does.
    pub fn validate_from_stranger(&mut self, datagram: &[u8]) -> bool {
        match Packet::parse(datagram, self.mtu) {
            Ok(_) => true,
            Err(e) => {
                self.stats.count_dnp_error(&e);
                false
            }
        }
    }

    /// A datagram from neighbour `from` that lies in a receive buffer the engine keeps for the
    /// sends that refer to it: as [`Node::handle_datagram`], but what is passed on unchanged
    /// (a forward, the relay's fan-out) is queued as [`Payload::Input`] with `token`, the
    /// engine's name for where `datagram` lies, instead of a copy.
    pub fn handle_received(&mut self, now: Instant, from: NodeAddr, datagram: &[u8], token: u64) {
        self.out.set_input(token, datagram);
        self.handle_datagram(now, from, datagram);
        self.out.clear_input();
    }

    /// A datagram from neighbour `from`: validated, then handed to its half by flag.
    pub fn handle_datagram(&mut self, now: Instant, from: NodeAddr, datagram: &[u8]) {
        let packet = match Packet::parse(datagram, self.mtu) {
            Ok(p) => p,
            Err(e) => {
                self.stats.count_dnp_error(&e);
                return;
            }
        };
        self.stats.rx_accepted += 1;
        // An end-to-end datagram for another node (RAP, or RMTP without the RMTP layer) passes
        // on unchanged and changes nothing of the control plane: no sync (a look at every
        // table) per forwarded packet.
        if let Some(dst) = self.passes_on(&packet) {
            self.control
                .forward_unicast(from, dst, packet.bytes(), &mut self.out, &mut self.stats);
            return;
        }
        match packet.flag() {
            Flag::Drp | Flag::Gmp | Flag::Rap => {
                self.control
                    .handle_packet(now, from, &packet, &mut self.out, &mut self.stats)
            }
            // The rest is RMTP. Without the RMTP layer, one for another node was passed on
            // above; this node has no end for one to itself or to a group.
            _ if !self.rmtp_enabled => self.stats.rmtp_unclaimed += 1,
            _ => {
                // The worker's batch is this one datagram: the tables are loaded once for it.
                let tables = self.control.shared_tables().load();
                let ctx = Ctx {
                    mcast: &tables.multicast,
                    routes: &tables.routes,
                    out: &mut self.out,
                };
                self.transfers.handle_packet(now, from, &packet, ctx);
                // Data-plane work leaves the control plane as it was: only the transfers'
                // events to collect (the control plane's sync costs a table look per packet).
                self.collect_transfer_events();
                return;
            }
        }
        self.sync(now);
    }

    /// The destination of a packet this node only passes on toward it: RAP for another node,
    /// or RMTP for another node when the RMTP layer is off. DRP and GMP are hop by hop; RMTP
    /// with the layer on is the relay's.
    fn passes_on(&self, packet: &Packet<'_>) -> Option<NodeAddr> {
        let Addr::Node(dst) = packet.dst() else {
            return None;
        };
        let end_to_end = match packet.flag() {
            Flag::Drp | Flag::Gmp => false,
            Flag::Rap => true,
            _ => !self.rmtp_enabled,
        };
        (end_to_end && dst != self.me).then_some(dst)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.control
            .handle_timeout(now, &mut self.out, &mut self.stats);
        self.sync(now);
        if self.transfers.poll_timeout().is_some_and(|t| t <= now) {
            let tables = self.control.shared_tables().load();
            let ctx = Ctx {
                mcast: &tables.multicast,
                routes: &tables.routes,
                out: &mut self.out,
            };
            self.transfers.handle_timeout(now, ctx);
            self.sync(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.control.poll_timeout(), self.transfers.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next packet to send, as a buffer of its own: for an engine that keeps its packets
    /// (the simulator) and hands datagrams in with [`Node::handle_datagram`].
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_transmit()
    }

    /// The next packet to send, where its bytes are: an engine that sends from its own buffers
    /// reads a [`Payload::Shared`] one with [`Node::outgoing_bytes`] and hands it back with
    /// [`Node::release`] once its send completed.
    pub fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    /// The bytes of a [`Payload::Shared`] packet; they stay put until it is released.
    pub fn outgoing_bytes(&self, id: BufferId, span: Span) -> &[u8] {
        self.out.bytes(id, span)
    }

    /// A [`Payload::Shared`] packet's send is over (completed, failed or dropped): after the
    /// last one referring to its buffer, the node writes its next packets there.
    pub fn release(&mut self, id: BufferId) {
        self.out.release(id);
    }

    /// Allocates `buffers` outgoing buffers of MTU capacity now (see [`Outbox::reserve`]): an
    /// engine that recycles them calls it once, before the first packet.
    pub fn reserve_send_buffers(&mut self, buffers: usize) {
        self.out.reserve(buffers);
    }

    /// Outgoing buffers allocated because every reserved or released one was in use.
    pub fn send_buffers_allocated(&self) -> u64 {
        self.out.allocated()
    }

    /// Outgoing buffers a queued or in-flight packet refers to now.
    pub fn send_buffers_in_use(&self) -> usize {
        self.out.in_use()
    }

    /// Packets the node copied into an outgoing buffer (a packet passed on from a datagram
    /// handed in without a token, once per next hop), since it started.
    pub fn payload_copies(&self) -> u64 {
        self.out.copies()
    }

    /// Packets a local core built once and queued to one or more neighbours by reference.
    pub fn packets_built(&self) -> u64 {
        self.out.built()
    }

    /// Sends queued by reference to a datagram handed in with [`Node::handle_received`].
    pub fn input_references(&self) -> u64 {
        self.out.input_references()
    }

    /// Moves what the halves produced to where it goes: the control plane's packets and tables
    /// (it publishes them), then both halves' events to the node's queue.
    fn sync(&mut self, now: Instant) {
        self.control.sync(now, &mut self.out, &mut self.stats);
        while let Some(ControlEvent::Services { server, list }) = self.control.poll_event() {
            self.events.push_back(NodeEvent::Services { server, list });
        }
        self.collect_transfer_events();
    }

    fn collect_transfer_events(&mut self) {
        while let Some(e) = self.transfers.poll_event() {
            self.events.push_back(NodeEvent::Transfer(e));
        }
    }
}

/// What RAP announces for a transfer of `source` to `group` from node `sender`: the one place
/// a transfer's entry is built, for every engine. It reads the whole source for its hash, so
/// an engine calls it on the caller's thread, never its own.
pub fn service_entry(
    sender: NodeAddr,
    mtu: usize,
    group: GroupAddr,
    name: &str,
    source: &dyn Source,
) -> ServiceEntry {
    ServiceEntry {
        group,
        sender,
        size: source.len(),
        hash: content_hash(source),
        segment_size: u16::try_from(control::wire::rmtp::max_payload(mtu)).unwrap_or(u16::MAX),
        name: name.to_string(),
    }
}

/// BLAKE3 of a whole source, read in 64 KiB pieces.
fn content_hash(source: &dyn Source) -> [u8; 32] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rmtp::MemSource;
    use control::topology::build;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).expect("a node address")
    }

    /// An engine hands in the entry it built off its thread: one that does not describe the
    /// source, or names another sender, is refused and moves nothing; the right one starts
    /// the transfer, and a second one to the same group is Busy until the first is dropped.
    #[test]
    fn a_send_starts_from_the_entry_its_engine_built() {
        let topology = build::line(2, 7001);
        let mut node = Node::new(n(1), &topology, Instant::ZERO);
        let group = GroupAddr::from_index(1).expect("a group");
        let data = vec![7u8; 5000];
        let source = || Box::new(MemSource::new(data.clone())) as Box<dyn Source>;
        let entry = service_entry(n(1), topology.network.mtu, group, "f", source().as_ref());
        assert_eq!(entry.hash, *blake3::hash(&data).as_bytes());

        let other_sender = ServiceEntry {
            sender: n(2),
            ..entry.clone()
        };
        let short = Box::new(MemSource::new(vec![7u8; 10]));
        for (bad, src) in [
            (other_sender, source()),
            (entry.clone(), short as Box<dyn Source>),
        ] {
            let refused = node.start_send_entry(Instant::ZERO, bad, src, |_| {});
            assert!(
                matches!(refused, Err(StartError::Unavailable(_))),
                "{refused:?}"
            );
        }
        assert!(node.transfers().sender(group).is_none());
        assert!(node.rap_server().services().is_empty());

        let started = node.start_send_entry(Instant::ZERO, entry.clone(), source(), |_| {});
        assert_eq!(started, Ok(entry.clone()));
        let again = node.start_send_entry(Instant::ZERO, entry.clone(), source(), |_| {});
        assert_eq!(again, Err(StartError::Busy));
        assert!(node.stop_send(Instant::ZERO, group));
        assert!(
            node.start_send_entry(Instant::ZERO, entry, source(), |_| {})
                .is_ok()
        );
    }
}
