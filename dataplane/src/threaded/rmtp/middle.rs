//! The RMTP middle-layer thread (seed §6.1), one per node: it waits on DNP's `rmtp` buffer with
//! the relay's next deadline (periodic MABs, NACK retries), and
//! - carries out the relay's decision on each packet from the network with the worker's own code
//!   (`node::worker::decisions`; this engine's ends are [`ThreadedEnds`]): `sendto` of the
//!   received bytes to each downstream neighbour, then the same reference-counted packet into the
//!   buffer of each local client of the tree (the seed's reference counting: nothing is copied);
//! - takes the local clients' NACKs and MABs from `rmtp.local` into the relay;
//! - sends what the relay builds (aggregated NACKs and MABs upstream, NCFs, cache repairs), and
//!   hands NACKs and MABs for a tree this node roots to the local server thread's buffer.
//!
//! The tables are re-read once per batch of packets (a reader lock and an `Arc` clone each);
//! table changes kick the thread so that the relay prunes at once.

use super::{Layer, Upward};
use crate::node::worker::decisions::{DecisionSink, RmtpPacket, carry_out, carry_out_built};
use crate::rmtp::RelayTransmit;
use crate::sync::{lock, read};
use crate::threaded::buffer::{Pop, Push};
use crate::threaded::node::Node;
use crate::threaded::packet::{PacketBuf, Received};
use control::drp::RoutingTable;
use control::gmp::MulticastTable;
use control::wire::dnp::{Flag, Packet};
use control::{Addr, GroupAddr, Instant, NodeAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use control::settings::threaded::BATCH;

/// Counters of the middle-layer thread (the relay core counts its own decisions).
#[derive(Default)]
pub(crate) struct MiddleCounters {
    packets: AtomicU64,
    local_packets: AtomicU64,
    batches: AtomicU64,
    bad_packets: AtomicU64,
    copies_sent: AtomicU64,
    send_errors: AtomicU64,
    to_clients: AtomicU64,
    to_servers: AtomicU64,
    no_local_consumer: AtomicU64,
    table_changes: AtomicU64,
}

control::counters! {
    /// Counters of the middle-layer thread (the relay core counts its own decisions).
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct MiddleStats {
        /// RMTP packets taken from DNP's buffer.
        pub packets: u64,
        /// NACKs and MABs taken from local clients.
        pub local_packets: u64,
        pub batches: u64,
        /// Packets whose DNP view or body did not parse (only possible for local ones).
        pub bad_packets: u64,
        /// Packets sent to neighbours (forwarded copies and the relay's own).
        pub copies_sent: u64,
        pub send_errors: u64,
        /// References handed to local client buffers.
        pub to_clients: u64,
        /// NACKs and MABs handed to local server buffers.
        pub to_servers: u64,
        /// Local deliveries nobody here was waiting for (a client that left, a server that ended).
        pub no_local_consumer: u64,
        /// Times the thread saw a newly published routing or multicast table.
        pub table_changes: u64,
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl MiddleCounters {
    pub fn snapshot(&self) -> MiddleStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MiddleStats {
            packets: g(&self.packets),
            local_packets: g(&self.local_packets),
            batches: g(&self.batches),
            bad_packets: g(&self.bad_packets),
            copies_sent: g(&self.copies_sent),
            send_errors: g(&self.send_errors),
            to_clients: g(&self.to_clients),
            to_servers: g(&self.to_servers),
            no_local_consumer: g(&self.no_local_consumer),
            table_changes: g(&self.table_changes),
        }
    }
}

/// The tables as one batch sees them.
pub(crate) struct Tables {
    pub mcast: Arc<MulticastTable>,
    pub routes: Arc<RoutingTable>,
}

impl Tables {
    pub fn read(node: &Node) -> Tables {
        Tables {
            mcast: node.dnp.multicast(),
            routes: node.dnp.routes(),
        }
    }

    fn same_as(&self, other: &Tables) -> bool {
        Arc::ptr_eq(&self.mcast, &other.mcast) && Arc::ptr_eq(&self.routes, &other.routes)
    }
}

pub(crate) fn thread(node: &Node) {
    let Some(layer) = node.rmtp.as_ref() else {
        return;
    };
    let mtu = node.dnp.mtu();
    let mut buf = vec![0u8; mtu];
    let mut out: Vec<(RelayTransmit, Vec<u8>)> = Vec::new();
    let mut seen = Tables::read(node);
    loop {
        let deadline = lock(&layer.relay)
            .poll_timeout()
            .and_then(|t| node.clock.to_std(t));
        let first = match layer.inbox.pop_until(deadline) {
            Pop::Item(r) => Some(r),
            Pop::Timeout | Pop::Kicked => None,
            Pop::Closed => return,
        };
        bump(&layer.counters.batches);
        let tables = Tables::read(node);
        let changed = !tables.same_as(&seen);
        if changed {
            bump(&layer.counters.table_changes);
        }
        let now = node.clock.now();
        if let Some(r) = first {
            from_network(node, layer, &tables, now, r);
            for _ in 1..BATCH {
                let Some(r) = layer.inbox.try_pop() else {
                    break;
                };
                from_network(node, layer, &tables, now, r);
            }
        }
        while let Some(up) = layer.local.try_pop() {
            from_local_client(node, layer, &tables, now, &up);
        }
        {
            let mut relay = lock(&layer.relay);
            // A new table can prune peers and move the upstream: let the relay look now.
            if changed || relay.poll_timeout().is_some_and(|t| t <= now) {
                relay.handle_timeout(now, &tables.mcast, &tables.routes);
            }
            while let Some(t) = relay.poll_transmit(now, &mut buf) {
                out.push((t, buf[..t.len].to_vec()));
            }
        }
        let mut ends = ThreadedEnds { node, layer, now };
        for (t, bytes) in out.drain(..) {
            carry_out_built(&mut ends, node.me, t, bytes, |bytes| {
                ends_hold(node, layer, now, bytes)
            });
        }
        seen = tables;
    }
}

/// A packet from a neighbour: the relay decides, this thread carries it out.
fn from_network(node: &Node, layer: &Layer, tables: &Tables, now: Instant, r: Received) {
    bump(&layer.counters.packets);
    // DNP checked it already; the view re-checks (a checksum over at most one MTU).
    let Ok(view) = r.view(node.dnp.mtu()) else {
        bump(&layer.counters.bad_packets);
        return;
    };
    let action = lock(&layer.relay).handle(now, r.from, &view, &tables.mcast, &tables.routes);
    carry_out(&mut ThreadedEnds { node, layer, now }, action, &r);
}

fn from_local_client(node: &Node, layer: &Layer, tables: &Tables, now: Instant, up: &Upward) {
    bump(&layer.counters.local_packets);
    let Ok(view) = Packet::parse(up.packet.bytes(), node.dnp.mtu()) else {
        bump(&layer.counters.bad_packets);
        return;
    };
    // Consumed or dropped; whatever it causes comes out of poll_transmit.
    let _ =
        lock(&layer.relay).handle_local_member(now, up.sid, &view, &tables.mcast, &tables.routes);
}

fn send(node: &Node, layer: &Layer, to: NodeAddr, bytes: &[u8]) {
    bump(&layer.counters.copies_sent);
    // Failures are counted here and by DNP; the protocol repairs what did not go.
    if node.dnp.send_to_neighbour(to, bytes).is_err() {
        bump(&layer.counters.send_errors);
    }
}

/// Hands `r` to every running local client of the tree (group, sender), by reference.
fn to_clients(layer: &Layer, group: GroupAddr, sender: NodeAddr, r: &Received) {
    let mut any = false;
    for c in read(&layer.clients).values() {
        if c.group == group && c.sender == sender && c.inbox.push(r.clone()) != Push::Closed {
            bump(&layer.counters.to_clients);
            any = true;
        }
    }
    if !any {
        bump(&layer.counters.no_local_consumer);
    }
}

/// A packet the relay built for this node's server or clients, in a buffer of its own (the
/// clients' and the server's threads hold it by reference).
fn ends_hold(node: &Node, layer: &Layer, now: Instant, bytes: Vec<u8>) -> Option<Received> {
    let Ok(view) = Packet::parse(&bytes, node.dnp.mtu()) else {
        bump(&layer.counters.bad_packets);
        return None;
    };
    let (flag, dst, src) = (view.flag(), view.dst(), view.src());
    Some(Received {
        from: node.me,
        at: now,
        flag,
        dst,
        src,
        packet: PacketBuf::from_vec(bytes),
    })
}

impl RmtpPacket for Received {
    fn bytes(&self) -> &[u8] {
        self.packet.bytes()
    }
    fn flag(&self) -> Flag {
        self.flag
    }
    fn dst(&self) -> Addr {
        self.dst
    }
    fn src(&self) -> Addr {
        self.src
    }
}

/// The ends of the relay's decisions on this engine: `sendto` toward a neighbour, and the
/// buffers of the local client and server threads.
pub(crate) struct ThreadedEnds<'a> {
    pub node: &'a Node,
    pub layer: &'a Layer,
    pub now: Instant,
}

impl DecisionSink<Received> for ThreadedEnds<'_> {
    fn to_neighbour(&mut self, to: NodeAddr, bytes: &[u8]) {
        send(self.node, self.layer, to, bytes);
    }

    fn to_receivers(&mut self, group: GroupAddr, sender: NodeAddr, packet: &Received) {
        to_clients(self.layer, group, sender, packet);
    }

    fn to_sender(&mut self, group: GroupAddr, packet: &Received) {
        let server = read(&self.layer.servers).get(&group).cloned();
        if server.is_some_and(|s| s.inbox.push(packet.clone()) != Push::Closed) {
            bump(&self.layer.counters.to_servers);
        } else {
            bump(&self.layer.counters.no_local_consumer);
        }
    }
}

/// A packet this node's server built, held only by the server thread: a local client gets a
/// copy in a buffer of its own (the only copy of a packet this engine makes).
impl DecisionSink<Packet<'_>> for ThreadedEnds<'_> {
    fn to_neighbour(&mut self, to: NodeAddr, bytes: &[u8]) {
        send(self.node, self.layer, to, bytes);
    }

    fn to_receivers(&mut self, group: GroupAddr, sender: NodeAddr, packet: &Packet<'_>) {
        let held = self.held(packet);
        to_clients(self.layer, group, sender, &held);
    }

    fn to_sender(&mut self, group: GroupAddr, packet: &Packet<'_>) {
        let held = self.held(packet);
        DecisionSink::<Received>::to_sender(self, group, &held);
    }
}

impl ThreadedEnds<'_> {
    fn held(&self, packet: &Packet<'_>) -> Received {
        Received {
            from: self.node.me,
            at: self.now,
            flag: packet.flag(),
            dst: packet.dst(),
            src: packet.src(),
            packet: PacketBuf::from_vec(packet.bytes().to_vec()),
        }
    }
}
