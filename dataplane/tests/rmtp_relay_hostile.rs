//! A hostile or broken network against the relay: every field that passed the DNP checksum and
//! the CRC-32C is the attacker's choice. Forged trees, NACKs, MABs and SPMs must not stall a
//! real transfer, grow a table past its capacity, be amplified, or move state further than the
//! protocol allows in one step.

mod common;

use common::*;
use control::drp::{Route, RoutingTable};
use control::gmp::{MulticastTable, TreeEntry};
use control::wire::DEFAULT_MTU;
use control::wire::dnp::{Flag, Packet};
use control::wire::rmtp::{self, Mab, SeqRange, SpmFields, TOTAL_UNKNOWN, data_packet};
use control::{GroupAddr, Instant, NodeAddr};
use dataplane::rmtp::{Hop, RelayAction, RelayConfig, RelayStats, RmtpRelay};
use std::time::Duration;

/// A neighbour of relay 2 outside the test net: whatever the relay sends it is dropped.
const ATTACKER: u16 = 7;

fn group(i: u16) -> GroupAddr {
    GroupAddr::new(GROUP + i).unwrap()
}

fn nack_packet(from: u16, sender: u16, group: GroupAddr, ranges: &[SeqRange]) -> Vec<u8> {
    let mut b = vec![0u8; DEFAULT_MTU];
    let len = rmtp::build_nack(&mut b, n(sender), n(from), group, ranges);
    b.truncate(len);
    b
}

fn mab_packet(from: u16, sender: u16, group: GroupAddr, mab: u64, received: u64) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    let m = Mab {
        group: group.get(),
        mab,
        received,
    };
    let len = rmtp::build_mab(&mut b, n(sender), n(from), &m);
    b.truncate(len);
    b
}

fn spm_packet(sender: u16, group: GroupAddr, trailing: u64, leading: u64) -> Vec<u8> {
    let mut b = vec![0u8; DEFAULT_MTU];
    let spm = SpmFields {
        spm_sequence: 1,
        trailing,
        leading,
        segment_size: 100,
        total: TOTAL_UNKNOWN,
        finished: false,
        hash: [0; 32],
    };
    let len = rmtp::build_spm(&mut b, group, n(sender), &spm);
    b.truncate(len);
    b
}

/// Adds `count` forged trees (group 0xF001…, sender 1) to `node`'s multicast table, as forged
/// GMP joins from the attacker would: upstream toward the sender, the attacker downstream.
fn forge_trees(net: &mut Net, node: u16, first: u16, count: u16) {
    let table = &mut net.nodes.get_mut(&node).unwrap().mcast;
    let mut entries = table.entries().to_vec();
    entries.extend((first..first + count).map(|i| TreeEntry {
        group: group(i),
        sender: n(SENDER),
        upstream: Some(n(SENDER)),
        downstream: vec![n(ATTACKER)],
        local_members: vec![],
    }));
    *table = MulticastTable::new(entries);
}

/// The attacker's MAB and NACK for each forged tree.
fn flood_forged_trees(net: &mut Net, node: u16, first: u16, count: u16) {
    for i in first..first + count {
        net.inject(
            ATTACKER,
            node,
            &mab_packet(ATTACKER, SENDER, group(i), 1 << 20, 0),
        );
        net.inject(
            ATTACKER,
            node,
            &nack_packet(ATTACKER, SENDER, group(i), &[SeqRange { first: 0, len: 8 }]),
        );
    }
}

/// Steps until every receiver completed or `limit` passed, calling `each` every tick.
fn run_with(net: &mut Net, limit: Duration, mut each: impl FnMut(&mut Net)) {
    let end = net.now + limit;
    while net.now < end && !net.receivers().all(|(_, _, r)| r.is_complete()) {
        each(net);
        net.step();
    }
}

#[test]
fn forged_trees_do_not_starve_a_real_transfer_through_the_relay() {
    // 1 -> 2 -> 3: relay 2 has no local member, the receiver is on 3.
    const FORGED: u16 = 128;
    let data = content(1 << 20, 71);
    let mut net = Net::new(Spec::new(&[(1, 2), (2, 3)], &[(3, 1)], data.clone()));
    forge_trees(&mut net, 2, 1, FORGED);
    // The forged trees are in place before the real transfer starts, and keep coming.
    flood_forged_trees(&mut net, 2, 1, FORGED);
    let mut tick = 0u64;
    run_with(&mut net, Duration::from_secs(20), |net| {
        tick += 1;
        if tick.is_multiple_of(20) {
            flood_forged_trees(net, 2, 1, FORGED);
        }
    });
    let s = net.nodes[&2].relay.stats().clone();
    let r = &net.nodes[&3].receivers[&1];
    println!(
        "{FORGED} forged trees at relay 2: receiver has {} of {} bytes at {}; relay 2: \
         tree_table_full {}, drops_table_full {}, trees_evicted {}",
        r.delivered(),
        data.len(),
        net.now,
        s.tree_table_full,
        s.drops_table_full,
        s.trees_evicted
    );
    assert!(r.is_complete(), "the real transfer must complete");
    assert_eq!(r.sink().data, data);
    // The forged trees did fill the table: the real one took the slot of one of them.
    assert!(s.trees_evicted >= 1 && s.tree_table_full > 0);
}

/// Relay 2 of the tree 1 -> 2 -> {3, attacker}; node 3 is a real receiver's node.
fn tables() -> (MulticastTable, RoutingTable) {
    let entry = TreeEntry {
        group: g(),
        sender: n(SENDER),
        upstream: Some(n(SENDER)),
        downstream: vec![n(3), n(ATTACKER)],
        local_members: vec![],
    };
    let routes = [SENDER, 3, ATTACKER]
        .map(|d| Route {
            dst: n(d),
            next_hop: n(d),
            hops: 1,
        })
        .to_vec();
    (
        MulticastTable::new(vec![entry]),
        RoutingTable::new(n(2), routes),
    )
}

struct Bench {
    relay: RmtpRelay,
    mc: MulticastTable,
    rt: RoutingTable,
    now: Instant,
}

impl Bench {
    fn new(config: RelayConfig) -> Self {
        let (mc, rt) = tables();
        Bench {
            relay: RmtpRelay::new(config),
            mc,
            rt,
            now: Instant::from_millis(1),
        }
    }

    fn handle(&mut self, from: u16, bytes: &[u8]) -> RelayAction {
        let p = Packet::parse(bytes, DEFAULT_MTU).unwrap();
        self.relay.handle(self.now, n(from), &p, &self.mc, &self.rt)
    }

    /// DATA 0..count (100-byte segments) from the sender.
    fn data(&mut self, count: u64) {
        for seq in 0..count {
            let d = data_packet(g(), n(SENDER), Flag::RmtpData, seq, seq * 100, &[7; 100]);
            assert!(matches!(
                self.handle(SENDER, &d),
                RelayAction::Forward { .. }
            ));
        }
    }

    /// Everything the relay sends now: (hop, flag, packet).
    fn drain(&mut self) -> Vec<(Hop, Flag, Vec<u8>)> {
        let mut buf = vec![0u8; DEFAULT_MTU];
        let mut out = Vec::new();
        while let Some(t) = self.relay.poll_transmit(self.now, &mut buf) {
            let flag = Packet::parse(&buf[..t.len], DEFAULT_MTU).unwrap().flag();
            out.push((t.to, flag, buf[..t.len].to_vec()));
        }
        out
    }

    fn stats(&self) -> &RelayStats {
        self.relay.stats()
    }
}

fn no_cache() -> RelayConfig {
    let mut c = RelayConfig::new(n(2), DEFAULT_MTU);
    c.cache_bytes = 0;
    c
}

#[test]
fn spm_trailing_edge_near_u64_max_is_not_adopted() {
    let mut b = Bench::new(no_cache());
    b.data(10);
    b.drain();
    // A forged SPM from the upstream's address claims the sender repairs nothing below 2^64 - 2.
    let forged = spm_packet(SENDER, g(), u64::MAX - 1, u64::MAX);
    b.handle(SENDER, &forged);
    b.drain();
    // A real receiver below then misses sequence 5: it must still go upstream.
    b.handle(3, &nack_packet(3, SENDER, g(), &[SeqRange::single(5)]));
    let out = b.drain();
    assert!(
        out.iter()
            .any(|(h, f, _)| *h == Hop::Neighbour(n(SENDER)) && *f == Flag::RmtpNack),
        "a repairable sequence is still asked upstream: {out:?}, {:?}",
        b.stats()
    );
}

#[test]
fn nack_near_u64_max_beyond_the_leading_edge_is_refused() {
    let mut b = Bench::new(no_cache());
    b.data(10);
    b.drain();
    let before = b.stats().clone();
    let forged = nack_packet(
        ATTACKER,
        SENDER,
        g(),
        &[
            SeqRange {
                first: u64::MAX - (1 << 32),
                len: u32::MAX,
            },
            SeqRange {
                first: 1 << 32,
                len: u32::MAX,
            },
        ],
    );
    b.handle(ATTACKER, &forged);
    let out = b.drain();
    println!(
        "a NACK for 2 x 2^32 sequences beyond the leading edge 10: relay sent {} packets; \
         {:?}",
        out.len(),
        b.stats()
    );
    assert!(out.is_empty(), "nothing is asked or confirmed: {out:?}");
    assert_eq!(b.stats().nack_table_full, before.nack_table_full);
}

#[test]
fn mab_near_u64_max_does_not_open_the_window_beyond_one_step() {
    let config = no_cache();
    let step = config.max_edge_step;
    let mut b = Bench::new(config);
    b.data(10);
    b.drain();
    // The real receiver on 3 reports a sane window; the forger on 7 an absurd one.
    b.handle(3, &mab_packet(3, SENDER, g(), 1000 + 4096, 1000));
    b.handle(
        ATTACKER,
        &mab_packet(ATTACKER, SENDER, g(), u64::MAX, u64::MAX - 1),
    );
    // Node 3's branch is gone: only the forger's MAB is left to report upstream.
    let (_, rt) = tables();
    b.rt = RoutingTable::new(
        n(2),
        rt.routes()
            .iter()
            .copied()
            .filter(|r| r.dst != n(3))
            .collect(),
    );
    b.now = b.now + Duration::from_millis(60);
    b.relay.handle_timeout(b.now, &b.mc, &b.rt);
    let mabs: Vec<Mab> = b
        .drain()
        .iter()
        .filter(|(_, f, _)| *f == Flag::RmtpMab)
        .map(|(_, _, p)| Mab::parse(Packet::parse(p, DEFAULT_MTU).unwrap().body()).unwrap())
        .collect();
    println!("MABs upstream: {mabs:?}");
    let last = mabs.last().expect("a MAB goes upstream");
    // 10 segments of 100 bytes went through: nobody can hold more, nor ask for more than a step.
    assert!(last.received <= 1000, "{last:?}");
    assert!(last.mab <= 1000 + step, "{last:?}");
}

#[test]
fn mab_whose_received_exceeds_its_window_is_refused() {
    let mut b = Bench::new(no_cache());
    b.data(10);
    b.drain();
    let action = b.handle(
        ATTACKER,
        &mab_packet(ATTACKER, SENDER, g(), 1 << 32, u64::MAX),
    );
    assert!(matches!(action, RelayAction::Drop(_)), "{action:?}");
    assert_eq!(b.stats().mabs_implausible, 1);
}

#[test]
fn data_whose_offset_plus_length_overflows_is_refused() {
    let mut b = Bench::new(RelayConfig::new(n(2), DEFAULT_MTU));
    b.data(3);
    let forged = data_packet(g(), n(SENDER), Flag::RmtpData, 3, u64::MAX - 10, &[1; 100]);
    let action = b.handle(SENDER, &forged);
    assert!(matches!(action, RelayAction::Drop(_)), "{action:?}");
    let last = data_packet(g(), n(SENDER), Flag::RmtpData, u64::MAX, 0, &[1; 100]);
    let action = b.handle(SENDER, &last);
    assert!(matches!(action, RelayAction::Drop(_)), "{action:?}");
    assert_eq!(b.stats().data_implausible, 2);
}

/// Packets relay 2 built itself (repairs, NACKs, NCFs).
fn built(s: &RelayStats) -> u64 {
    s.repairs_from_cache + s.nacks_sent_upstream + s.ncfs_sent
}

#[test]
fn forged_nacks_are_not_amplified_by_the_relay() {
    // 1 -> 2 -> {3, attacker}; the whole transfer (264 segments) sits in relay 2's cache.
    let data = content(256 * 1024, 72);
    let mut net = Net::new(Spec::new(&[(1, 2), (2, 3)], &[(3, 1)], data.clone()));
    let table = &mut net.nodes.get_mut(&2).unwrap().mcast;
    let mut entry = table.entries()[0].clone();
    entry.downstream.push(n(ATTACKER));
    *table = MulticastTable::new(vec![entry]);
    run_with(&mut net, Duration::from_secs(10), |_| {});
    assert_eq!(net.nodes[&3].receivers[&1].sink().data, data);
    let segments = net.sender().leading_edge();
    let before = net.nodes[&2].relay.stats().clone();
    // 100 ms of forged NACKs, 10 per tick: every cached sequence, and a range far beyond the
    // leading edge.
    let forged = nack_packet(
        ATTACKER,
        SENDER,
        g(),
        &[
            SeqRange {
                first: 0,
                len: segments as u32,
            },
            SeqRange {
                first: 1_000_000,
                len: 1000,
            },
        ],
    );
    let mut sent = 0u64;
    for _ in 0..200 {
        for _ in 0..10 {
            net.inject(ATTACKER, 2, &forged);
            sent += 1;
        }
        net.step();
    }
    let after = net.nodes[&2].relay.stats().clone();
    let out = built(&after) - built(&before);
    let amplification = out as f64 / sent as f64;
    println!(
        "{sent} forged NACKs ({segments} cached sequences + 1000 beyond the leading edge): relay \
         sent {out} packets ({} cache repairs, {} NACKs upstream, {} NCFs): amplification \
         {amplification:.2}",
        after.repairs_from_cache - before.repairs_from_cache,
        after.nacks_sent_upstream - before.nacks_sent_upstream,
        after.ncfs_sent - before.ncfs_sent,
    );
    // One repair per sequence toward the forger per hold-off (10 ms): 11 rounds in 100 ms.
    assert!(
        after.repairs_from_cache - before.repairs_from_cache <= segments * 11,
        "cache repairs held off"
    );
    assert_eq!(after.nacks_sent_upstream, before.nacks_sent_upstream);
    assert!(amplification <= 2.0, "amplification {amplification:.2}");
}
