//! The relay's unit tests.

use super::*;
use control::drp::Route;
use control::wire::DEFAULT_MTU;
use control::wire::dnp::frame;
use control::wire::rmtp::{Ncf, RmtpMessage, data_packet};
use proptest::prelude::*;

const G: u16 = 0xF000;

fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).unwrap()
}

fn g() -> GroupAddr {
    GroupAddr::new(G).unwrap()
}

/// Node 2: upstream 1 (the sender), downstream 3 and 4, local member 9.
fn tables(reachable: &[u16]) -> (MulticastTable, RoutingTable) {
    let entry = TreeEntry {
        group: g(),
        sender: n(1),
        upstream: Some(n(1)),
        downstream: vec![n(3), n(4)],
        local_members: vec![9],
    };
    let routes = reachable
        .iter()
        .map(|&d| Route {
            dst: n(d),
            next_hop: n(d),
            hops: 1,
        })
        .collect();
    (
        MulticastTable::new(vec![entry]),
        RoutingTable::new(n(2), routes),
    )
}

fn relay() -> RmtpRelay {
    RmtpRelay::new(RelayConfig::new(n(2), DEFAULT_MTU))
}

/// An SPM of `sender`'s tree: 100 segments of 100 bytes sent so far.
fn spm(sender: u16) -> Vec<u8> {
    let mut buf = vec![0u8; DEFAULT_MTU];
    let fields = SpmFields {
        spm_sequence: 1,
        trailing: 0,
        leading: 100,
        segment_size: 100,
        total: rmtp::TOTAL_UNKNOWN,
        finished: false,
        hash: [0; 32],
    };
    let len = rmtp::build_spm(&mut buf, g(), n(sender), &fields).unwrap();
    buf.truncate(len);
    buf
}

/// The sender's SPM through node 2: the tree carries traffic, sequences below 100 exist.
fn announced(r: &mut RmtpRelay, mc: &MulticastTable, rt: &RoutingTable, now: Instant) {
    announced_with(r, mc, rt, now, &spm(1));
}

fn announced_with(
    r: &mut RmtpRelay,
    mc: &MulticastTable,
    rt: &RoutingTable,
    now: Instant,
    spm: &[u8],
) {
    let action = r.handle(now, n(1), &p(spm), mc, rt);
    assert!(matches!(action, RelayAction::Forward { .. }), "{action:?}");
}

fn data(seq: u64, flag: Flag) -> Vec<u8> {
    data_packet(g(), n(1), flag, seq, seq * 100, &[seq as u8; 100])
}

fn nack(from: u16, seqs: &[SeqRange]) -> Vec<u8> {
    let mut buf = vec![0u8; DEFAULT_MTU];
    let len = rmtp::build_nack(&mut buf, n(1), n(from), g(), seqs).unwrap();
    buf.truncate(len);
    buf
}

fn p(bytes: &[u8]) -> Packet<'_> {
    Packet::parse(bytes, DEFAULT_MTU).unwrap()
}

/// Everything the relay wants to send: (hop, flag, ranges or data seq).
fn drain(r: &mut RmtpRelay, now: Instant) -> Vec<(Hop, Flag, Vec<u8>)> {
    let mut buf = [0u8; DEFAULT_MTU];
    let mut out = Vec::new();
    while let Some(t) = r.poll_transmit(now, &mut buf) {
        let pk = p(&buf[..t.len]);
        out.push((t.to, pk.flag(), buf[..t.len].to_vec()));
    }
    out
}

fn ranges_of(bytes: &[u8]) -> Vec<SeqRange> {
    let pk = p(bytes);
    match RmtpMessage::parse(pk.flag(), pk.body()).unwrap() {
        RmtpMessage::Nack(x) => x.ranges.iter().collect(),
        RmtpMessage::Ncf(Ncf { ranges, .. }) => ranges.iter().collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn data_fans_out_from_upstream_only() {
    let (mc, rt) = tables(&[1, 3, 4]);
    let mut r = relay();
    let d = data(0, Flag::RmtpData);
    match r.handle(Instant::ZERO, n(1), &p(&d), &mc, &rt) {
        RelayAction::Forward { to, deliver_local } => {
            assert_eq!(to.iter().collect::<Vec<_>>(), [n(3), n(4)]);
            assert!(deliver_local);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.handle(Instant::ZERO, n(3), &p(&d), &mc, &rt),
        RelayAction::Drop(DropReason::NotFromUpstream)
    );
    let other = data_packet(
        GroupAddr::new(0xF001).unwrap(),
        n(1),
        Flag::RmtpData,
        0,
        0,
        b"x",
    );
    assert_eq!(
        r.handle(Instant::ZERO, n(1), &p(&other), &mc, &rt),
        RelayAction::Drop(DropReason::NotOnTree)
    );
    assert_eq!(r.stats().drops_not_from_upstream, 1);
    assert_eq!(r.stats().drops_not_on_tree, 1);
}

#[test]
fn nacks_aggregate_and_retransmit_goes_only_to_those_who_asked() {
    let (mc, rt) = tables(&[1, 3, 4]);
    let mut cfg = RelayConfig::new(n(2), DEFAULT_MTU);
    cfg.cache_bytes = 0;
    let mut r = RmtpRelay::new(cfg);
    let t0 = Instant::ZERO;
    announced(&mut r, &mc, &rt, t0);
    let five = [SeqRange::single(5)];
    assert_eq!(
        r.handle(t0, n(3), &p(&nack(3, &five)), &mc, &rt),
        RelayAction::Consumed
    );
    let out = drain(&mut r, t0);
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].0, out[0].1), (Hop::Neighbour(n(1)), Flag::RmtpNack));
    assert_eq!(ranges_of(&out[0].2), five);
    assert_eq!(p(&out[0].2).src_raw(), 2, "the relay's own NACK");
    assert_eq!((out[1].0, out[1].1), (Hop::Neighbour(n(3)), Flag::RmtpNcf));
    assert_eq!(p(&out[1].2).dst().raw(), 3);
    // A second NACK for 5 (from 4) only records a waiter, and is confirmed.
    r.handle(t0, n(4), &p(&nack(4, &five)), &mc, &rt);
    let out = drain(&mut r, t0);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, out[0].1), (Hop::Neighbour(n(4)), Flag::RmtpNcf));
    assert_eq!(r.stats().nack_seqs_aggregated, 1);
    // Upstream confirms: no retry of our own; a NACK after the entry is stale goes again.
    let mut ncf = vec![0u8; DEFAULT_MTU];
    let len = rmtp::build_ncf(&mut ncf, n(2), n(1), g(), n(1), &five).unwrap();
    r.handle(t0, n(1), &p(&ncf[..len]), &mc, &rt);
    let t1 = t0 + Duration::from_millis(50);
    r.handle_timeout(t1, &mc, &rt);
    assert!(
        drain(&mut r, t1)
            .iter()
            .all(|(_, f, _)| *f != Flag::RmtpNack)
    );
    r.handle(t1, n(3), &p(&nack(3, &five)), &mc, &rt);
    let out = drain(&mut r, t1);
    assert!(
        out.iter()
            .any(|(h, f, _)| *h == Hop::Neighbour(n(1)) && *f == Flag::RmtpNack)
    );
    assert_eq!(r.stats().nacks_sent_upstream, 2);
    // The repair goes to 3 and 4 only (not the local member), once.
    let rd = data(5, Flag::RmtpRetransmit);
    match r.handle(t1, n(1), &p(&rd), &mc, &rt) {
        RelayAction::Forward { to, deliver_local } => {
            assert_eq!(to.iter().collect::<Vec<_>>(), [n(3), n(4)]);
            assert!(!deliver_local);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.handle(t1, n(1), &p(&rd), &mc, &rt),
        RelayAction::Drop(DropReason::Unrequested)
    );
}

#[test]
fn unconfirmed_nacks_are_repeated_upstream() {
    let (mc, rt) = tables(&[1, 3, 4]);
    let mut r = relay();
    let t0 = Instant::ZERO;
    announced(&mut r, &mc, &rt, t0);
    r.handle(
        t0,
        n(3),
        &p(&nack(3, &[SeqRange { first: 8, len: 3 }])),
        &mc,
        &rt,
    );
    assert_eq!(drain(&mut r, t0).len(), 2);
    let t1 = t0 + Duration::from_millis(10);
    assert!(r.poll_timeout().unwrap() <= t1);
    r.handle_timeout(t1, &mc, &rt);
    let out = drain(&mut r, t1);
    assert_eq!(out.len(), 1);
    assert_eq!(ranges_of(&out[0].2), [SeqRange { first: 8, len: 3 }]);
}

/// Confirms `seqs` from upstream (an NCF): no retry of the relay's own.
fn confirm(
    r: &mut RmtpRelay,
    mc: &MulticastTable,
    rt: &RoutingTable,
    now: Instant,
    seqs: &[SeqRange],
) {
    let mut ncf = vec![0u8; DEFAULT_MTU];
    let len = rmtp::build_ncf(&mut ncf, n(2), n(1), g(), n(1), seqs).unwrap();
    r.handle(now, n(1), &p(&ncf[..len]), mc, rt);
}

/// Before a repair came down, a repeated NACK goes upstream again only after the
/// configured `nack_stale` (10 ms); once the upstream repair round trip is measured
/// (200 µs), after `srtt + 4 rttvar` (600 µs) of it. A repair quicker than any after the
/// second NACK answers the first: a spurious retry, counted.
#[test]
fn a_repeated_nack_goes_upstream_after_the_measured_repair_round_trip() {
    let (mc, rt) = tables(&[1, 3, 4]);
    let mut cfg = RelayConfig::new(n(2), DEFAULT_MTU);
    cfg.cache_bytes = 0;
    let mut r = RmtpRelay::new(cfg);
    let us = |v: u64| Instant::from_nanos(v * 1000);
    announced(&mut r, &mc, &rt, us(0));
    let upstream = |r: &RmtpRelay| r.stats().nacks_sent_upstream;
    let five = [SeqRange::single(5)];
    r.handle(us(0), n(3), &p(&nack(3, &five)), &mc, &rt);
    drain(&mut r, us(0));
    confirm(&mut r, &mc, &rt, us(0), &five);
    assert_eq!(upstream(&r), 1);
    // Unmeasured: a NACK 1 ms later only waits.
    r.handle(us(1_000), n(3), &p(&nack(3, &five)), &mc, &rt);
    drain(&mut r, us(1_000));
    assert_eq!(upstream(&r), 1);
    // Its repair comes 200 µs after the NACK went: one sample.
    let six = [SeqRange::single(6)];
    r.handle(us(2_000), n(3), &p(&nack(3, &six)), &mc, &rt);
    drain(&mut r, us(2_000));
    confirm(&mut r, &mc, &rt, us(2_000), &six);
    r.handle(
        us(2_200),
        n(1),
        &p(&data(6, Flag::RmtpRetransmit)),
        &mc,
        &rt,
    );
    assert_eq!(r.stats().upstream_rtt_samples, 1);
    assert_eq!(upstream(&r), 2);
    // Seq 5 was asked long ago: the next NACK for it goes again; then 6 more once its
    // repair was lost on the way down, 600 µs after, not 10 ms.
    r.handle(us(2_300), n(3), &p(&nack(3, &five)), &mc, &rt);
    drain(&mut r, us(2_300));
    assert_eq!(upstream(&r), 3);
    let seven = [SeqRange::single(7)];
    r.handle(us(3_000), n(3), &p(&nack(3, &seven)), &mc, &rt);
    drain(&mut r, us(3_000));
    confirm(&mut r, &mc, &rt, us(3_000), &seven);
    r.handle(us(3_599), n(4), &p(&nack(4, &seven)), &mc, &rt);
    drain(&mut r, us(3_599));
    assert_eq!(upstream(&r), 4, "within the round trip: aggregated");
    r.handle(us(3_600), n(3), &p(&nack(3, &seven)), &mc, &rt);
    drain(&mut r, us(3_600));
    assert_eq!(upstream(&r), 5, "a round trip on: asked again");
    // Its repair 50 µs on, quicker than any: the answer to the NACK of 3,000 µs, and the
    // second NACK was needless.
    r.handle(
        us(3_650),
        n(1),
        &p(&data(7, Flag::RmtpRetransmit)),
        &mc,
        &rt,
    );
    assert_eq!(r.stats().upstream_retries_spurious, 1);
    assert_eq!(r.stats().upstream_rtt_samples, 1);
}

/// The sender probes a closed window with SPMs: an SPM passing down makes the relay send
/// its MAB upstream again (the one it sent may have been lost).
#[test]
fn an_spm_passing_down_sends_the_mab_upstream_again() {
    let (mc, rt) = tables(&[1, 3, 4]);
    let mut r = relay();
    let t0 = Instant::ZERO;
    announced(&mut r, &mc, &rt, t0);
    r.local_mab(t0, 9, g(), n(1), 5000, 4000, &mc, &rt);
    let mabs = |out: Vec<(Hop, Flag, Vec<u8>)>| {
        out.iter()
            .filter(|(h, f, _)| *h == Hop::Neighbour(n(1)) && *f == Flag::RmtpMab)
            .count()
    };
    assert_eq!(mabs(drain(&mut r, t0)), 1);
    assert_eq!(
        mabs(drain(&mut r, t0)),
        0,
        "sent once while nothing changes"
    );
    let t1 = t0 + Duration::from_millis(1);
    announced(&mut r, &mc, &rt, t1);
    assert_eq!(mabs(drain(&mut r, t1)), 1);
}

#[test]
fn cached_data_answers_nacks_locally() {
    let (mc, rt) = tables(&[1, 3, 4]);
    let mut r = relay();
    let t0 = Instant::ZERO;
    let d = data(7, Flag::RmtpData);
    r.handle(t0, n(1), &p(&d), &mc, &rt);
    r.handle(t0, n(4), &p(&nack(4, &[SeqRange::single(7)])), &mc, &rt);
    let nine = [9u16];
    r.local_nack(t0, nine[0], g(), n(1), [SeqRange::single(7)], &mc);
    let out = drain(&mut r, t0);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].0, Hop::Neighbour(n(4)));
    assert_eq!(out[1].0, Hop::Local);
    for (_, flag, bytes) in &out {
        assert_eq!(*flag, Flag::RmtpRetransmit);
        assert_eq!(p(bytes).body(), p(&d).body());
    }
    assert_eq!(r.stats().repairs_from_cache, 2);
    assert_eq!(r.stats().nacks_sent_upstream, 0);
}

/// Where a tree goes on to no neighbour, the cache keeps copies only until every local member
/// reports receiving: before, a member that has not learnt the transfer's shape refuses DATA,
/// which the copy then repairs; after, nothing here can lose a packet.
#[test]
fn a_leaf_keeps_copies_until_its_members_report_receiving() {
    let entry = TreeEntry {
        group: g(),
        sender: n(1),
        upstream: Some(n(1)),
        downstream: vec![],
        local_members: vec![9],
    };
    let mc = MulticastTable::new(vec![entry]);
    let (_, rt) = tables(&[1]);
    let mut r = relay();
    let t0 = Instant::ZERO;
    announced(&mut r, &mc, &rt, t0);
    r.handle(t0, n(1), &p(&data(7, Flag::RmtpData)), &mc, &rt);
    r.local_nack(t0, 9, g(), n(1), [SeqRange::single(7)], &mc);
    drain(&mut r, t0);
    assert_eq!(r.stats().repairs_from_cache, 1, "a copy before any report");
    // The member reports receiving (bytes 0..700): later DATA is not copied, its repair
    // comes from upstream.
    r.local_mab(t0, 9, g(), n(1), 10_000, 700, &mc, &rt);
    r.handle(t0, n(1), &p(&data(8, Flag::RmtpData)), &mc, &rt);
    r.local_nack(t0, 9, g(), n(1), [SeqRange::single(8)], &mc);
    let out = drain(&mut r, t0);
    assert_eq!(r.stats().repairs_from_cache, 1, "no copy of 8");
    assert!(
        out.iter()
            .any(|(hop, flag, _)| (*hop, *flag) == (Hop::Neighbour(n(1)), Flag::RmtpNack)),
        "{out:?}"
    );
}

#[test]
fn corrupted_cache_copy_is_not_served() {
    let (mc, rt) = tables(&[1, 3, 4]);
    let mut r = relay();
    let t0 = Instant::ZERO;
    let mut d = data(7, Flag::RmtpData);
    d[50] ^= 4;
    let d = frame(
        Addr::from_raw(G),
        Addr::from_raw(1),
        Flag::RmtpData,
        &d[10..],
    );
    r.handle(t0, n(1), &p(&d), &mc, &rt);
    r.handle(t0, n(3), &p(&nack(3, &[SeqRange::single(7)])), &mc, &rt);
    let out = drain(&mut r, t0);
    assert_eq!(r.stats().cache_corrupt, 1);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!((out[0].0, out[0].1), (Hop::Neighbour(n(1)), Flag::RmtpNack));
}

#[test]
fn mab_minimum_goes_upstream_and_the_unreachable_are_ignored_then_pruned() {
    let (mc, rt) = tables(&[1, 3, 4]);
    let mut r = relay();
    let t0 = Instant::ZERO;
    announced(&mut r, &mc, &rt, t0);
    let mab = |from: u16, m: u64, rcv: u64| {
        let mut buf = vec![0u8; 64];
        let len = rmtp::build_mab(
            &mut buf,
            n(1),
            n(from),
            &Mab {
                group: G,
                mab: m,
                received: rcv,
            },
        )
        .unwrap();
        buf.truncate(len);
        buf
    };
    let sent = |r: &mut RmtpRelay, now| -> Vec<(u64, u64)> {
        drain(r, now)
            .iter()
            .map(|(h, _, b)| {
                assert_eq!(*h, Hop::Neighbour(n(1)));
                let m = Mab::parse(p(b).body()).unwrap();
                (m.mab, m.received)
            })
            .collect()
    };
    r.handle(t0, n(3), &p(&mab(3, 1000, 100)), &mc, &rt);
    r.handle(t0, n(4), &p(&mab(4, 2000, 50)), &mc, &rt);
    r.local_mab(t0, 9, g(), n(1), 5000, 4000, &mc, &rt);
    assert_eq!(sent(&mut r, t0), [(1000, 50)]);
    // Node 3 becomes unreachable: ignored at once, pruned once silent for mab_expire.
    let (_, rt2) = tables(&[1, 4]);
    let t1 = t0 + Duration::from_millis(50);
    r.handle_timeout(t1, &mc, &rt2);
    assert_eq!(sent(&mut r, t1), [(2000, 50)]);
    assert_eq!(r.stats().prunes, 0);
    let t2 = t0 + Duration::from_secs(4);
    r.handle_timeout(t2, &mc, &rt2);
    assert_eq!(r.stats().prunes, 1);
    // A member no longer in the tree entry is pruned at once.
    let entry = TreeEntry {
        group: g(),
        sender: n(1),
        upstream: Some(n(1)),
        downstream: vec![n(3)],
        local_members: vec![9],
    };
    let mc2 = MulticastTable::new(vec![entry]);
    r.handle_timeout(t2 + Duration::from_millis(50), &mc2, &rt);
    assert_eq!(r.stats().prunes, 2);
    assert_eq!(sent(&mut r, t2 + Duration::from_millis(50)), [(5000, 4000)]);
}

#[test]
fn at_the_root_nacks_go_to_the_local_sender() {
    let entry = TreeEntry {
        group: g(),
        sender: n(2),
        upstream: None,
        downstream: vec![n(3)],
        local_members: vec![],
    };
    let mc = MulticastTable::new(vec![entry]);
    let rt = RoutingTable::new(
        n(2),
        vec![Route {
            dst: n(3),
            next_hop: n(3),
            hops: 1,
        }],
    );
    let mut r = relay();
    // The local sender's SPM makes the tree.
    r.handle_local(Instant::ZERO, &p(&spm(2)), &mc, &rt);
    let mut buf = vec![0u8; DEFAULT_MTU];
    let len = rmtp::build_nack(&mut buf, n(2), n(3), g(), &[SeqRange::single(1)]).unwrap();
    r.handle(Instant::ZERO, n(3), &p(&buf[..len]), &mc, &rt);
    let out = drain(&mut r, Instant::ZERO);
    assert_eq!((out[0].0, out[0].1), (Hop::Local, Flag::RmtpNack));
    assert_eq!(p(&out[0].2).dst().raw(), 2);
    // The local sender's DATA fans out; its RETRANSMIT follows the NACK table.
    let d = data_packet(g(), n(2), Flag::RmtpRetransmit, 1, 100, b"abc");
    match r.handle_local(Instant::ZERO, &p(&d), &mc, &rt) {
        RelayAction::Forward { to, .. } => assert_eq!(to.iter().collect::<Vec<_>>(), [n(3)]),
        other => panic!("{other:?}"),
    }
}

/// A forged NACK naming 1,024 sequences below the 3,072 a table already holds: inserting
/// them one by one would move every higher entry once per sequence (3 million moves, some
/// 10 ms of memmove per packet); a NACK moves each entry at most once.
#[test]
fn a_nack_moves_each_table_entry_at_most_once() {
    let (mc, rt) = tables(&[1, 3, 4]);
    let mut cfg = RelayConfig::new(n(2), DEFAULT_MTU);
    cfg.cache_bytes = 0;
    let per_packet = cfg.nack_seqs_per_packet as u64;
    let mut r = RmtpRelay::new(cfg);
    let t0 = Instant::ZERO;
    let mut buf = vec![0u8; DEFAULT_MTU];
    let fields = SpmFields {
        spm_sequence: 1,
        trailing: 0,
        leading: 1 << 20,
        segment_size: 100,
        total: rmtp::TOTAL_UNKNOWN,
        finished: false,
        hash: [0; 32],
    };
    let len = rmtp::build_spm(&mut buf, g(), n(1), &fields).unwrap();
    announced_with(&mut r, &mc, &rt, t0, &buf[..len]);
    let high = 100_000;
    for k in 0..3 {
        let range = SeqRange {
            first: high + k * per_packet,
            len: per_packet as u32,
        };
        r.handle(t0, n(3), &p(&nack(3, &[range])), &mc, &rt);
    }
    let tree = |r: &RmtpRelay| r.trees.iter().flatten().next().unwrap().entries_moved;
    let before = tree(&r);
    let below = SeqRange {
        first: 0,
        len: per_packet as u32,
    };
    r.handle(t0, n(3), &p(&nack(3, &[below])), &mc, &rt);
    assert_eq!(r.footprint().nack_entries, 4 * per_packet as usize);
    let moved = tree(&r) - before;
    assert!(
        moved <= 3 * per_packet,
        "{moved} entries moved for one NACK"
    );
}

proptest! {
    #[test]
    fn arbitrary_packets_never_panic(flag in 0usize..9, from in 1u16..6, src in 0u16..6,
                                     dst in prop_oneof![Just(0xF000u16), 0u16..6],
                                     body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (mc, rt) = tables(&[1, 3, 4]);
        let mut r = relay();
        let pk = frame(Addr::from_raw(dst), Addr::from_raw(src), Flag::ALL[flag], &body);
        let pk = p(&pk);
        let now = Instant::from_millis(1);
        let _ = r.handle(now, n(from), &pk, &mc, &rt);
        let _ = r.handle_local(now, &pk, &mc, &rt);
        let _ = r.handle_local_member(now, 9, &pk, &mc, &rt);
        r.handle_timeout(now + Duration::from_secs(1), &mc, &rt);
        let mut buf = [0u8; DEFAULT_MTU];
        while let Some(t) = r.poll_transmit(now, &mut buf) {
            prop_assert!(Packet::parse(&buf[..t.len], DEFAULT_MTU).is_ok());
        }
    }
}
