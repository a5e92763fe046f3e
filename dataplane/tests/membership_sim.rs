//! GMP and RAP through whole simulated nodes: membership soft state and service announcements
//! over lossy links.

use control::topology::{Faults, build};
use control::wire::dnp::{self, Flag};
use control::wire::gmp::GmpMessage;
use control::wire::rap;
use control::{Addr, GroupAddr, NodeAddr};
use dataplane::node::{Node, NodeEvent, RAP_SERVER_SID, RmtpOptions, sim_factory};
use dataplane::rmtp::MemSource;
use dataplane::sim::Sim;
use dataplane::sim::scenario::*;
use std::time::Duration;

#[test]
fn a_client_learns_a_servers_services_over_lossy_links_and_the_server_forgets_it() {
    let topology = with_faults(
        build::line(3, 7001),
        Faults {
            loss: 0.3,
            delay: Duration::from_millis(2),
            ..Faults::default()
        },
    );
    let mut topology = topology;
    topology.network.timers.dead_hellos = 10;
    let mut sim: Sim<Node> = Sim::new(&topology, 21, sim_factory(&topology)).unwrap();
    sim.run_for(Duration::from_secs(5));
    let now = sim.now();
    let entry = sim
        .node_mut(n(1))
        .unwrap()
        .start_send(
            now,
            group(),
            "report.pdf",
            Box::new(MemSource::new(content(5000, 1))),
        )
        .unwrap();
    let now = sim.now();
    sim.node_mut(n(3)).unwrap().request_services(now, n(1));
    let asked = sim.now();
    let mut learned = None;
    while learned.is_none() && sim.now() < asked + Duration::from_secs(60) {
        sim.run_for(Duration::from_millis(10));
        let mut node = sim.node_mut(n(3)).unwrap();
        while let Some(e) = node.poll_event() {
            if let NodeEvent::Services { server, list } = e {
                learned = Some((server, list, node.now()));
            }
        }
    }
    let (server, list, at) = learned.expect("the client learned the services");
    assert_eq!(server, n(1));
    assert_eq!(list, vec![entry.clone()]);
    println!(
        "client at node 3 learned {:?} ({} bytes) from node 1 over 2 hops at 30% loss in {:.3}s",
        entry.name,
        entry.size,
        at.saturating_since(asked).as_secs_f64()
    );
    // The ack frees the server's state: run until the server has seen one.
    sim.set_cond_interval(Duration::from_millis(1));
    let acked = sim
        .run_until_cond(at + Duration::from_secs(30), |s| {
            s.node(n(1)).unwrap().rap_server().stats().acks_received > 0
        })
        .expect("an ack reached the server");
    let server = sim.node(n(1)).unwrap().rap_server();
    println!("server acked at {acked}: {:?}", server.stats());
    assert_eq!(
        server.pending(),
        0,
        "the server holds no state after the ack"
    );
    assert_eq!(
        server.stats().gave_up,
        0,
        "freed by the ack, not by giving up"
    );
}

#[test]
fn joins_and_leaves_propagate_and_a_silent_branch_expires_after_the_interval() {
    let topology = with_faults(
        build::binary_tree(3, 7001),
        Faults {
            delay: Duration::from_millis(1),
            ..Faults::default()
        },
    );
    let expire = topology.network.timers.gmp_expire;
    let file = topology.clone();
    let mut sim: Sim<Node> = Sim::new(&topology, 22, move |b: dataplane::sim::Boot| {
        Node::with_options(b.addr, &file, b.now, RmtpOptions::default())
    })
    .unwrap();
    sim.run_for(Duration::from_secs(2));
    let downstream = |sim: &Sim<Node>, at: u16| {
        sim.node(n(at))
            .and_then(|node| {
                node.multicast()
                    .lookup(group(), n(1))
                    .map(|e| e.downstream.clone())
            })
            .unwrap_or_default()
    };
    for leaf in [4, 5, 7] {
        let now = sim.now();
        let (sink, _) = CheckSink::with_outcome();
        sim.node_mut(n(leaf))
            .unwrap()
            .start_receive(now, group(), n(1), SID, Box::new(sink))
            .unwrap();
    }
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        downstream(&sim, 1),
        vec![n(2), n(3)],
        "joins reached the sender"
    );
    assert_eq!(downstream(&sim, 2), vec![n(4), n(5)]);
    assert_eq!(downstream(&sim, 3), vec![n(7)]);

    // A leave propagates at once: node 5 leaves, node 2 keeps node 4.
    let now = sim.now();
    sim.node_mut(n(5))
        .unwrap()
        .stop_receive(now, group(), n(1), SID);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(downstream(&sim, 2), vec![n(4)]);
    assert_eq!(downstream(&sim, 1), vec![n(2), n(3)]);

    // Node 7 restarts at once and forgets its membership: its link stays up (its neighbours'
    // DRP never notices), so nothing but the soft state can remove it. Node 3 expires the silent
    // entry after the interval, then leaves upstream, and the sender prunes the branch.
    sim.reboot(n(7)).unwrap();
    let died = sim.now();
    sim.set_cond_interval(Duration::from_millis(1));
    let at3 = sim
        .run_until_cond(died + Duration::from_secs(30), |s| {
            downstream(s, 3).is_empty()
        })
        .unwrap();
    let at1 = sim
        .run_until_cond(died + Duration::from_secs(30), |s| {
            downstream(s, 1) == vec![n(2)]
        })
        .unwrap();
    let silent3 = at3.saturating_since(died);
    println!(
        "node 7 restarted (silent) at {died}: node 3 expired it after {:.3}s (interval {expire:?}), the sender pruned the branch after {:.3}s",
        silent3.as_secs_f64(),
        at1.saturating_since(died).as_secs_f64()
    );
    // The last join came up to one refresh period before the restart.
    let refresh = topology.network.timers.gmp_refresh;
    assert_eq!(
        sim.node(n(3)).unwrap().gmp().stats().detached,
        0,
        "expired, not detached"
    );
    assert!(
        silent3 + refresh >= expire && silent3 <= expire + Duration::from_millis(50),
        "{silent3:?}"
    );
}

/// A binary tree of 7 nodes, 1 ms links, leaves 4, 5 and 7 receiving the group from node 1.
fn tree_with_members(seed: u64) -> Sim<Node> {
    let topology = with_faults(
        build::binary_tree(3, 7001),
        Faults {
            delay: Duration::from_millis(1),
            ..Faults::default()
        },
    );
    let mut sim: Sim<Node> = Sim::new(&topology, seed, sim_factory(&topology)).unwrap();
    sim.run_for(Duration::from_secs(2));
    for leaf in [4, 5, 7] {
        let now = sim.now();
        let (sink, _) = CheckSink::with_outcome();
        sim.node_mut(n(leaf))
            .unwrap()
            .start_receive(now, group(), n(1), SID, Box::new(sink))
            .unwrap();
    }
    sim.run_for(Duration::from_millis(100));
    sim
}

fn downstream(sim: &Sim<Node>, at: u16) -> Vec<NodeAddr> {
    sim.node(n(at))
        .and_then(|node| {
            node.multicast()
                .lookup(group(), n(1))
                .map(|e| e.downstream.clone())
        })
        .unwrap_or_default()
}

#[test]
fn a_join_flood_from_a_neighbour_keeps_the_tree_table_bounded_and_real_members_in_the_tree() {
    const FLOOD: u32 = 100_000;
    let mut sim = tree_with_members(23);
    assert_eq!(downstream(&sim, 2), vec![n(4), n(5)]);
    let before = sim.node(n(2)).unwrap().gmp().memory();
    let capacity = sim.node(n(2)).unwrap().gmp().options().max_trees;

    // Node 4, a real member, turns hostile (or broken): over 20 s it sends node 2 joins for
    // 100,000 distinct (group, sender) trees, 50 every 10 ms, while node 5 stays a real member.
    let mut sent = 0;
    let mut most = 0;
    while sent < FLOOD {
        let now = sim.now();
        let mut node = sim.node_mut(n(2)).unwrap();
        for _ in 0..50 {
            let group = GroupAddr::from_index(u16::try_from(sent % 0x1000).unwrap()).unwrap();
            let sender = n(u16::try_from(100 + sent / 0x1000).unwrap());
            let join = GmpMessage::join(group, sender).encode();
            let frame = dnp::frame(Addr::Node(n(2)), Addr::Node(n(4)), Flag::Gmp, &join);
            node.handle_datagram(now, n(4), &frame);
            sent += 1;
        }
        drop(node);
        sim.run_for(Duration::from_millis(10));
        let trees = sim.node(n(2)).unwrap().gmp().memory().trees;
        assert!(trees <= capacity, "after {sent} joins: {trees} trees");
        most = most.max(trees);
    }
    let node2 = sim.node(n(2)).unwrap();
    let after = node2.gmp().memory();
    let stats = *node2.gmp().stats();
    println!(
        "node 2 under a join flood of {FLOOD} trees: trees {} -> at most {most} -> {}, about \
         {} -> {} bytes; refused {}, table rebuilds {} for {} joins received",
        before.trees,
        after.trees,
        before.approx_bytes,
        after.approx_bytes,
        stats.trees_refused,
        stats.table_rebuilds,
        stats.joins_received
    );
    assert_eq!(most, capacity, "filled, never past it");
    assert!(stats.trees_refused > u64::from(FLOOD) / 2);
    // The real trees did not notice: every member is still where it was, at every level.
    assert_eq!(downstream(&sim, 2), vec![n(4), n(5)]);
    assert_eq!(downstream(&sim, 1), vec![n(2), n(3)]);
    assert_eq!(downstream(&sim, 3), vec![n(7)]);
    // Flood trees never reached node 1: their senders have no route from node 2.
    assert_eq!(sim.node(n(1)).unwrap().gmp().memory().trees, 1);
}

#[test]
fn spoofed_rap_requests_through_the_network_are_not_amplified_and_a_real_client_is_served() {
    const FLOOD: u16 = 2_000;
    let mut sim = tree_with_members(24);
    let now = sim.now();
    let entry = sim
        .node_mut(n(1))
        .unwrap()
        .start_send(
            now,
            group(),
            "report.pdf",
            Box::new(MemSource::new(content(5000, 1))),
        )
        .unwrap();
    // Node 4 sends node 1's server requests claiming to come from node 6 (the victim), each
    // from another service id so that none is a duplicate; node 7 asks for real meanwhile.
    let mut spoofed_bytes = 0;
    for sid in 0..FLOOD {
        let body = rap::request(RAP_SERVER_SID, 1000 + sid);
        let frame = rap::packet(n(1), n(6), &body);
        spoofed_bytes += frame.len() as u64;
        let now = sim.now();
        sim.node_mut(n(2))
            .unwrap()
            .handle_datagram(now, n(4), &frame);
        if sid == FLOOD / 2 {
            sim.node_mut(n(7)).unwrap().request_services(now, n(1));
        }
    }
    let mut learned = None;
    for _ in 0..1000 {
        sim.run_for(Duration::from_millis(10));
        let mut node = sim.node_mut(n(7)).unwrap();
        while let Some(e) = node.poll_event() {
            if let NodeEvent::Services { list, .. } = e {
                learned = Some(list);
            }
        }
    }
    assert_eq!(learned, Some(vec![entry]), "the real client got its list");
    let server = *sim.node(n(1)).unwrap().rap_server().stats();
    let ratio = server.provide_bytes_sent as f64 / server.request_bytes_received as f64;
    println!(
        "{FLOOD} spoofed requests ({spoofed_bytes} bytes) and one real client through the \
         network: server took {} request bytes, sent {} provide bytes (ratio {ratio:.3}); \
         the victim's node counted {} packets for no service; {server:?}",
        server.request_bytes_received,
        server.provide_bytes_sent,
        sim.node(n(6)).unwrap().stats().rap_no_endpoint
    );
    assert!(server.provide_bytes_sent <= server.request_bytes_received);
    assert_eq!(server.requests_received, u64::from(FLOOD) + 1);
}
