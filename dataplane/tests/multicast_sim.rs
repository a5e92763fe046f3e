//! Reliable multicast through whole simulated nodes (DNP, DRP, GMP, RAP, RMTP): files reach every
//! receiver byte for byte through loss, corruption and failures. Each test prints its figures.
//! The default run uses small files; `cargo test --release -- --ignored` runs the full 64 MiB.

use control::NodeAddr;
use control::topology::{Faults, Topology, build};
use dataplane::node::RmtpOptions;
use dataplane::sim::scenario::*;
use std::time::Duration;

const MIB: usize = 1 << 20;

fn lossy() -> Faults {
    Faults {
        loss: 0.10,
        corrupt: 0.01,
        delay: Duration::from_millis(1),
        ..Faults::default()
    }
}

/// Sends `data` from node 1 to `receivers` over `topology` with the [`lossy`] faults on every
/// link, after `prepare` (extra faults), and checks that every receiver has it byte for byte.
fn lossy_transfer(
    topology: Topology,
    seed: u64,
    receivers: &[NodeAddr],
    data: Vec<u8>,
    label: &str,
    who: &str,
    prepare: impl FnOnce(&mut Scenario),
) {
    let mut topology = with_faults(topology, lossy());
    // At 10% loss three hellos in a row are lost now and then; in a tree there is no detour,
    // so a false "dead" would only cost time. Six missed hellos make that rare.
    topology.network.timers.dead_hellos = 6;
    let mut s = Scenario::start(
        topology,
        seed,
        RmtpOptions::default(),
        n(1),
        receivers,
        data,
    )
    .unwrap();
    prepare(&mut s);
    let done = s.run_until_received(receivers, Duration::from_secs(600));
    s.report(label);
    assert!(done, "not all {who} completed");
    s.assert_identical(receivers);
    // The senders' runs reached the next hops as GRO batches (the links have one delay and
    // no rate), so the batched receive path carried the transfer through the faults.
    let engine = s.sim.engine_stats();
    assert!(engine.arrival_batches > 0, "{engine}");
}

fn tree_transfer(size: usize) {
    let leaves = [n(4), n(5), n(6), n(7)];
    let label = format!("7-node tree, {} MiB, 10% loss, 1% corruption", size / MIB);
    let topology = build::binary_tree(3, 7001);
    lossy_transfer(
        topology,
        1,
        &leaves,
        content(size, 7),
        &label,
        "leaves",
        |s| {
            for r in leaves {
                s.sim
                    .set_undetected_corruption(r, n(r.get() / 2), 0.002)
                    .unwrap();
            }
        },
    );
}

#[test]
fn a_file_reaches_every_leaf_of_the_tree_through_loss_and_corruption() {
    tree_transfer(4 * MIB);
}

#[test]
#[ignore = "64 MiB: run with --release -- --ignored"]
fn sixty_four_mib_to_every_leaf_of_the_tree() {
    tree_transfer(64 * MIB);
}

fn random50_transfer(size: usize) {
    // Twenty receivers spread over the graph, the sender at node 1.
    let receivers: Vec<_> = (0..20).map(|i| n(2 + (i * 37 % 49) as u16)).collect();
    let label = format!(
        "random 50 nodes, 20 receivers, {} MiB, 10% loss, 1% corruption",
        size / MIB
    );
    let topology = build::random_connected(50, 25, 5, 7001);
    lossy_transfer(
        topology,
        3,
        &receivers,
        content(size, 9),
        &label,
        "receivers",
        |_| {},
    );
}

#[test]
fn a_file_reaches_twenty_receivers_of_a_random_50_node_network() {
    random50_transfer(MIB);
}

#[test]
#[ignore = "64 MiB: run with --release -- --ignored"]
fn sixty_four_mib_to_twenty_receivers_of_a_random_50_node_network() {
    random50_transfer(64 * MIB);
}

/// NACK mentions of each sequence delivered to `sender`, counted by a tap on the simulator.
fn count_nacks_at(
    s: &mut Scenario,
) -> std::rc::Rc<std::cell::RefCell<std::collections::BTreeMap<u64, u64>>> {
    use control::wire::dnp::{Flag, Packet};
    use control::wire::rmtp::RmtpMessage;
    let counts = std::rc::Rc::new(std::cell::RefCell::new(std::collections::BTreeMap::new()));
    let seen = counts.clone();
    let sender = s.sender;
    s.sim.set_tap(move |_, _, to, bytes| {
        if to != sender {
            return;
        }
        let Ok(p) = Packet::parse(bytes, 1024) else {
            return;
        };
        if p.flag() != Flag::RmtpNack {
            return;
        }
        if let Ok(RmtpMessage::Nack(nack)) = RmtpMessage::parse(p.flag(), p.body()) {
            for range in nack.ranges.iter() {
                for seq in range.first..range.first + u64::from(range.len) {
                    *seen.borrow_mut().entry(seq).or_insert(0) += 1;
                }
            }
        }
    });
    counts
}

#[test]
fn nacks_are_aggregated_to_about_one_per_sender_link_per_loss() {
    let topology = with_faults(
        build::binary_tree(3, 7001),
        Faults {
            loss: 0.05,
            delay: Duration::from_millis(1),
            ..Faults::default()
        },
    );
    let receivers = [n(2), n(3), n(4), n(5), n(6), n(7)];
    let options = RmtpOptions {
        cache_bytes: 0,
        ..RmtpOptions::default()
    };
    let mut s =
        Scenario::start(topology, 5, options, n(1), &receivers, content(2 * MIB, 11)).unwrap();
    let counts = count_nacks_at(&mut s);
    assert!(s.run_until_received(&receivers, Duration::from_secs(300)));
    s.report("NACK aggregation, 7-node tree, 5% loss, cache off");
    s.assert_identical(&receivers);
    let counts = counts.borrow();
    let mentions: u64 = counts.values().sum();
    let adjacent_links = 2.0;
    let per_seq = mentions as f64 / counts.len().max(1) as f64;
    let f = s.figures();
    println!(
        "  sender got {mentions} NACK mentions for {} sequences: {per_seq:.2} per lost sequence (sender links: {adjacent_links}); max for one sequence {}",
        counts.len(),
        counts.values().max().unwrap_or(&0)
    );
    let receiver_mentions: u64 = receivers
        .iter()
        .filter_map(|r| {
            s.sim
                .node(*r)?
                .transfers()
                .receiver_stats(SID)
                .map(|st| st.sequences_nacked)
        })
        .sum();
    let ratio = receiver_mentions as f64 / mentions.max(1) as f64;
    println!(
        "  sequences NACKed by receivers {receiver_mentions} : at the sender {mentions} = {ratio:.1} : 1 (packets {} : {})",
        f.receiver_nacks, f.nacks_at_sender
    );
    assert!(!counts.is_empty(), "the loss must have caused NACKs");
    assert!(
        per_seq <= adjacent_links,
        "NACKs per lost sequence at the sender: {per_seq:.2}"
    );
    assert!(ratio > 1.2, "relays should absorb NACKs: {ratio:.2}");
}

#[test]
fn with_the_repair_cache_most_repairs_come_from_relays() {
    let topology = with_faults(build::binary_tree(3, 7001), lossy());
    let leaves = [n(4), n(5), n(6), n(7)];
    let mut s = Scenario::start(
        topology,
        6,
        RmtpOptions::default(),
        n(1),
        &leaves,
        content(2 * MIB, 12),
    )
    .unwrap();
    assert!(s.run_until_received(&leaves, Duration::from_secs(300)));
    s.report("repair cache, 7-node tree, 10% loss");
    s.assert_identical(&leaves);
    let share = s.figures().cache_share();
    assert!(
        share > 0.5,
        "only {:.0}% of repairs came from relay caches",
        share * 100.0
    );
}

#[test]
fn a_slow_receiver_bounds_the_sender_and_when_it_dies_the_others_finish() {
    let topology = with_faults(
        build::binary_tree(3, 7001),
        Faults {
            delay: Duration::from_millis(1),
            ..Faults::default()
        },
    );
    let leaves = [n(4), n(5), n(6), n(7)];
    let window = 64 * 1024;
    let options = RmtpOptions {
        receiver_window: window,
        initial_window: 32 * 1024,
        ..RmtpOptions::default()
    };
    let mut s = Scenario::start(topology, 8, options, n(1), &leaves, content(8 * MIB, 13)).unwrap();
    // Node 7 sits behind a 200 kB/s link; the rest of the tree is unlimited.
    s.sim.set_rate(n(3), n(7), Some(200_000)).unwrap();
    let slow = n(7);
    let mut max_in_flight = 0;
    let start = s.sim.now();
    while s.sim.now() < start + Duration::from_secs(5) {
        s.sim.run_for(Duration::from_millis(1));
        let sent = s
            .sim
            .node(n(1))
            .unwrap()
            .transfers()
            .sender(group())
            .unwrap()
            .sent_offset();
        let slowest = leaves
            .iter()
            .map(|r| s.sim.node(*r).unwrap().transfers().delivered(SID).unwrap())
            .min()
            .unwrap();
        max_in_flight = max_in_flight.max(sent.saturating_sub(slowest));
        assert!(
            sent <= slowest + window,
            "sent {sent} beyond the slowest receiver {slowest} + window"
        );
    }
    let slow_delivered = s
        .sim
        .node(slow)
        .unwrap()
        .transfers()
        .delivered(SID)
        .unwrap();
    let sent = s
        .sim
        .node(n(1))
        .unwrap()
        .transfers()
        .sender(group())
        .unwrap()
        .sent_offset();
    println!(
        "slow receiver: after 5 s it has {slow_delivered} bytes (~200 kB/s), the sender sent {sent}; most in flight {max_in_flight} (window {window})"
    );
    assert!(
        sent < 2 * MIB as u64,
        "the slow receiver must hold the sender back"
    );

    s.sim.node_down(slow).unwrap();
    let killed_at = s.sim.now();
    let others = [n(4), n(5), n(6)];
    let done = s.run_until_received(&others, Duration::from_secs(120));
    s.report("slow receiver, then it dies");
    assert!(
        done,
        "the others must finish once the dead receiver is pruned"
    );
    s.assert_identical(&others);
    let last = others.iter().map(|r| s.completed_at[r]).max().unwrap();
    println!(
        "others finished {:.3}s after node 7 died",
        last.saturating_since(killed_at).as_secs_f64()
    );
}

#[test]
fn a_tree_link_failing_mid_transfer_reroutes_and_every_receiver_completes() {
    let topology = with_faults(
        build::grid(4, 4, 7001),
        Faults {
            loss: 0.02,
            delay: Duration::from_millis(1),
            ..Faults::default()
        },
    );
    let receivers = [n(4), n(13), n(16), n(11), n(7)];
    let options = RmtpOptions {
        sender_rate: Some(2_000_000),
        ..RmtpOptions::default()
    };
    let mut s =
        Scenario::start(topology, 9, options, n(1), &receivers, content(4 * MIB, 14)).unwrap();
    s.sim.run_for(Duration::from_millis(500));
    // Cut the first link of the tree on the sender's side that carries traffic.
    let entry = s
        .sim
        .node(n(1))
        .unwrap()
        .multicast()
        .lookup(group(), n(1))
        .cloned()
        .unwrap();
    let child = entry.downstream[0];
    s.sim.link_down(n(1), child).unwrap();
    let delivered_at_cut: Vec<u64> = receivers
        .iter()
        .map(|r| s.sim.node(*r).unwrap().transfers().delivered(SID).unwrap())
        .collect();
    println!(
        "cut link 1-{child} at {} with receivers at {delivered_at_cut:?} bytes",
        s.sim.now()
    );
    assert!(
        delivered_at_cut.iter().any(|&d| d < 4 * MIB as u64),
        "the cut must come mid-transfer"
    );
    let done = s.run_until_received(&receivers, Duration::from_secs(120));
    s.report("grid 4x4, tree link cut mid-transfer");
    assert!(done, "every receiver must complete over the new tree");
    s.assert_identical(&receivers);
    let after = s
        .sim
        .node(n(1))
        .unwrap()
        .multicast()
        .lookup(group(), n(1))
        .cloned()
        .unwrap();
    assert!(
        !after.downstream.contains(&child),
        "the tree re-formed without the cut link"
    );
}
