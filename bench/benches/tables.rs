//! Table lookups of the forwarding path: a route (`RoutingTable::next_hop`, binary search), in
//! the table itself and through the RCU-style snapshot pointer the node's tables are published
//! behind (`ArcSwap::load` then `next_hop`: the difference is the pointer's cost) or through the
//! threaded engine's `RwLock<Arc<_>>` (reader lock held for the lookup), and a multicast tree (`MulticastTable::lookup`, binary search on (group, sender)).
//! Each iteration looks up `LOOKUPS` destinations in a seeded random order; throughput is in
//! lookups. Run: `cargo bench -p bench --bench tables`.

use arc_swap::ArcSwap;
use control::drp::{Route, RoutingTable};
use control::gmp::{MulticastTable, TreeEntry};
use control::rng::Rng;
use control::{GroupAddr, NodeAddr};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::{Arc, PoisonError, RwLock};

const ROUTES: [usize; 4] = [10, 100, 1_000, 10_000];
/// Up to `settings::gmp::MAX_TREES`, the most trees a node keeps by default.
const TREES: [usize; 4] = [10, 100, 1_000, 4_096];
const LOOKUPS: usize = 1024;

fn node(n: usize) -> NodeAddr {
    NodeAddr::new(n as u16).expect("a node address")
}

/// Node 1's table of `n` routes (to nodes 2..=n+1) over 4 neighbours.
fn routing_table(n: usize) -> RoutingTable {
    let routes = (2..n + 2)
        .map(|d| Route {
            dst: node(d),
            next_hop: node(2 + d % 4),
            hops: 1 + (d % 7) as u16,
        })
        .collect();
    RoutingTable::new(node(1), routes)
}

/// `LOOKUPS` indices below `n`, seeded.
fn order(n: usize) -> Vec<usize> {
    let mut rng = Rng::new(n as u64);
    (0..LOOKUPS).map(|_| rng.below(n as u64) as usize).collect()
}

/// A route looked up in the table itself, and through the snapshot pointer (load, then lookup).
fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    group.throughput(Throughput::Elements(LOOKUPS as u64));
    for n in ROUTES {
        let dsts: Vec<NodeAddr> = order(n).into_iter().map(|i| node(i + 2)).collect();
        let table = routing_table(n);
        group.bench_with_input(BenchmarkId::new("table", n), &dsts, |b, dsts| {
            b.iter(|| {
                for &d in dsts {
                    black_box(table.next_hop(black_box(d)));
                }
            })
        });
        let swap = ArcSwap::from_pointee(routing_table(n));
        group.bench_with_input(
            BenchmarkId::new("arc_swap_snapshot", n),
            &dsts,
            |b, dsts| {
                b.iter(|| {
                    for &d in dsts {
                        black_box(swap.load().next_hop(black_box(d)));
                    }
                })
            },
        );
        // The threaded engine's pointer today: a reader lock held for the lookup.
        let lock = RwLock::new(Arc::new(routing_table(n)));
        group.bench_with_input(BenchmarkId::new("rwlock_arc", n), &dsts, |b, dsts| {
            b.iter(|| {
                for &d in dsts {
                    let table = lock.read().unwrap_or_else(PoisonError::into_inner);
                    black_box(table.next_hop(black_box(d)));
                }
            })
        });
    }
    group.finish();
}

/// `n` trees: 16 senders per group, over consecutive groups.
fn multicast_table(n: usize) -> (MulticastTable, Vec<(GroupAddr, NodeAddr)>) {
    let key = |i: usize| {
        let group = GroupAddr::new(0xF000 + (i / 16) as u16).expect("a group address");
        (group, node(1 + i % 16))
    };
    let entries = (0..n)
        .map(|i| {
            let (group, sender) = key(i);
            TreeEntry {
                group,
                sender,
                upstream: Some(node(100)),
                downstream: vec![node(101), node(102)],
                local_members: vec![7],
            }
        })
        .collect();
    let keys = order(n).into_iter().map(key).collect();
    (MulticastTable::new(entries), keys)
}

fn multicast_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("multicast_lookup");
    group.throughput(Throughput::Elements(LOOKUPS as u64));
    for n in TREES {
        let (table, keys) = multicast_table(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &keys, |b, keys| {
            b.iter(|| {
                for &(g, s) in keys {
                    black_box(table.lookup(black_box(g), s).map(|e| e.downstream.len()));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, route_lookup, multicast_lookup);
criterion_main!(benches);
