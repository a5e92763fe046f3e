//! Batches in: a node handed the datagrams of one receive together (a GRO super-buffer: one
//! buffer and a segment size) handles them with one `now` and lets its transfers answer once
//! per batch, not once per datagram. Node 1 sends 4 MiB to a receiver on node 2 in virtual
//! time; the harness hands node 2 each turn's DATA from node 1 as super-buffers of up to 64
//! equal-size datagrams, as the kernel's GRO would.

use control::topology::build;
use control::{GroupAddr, Instant, NodeAddr};
use dataplane::node::{Node, Payload, Received};
use dataplane::rmtp::MemSource;
use std::time::Duration;

const SIZE: usize = 4 << 20;
const MTU: usize = 1024;
/// The most datagrams one coalesced receive carries here.
const GRO_SEGMENTS: usize = 64;

fn n(a: u16) -> NodeAddr {
    NodeAddr::new(a).unwrap()
}

/// Everything `node` queued, as (destination, bytes).
fn drain(node: &mut Node) -> Vec<(NodeAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(o) = node.poll_outgoing() {
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

/// Runs the transfer with node 2's receives coalesced or not; returns node 2's counters
/// (datagrams accepted, batches, transfer pumps) and the batches the harness made.
fn transfer(coalesce: bool) -> (u64, u64, u64, u64) {
    let mut topology = build::line(2, 7001);
    topology.network.mtu = MTU;
    let mut now = Instant::ZERO;
    let mut nodes: Vec<Node> = (1..=2).map(|a| Node::new(n(a), &topology, now)).collect();
    let step = Duration::from_micros(50);
    let mut batches_made = 0;
    let turn = |nodes: &mut Vec<Node>, now: Instant, batches_made: &mut u64| {
        for i in 0..2 {
            let packets: Vec<Vec<u8>> = drain(&mut nodes[i]).into_iter().map(|p| p.1).collect();
            let (from, to) = (n(i as u16 + 1), 1 - i);
            *batches_made += hand_over(&mut nodes[to], from, &packets, now, coalesce);
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
        turn(&mut nodes, now, &mut batches_made);
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
        turn(&mut nodes, now, &mut batches_made);
        now += step;
    }
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 + i / 999) as u8).collect();
    nodes[0]
        .start_send(now, group, "f", Box::new(MemSource::new(data)))
        .expect("start the sender");
    let before = *nodes[1].stats();
    let batches_before = batches_made;
    let mut received = false;
    for _ in 0..1_000_000 {
        turn(&mut nodes, now, &mut batches_made);
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
    (
        s.rx_accepted - before.rx_accepted,
        s.rx_batches - before.rx_batches,
        s.transfer_pumps - before.transfer_pumps,
        batches_made - batches_before,
    )
}

/// Coalesced, the receiving node's transfers answer once per batch: far fewer pumps than
/// datagrams, and never more than batches plus timer calls; handed in one at a time, every
/// RMTP datagram is a batch of one and a pump of its own.
#[test]
fn transfers_answer_once_per_batch_not_per_datagram() {
    let (datagrams, batches, pumps, _) = transfer(true);
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

    let (datagrams, batches, pumps, _) = transfer(false);
    println!("one at a time: {datagrams} datagrams in {batches} batches, {pumps} pumps");
    assert_eq!(batches, datagrams, "a batch of one per datagram");
    // A pump per RMTP datagram (the few DRP and GMP ones make none).
    assert!(
        pumps + datagrams / 100 >= datagrams,
        "{pumps} pumps for {datagrams} datagrams"
    );
}
