//! The whole node core in steady state, over a transfer with loss: node 1 sends 16 MiB through
//! relay 2 to a receiver on node 3, in virtual time, one DATA in 50 lost on the first link. A
//! counting allocator (this thread only) watches the middle half of the transfer: every
//! forward, every delivery, the NACKs, repairs and MABs they cause, and the receiver's
//! out-of-order segments. The harness moves packets in buffers it made before, so what is
//! counted is the nodes' own.
//!
//! Copies: node 2 passes each DATA on by reference to the datagram it was handed
//! (`Node::handle_received`, `input_references`), never by a copy (`payload_copies` 0); the
//! sender builds each packet once. Two copies remain, the cores' own, into memory made before:
//! the relay's repair cache keeps each DATA it forwards (its fixed ring), and the receiver keeps
//! a segment that arrives out of order until the gap before it is repaired (its reorder ring).

use control::topology::build;
use control::{GroupAddr, Instant, NodeAddr};
use dataplane::node::{Node, Payload};
use dataplane::rmtp::MemSource;
use dataplane::sim::scenario::CheckSink;
use std::collections::VecDeque;
use std::time::Duration;

mod counting;
#[path = "threaded_common/mod.rs"]
mod threaded_common;

use threaded_common::quiet_timers;

const SIZE: usize = 16 << 20;
const MTU: usize = 1024;
/// One DATA in this many from node 1 to node 2 is lost.
const LOSS_EVERY: u64 = 50;

fn n(a: u16) -> NodeAddr {
    NodeAddr::new(a).unwrap()
}

/// Packets between the nodes, in buffers made once.
struct Wire {
    queue: VecDeque<(usize, NodeAddr, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    data_from_1: u64,
    lost: u64,
}

impl Wire {
    fn new() -> Wire {
        const BUFFERS: usize = 20_000;
        Wire {
            queue: VecDeque::with_capacity(BUFFERS),
            spare: (0..BUFFERS).map(|_| Vec::with_capacity(MTU)).collect(),
            data_from_1: 0,
            lost: 0,
        }
    }

    fn carry(&mut self, from: NodeAddr, to: NodeAddr, bytes: &[u8]) {
        let is_data = bytes.get(6..8) == Some(&[0x00, 0x10]);
        if from == n(1) && is_data {
            self.data_from_1 += 1;
            if self.data_from_1.is_multiple_of(LOSS_EVERY) {
                self.lost += 1;
                return;
            }
        }
        let mut buf = self.spare.pop().expect("enough wire buffers");
        buf.clear();
        buf.extend_from_slice(bytes);
        self.queue.push_back((usize::from(to.get()) - 1, from, buf));
    }
}

/// Moves everything node `i` queued onto the wire; `input` is the datagram it was last
/// handed, which its `Payload::Input` packets refer to.
fn drain(nodes: &mut [Node], i: usize, input: &[u8], wire: &mut Wire) {
    let from = nodes[i].me();
    while let Some(o) = nodes[i].poll_outgoing() {
        match o.payload {
            Payload::Owned(packet) => wire.carry(from, o.to, &packet),
            Payload::Shared { id, span } => {
                // A sender's batch is a run of datagrams, each its own reference.
                for segment in span.segments(o.segment_size.unwrap_or(0)) {
                    wire.carry(from, o.to, nodes[i].outgoing_bytes(id, segment));
                    nodes[i].release(id);
                }
            }
            Payload::Input { span, .. } => wire.carry(from, o.to, &input[span.range()]),
        }
    }
}

/// One turn: every node's queue onto the wire, every packet on the wire to its node (what
/// that makes goes on the wire at once), then the timers due at `now`.
fn turn(nodes: &mut [Node], wire: &mut Wire, now: Instant) {
    for i in 0..nodes.len() {
        drain(nodes, i, &[], wire);
    }
    while let Some((to, from, buf)) = wire.queue.pop_front() {
        nodes[to].handle_received(now, from, &buf, 0);
        drain(nodes, to, &buf, wire);
        wire.spare.push(buf);
    }
    for node in nodes.iter_mut() {
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now);
        }
        while node.poll_event().is_some() {}
    }
}

#[test]
fn the_node_core_allocates_nothing_per_packet_through_a_transfer_with_loss() {
    let mut topology = build::line(3, 7001);
    topology.network.timers = quiet_timers();
    topology.network.mtu = MTU;
    let mut now = Instant::ZERO;
    let mut nodes: Vec<Node> = (1..=3).map(|a| Node::new(n(a), &topology, now)).collect();
    let mut wire = Wire::new();
    let step = Duration::from_micros(20);
    let converged = |nodes: &[Node]| {
        nodes[0].routes().next_hop(n(3)) == Some(n(2))
            && nodes[2].routes().next_hop(n(1)) == Some(n(2))
    };
    for _ in 0..100_000 {
        if converged(&nodes) {
            break;
        }
        turn(&mut nodes, &mut wire, now);
        now += step;
    }
    assert!(converged(&nodes), "the routes converged");

    let group = GroupAddr::from_index(1).unwrap();
    // Hashes what it is given and keeps nothing, as a file sink's writer would.
    let (sink, outcome) = CheckSink::with_outcome();
    nodes[2]
        .start_receive(now, group, n(1), 1, Box::new(sink))
        .expect("start the receiver");
    for _ in 0..10_000 {
        if nodes[0].multicast().lookup(group, n(1)).is_some() {
            break;
        }
        turn(&mut nodes, &mut wire, now);
        now += step;
    }
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 + i / 1000) as u8).collect();
    nodes[0]
        .start_send(now, group, "f", Box::new(MemSource::new(data)))
        .expect("start the sender");

    let delivered = |nodes: &[Node]| nodes[2].transfers().delivered(1).unwrap_or(0);
    let mut counted: Option<u64> = None;
    let mut measured_bytes = 0;
    let mut lost_in_window = 0;
    for _ in 0..10_000_000 {
        let d = delivered(&nodes);
        if counted.is_none() && d >= SIZE as u64 / 4 {
            counting::start();
            counted = Some(d);
            lost_in_window = wire.lost;
        }
        if let Some(start) = counted
            && d >= SIZE as u64 * 3 / 4
        {
            measured_bytes = d - start;
            lost_in_window = wire.lost - lost_in_window;
            break;
        }
        turn(&mut nodes, &mut wire, now);
        now += step;
    }
    assert!(counted.is_some(), "the transfer reached a quarter");
    let allocations = counting::stop();
    assert!(measured_bytes > 0, "the transfer reached three quarters");
    let relay = nodes[1].transfers().relay_stats().clone();
    let receiver = nodes[2].transfers().receiver_stats(1).cloned().unwrap();
    println!(
        "{measured_bytes} bytes delivered while counted, {lost_in_window} DATA lost and \
         repaired meanwhile: {allocations} allocations; node 2 passed {} packets on by \
         reference, copied {}; receiver repairs {}",
        nodes[1].data_plane().input_references(),
        nodes[1].data_plane().payload_copies(),
        receiver.repairs_received,
    );
    assert!(lost_in_window > 10, "loss inside the window");
    assert!(receiver.repairs_received > 10, "repairs inside the window");
    assert_eq!(
        allocations, 0,
        "allocations while forwarding and delivering"
    );
    assert_eq!(
        nodes[1].data_plane().payload_copies(),
        0,
        "node 2 copied no payload"
    );
    assert!(nodes[1].data_plane().input_references() > 1000, "{relay:?}");

    // The transfer completes and verifies.
    for _ in 0..10_000_000 {
        if outcome.borrow().verified.is_some() {
            break;
        }
        turn(&mut nodes, &mut wire, now);
        now += step;
    }
    assert_eq!(delivered(&nodes), SIZE as u64);
    assert_eq!(
        outcome.borrow().verified,
        Some(true),
        "the receiver's hash matched"
    );
}
