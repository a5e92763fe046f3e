//! The relay's per-packet path does not allocate once a tree is set up: a counting allocator
//! watches DATA fan-out, NACK aggregation, NCF, cache repair, RETRANSMIT routing, MAB
//! aggregation and the periodic timeout in steady state.

use control::drp::{Route, RoutingTable};
use control::gmp::{MulticastTable, TreeEntry};
use control::wire::DEFAULT_MTU;
use control::wire::dnp::{Flag, Packet};
use control::wire::rmtp::{self, Mab, SeqRange, data_packet};
use control::{GroupAddr, Instant, NodeAddr};
use dataplane::rmtp::{RelayAction, RelayConfig, RmtpRelay};
use std::time::Duration;

mod counting;

use counting::counted;

fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).unwrap()
}

#[test]
fn steady_state_relay_path_does_not_allocate() {
    let g = GroupAddr::new(0xF000).unwrap();
    let mc = MulticastTable::new(vec![TreeEntry {
        group: g,
        sender: n(1),
        upstream: Some(n(1)),
        downstream: vec![n(3), n(4)],
        local_members: vec![9],
    }]);
    let rt = RoutingTable::new(
        n(2),
        [1, 3, 4]
            .map(|d| Route {
                dst: n(d),
                next_hop: n(d),
                hops: 1,
            })
            .to_vec(),
    );
    let mut relay = RmtpRelay::new(RelayConfig::new(n(2), DEFAULT_MTU));
    // Pre-built packets (the engine's receive buffers).
    let datas: Vec<Vec<u8>> = (0..400u64)
        .map(|s| data_packet(g, n(1), Flag::RmtpData, s, s * 994, &[s as u8; 994]))
        .collect();
    let retx: Vec<Vec<u8>> = (0..400u64)
        .map(|s| data_packet(g, n(1), Flag::RmtpRetransmit, s, s * 994, &[s as u8; 994]))
        .collect();
    let nack = |from: u16, seq: u64| {
        let mut b = vec![0u8; 64];
        let l = rmtp::build_nack(&mut b, n(1), n(from), g, &[SeqRange::single(seq)]).unwrap();
        b.truncate(l);
        b
    };
    let nacks: Vec<(Vec<u8>, Vec<u8>)> = (0..400u64).map(|s| (nack(3, s), nack(4, s))).collect();
    let mabs: Vec<Vec<u8>> = (0..400u64)
        .map(|s| {
            let mut b = vec![0u8; 64];
            let m = Mab {
                group: 0xF000,
                mab: s * 1000 + 100_000,
                received: s * 1000,
            };
            let l = rmtp::build_mab(&mut b, n(1), n(3 + (s % 2) as u16), &m).unwrap();
            b.truncate(l);
            b
        })
        .collect();
    let mut buf = vec![0u8; DEFAULT_MTU];
    let mut run = |relay: &mut RmtpRelay, range: std::ops::Range<usize>, t0: u64| {
        let mut actions = 0u64;
        for i in range {
            let now = Instant::from_millis(t0 + i as u64);
            // Every 4th DATA is "lost" at this relay: its NACK goes upstream; the rest are
            // cached and NACKed from below (answered from the cache).
            if i % 4 != 0 {
                let d = Packet::parse(&datas[i], DEFAULT_MTU).unwrap();
                if matches!(
                    relay.handle(now, n(1), &d, &mc, &rt),
                    RelayAction::Forward { .. }
                ) {
                    actions += 1;
                }
            }
            for b in [&nacks[i].0, &nacks[i].1] {
                let pk = Packet::parse(b, DEFAULT_MTU).unwrap();
                relay.handle(now, n(if b[5] == 3 { 3 } else { 4 }), &pk, &mc, &rt);
            }
            relay.local_nack(now, 9, g, n(1), [SeqRange::single(i as u64)], &mc);
            let m = Packet::parse(&mabs[i], DEFAULT_MTU).unwrap();
            relay.handle(now, n(3 + (i % 2) as u16), &m, &mc, &rt);
            relay.local_mab(now, 9, g, n(1), 1 << 30, 1 << 29, &mc, &rt);
            while relay.poll_transmit(now, &mut buf).is_some() {}
            if i % 4 == 0 {
                let r = Packet::parse(&retx[i], DEFAULT_MTU).unwrap();
                relay.handle(now, n(1), &r, &mc, &rt);
            }
            if relay.poll_timeout().is_some_and(|t| t <= now) {
                relay.handle_timeout(now + Duration::from_millis(1), &mc, &rt);
            }
        }
        actions
    };
    // The counter sees allocations (so a zero below means something).
    assert_eq!(counted(|| std::hint::black_box(vec![1u8; 8])).1, 1);
    // The sender announces 400 segments (so the ones lost here can be NACKed); warm-up: the
    // tree, its tables and cache are created here.
    let mut spm = vec![0u8; DEFAULT_MTU];
    let fields = rmtp::SpmFields {
        spm_sequence: 1,
        trailing: 0,
        leading: 400,
        segment_size: 994,
        total: rmtp::TOTAL_UNKNOWN,
        finished: false,
        hash: [0; 32],
    };
    let len = rmtp::build_spm(&mut spm, g, n(1), &fields).unwrap();
    let spm = Packet::parse(&spm[..len], DEFAULT_MTU).unwrap();
    relay.handle(Instant::ZERO, n(1), &spm, &mc, &rt);
    let _ = run(&mut relay, 0..100, 0);
    let (actions, allocations) = counted(|| run(&mut relay, 100..400, 0));
    let s = relay.stats();
    println!(
        "300 steady-state rounds: {actions} forwards, {} cache repairs, {} NACKs upstream, {} NCFs, \
         {} retransmissions routed, {} MABs sent: {allocations} heap allocations",
        s.repairs_from_cache,
        s.nacks_sent_upstream,
        s.ncfs_sent,
        s.retransmissions_forwarded,
        s.mabs_sent
    );
    assert!(
        s.repairs_from_cache > 100
            && s.nacks_sent_upstream > 50
            && s.retransmissions_forwarded > 50
    );
    assert_eq!(allocations, 0);
}
