//! Reliable multicast on the io_uring engine, and between it and the threaded engine: real
//! nodes on 127.0.0.1, files written by `FileSink`s (renamed only once their BLAKE3 matches)
//! and compared byte for byte. The counters show batching work (datagrams per send and per
//! receive); no test asserts a speed.

mod uring_common;

use control::topology::{Faults, build};
use dataplane::node::StartError;
use dataplane::rmtp::FileSink;
use dataplane::sim::scenario::content;
use dataplane::uring::UringOptions;
use std::time::Duration;
use uring_common::*;

const MIB: usize = 1 << 20;

/// A line 1 - 2 - 3 of io_uring nodes; node 1 sends 4 MiB to nodes 2 (also the relay) and 3.
/// The counters show segmented sends and coalesced receives: more datagrams than sends on the
/// sender, more datagrams than receives on the relay.
#[test]
fn uring_nodes_move_a_file_and_batch_their_datagrams() {
    let data = content(4 * MIB, 21);
    let dir = TempDir::new("line");
    let net = Net::start(build::line(3, 7001), Faults::default(), |_| Engine::Uring);
    net.converge();
    let group = g(1);
    let receivers = [n(2), n(3)];
    let rx = join_all(&net, &dir, group, n(1), &receivers);
    let send = net
        .node(1)
        .send(group, NAME, Box::new(dir.source(&data)))
        .expect("start the sender");
    assert_all_received(&dir, &rx, &data);
    assert!(send.wait(Duration::from_secs(60)), "{:?}", send.progress());

    let sender = net.node(1).uring().unwrap().stats();
    let relay = net.node(2).uring().unwrap().stats();
    let get = |s: &dataplane::uring::UringStats, k: &str| s.get(k).unwrap();
    println!(
        "sender: {} datagrams in {} sends; relay: {} datagrams in {} receives, {} in {} sends (indicative)",
        get(&sender, "dnp.tx_packets"),
        get(&sender, "engine.sends"),
        get(&relay, "dnp.rx_datagrams"),
        get(&relay, "engine.receives"),
        get(&relay, "dnp.tx_packets"),
        get(&relay, "engine.sends"),
    );
    assert!(
        get(&sender, "dnp.tx_packets") > get(&sender, "engine.sends"),
        "the sender segmented some sends"
    );
    assert!(
        get(&relay, "dnp.rx_datagrams") > get(&relay, "engine.receives"),
        "the relay received coalesced datagrams"
    );
    assert_eq!(get(&relay, "dnp.rx_unknown_peer"), 0);
    assert_eq!(get(&relay, "engine.send_errors"), 0);
    // Each receiver's file went through its worker's ring (a block the ring was every block
    // behind on is written by the sink itself, counted in its waits).
    for r in [2, 3] {
        let node = net.node(r).uring().unwrap().stats();
        let written = get(&node, "engine.file_write_bytes");
        assert!(
            written > 0 && written <= (4 * MIB) as u64,
            "node {r}: {written} bytes written through the ring"
        );
        assert_eq!(get(&node, "engine.file_write_errors"), 0, "node {r}");
    }
    // The sender core's own counters are `ctl stats` lines too, while it lingers.
    let segments = (4 * MIB).div_ceil(control::wire::rmtp::max_payload(1024)) as u64;
    assert!(get(&sender, "rmtp.server.g1.data_sent") >= segments);
    assert_eq!(get(&sender, "rmtp.server.g1.complete"), 1);
    // Every phase of the loop is timed.
    for phase in ["reap", "transfers", "route", "submit", "wait"] {
        assert!(
            get(&relay, &format!("engine.time_{phase}_nanos")) > 0,
            "{phase}"
        );
    }
    net.stop();
}

/// The 7-node binary tree with engines alternating by address (`root` runs the root, 3, 5 and 7;
/// the other engine runs 2, 4 and 6), loss, corruption, duplication and reordering on every
/// link: a file from the root reaches every leaf, each copy verified. Each engine relays to
/// the other and receives from it.
fn mixed_tree_moves_a_file_through_loss(root: Engine, seed: u64) {
    let data = content(2 * MIB, seed);
    let dir = TempDir::new(&format!("mixed-{root:?}"));
    let faults = Faults {
        loss: 0.03,
        corrupt: 0.01,
        duplicate: 0.01,
        reorder: 0.01,
        ..Faults::default()
    };
    let other = match root {
        Engine::Uring => Engine::Threaded,
        Engine::Threaded => Engine::Uring,
    };
    let mut topology = build::binary_tree(3, 7001);
    // Hellos are lost too; a tree has no detour, so a false "dead" would only cost time.
    topology.network.timers.dead_hellos = 8;
    let net = Net::start(topology, faults, |a| {
        if a.get() % 2 == 1 { root } else { other }
    });
    net.converge();
    let group = g(1);
    let leaves = [n(4), n(5), n(6), n(7)];
    let rx = join_all(&net, &dir, group, n(1), &leaves);
    let send = net
        .node(1)
        .send(group, NAME, Box::new(dir.source(&data)))
        .expect("start the sender");
    assert_all_received(&dir, &rx, &data);
    assert!(send.wait(Duration::from_secs(60)), "{:?}", send.progress());
    let repairs: u64 = rx.iter().map(|(_, h)| h.progress().repairs).sum();
    assert!(repairs > 0, "3% loss needs repairs");
    let uring = net.node(if root == Engine::Uring { 1 } else { 2 });
    let garbled = uring.uring().unwrap().stats().garbler;
    assert!(
        garbled.iter().any(|(_, s)| s.lost > 0),
        "an io_uring node's links lost packets: {garbled:?}"
    );
    net.stop();
}

/// The 7-node binary tree of io_uring nodes with two dataplane workers each, through loss: the
/// root sends two files at once to every leaf, on groups that belong to different workers.
/// Every copy is verified; on the relays, each worker handled datagrams (its tree's) and no
/// datagram reached a worker other than its tree's.
#[test]
fn two_workers_per_node_carry_two_trees_through_loss() {
    two_workers_per_node_carry_two_trees(false);
}

/// The same in hand-off mode: the kernel spreads datagrams by its hash (a neighbour's workers
/// all send from the node's one port, so one neighbour's datagrams reach one worker), and a
/// worker hands each datagram of the other worker's tree over to it. Every copy is verified;
/// on each relay datagrams were handed over, and each worker handled its tree's.
#[test]
fn two_workers_per_node_hand_two_trees_over_through_loss() {
    two_workers_per_node_carry_two_trees(true);
}

fn two_workers_per_node_carry_two_trees(hand_off: bool) {
    let faults = Faults {
        loss: 0.02,
        ..Faults::default()
    };
    let mut topology = build::binary_tree(3, 7001);
    topology.network.timers.dead_hellos = 8;
    let options = || UringOptions {
        workers: 2,
        hand_off,
        ..UringOptions::default()
    };
    let net = Net::start_with(topology, faults, |_| Engine::Uring, options);
    net.converge();
    let leaves = [n(4), n(5), n(6), n(7)];
    // Groups 1 and 2 belong to workers 1 and 0 of two.
    let transfers: Vec<_> = [(g(1), 1u16, 31u64), (g(2), 2, 32)]
        .into_iter()
        .map(|(group, sid, seed)| {
            let data = content(2 * MIB, seed);
            let dir = TempDir::new(&format!("workers-{sid}-hand-off-{hand_off}"));
            let rx: Vec<_> = leaves
                .iter()
                .map(|&r| {
                    let sink = FileSink::create(&dir.of(r), NAME).expect("create the sink");
                    let h = net.nodes[&r]
                        .receive(group, n(1), sid, Box::new(sink))
                        .expect("start a receiver");
                    (r, h)
                })
                .collect();
            net.wait_for_members(group, n(1), &leaves);
            (group, data, dir, rx)
        })
        .collect();
    let sends: Vec<_> = transfers
        .iter()
        .map(|(group, data, dir, _)| {
            net.node(1)
                .send(*group, NAME, Box::new(dir.source(data)))
                .expect("start a sender")
        })
        .collect();
    for (_, data, dir, rx) in &transfers {
        assert_all_received(dir, rx, data);
    }
    for send in &sends {
        assert!(send.wait(Duration::from_secs(60)), "{:?}", send.progress());
    }
    for relay in [2, 3] {
        let workers = net.node(relay).uring().unwrap().worker_counters();
        assert_eq!(workers.len(), 2);
        for (i, w) in workers.iter().enumerate() {
            // Received here and kept, or handed over by the other worker.
            let handled = w.datagrams_received - w.handed_over - w.hand_off_full + w.taken_over;
            assert!(
                handled > 1000,
                "node {relay} worker {i} handled its tree: {w:?}"
            );
            assert_eq!(w.rx_other_worker, 0, "node {relay} worker {i}: {w:?}");
        }
        let handed_over: u64 = workers.iter().map(|w| w.handed_over).sum();
        if hand_off {
            // The root's datagrams of both trees reach one worker of each relay.
            assert!(handed_over > 1000, "node {relay}: {workers:?}");
        } else {
            assert_eq!(handed_over, 0, "node {relay}: {workers:?}");
        }
    }
    net.stop();
}

#[test]
fn a_mixed_tree_rooted_on_uring_moves_a_file_through_loss() {
    mixed_tree_moves_a_file_through_loss(Engine::Uring, 22);
}

#[test]
fn a_mixed_tree_rooted_on_threaded_moves_a_file_through_loss() {
    mixed_tree_moves_a_file_through_loss(Engine::Threaded, 24);
}

/// Two sends in a row to the same group from one io_uring node both complete: the first
/// sender is dropped once its core has ended (its linger passed), so the second is refused as
/// Busy only while the first lingers. Each receiver leaves on its core's `MayLeave`, so the
/// same client id joins the second transfer.
#[test]
fn a_uring_node_sends_twice_in_a_row_to_the_same_group() {
    let net = Net::start(build::line(2, 7101), Faults::default(), |_| Engine::Uring);
    net.converge();
    let group = g(1);
    for round in 0..2u64 {
        let data = content(256 * 1024, 31 + round);
        let dir = TempDir::new(&format!("twice-{round}"));
        let rx = join_all(&net, &dir, group, n(1), &[n(2)]);
        let mut busy = 0u32;
        let mut send = None;
        let started = wait_until(LIMIT, || {
            match net.node(1).send(group, NAME, Box::new(dir.source(&data))) {
                Ok(h) => {
                    send = Some(h);
                    true
                }
                Err(StartError::Busy) => {
                    busy += 1;
                    false
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        });
        assert!(
            started.is_some(),
            "round {round}: still Busy after {busy} tries"
        );
        let send = send.expect("started");
        assert_all_received(&dir, &rx, &data);
        assert!(send.wait(Duration::from_secs(60)), "{:?}", send.progress());
        for (r, h) in &rx {
            assert!(
                h.wait_ended(Duration::from_secs(30)),
                "round {round}: node {r}'s client never left"
            );
        }
        println!("round {round}: refused as Busy {busy} times while the first lingered");
    }
    // Every client left: node 2 is no member of the tree any more.
    let left = wait_until(LIMIT, || {
        net.node(2)
            .multicast()
            .lookup(group, n(1))
            .is_none_or(|e| e.local_members.is_empty())
    });
    assert!(left.is_some(), "node 2's client stayed in the group");
    net.stop();
}
