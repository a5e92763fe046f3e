//! A whole node (DNP, DRP, GMP, RAP, RMTP relay, a local sender and a local receiver) fed a
//! sequence of fuzzer-chosen packets and pauses. The input's bytes drive the structured
//! generator (`dataplane::sim::hostile`), which builds each packet with the wire module's
//! builders and seals it, so every packet passes both integrity checks and reaches the state
//! machines. Checked: no panic, time always moves on (no timer due for ever), and everything
//! the node sends is a valid packet to one of its neighbours.
//!
//! Its tables are small (a few dozen NACKed sequences, a few repair-cache slots) so that the
//! same code paths reach their limits within a few packets, and an input runs in well under a
//! millisecond: a full-size node (4,096 NACK entries per tree) spends most of its time
//! NACKing, again and again, the sequences one forged SPM claims missing, which finds nothing
//! new.
#![no_main]

use control::topology::{Topology, build};
use control::wire::dnp::Packet;
use control::{GroupAddr, Instant, NodeAddr};
use dataplane::node::{Node, RmtpOptions};
use dataplane::rmtp::{MemSink, MemSource};
use dataplane::sim::hostile::{ByteEntropy, Entropy, Knowledge, generate_any};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;

/// At most this many packets or pauses per input, so that every input runs quickly.
const MAX_STEPS: usize = 64;
/// Virtual time one input may pause in all: a node wakes up some hundred times per virtual
/// second (NACK retries, MABs, SPMs), so time costs as much as packets do. Longer than every
/// RMTP expiry (NACK entries 2 s, silent peers 3 s) and, with the control timers at a quarter
/// of their defaults, than every control expiry (dead neighbour, GMP entry, former neighbour).
const VIRTUAL_TIME: Duration = Duration::from_secs(4);
/// The control timers run this many times faster than the defaults.
const TIMER_SPEEDUP: u32 = 4;
/// A node that is due again at the same instant this many times in a row never lets time move.
const SPIN_LIMIT: u32 = 10_000;
/// A few segments: enough for gaps, repairs and a window; every input seals and hashes them.
const FILE_BYTES: usize = 6_000;
/// The relay's NACK table per tree, and so the local receiver's missing table.
const NACK_ENTRIES: usize = 64;
/// Trees the relay tracks: a few, so that forged trees fill the table (its every slot is
/// visited on every wake-up, too).
const MAX_TREES: usize = 4;
/// The repair cache per tree: a few MTU-sized slots (zeroing the default 1 MiB would dominate).
const CACHE_BYTES: usize = 8 << 10;

/// The 7-node tree with faster control timers, built once for every input.
fn topology() -> &'static Topology {
    static TOPOLOGY: OnceLock<Topology> = OnceLock::new();
    TOPOLOGY.get_or_init(|| {
        let mut topology = build::binary_tree(3, 7001);
        let t = &mut topology.network.timers;
        for timer in [
            &mut t.hello_interval,
            &mut t.lsp_retransmit,
            &mut t.former_probe_interval,
            &mut t.gmp_refresh,
            &mut t.gmp_expire,
            &mut t.rap_retry,
        ] {
            *timer /= TIMER_SPEEDUP;
        }
        topology
    })
}

fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).expect("a node address")
}

fn g(index: u16) -> GroupAddr {
    GroupAddr::from_index(index).expect("a group")
}

/// Sends everything the node queued; each must be a valid packet to a neighbour.
fn drain(node: &mut Node, neighbours: &[NodeAddr], mtu: usize) {
    while let Some(t) = node.poll_transmit() {
        assert!(
            neighbours.contains(&t.to),
            "sent to {}, not a neighbour",
            t.to
        );
        if let Err(e) = Packet::parse(&t.packet, mtu) {
            panic!("sent an invalid packet ({e}): {:02x?}", t.packet);
        }
    }
    while node.poll_event().is_some() {}
}

/// Runs the node's timers up to `until`.
fn run_until(
    node: &mut Node,
    now: &mut Instant,
    until: Instant,
    neighbours: &[NodeAddr],
    mtu: usize,
) {
    let mut spins = 0;
    while let Some(due) = node.poll_timeout().filter(|&t| t <= until) {
        if due <= *now {
            spins += 1;
            assert!(
                spins < SPIN_LIMIT,
                "the node is due at {due} for ever (now {now})"
            );
        } else {
            spins = 0;
            *now = due;
        }
        node.handle_timeout(*now);
        drain(node, neighbours, mtu);
    }
    *now = until.max(*now);
}

fuzz_target!(|data: &[u8]| {
    let topology = topology();
    let mtu = topology.network.mtu;
    let me = n(2);
    let neighbours = topology.neighbours(me);
    let mut now = Instant::ZERO;
    let options = RmtpOptions {
        cache_bytes: CACHE_BYTES,
        nack_entries: NACK_ENTRIES,
        max_trees: MAX_TREES,
        ..RmtpOptions::default()
    };
    let mut node = Node::with_options(me, topology, now, options);
    node.start_receive(now, g(1), n(1), 100, Box::new(MemSink::new()))
        .expect("a fresh node can receive");
    node.start_send(
        now,
        g(2),
        "fuzz.bin",
        Box::new(MemSource::new(vec![7; FILE_BYTES])),
    )
    .expect("a fresh node can send");
    drain(&mut node, &neighbours, mtu);

    let mut knowledge = Knowledge::new(
        mtu,
        topology.nodes.iter().map(|s| s.addr).collect(),
        g(1),
        n(1),
    );
    knowledge.groups.push(g(2));
    knowledge.senders.push(me);
    knowledge.numbers = vec![0, 20, 21, FILE_BYTES as u64];

    let mut choices = ByteEntropy::new(data);
    for _ in 0..MAX_STEPS {
        if choices.is_empty() {
            break;
        }
        let choice = choices.next_u64();
        if choice >> 62 == 0 {
            // A pause of up to 300 ms: timers fire, NACKs and LSPs are re-sent, entries expire.
            let pause = Duration::from_micros(choice % 300_000);
            let until = (now + pause).min(Instant::ZERO + VIRTUAL_TIME);
            run_until(&mut node, &mut now, until, &neighbours, mtu);
        } else {
            let from = neighbours[(choice % neighbours.len() as u64) as usize];
            let hostile = generate_any(&mut choices, &knowledge, &[], me, from);
            node.handle_datagram(now, from, &hostile.packet);
            drain(&mut node, &neighbours, mtu);
        }
    }
});
