//! A node's RMTP worker: the relay serving every tree, plus the local senders (one per group
//! this node sends to) and local receivers (one per subscribing client id). Packets move between
//! them the way the seed's middle layer moves them between its client and server threads; the
//! relay's decisions are carried out by [`decisions`], the code every engine shares. It reads
//! the tables the control plane published and knows no engine: packets for neighbours go to the
//! queue the caller passes in.

pub mod decisions;

use super::outbox::Outbox;
use crate::rmtp::relay::DropReason;
use crate::rmtp::{
    Fanout, ReceiverConfig, ReceiverEvent, ReceiverStats, RelayAction, RelayConfig, RelayStats,
    RmtpReceiver, RmtpRelay, RmtpSender, SenderConfig, SenderStats, Sink, Source,
};
use control::drp::RoutingTable;
use control::gmp::MulticastTable;
use control::settings;
use control::wire::dnp::Packet;
use control::{GroupAddr, Instant, NodeAddr};
use decisions::{DecisionSink, carry_out, carry_out_built};
use std::collections::{BTreeMap, VecDeque};

/// Tunables of the RMTP parts of a node; the defaults suit millisecond links.
#[derive(Clone, Debug)]
pub struct RmtpOptions {
    /// Run the RMTP layer. Off, RMTP packets are end-to-end datagrams like any other: passed
    /// on by `next_hop` toward their destination node, counted as unclaimed when it is this
    /// one (the benchmarks' way to time the bare forwarding path, as the threaded engine's
    /// `ThreadedOptions::rmtp`).
    pub enabled: bool,
    /// Repair cache per tree at relays, bytes (0: off).
    pub cache_bytes: usize,
    /// A receiver's window: bytes it accepts beyond what it delivered.
    pub receiver_window: u64,
    /// A receiver's in-flight headroom (`ReceiverConfig::in_flight_headroom`; 0: its MAB is
    /// delivered + window).
    pub receiver_in_flight_headroom: u64,
    /// How far a sender may go before the first MAB arrives.
    pub initial_window: u64,
    /// Sender pacing, bytes per second; `None`: window-limited only.
    pub sender_rate: Option<u64>,
    /// NACK table entries per tree at the relay (`RelayConfig::nack_entries`), and the most
    /// missing sequences a local receiver tracks (`ReceiverConfig::max_missing`, which it
    /// caps).
    pub nack_entries: usize,
    /// Trees the relay tracks at once (`RelayConfig::max_trees`).
    pub max_trees: usize,
    /// Bytes of packets a local sender builds per call at most, end to end in one buffer
    /// (`sender.batch_bytes`; below two MTUs: one packet at a time).
    pub send_batch_bytes: usize,
    /// Batches a local sender builds per pump at most (`sender.batches_per_pump`; at least
    /// one): the rest waits for the node's next pump, after what was built has left.
    pub send_batches_per_pump: usize,
}

/// The most packets in a sender's batch: the kernel's segments per segmented send.
pub const MAX_SEND_BATCH: usize = 64;

impl RmtpOptions {
    /// How many packets of `mtu` bytes a sender's batch holds: at least one, at most
    /// [`MAX_SEND_BATCH`].
    pub fn send_batch(&self, mtu: usize) -> usize {
        (self.send_batch_bytes / mtu.max(1)).clamp(1, MAX_SEND_BATCH)
    }
}

impl Default for RmtpOptions {
    fn default() -> Self {
        RmtpOptions {
            enabled: true,
            cache_bytes: settings::relay::CACHE_BYTES,
            receiver_window: settings::receiver::WINDOW,
            receiver_in_flight_headroom: settings::receiver::IN_FLIGHT_HEADROOM,
            initial_window: settings::sender::INITIAL_WINDOW,
            sender_rate: None,
            nack_entries: settings::rmtp::NACK_ENTRIES,
            max_trees: settings::relay::MAX_TREES,
            send_batch_bytes: settings::sender::BATCH_BYTES,
            send_batches_per_pump: settings::sender::BATCHES_PER_PUMP,
        }
    }
}

/// What happened to a local transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferEvent {
    /// Every byte delivered and its hash verified: the file is under its final name.
    Received {
        sid: u16,
        group: GroupAddr,
        sender: NodeAddr,
        bytes: u64,
        at: Instant,
    },
    /// The transfer cannot complete (data lost for good, the hash wrong, the sink failing, or
    /// the sender silent or without a route for the receiver's `sender_timeout`); the output
    /// stays partial.
    ReceiveFailed {
        sid: u16,
        group: GroupAddr,
        sender: NodeAddr,
        reason: String,
    },
    /// A completed receiver's core needs nothing more from the tree (the sender has seen it
    /// complete, or went silent): its client may leave the group. The simulator's receivers
    /// stay until their client stops them; an engine stops them here.
    MayLeave {
        sid: u16,
        group: GroupAddr,
        sender: NodeAddr,
    },
    /// Every receiver in the tree reported the whole transfer.
    Sent {
        group: GroupAddr,
        bytes: u64,
        at: Instant,
    },
    /// The transfer ended without every receiver: all failed, or none is left.
    SendFailed { group: GroupAddr, reason: String },
}

struct LocalReceiver {
    group: GroupAddr,
    sender: NodeAddr,
    core: RmtpReceiver<Box<dyn Sink>>,
}

struct LocalSender {
    core: RmtpSender<Box<dyn Source>>,
    reported: bool,
}

pub struct Transfers {
    me: NodeAddr,
    mtu: usize,
    options: RmtpOptions,
    /// Packets a local sender builds per call ([`RmtpOptions::send_batch`]).
    send_batch: usize,
    /// The relay's decision on each packet of the batch being sent (room made once).
    batch_actions: Vec<RelayAction>,
    relay: RmtpRelay,
    senders: BTreeMap<GroupAddr, LocalSender>,
    receivers: BTreeMap<u16, LocalReceiver>,
    events: VecDeque<TransferEvent>,
}

/// What the node hands in on every call: the current tables and where packets go.
pub struct Ctx<'a> {
    pub mcast: &'a MulticastTable,
    pub routes: &'a RoutingTable,
    pub out: &'a mut Outbox,
}

impl Transfers {
    pub fn new(me: NodeAddr, mtu: usize, options: RmtpOptions) -> Self {
        let mut relay = RelayConfig::new(me, mtu);
        relay.cache_bytes = options.cache_bytes;
        relay.nack_entries = options.nack_entries;
        relay.max_trees = options.max_trees;
        let send_batch = options.send_batch(mtu);
        Transfers {
            me,
            mtu,
            send_batch,
            batch_actions: Vec::with_capacity(send_batch),
            options,
            relay: RmtpRelay::new(relay),
            senders: BTreeMap::new(),
            receivers: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    pub fn relay_stats(&self) -> &RelayStats {
        self.relay.stats()
    }

    /// The local sender of `group`, for its progress (sent offset, window, completion).
    pub fn sender(&self, group: GroupAddr) -> Option<&RmtpSender<Box<dyn Source>>> {
        self.senders.get(&group).map(|s| &s.core)
    }

    pub fn sender_stats(&self, group: GroupAddr) -> Option<&SenderStats> {
        self.senders.get(&group).map(|s| s.core.stats())
    }

    pub fn receiver_stats(&self, sid: u16) -> Option<&ReceiverStats> {
        self.receivers.get(&sid).map(|r| r.core.stats())
    }

    /// Bytes a local receiver has handed to its sink.
    pub fn delivered(&self, sid: u16) -> Option<u64> {
        self.receivers.get(&sid).map(|r| r.core.delivered())
    }

    pub fn sink(&self, sid: u16) -> Option<&dyn Sink> {
        self.receivers.get(&sid).map(|r| r.core.sink().as_ref())
    }

    pub fn poll_event(&mut self) -> Option<TransferEvent> {
        self.events.pop_front()
    }

    pub fn add_sender(&mut self, now: Instant, group: GroupAddr, source: Box<dyn Source>) -> bool {
        self.add_sender_with(now, group, source, |_| {})
    }

    /// [`Self::add_sender`] with `adjust` applied to the configuration the node's options
    /// made (a caller's per-transfer settings).
    pub fn add_sender_with(
        &mut self,
        now: Instant,
        group: GroupAddr,
        source: Box<dyn Source>,
        adjust: impl FnOnce(&mut SenderConfig),
    ) -> bool {
        if self.senders.contains_key(&group) {
            return false;
        }
        let mut config = SenderConfig::new(self.me, group, self.mtu);
        config.initial_window = self.options.initial_window;
        config.rate = self.options.sender_rate;
        adjust(&mut config);
        let core = RmtpSender::new(config, source, now);
        self.senders.insert(
            group,
            LocalSender {
                core,
                reported: false,
            },
        );
        true
    }

    pub fn add_receiver(
        &mut self,
        now: Instant,
        sid: u16,
        group: GroupAddr,
        sender: NodeAddr,
        sink: Box<dyn Sink>,
    ) -> bool {
        self.add_receiver_with(now, sid, group, sender, sink, |_| {})
    }

    /// [`Self::add_receiver`] with `adjust` applied to the configuration the node's options
    /// made (a caller's per-transfer settings), before the node's own caps.
    pub fn add_receiver_with(
        &mut self,
        now: Instant,
        sid: u16,
        group: GroupAddr,
        sender: NodeAddr,
        sink: Box<dyn Sink>,
        adjust: impl FnOnce(&mut ReceiverConfig),
    ) -> bool {
        if self.receivers.contains_key(&sid) {
            return false;
        }
        let mut config = ReceiverConfig::new(self.me, group, sender, self.mtu);
        config.window = self.options.receiver_window;
        config.in_flight_headroom = self.options.receiver_in_flight_headroom;
        adjust(&mut config);
        crate::rmtp::fit_receiver_to_relay(&mut config, self.relay.config());
        let core = RmtpReceiver::new(config, sink, now);
        self.receivers.insert(
            sid,
            LocalReceiver {
                group,
                sender,
                core,
            },
        );
        true
    }

    /// Drops the local sender of `group` (see `Node::stop_send`); false if there was none.
    pub fn remove_sender(&mut self, group: GroupAddr) -> bool {
        self.senders.remove(&group).is_some()
    }

    /// Stops a local receiver; its output stays partial unless it had completed.
    pub fn remove_receiver(&mut self, sid: u16) -> bool {
        match self.receivers.remove(&sid) {
            Some(mut r) => {
                r.core.abort();
                true
            }
            None => false,
        }
    }

    /// An RMTP packet from neighbour `from`: the relay's decision on it is carried out (the
    /// packet passed on, handed to local ends). What that makes the local cores send waits for
    /// [`Self::after_batch`], called once the whole batch of received packets is in.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: NodeAddr,
        packet: &Packet<'_>,
        ctx: Ctx<'_>,
    ) {
        let action = self.relay.handle(now, from, packet, ctx.mcast, ctx.routes);
        let mut ends = LocalEnds::new(now, &mut self.senders, &mut self.receivers, ctx.out);
        carry_out(&mut ends, action, packet);
    }

    /// A batch of received packets is in: every local core sends what it now has (once per
    /// batch, not per datagram: a MAB opens a window once, a receiver reports once).
    pub fn after_batch(&mut self, now: Instant, ctx: Ctx<'_>) {
        self.pump(now, ctx);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let senders = self.senders.values().filter_map(|s| s.core.poll_timeout());
        let receivers = self
            .receivers
            .values()
            .filter_map(|r| r.core.poll_timeout());
        self.relay
            .poll_timeout()
            .into_iter()
            .chain(senders)
            .chain(receivers)
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant, ctx: Ctx<'_>) {
        if self.relay.poll_timeout().is_some_and(|t| t <= now) {
            self.relay.handle_timeout(now, ctx.mcast, ctx.routes);
        }
        for s in self.senders.values_mut() {
            if s.core.poll_timeout().is_some_and(|t| t <= now) {
                s.core.handle_timeout(now);
            }
        }
        for r in self.receivers.values_mut() {
            // What routing says of the sender, for the receiver's sender watch.
            r.core.sender_route(
                now,
                r.sender == self.me || ctx.routes.is_reachable(r.sender),
            );
            if r.core.poll_timeout().is_some_and(|t| t <= now) {
                r.core.handle_timeout(now);
            }
        }
        self.pump(now, ctx);
    }

    /// Lets every local core send what it has, until none has anything more. Cores build in a
    /// buffer the outbox lends: a packet for neighbours is queued from there by reference (to
    /// each of them, no copy), and the next one is built in another.
    fn pump(&mut self, now: Instant, mut ctx: Ctx<'_>) {
        let (me, mtu) = (self.me, self.mtu);
        // The senders build a few batches per pump (each at most its share per round): their
        // `poll_timeout` says when they have more, and the engine sends these first and reads
        // what came in.
        let share = self.options.send_batches_per_pump.max(1);
        let mut budget = share.saturating_mul(self.senders.len());
        loop {
            let mut progress = false;
            // By position, not by iterator: carrying out a decision needs every sender.
            for i in 0..self.senders.len() {
                let mut turn = share;
                while budget > 0 && turn > 0 && self.send_batch(i, now, &mut ctx) {
                    budget -= 1;
                    turn -= 1;
                    progress = true;
                }
            }
            let mut buf = ctx.out.lend();
            for (&sid, r) in self.receivers.iter_mut() {
                while let Some(len) = r.core.poll_transmit(now, &mut buf) {
                    if let Ok(p) = Packet::built_here(&buf[..len], mtu) {
                        let _ = self
                            .relay
                            .handle_local_member(now, sid, &p, ctx.mcast, ctx.routes);
                    }
                    progress = true;
                }
            }
            while let Some(t) = self.relay.poll_transmit(now, &mut buf) {
                let mut ends = LocalEnds::new(now, &mut self.senders, &mut self.receivers, ctx.out);
                carry_out_built(&mut ends, me, t, &buf[..t.len], |b| {
                    Packet::built_here(b, mtu).ok()
                });
                progress = true;
                if ctx.out.lent_is_referenced() {
                    ctx.out.give_back(buf);
                    buf = ctx.out.lend();
                }
            }
            ctx.out.give_back(buf);
            if !progress {
                break;
            }
        }
        self.collect_events(now);
    }

    /// Lets the `i`th local sender build a batch of packets end to end in one buffer the
    /// outbox lends, and carries out the relay's decision on each. A batch whose packets all
    /// go the same way (new DATA of one tree: the same neighbours) is queued to each
    /// neighbour as one run, a reference per packet and no copy; otherwise packet by packet.
    /// False when the sender had nothing to send.
    fn send_batch(&mut self, i: usize, now: Instant, ctx: &mut Ctx<'_>) -> bool {
        let mtu = self.mtu;
        let batched = self.send_batch > 1;
        let mut buf = if batched {
            ctx.out.lend_batch()
        } else {
            ctx.out.lend()
        };
        let max = self.send_batch;
        let Some(batch) = self
            .senders
            .values_mut()
            .nth(i)
            .and_then(|s| s.core.poll_batch(now, &mut buf, max))
        else {
            ctx.out.give_back(buf);
            return false;
        };
        ctx.out.lent_packets(batch.count);
        let packet = |j: usize| &buf[j * batch.size..((j + 1) * batch.size).min(batch.len)];
        self.batch_actions.clear();
        for j in 0..batch.count {
            let action = match Packet::built_here(packet(j), mtu) {
                Ok(p) => self.relay.handle_local(now, &p, ctx.mcast, ctx.routes),
                Err(_) => RelayAction::Drop(DropReason::Malformed),
            };
            self.batch_actions.push(action);
        }
        let first = self.batch_actions[0];
        let uniform = self.batch_actions.iter().all(|a| *a == first);
        let mut ends = LocalEnds::new(now, &mut self.senders, &mut self.receivers, ctx.out);
        match first {
            RelayAction::Forward { to, deliver_local } if uniform && batch.count > 1 => {
                for neighbour in to.iter() {
                    ends.out
                        .push_segments(neighbour, &buf[..batch.len], batch.size);
                }
                if deliver_local {
                    for j in 0..batch.count {
                        if let Ok(p) = Packet::built_here(packet(j), mtu) {
                            let local = RelayAction::Forward {
                                to: Fanout::empty(),
                                deliver_local: true,
                            };
                            carry_out(&mut ends, local, &p);
                        }
                    }
                }
            }
            _ => {
                for (j, action) in self.batch_actions.iter().enumerate() {
                    if let Ok(p) = Packet::built_here(packet(j), mtu) {
                        carry_out(&mut ends, *action, &p);
                    }
                }
            }
        }
        ctx.out.give_back(buf);
        true
    }

    fn collect_events(&mut self, now: Instant) {
        for (&sid, r) in self.receivers.iter_mut() {
            while let Some(e) = r.core.poll_event() {
                let (group, sender) = (r.group, r.sender);
                self.events.push_back(match e {
                    ReceiverEvent::Complete { bytes, .. } => TransferEvent::Received {
                        sid,
                        group,
                        sender,
                        bytes,
                        at: now,
                    },
                    ReceiverEvent::Failed(reason) => TransferEvent::ReceiveFailed {
                        sid,
                        group,
                        sender,
                        reason: reason.to_string(),
                    },
                    ReceiverEvent::MayLeave => TransferEvent::MayLeave { sid, group, sender },
                });
            }
        }
        for (&group, s) in self.senders.iter_mut() {
            if s.reported {
                continue;
            }
            if s.core.is_complete() {
                s.reported = true;
                self.events.push_back(TransferEvent::Sent {
                    group,
                    bytes: s.core.total(),
                    at: now,
                });
            } else if let Some(why) = s.core.failure() {
                s.reported = true;
                self.events.push_back(TransferEvent::SendFailed {
                    group,
                    reason: why.to_string(),
                });
            }
        }
    }
}

/// The worker's own cores as the ends of the relay's decisions, and the node's queue toward
/// its neighbours.
struct LocalEnds<'a> {
    now: Instant,
    senders: &'a mut BTreeMap<GroupAddr, LocalSender>,
    receivers: &'a mut BTreeMap<u16, LocalReceiver>,
    out: &'a mut Outbox,
}

impl<'a> LocalEnds<'a> {
    fn new(
        now: Instant,
        senders: &'a mut BTreeMap<GroupAddr, LocalSender>,
        receivers: &'a mut BTreeMap<u16, LocalReceiver>,
        out: &'a mut Outbox,
    ) -> Self {
        LocalEnds {
            now,
            senders,
            receivers,
            out,
        }
    }
}

impl DecisionSink<Packet<'_>> for LocalEnds<'_> {
    fn to_neighbour(&mut self, to: NodeAddr, bytes: &[u8]) {
        self.out.push(to, bytes);
    }

    fn to_receivers(&mut self, group: GroupAddr, sender: NodeAddr, packet: &Packet<'_>) {
        for r in self.receivers.values_mut() {
            if r.group == group && r.sender == sender {
                // Malformed or foreign packets are counted by the core.
                let _ = r.core.handle_packet(self.now, packet);
            }
        }
    }

    fn to_sender(&mut self, group: GroupAddr, packet: &Packet<'_>) {
        if let Some(s) = self.senders.get_mut(&group) {
            let _ = s.core.handle_packet(self.now, packet);
        }
    }
}
