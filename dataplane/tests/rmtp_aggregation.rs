//! NACK aggregation and repair from the nearest cache, measured on a wide tree with loss.

mod common;

use common::*;
use std::time::Duration;

// A sender, a core relay, four edge relays with two receivers each.
const EDGES: &[(u16, u16)] = &[(1, 2), (2, 3), (2, 4), (2, 5), (2, 6)];
const MEMBERS: &[(u16, u16)] = &[(3, 2), (4, 2), (5, 2), (6, 2)];

fn run(cache_bytes: usize, seed: u64) -> (Net, Vec<u8>) {
    let data = content(2 << 20, seed);
    let mut spec = Spec::new(EDGES, MEMBERS, data.clone());
    spec.seed = seed;
    spec.relay.cache_bytes = cache_bytes;
    let mut net = Net::new(spec);
    net.loss = 0.10;
    net.run(Duration::from_secs(120), |_| {});
    let want = blake3::hash(&data);
    for (id, m, r) in net.receivers() {
        assert!(r.is_complete(), "{id}/{m}: {:?}", r.stats());
        assert_eq!(blake3::hash(&r.sink().data), want);
    }
    (net, data)
}

#[test]
fn relays_aggregate_nacks() {
    let (net, _) = run(0, 11);
    let receiver_nacks: u64 = net.receivers().map(|(_, _, r)| r.stats().nacks_sent).sum();
    let receiver_seqs: u64 = net
        .receivers()
        .map(|(_, _, r)| r.stats().sequences_nacked)
        .sum();
    let sender = net.sender().stats();
    let relays = net.relay_totals();
    println!(
        "no cache: receivers sent {receiver_nacks} NACKs ({receiver_seqs} sequences); \
         {} NACKs reached the sender; aggregation ratio {:.1}:1; {} sequences only recorded a \
         waiter; sender retransmissions {}",
        net.nacks_at_sender,
        receiver_nacks as f64 / net.nacks_at_sender.max(1) as f64,
        relays.nack_seqs_aggregated,
        sender.retransmissions
    );
    assert_eq!(relays.repairs_from_cache, 0);
    assert!(net.nacks_at_sender > 0);
    assert!(
        receiver_nacks >= 3 * net.nacks_at_sender,
        "aggregation should cut NACKs at the sender by 3x at least"
    );
    assert!(relays.nack_seqs_aggregated > 0);
    assert!(relays.ncfs_sent > 0);
}

#[test]
fn repairs_come_mostly_from_relay_caches() {
    let (net, _) = run(1 << 20, 12);
    let sender = net.sender().stats();
    let relays = net.relay_totals();
    let total = relays.repairs_from_cache + sender.retransmissions;
    let share = relays.repairs_from_cache as f64 / total as f64;
    println!(
        "cache on: {} repairs from relay caches, {} from the sender: {:.0}% from relays; \
         {} NACKs reached the sender",
        relays.repairs_from_cache,
        sender.retransmissions,
        100.0 * share,
        net.nacks_at_sender
    );
    // Only losses on the sender's own link need the sender: 1 link in 6.
    assert!(share > 0.6, "share of repairs from caches {share}");
}
