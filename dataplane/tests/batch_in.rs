//! Batches in and out. In: a node handed the datagrams of one receive together (a GRO
//! super-buffer: one buffer and a segment size) handles them with one `now` and lets its
//! transfers answer once per batch, not once per datagram. Out: a local sender's DATA is
//! queued in runs of datagrams built end to end in one buffer. Node 1 sends 4 MiB to a
//! receiver on node 2 in virtual time; the harness hands node 2 each turn's DATA from node 1
//! as super-buffers of up to 64 equal-size datagrams, as the kernel's GRO would.

use control::topology::build;
use control::{GroupAddr, Instant, NodeAddr};
use dataplane::node::{Node, Payload, Received, RmtpOptions};
use dataplane::rmtp::MemSource;
use std::time::Duration;

const SIZE: usize = 4 << 20;
const MTU: usize = 1024;
/// The most datagrams one coalesced receive carries here.
const GRO_SEGMENTS: usize = 64;

/// What a node queued: entries of its outgoing queue, and the datagrams in them; the most
/// datagrams it queued between two turns.
#[derive(Clone, Copy, Default)]
struct Queued {
    entries: u64,
    datagrams: u64,
    most_per_turn: u64,
}

fn n(a: u16) -> NodeAddr {
    NodeAddr::new(a).unwrap()
}

/// Everything `node` queued, as (destination, bytes); `queued` counts the entries it took and
/// the datagrams they held.
fn drain(node: &mut Node, queued: &mut Queued) -> Vec<(NodeAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let before = queued.datagrams;
    while let Some(o) = node.poll_outgoing() {
        queued.entries += 1;
        queued.datagrams += o.datagrams() as u64;
        match o.payload {
            Payload::Owned(packet) => out.push((o.to, packet)),
            Payload::Shared { id, span } => {
                // A sender's batch is a run of datagrams, each its own reference.
                for segment in span.segments(o.segment_size.unwrap_or(0)) {
                    out.push((o.to, node.outgoing_bytes(id, segment).to_vec()));
                    node.release(id);
                }
            }
            Payload::Input { .. } => panic!("no datagram was handed in with a token"),
        }
    }
    queued.most_per_turn = queued.most_per_turn.max(queued.datagrams - before);
    out
}

/// Hands `packets` from `from` to `node` as coalesced receives: runs of equal size (the last
/// of a run may be shorter), at most `GRO_SEGMENTS` each, one buffer and a segment size.
/// Returns how many batches that made.
fn hand_over(
    node: &mut Node,
    from: NodeAddr,
    packets: &[Vec<u8>],
    now: Instant,
    coalesce: bool,
) -> u64 {
    let mut batches = 0;
    let mut at = 0;
    while at < packets.len() {
        let size = packets[at].len();
        let mut end = at + 1;
        while coalesce
            && end < packets.len()
            && end - at < GRO_SEGMENTS
            && packets[end].len() <= size
            && packets[end - 1].len() == size
        {
            end += 1;
        }
        let buffer: Vec<u8> = packets[at..end].concat();
        node.handle_batch(
            now,
            Received {
                from,
                payload: &buffer,
                segment: size,
                token: None,
            },
        );
        batches += 1;
        at = end;
    }
    batches
}

/// What one transfer showed: node 2's datagrams accepted, batches and transfer pumps, and
/// what node 1 queued.
struct Shown {
    datagrams: u64,
    batches: u64,
    pumps: u64,
    sender: Queued,
}

/// Runs the transfer with node 2's receives coalesced or not.
fn transfer(coalesce: bool) -> Shown {
    transfer_with(coalesce, RmtpOptions::default())
}

fn transfer_with(coalesce: bool, options: RmtpOptions) -> Shown {
    let mut topology = build::line(2, 7001);
    topology.network.mtu = MTU;
    let mut now = Instant::ZERO;
    let mut nodes: Vec<Node> = (1..=2)
        .map(|a| Node::with_options(n(a), &topology, now, options.clone()))
        .collect();
    let step = Duration::from_micros(50);
    let mut queued = [Queued::default(); 2];
    let turn = |nodes: &mut Vec<Node>, now: Instant, queued: &mut [Queued; 2]| {
        for i in 0..2 {
            let packets: Vec<Vec<u8>> = drain(&mut nodes[i], &mut queued[i])
                .into_iter()
                .map(|p| p.1)
                .collect();
            let (from, to) = (n(i as u16 + 1), 1 - i);
            hand_over(&mut nodes[to], from, &packets, now, coalesce);
        }
        for node in nodes.iter_mut() {
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
            }
        }
    };
    for _ in 0..100_000 {
        if nodes[1].routes().next_hop(n(1)) == Some(n(1)) {
            break;
        }
        turn(&mut nodes, now, &mut queued);
        now += step;
    }
    let group = GroupAddr::from_index(1).unwrap();
    nodes[1]
        .start_receive(
            now,
            group,
            n(1),
            1,
            Box::new(dataplane::rmtp::MemSink::new()),
        )
        .expect("start the receiver");
    for _ in 0..10_000 {
        if nodes[0].multicast().lookup(group, n(1)).is_some() {
            break;
        }
        turn(&mut nodes, now, &mut queued);
        now += step;
    }
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 + i / 999) as u8).collect();
    nodes[0]
        .start_send(now, group, "f", Box::new(MemSource::new(data)))
        .expect("start the sender");
    let before = *nodes[1].stats();
    let sender_before = queued[0];
    let mut received = false;
    for _ in 0..1_000_000 {
        turn(&mut nodes, now, &mut queued);
        while let Some(e) = nodes[1].poll_event() {
            received |= matches!(
                e,
                dataplane::node::NodeEvent::Transfer(
                    dataplane::node::TransferEvent::Received { .. }
                )
            );
        }
        if received {
            break;
        }
        now += step;
    }
    assert!(received, "the copy completed and verified");
    let s = nodes[1].stats();
    Shown {
        datagrams: s.rx_accepted - before.rx_accepted,
        batches: s.rx_batches - before.rx_batches,
        pumps: s.transfer_pumps - before.transfer_pumps,
        sender: Queued {
            entries: queued[0].entries - sender_before.entries,
            datagrams: queued[0].datagrams - sender_before.datagrams,
            most_per_turn: queued[0].most_per_turn,
        },
    }
}

/// Coalesced, the receiving node's transfers answer once per batch: far fewer pumps than
/// datagrams, and never more than batches plus timer calls; handed in one at a time, every
/// RMTP datagram is a batch of one and a pump of its own.
#[test]
fn transfers_answer_once_per_batch_not_per_datagram() {
    let Shown {
        datagrams,
        batches,
        pumps,
        ..
    } = transfer(true);
    println!("coalesced: {datagrams} datagrams in {batches} batches, {pumps} pumps");
    let segments = (SIZE / control::wire::rmtp::max_payload(MTU)) as u64;
    assert!(datagrams >= segments, "{datagrams} < {segments}");
    assert!(
        batches * 10 < datagrams,
        "receives coalesced: {batches} batches"
    );
    assert!(
        pumps * 5 < datagrams,
        "{pumps} pumps for {datagrams} datagrams"
    );

    let Shown {
        datagrams,
        batches,
        pumps,
        ..
    } = transfer(false);
    println!("one at a time: {datagrams} datagrams in {batches} batches, {pumps} pumps");
    assert_eq!(batches, datagrams, "a batch of one per datagram");
    // A pump per RMTP datagram (the few DRP and GMP ones make none).
    assert!(
        pumps + datagrams / 100 >= datagrams,
        "{pumps} pumps for {datagrams} datagrams"
    );
}

/// Batches out: the sender builds its DATA in batches and queues each as one run of
/// datagrams to its next hop, so the node's queue holds far fewer entries than datagrams
/// (each run one segmented send on the io_uring engine), and the copy still verifies.
#[test]
fn a_sender_queues_its_data_in_runs() {
    let Shown { sender, .. } = transfer(true);
    println!(
        "node 1 queued {} datagrams in {} entries",
        sender.datagrams, sender.entries
    );
    let segments = (SIZE / control::wire::rmtp::max_payload(MTU)) as u64;
    assert!(sender.datagrams >= segments, "every DATA went out");
    assert!(
        sender.entries * 10 < sender.datagrams,
        "runs of datagrams, not one entry each"
    );
}

/// A sender whose window opens wide builds a few batches per pump, not the whole window: the
/// engine sends them and reads what came in before it builds more. Node 1 here takes two
/// pumps a turn at most (the receive of node 2's reports, a timeout); granted 4 MiB at once
/// (no in-flight cap), it queued the window's ~4200 datagrams in one turn without the bound.
#[test]
fn a_sender_builds_a_few_batches_per_pump() {
    let options = RmtpOptions {
        receiver_window: 4 << 20,
        receiver_in_flight_headroom: 0,
        ..RmtpOptions::default()
    };
    let per_pump = (options.send_batches_per_pump * options.send_batch(MTU)) as u64;
    let Shown { sender, .. } = transfer_with(true, options);
    println!(
        "node 1 queued at most {} datagrams in a turn ({per_pump} per pump)",
        sender.most_per_turn
    );
    assert!(sender.most_per_turn <= 2 * per_pump, "bounded per pump");
    assert!(
        sender.most_per_turn >= per_pump,
        "the window let the sender use its whole budget"
    );
}
