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
mod data_plane;
mod outbox;
mod stats;
mod tables;
pub mod worker;

pub use control_plane::{ControlEvent, ControlPlane, RAP_CLIENT_SID, RAP_SERVER_SID};
pub use data_plane::{DataPlane, Received};
pub use outbox::{BufferId, MAX_SPARE_BATCHES, MAX_SPARE_BUFFERS, Outbox, Outgoing, Payload, Span};
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
use control::wire::dnp::Packet;
use control::wire::rap::ServiceEntry;
use control::{GroupAddr, Instant, NodeAddr, Transmit};
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
    control: ControlPlane,
    /// Shares its outgoing queue and counters with the control plane.
    data: DataPlane,
    events: VecDeque<NodeEvent>,
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
        let mtu = topology.network.mtu;
        let control = ControlPlane::new(me, topology, now);
        let data = DataPlane::new(me, mtu, control.shared_tables().clone(), options);
        let mut node = Node {
            me,
            mtu,
            control,
            data,
            events: VecDeque::new(),
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
        self.data.stats()
    }

    pub fn transfers(&self) -> &Transfers {
        self.data.transfers()
    }

    /// The control plane half (its published tables: [`ControlPlane::shared_tables`]).
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control
    }

    /// The data plane half.
    pub fn data_plane(&self) -> &DataPlane {
        &self.data
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
        let entry = service_entry(self.me, self.mtu, group, name, source.as_ref(), None);
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
        check_entry(self.me, &entry, source.as_ref())?;
        if self.data.transfers().sender(entry.group).is_some() {
            return Err(StartError::Busy);
        }
        self.control
            .announce(entry.clone())
            .map_err(|e| StartError::Announce(format!("{e:?}")))?;
        if !add_sender(&mut self.data, now, &entry, source, adjust) {
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
        let removed = self.data.transfers_mut().remove_sender(group);
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
            .data
            .transfers_mut()
            .add_receiver_with(now, sid, group, sender, sink, adjust)
        {
            return Err(StartError::Busy);
        }
        if let Err(e) = self.control.subscribe(now, group, sender, sid) {
            self.data.transfers_mut().remove_receiver(sid);
            return Err(StartError::Membership(e));
        }
        self.sync(now);
        Ok(())
    }

    /// Stops local receiver `sid` and leaves its group; an incomplete output stays partial.
    pub fn stop_receive(&mut self, now: Instant, group: GroupAddr, sender: NodeAddr, sid: u16) {
        self.data.transfers_mut().remove_receiver(sid);
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

    /// See [`DataPlane::validate_from_stranger`].
    pub fn validate_from_stranger(&mut self, datagram: &[u8]) -> bool {
        self.data.validate_from_stranger(datagram)
    }

    /// A batch of datagrams from one neighbour with one `now` ([`DataPlane::handle_batch`]):
    /// the control plane takes its packets as they come, the transfers answer once at the end.
    pub fn handle_batch(&mut self, now: Instant, batch: Received<'_>) {
        let mark = self.data.begin_batch(batch);
        for datagram in batch.datagrams() {
            if let Some(packet) = self.data.handle_in_batch(now, batch.from, datagram) {
                self.handle_control(now, batch.from, &packet);
            }
        }
        self.data.end_batch(now, mark);
        self.collect_transfer_events();
    }

    /// See [`DataPlane::handle_received`]: a batch of one with its token.
    pub fn handle_received(&mut self, now: Instant, from: NodeAddr, datagram: &[u8], token: u64) {
        let batch = Received {
            token: Some(token),
            ..Received::one(from, datagram)
        };
        self.handle_batch(now, batch);
    }

    /// A datagram from neighbour `from`: validated, then handed to its half by flag (a batch
    /// of one). Data-plane work leaves the control plane as it was: only the transfers'
    /// events to collect (the control plane's sync costs a table look per packet).
    pub fn handle_datagram(&mut self, now: Instant, from: NodeAddr, datagram: &[u8]) {
        self.handle_batch(now, Received::one(from, datagram));
    }

    fn handle_control(&mut self, now: Instant, from: NodeAddr, packet: &Packet<'_>) {
        let (_, stats) = self.data.out_and_stats();
        self.control.handle_packet(now, from, packet, stats);
        self.sync(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let (out, stats) = self.data.out_and_stats();
        self.control.handle_timeout(now, out, stats);
        self.sync(now);
        if self.data.poll_timeout().is_some_and(|t| t <= now) {
            self.data.handle_timeout(now);
            self.sync(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.control.poll_timeout(), self.data.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next packet to send, as a buffer of its own: for an engine that keeps its packets
    /// (the simulator) and hands datagrams in with [`Node::handle_datagram`].
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.data.poll_transmit()
    }

    /// The next packet to send, where its bytes are: an engine that sends from its own buffers
    /// reads a [`Payload::Shared`] one with [`Node::outgoing_bytes`] and hands it back with
    /// [`Node::release`] once its send completed, once per datagram of a run
    /// ([`Outgoing::segment_size`], [`Span::segments`]).
    pub fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.data.poll_outgoing()
    }

    /// The bytes of a [`Payload::Shared`] packet; they stay put until it is released.
    pub fn outgoing_bytes(&self, id: BufferId, span: Span) -> &[u8] {
        self.data.outgoing_bytes(id, span)
    }

    /// A [`Payload::Shared`] packet's send is over (completed, failed or dropped): after the
    /// last one referring to its buffer, the node writes its next packets there.
    pub fn release(&mut self, id: BufferId) {
        self.data.release(id);
    }

    /// Allocates `buffers` outgoing buffers of MTU capacity now (see [`Outbox::reserve`]): an
    /// engine that recycles them calls it once, before the first packet.
    pub fn reserve_send_buffers(&mut self, buffers: usize) {
        self.data.reserve_send_buffers(buffers);
    }

    /// Moves what the halves produced to where it goes: the control plane's packets and tables
    /// (it publishes them), then both halves' events to the node's queue.
    fn sync(&mut self, now: Instant) {
        let (out, stats) = self.data.out_and_stats();
        self.control.sync(now, out, stats);
        while let Some(ControlEvent::Services { server, list }) = self.control.poll_event() {
            self.events.push_back(NodeEvent::Services { server, list });
        }
        self.collect_transfer_events();
    }

    fn collect_transfer_events(&mut self) {
        while let Some(e) = self.data.poll_event() {
            self.events.push_back(NodeEvent::Transfer(e));
        }
    }
}

/// Refuses an entry that does not describe `source` sent from node `me`.
pub fn check_entry(
    me: NodeAddr,
    entry: &ServiceEntry,
    source: &dyn Source,
) -> Result<(), StartError> {
    if entry.sender != me || entry.size != source.len() {
        return Err(StartError::Unavailable(format!(
            "the announcement is of {} bytes from node {}, not of this source ({} bytes) from node {}",
            entry.size,
            entry.sender,
            source.len(),
            me
        )));
    }
    Ok(())
}

/// Adds the local sender of the transfer `entry` announces to `data` (false: the group has
/// one already). The announcement's hash is given to the sender, which need not hash the
/// source again as it sends. The first sender makes the batch buffers senders build in
/// ([`DataPlane::reserve_sender_buffers`]).
pub fn add_sender(
    data: &mut DataPlane,
    now: Instant,
    entry: &ServiceEntry,
    source: Box<dyn Source>,
    adjust: impl FnOnce(&mut SenderConfig),
) -> bool {
    let hash = entry.hash;
    let added = data
        .transfers_mut()
        .add_sender_with(now, entry.group, source, |config| {
            config.content_hash = Some(hash);
            adjust(config);
        });
    if added {
        data.reserve_sender_buffers();
    }
    added
}

/// What RAP announces for a transfer of `source` to `group` from node `sender`: the one place
/// a transfer's entry is built, for every engine. Unless the caller knows the source's hash
/// (`hash`), it reads the whole source for it, so an engine calls it on the caller's thread,
/// never its own.
pub fn service_entry(
    sender: NodeAddr,
    mtu: usize,
    group: GroupAddr,
    name: &str,
    source: &dyn Source,
    hash: Option<[u8; 32]>,
) -> ServiceEntry {
    ServiceEntry {
        group,
        sender,
        size: source.len(),
        hash: hash.unwrap_or_else(|| content_hash(source)),
        segment_size: u16::try_from(control::wire::rmtp::max_payload(mtu)).unwrap_or(u16::MAX),
        name: name.to_string(),
    }
}

/// BLAKE3 of a whole source, read in 64 KiB pieces. (Hashing 1 MiB pieces on both cores of
/// the 2-core VM with blake3's rayon feature took a 256 MiB file 0.14 s against 0.085 on one.)
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
        let entry = service_entry(
            n(1),
            topology.network.mtu,
            group,
            "f",
            source().as_ref(),
            None,
        );
        assert_eq!(entry.hash, *blake3::hash(&data).as_bytes());
        // A hash the caller has already is taken as it is: the source is not read again.
        struct Unreadable;
        impl Source for Unreadable {
            fn len(&self) -> u64 {
                5000
            }
            fn read_at(&self, _: u64, _: &mut [u8]) -> usize {
                panic!("the source was read for a hash the caller gave")
            }
        }
        let known = service_entry(n(1), 1024, group, "f", &Unreadable, Some(entry.hash));
        assert_eq!(known.hash, entry.hash);

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
