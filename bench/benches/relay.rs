//! The RMTP relay's per-packet work (`dataplane::rmtp::RmtpRelay`), with one tree and k
//! downstream peers:
//!
//! - `relay_data`: the decision for a DATA packet from upstream (tree lookup, edge update, copy
//!   into the repair cache, the fan-out list), fresh sequences in order as in a transfer;
//! - `relay_nack_aggregation`: NACKs for the same sequence from each of the k peers, the relay
//!   not holding it (no cache): the first goes upstream, the others wait on it; the time
//!   includes draining what the relay sends (the NACK upstream, NCFs).
//!
//! Packets are built, sealed and parsed outside the timed loop (`iter_custom`, in chunks);
//! throughput is in packets handed to the relay. Run: `cargo bench -p bench --bench relay`.

use control::drp::{Route, RoutingTable};
use control::gmp::{MulticastTable, TreeEntry};
use control::wire::dnp::{Flag, Packet};
use control::wire::rmtp::{self, SeqRange, SpmFields};
use control::{GroupAddr, Instant, NodeAddr};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::rmtp::{RelayAction, RelayConfig, RmtpRelay};
use std::hint::black_box;
use std::time::Duration;

const PEERS: [usize; 4] = [1, 4, 16, 64];
const MTU: usize = control::wire::DEFAULT_MTU;
/// A full DATA packet at the default MTU.
const PAYLOAD: usize = rmtp::max_payload(MTU);
/// Packets built (untimed) before each timed stretch.
const CHUNK: u64 = 256;

const ME: u16 = 2;
const SENDER: u16 = 1;

fn node(n: usize) -> NodeAddr {
    NodeAddr::new(n as u16).expect("a node address")
}

fn group() -> GroupAddr {
    GroupAddr::new(0xF000).expect("a group address")
}

/// Peers are nodes 3..3+k.
fn peer(i: usize) -> NodeAddr {
    node(3 + i)
}

/// This node's view of one tree from the sender (its upstream) to k downstream peers.
fn tables(k: usize) -> (MulticastTable, RoutingTable) {
    let mcast = MulticastTable::new(vec![TreeEntry {
        group: group(),
        sender: node(SENDER.into()),
        upstream: Some(node(SENDER.into())),
        downstream: (0..k).map(peer).collect(),
        local_members: Vec::new(),
    }]);
    let routes = std::iter::once(node(SENDER.into()))
        .chain((0..k).map(peer))
        .map(|n| Route {
            dst: n,
            next_hop: n,
            hops: 1,
        })
        .collect();
    (mcast, RoutingTable::new(node(ME.into()), routes))
}

fn relay_data(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay_data");
    g.throughput(Throughput::Elements(1));
    for k in PEERS {
        let (mcast, routing) = tables(k);
        g.bench_with_input(BenchmarkId::new("peers", k), &k, |b, &k| {
            let mut relay = RmtpRelay::new(RelayConfig::new(node(ME.into()), MTU));
            let mut buffers = vec![vec![0x5Au8; MTU]; CHUNK as usize];
            let mut seq = 0u64;
            let mut out = vec![0u8; MTU];
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let n = CHUNK.min(iters - done);
                    for (i, buf) in buffers.iter_mut().take(n as usize).enumerate() {
                        let s = seq + i as u64;
                        rmtp::seal_data(
                            buf,
                            group(),
                            node(SENDER.into()),
                            Flag::RmtpData,
                            s,
                            s * PAYLOAD as u64,
                        )
                        .expect("room for the headers");
                    }
                    let packets: Vec<Packet<'_>> = buffers[..n as usize]
                        .iter()
                        .map(|b| Packet::parse(b, MTU).expect("a sealed packet"))
                        .collect();
                    let now = Instant::from_millis(seq);
                    let mut last = RelayAction::Consumed;
                    let start = std::time::Instant::now();
                    for p in &packets {
                        last =
                            black_box(relay.handle(now, node(SENDER.into()), p, &mcast, &routing));
                    }
                    timed += start.elapsed();
                    assert!(
                        matches!(last, RelayAction::Forward { to, .. } if to.len() == k),
                        "{last:?}"
                    );
                    while relay.poll_transmit(now, &mut out).is_some() {}
                    seq += n;
                    done += n;
                }
                timed
            })
        });
    }
    g.finish();
}

fn relay_nack_aggregation(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay_nack_aggregation");
    for k in PEERS {
        let (mcast, routing) = tables(k);
        // One element per NACK packet.
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("peers", k), &k, |b, &k| {
            let config = RelayConfig {
                cache_bytes: 0,
                ..RelayConfig::new(node(ME.into()), MTU)
            };
            let mut relay = RmtpRelay::new(config);
            let mut nacks = vec![vec![0u8; 64]; CHUNK as usize * k];
            let mut repair = vec![0x5Au8; MTU];
            let mut spm = vec![0u8; MTU];
            let mut out = vec![0u8; MTU];
            let mut seq = 0u64;
            let mut spm_sequence = 0u64;
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    // Whole sequences: each is NACKed by all k peers.
                    let seqs = CHUNK.min((iters - done).div_ceil(k as u64));
                    let now = Instant::from_millis(seq);
                    // The sender announces the chunk, so that its sequences may be NACKed.
                    spm_sequence += 1;
                    let fields = SpmFields {
                        spm_sequence,
                        trailing: 0,
                        leading: seq + seqs,
                        segment_size: PAYLOAD as u16,
                        total: rmtp::TOTAL_UNKNOWN,
                        finished: false,
                        hash: [0; 32],
                    };
                    let len = rmtp::build_spm(&mut spm, group(), node(SENDER.into()), &fields)
                        .expect("room for an SPM");
                    let spm_packet = Packet::parse(&spm[..len], MTU).expect("a sealed SPM");
                    relay.handle(now, node(SENDER.into()), &spm_packet, &mcast, &routing);
                    let mut lens = Vec::with_capacity(nacks.len());
                    for (j, buf) in nacks.iter_mut().take(seqs as usize * k).enumerate() {
                        let s = seq + (j / k) as u64;
                        let from = peer(j % k);
                        lens.push(
                            rmtp::build_nack(
                                buf,
                                node(SENDER.into()),
                                from,
                                group(),
                                &[SeqRange::single(s)],
                            )
                            .expect("room for a NACK"),
                        );
                    }
                    let packets: Vec<(NodeAddr, Packet<'_>)> = nacks
                        .iter()
                        .zip(&lens)
                        .enumerate()
                        .map(|(j, (b, &l))| {
                            (
                                peer(j % k),
                                Packet::parse(&b[..l], MTU).expect("a sealed NACK"),
                            )
                        })
                        .collect();
                    let start = std::time::Instant::now();
                    for (from, p) in &packets {
                        black_box(relay.handle(now, *from, p, &mcast, &routing));
                    }
                    while relay.poll_transmit(now, &mut out).is_some() {}
                    timed += start.elapsed();
                    // Upstream repairs every sequence: the NACK entries are cleared.
                    for s in seq..seq + seqs {
                        rmtp::seal_data(
                            &mut repair,
                            group(),
                            node(SENDER.into()),
                            Flag::RmtpRetransmit,
                            s,
                            s * PAYLOAD as u64,
                        )
                        .expect("room for the headers");
                        let r = Packet::parse(&repair, MTU).expect("a sealed repair");
                        relay.handle(now, node(SENDER.into()), &r, &mcast, &routing);
                    }
                    while relay.poll_transmit(now, &mut out).is_some() {}
                    seq += seqs;
                    done += seqs * k as u64;
                }
                timed
            })
        });
    }
    g.finish();
}

criterion_group!(benches, relay_data, relay_nack_aggregation);
criterion_main!(benches);
