//! A node's data plane: DNP validation at the receive edge, the passing on of end-to-end
//! packets, and the RMTP worker ([`Transfers`]) with the outgoing queue its packets go to. It
//! reads the tables the control plane publishes ([`SharedTables`]) and never writes them, so an
//! engine may run one data plane per core beside a control plane on a thread of its own; the
//! simulator and the threaded engine run one, composed with the control plane in [`Node`].
//!
//! [`Node`]: super::Node

use super::outbox::{BufferId, Outbox, Outgoing, Span};
use super::stats::NodeStats;
use super::tables::{SharedTables, TablesCache};
use super::worker::{Ctx, RmtpOptions, TransferEvent, Transfers};
use control::wire::dnp::{Flag, Packet};
use control::{Addr, Instant, NodeAddr};

pub struct DataPlane {
    me: NodeAddr,
    mtu: usize,
    /// [`RmtpOptions::enabled`].
    rmtp_enabled: bool,
    tables: SharedTables,
    /// `tables` as this data plane last saw them: one atomic load per look.
    current: TablesCache,
    transfers: Transfers,
    out: Outbox,
    stats: NodeStats,
    /// The batch being handled gave the RMTP worker a packet: its cores answer at its end.
    batch_rmtp: bool,
}

/// Datagrams from one neighbour that one receive brought: `payload` cut into `segment`-byte
/// datagrams, the last possibly shorter (a GRO super-buffer), or one datagram (`segment` its
/// length). Handled with one `now` by [`DataPlane::handle_batch`].
#[derive(Clone, Copy, Debug)]
pub struct Received<'a> {
    pub from: NodeAddr,
    pub payload: &'a [u8],
    pub segment: usize,
    /// The engine's name for where `payload` lies, in a receive buffer it keeps for the sends
    /// that refer to it: what is passed on unchanged is then queued as
    /// [`super::Payload::Input`] (its span counted from the start of `payload`), not copied.
    pub token: Option<u64>,
}

impl<'a> Received<'a> {
    /// One datagram, without a token.
    pub fn one(from: NodeAddr, datagram: &'a [u8]) -> Self {
        Received {
            from,
            payload: datagram,
            segment: datagram.len(),
            token: None,
        }
    }

    /// The datagrams, in order; an empty payload is one empty datagram (which DNP refuses as
    /// too short), and a segment size of 0 counts as the whole payload.
    pub fn datagrams(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let payload = self.payload;
        let segment = if self.segment == 0 {
            payload.len().max(1)
        } else {
            self.segment
        };
        payload
            .chunks(segment)
            .chain(payload.is_empty().then_some(payload))
    }
}

impl DataPlane {
    /// A data plane reading `tables` (the control plane's [`SharedTables`]).
    pub fn new(me: NodeAddr, mtu: usize, tables: SharedTables, options: RmtpOptions) -> Self {
        let send_batch = options.send_batch(mtu);
        DataPlane {
            me,
            mtu,
            rmtp_enabled: options.enabled,
            current: tables.cache(),
            tables,
            transfers: Transfers::new(me, mtu, options),
            out: Outbox::with_batches(mtu, send_batch),
            stats: NodeStats::default(),
            batch_rmtp: false,
        }
    }

    pub fn me(&self) -> NodeAddr {
        self.me
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    pub fn tables(&self) -> &SharedTables {
        &self.tables
    }

    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    pub fn transfers(&self) -> &Transfers {
        &self.transfers
    }

    pub fn transfers_mut(&mut self) -> &mut Transfers {
        &mut self.transfers
    }

    /// The outgoing queue and the counters, for the control plane of a [`super::Node`], which
    /// shares them with its data plane.
    pub(super) fn out_and_stats(&mut self) -> (&mut Outbox, &mut NodeStats) {
        (&mut self.out, &mut self.stats)
    }

    /// A batch of datagrams from one neighbour, as one receive brought them, all handled at
    /// `now`: each is validated by DNP (a refusal counted), then passed on or handed to the
    /// RMTP worker, or, a DRP, GMP or RAP packet for this node, given to `for_control` (the
    /// data plane never runs the control plane). A datagram `accept` refuses is skipped (an
    /// engine's filter, e.g. another worker's group). What the local cores send in answer is
    /// made once, after the whole batch ([`Transfers::after_batch`]).
    pub fn handle_batch<'a>(
        &mut self,
        now: Instant,
        batch: Received<'a>,
        mut accept: impl FnMut(&'a [u8]) -> bool,
        mut for_control: impl FnMut(Packet<'a>),
    ) {
        let mark = self.begin_batch(batch);
        for datagram in batch.datagrams() {
            if !accept(datagram) {
                continue;
            }
            if let Some(packet) = self.handle_in_batch(now, batch.from, datagram) {
                for_control(packet);
            }
        }
        self.end_batch(now, mark);
    }

    /// A datagram from neighbour `from`: [`Self::handle_batch`] with a batch of one, the
    /// packet for the control plane returned.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        from: NodeAddr,
        datagram: &'a [u8],
    ) -> Option<Packet<'a>> {
        let mark = self.begin_batch(Received::one(from, datagram));
        let for_control = self.handle_in_batch(now, from, datagram);
        self.end_batch(now, mark);
        for_control
    }

    /// A datagram from neighbour `from` that lies in a receive buffer the engine keeps for the
    /// sends that refer to it: as [`Self::handle_datagram`], but what is passed on unchanged
    /// (a forward, the relay's fan-out) is queued as [`super::Payload::Input`] with `token`,
    /// the engine's name for where `datagram` lies, instead of a copy.
    pub fn handle_received<'a>(
        &mut self,
        now: Instant,
        from: NodeAddr,
        datagram: &'a [u8],
        token: u64,
    ) -> Option<Packet<'a>> {
        let batch = Received {
            token: Some(token),
            ..Received::one(from, datagram)
        };
        let mark = self.begin_batch(batch);
        let for_control = self.handle_in_batch(now, from, datagram);
        self.end_batch(now, mark);
        for_control
    }

    /// Starts a batch: its input region for references, and where its packets begin in the
    /// outgoing queue (returned, for [`Self::end_batch`]).
    pub(super) fn begin_batch(&mut self, batch: Received<'_>) -> usize {
        self.stats.rx_batches += 1;
        if let Some(token) = batch.token {
            self.out.set_input(token, batch.payload);
        }
        self.batch_rmtp = false;
        self.out.len()
    }

    /// One datagram of the batch begun: validated, passed on, or handed to the RMTP worker
    /// (whose cores answer at [`Self::end_batch`]); a DRP, GMP or RAP packet for this node is
    /// returned.
    pub(super) fn handle_in_batch<'a>(
        &mut self,
        now: Instant,
        from: NodeAddr,
        datagram: &'a [u8],
    ) -> Option<Packet<'a>> {
        let packet = match Packet::parse(datagram, self.mtu) {
            Ok(p) => p,
            Err(e) => {
                self.stats.count_dnp_error(&e);
                return None;
            }
        };
        self.stats.rx_accepted += 1;
        // An end-to-end datagram for another node (RAP, or RMTP without the RMTP layer) passes
        // on unchanged.
        if let Some(dst) = self.passes_on(&packet) {
            self.forward_unicast(from, dst, packet.bytes());
            return None;
        }
        match packet.flag() {
            Flag::Drp | Flag::Gmp | Flag::Rap => return Some(packet),
            // The rest is RMTP. Without the RMTP layer, one for another node was passed on
            // above; this node has no end for one to itself or to a group.
            _ if !self.rmtp_enabled => self.stats.rmtp_unclaimed += 1,
            _ => {
                let tables = self.current.load();
                let ctx = Ctx {
                    mcast: &tables.multicast,
                    routes: &tables.routes,
                    out: &mut self.out,
                };
                self.transfers.handle_packet(now, from, &packet, ctx);
                self.batch_rmtp = true;
            }
        }
        None
    }

    /// Ends the batch begun at `mark`: the local cores send what the batch's RMTP packets
    /// call for (once), and the batch's packets are grouped by neighbour, so that a run to one
    /// neighbour can leave as one segmented send.
    pub(super) fn end_batch(&mut self, now: Instant, mark: usize) {
        if self.batch_rmtp {
            self.batch_rmtp = false;
            self.pump(now);
        }
        self.out.clear_input();
        self.out.group_by_neighbour(mark);
    }

    /// The RMTP worker's cores send what they have.
    fn pump(&mut self, now: Instant) {
        self.run_transfers(|transfers, ctx| transfers.after_batch(now, ctx));
    }

    /// Runs the transfers with the current tables and this node's outbox (a pump, counted).
    fn run_transfers(&mut self, run: impl FnOnce(&mut Transfers, Ctx<'_>)) {
        self.stats.transfer_pumps += 1;
        let tables = self.current.load();
        let ctx = Ctx {
            mcast: &tables.multicast,
            routes: &tables.routes,
            out: &mut self.out,
        };
        run(&mut self.transfers, ctx);
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

    /// Passes an end-to-end packet from `from` on toward `dst`, but never back to `from`: that
    /// neighbour's route runs through us, a loop (forged link states can make one for a
    /// flood's round trip; DNP has no hop limit, so the packet would circle until the routes
    /// heal).
    fn forward_unicast(&mut self, from: NodeAddr, dst: NodeAddr, bytes: &[u8]) {
        match self.current.load().routes.next_hop(dst) {
            Some(to) if to == from => self.stats.forward_loop += 1,
            Some(to) => {
                self.stats.forwarded += 1;
                self.out.push(to, bytes);
            }
            None => self.stats.forward_no_route += 1,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.transfers.poll_timeout().is_some_and(|t| t <= now) {
            let mark = self.out.len();
            self.run_transfers(|transfers, ctx| transfers.handle_timeout(now, ctx));
            self.out.group_by_neighbour(mark);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transfers.poll_timeout()
    }

    pub fn poll_event(&mut self) -> Option<TransferEvent> {
        self.transfers.poll_event()
    }

    /// The next packet to send, where its bytes are (see [`super::Node::poll_outgoing`]).
    pub fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    /// The next packet to send, as a buffer of its own.
    pub fn poll_transmit(&mut self) -> Option<control::Transmit> {
        self.out.pop_transmit()
    }

    /// The bytes of a [`super::Payload::Shared`] packet; they stay put until it is released.
    pub fn outgoing_bytes(&self, id: BufferId, span: Span) -> &[u8] {
        self.out.bytes(id, span)
    }

    /// A [`super::Payload::Shared`] packet's send is over: after the last one referring to its
    /// buffer, the data plane writes its next packets there.
    pub fn release(&mut self, id: BufferId) {
        self.out.release(id);
    }

    /// Allocates `buffers` outgoing buffers of MTU capacity now (see [`Outbox::reserve`]).
    pub fn reserve_send_buffers(&mut self, buffers: usize) {
        self.out.reserve(buffers);
    }

    /// Allocates the batch buffers a local sender builds in, at the first one's start (see
    /// [`Outbox::reserve_batches`]).
    pub fn reserve_sender_buffers(&mut self) {
        self.out.reserve_batches();
    }

    /// Outgoing buffers allocated because every reserved or released one was in use.
    pub fn send_buffers_allocated(&self) -> u64 {
        self.out.allocated()
    }

    /// Outgoing buffers a queued or in-flight packet refers to now.
    pub fn send_buffers_in_use(&self) -> usize {
        self.out.in_use()
    }

    /// Packets copied into an outgoing buffer (a packet passed on from a datagram handed in
    /// without a token, once per next hop), since the start.
    pub fn payload_copies(&self) -> u64 {
        self.out.copies()
    }

    /// Packets a local core built once and queued to one or more neighbours by reference.
    pub fn packets_built(&self) -> u64 {
        self.out.built()
    }

    /// Sends queued by reference to a datagram handed in with [`Self::handle_received`].
    pub fn input_references(&self) -> u64 {
        self.out.input_references()
    }
}
