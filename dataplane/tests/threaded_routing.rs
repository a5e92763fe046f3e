//! DRP on real sockets: convergence to shortest paths, a link taken down and brought back by the
//! garbler at run time, a node whose file lacks a neighbour, and terminates on stop.

mod threaded_common;

use control::topology::{Faults, LinkSpec, Topology, build};
use control::wire::{Flag, dnp, drp};
use control::{Addr, NodeAddr};
use dataplane::threaded::{NodeStats, ThreadedNode, ThreadedOptions};
use std::net::{SocketAddr, UdpSocket};
use threaded_common::*;

const DOWN: Faults = Faults {
    loss: 0.0,
    corrupt: 0.0,
    duplicate: 0.0,
    reorder: 0.0,
    delay: std::time::Duration::ZERO,
    jitter: std::time::Duration::ZERO,
    down: true,
    rate: None,
    queue_bytes: None,
    coalesce: std::time::Duration::ZERO,
};

#[test]
fn grid_3x3_converges_to_bfs_next_hops() {
    let net = Net::start(build::grid(3, 3, 7001));
    let links = links_of(&net.topology);
    let took = wait_until(LIMIT, || net.routes_are(&links));
    assert!(took.is_some(), "routes never matched BFS:\n{}", net.dump());
    println!("3x3 grid converged in {:?}", took.unwrap());
    for node in net.nodes.values() {
        assert_eq!(node.routes().len(), 8);
        assert_eq!(node.known_nodes().len(), 9);
        let s = node.stats();
        assert_eq!(s.dnp.rx_errors, [0; 5], "clean links deliver clean packets");
        assert_eq!(s.dnp.rx_unknown_peer, 0);
        assert!(s.drp.hellos_recv > 0 && s.drp.lsps_recv > 0);
    }
    net.stop();
}

#[test]
fn link_down_through_the_garbler_is_routed_around_and_heals() {
    let net = Net::start(build::grid(3, 3, 7001));
    let all = net.converge();

    // 2-5 carries the shortest paths between the top row and the centre.
    let (a, b) = (n(2), n(5));
    assert_eq!(net.node(2).next_hop(b), Some(b));
    net.nodes[&a].set_faults(b, DOWN).unwrap();
    net.nodes[&b].set_faults(a, DOWN).unwrap();
    let without: Vec<_> = all.iter().copied().filter(|&l| l != (a, b)).collect();
    let took = wait_until(LIMIT, || net.routes_are(&without));
    assert!(took.is_some(), "routes never avoided 2-5:\n{}", net.dump());
    println!("rerouted around 2-5 in {:?}", took.unwrap());
    // The BFS answer without 2-5 never uses it; and DRP no longer sees the neighbour.
    assert_ne!(net.node(2).next_hop(b), Some(b));
    assert!(!net.node(2).neighbours().contains(&b));
    assert!(
        net.node(2)
            .stats()
            .garbler
            .iter()
            .any(|(to, s)| *to == b && s.dropped_down > 0)
    );

    net.nodes[&a].set_faults(b, Faults::default()).unwrap();
    net.nodes[&b].set_faults(a, Faults::default()).unwrap();
    let took = wait_until(LIMIT, || net.routes_are(&all));
    assert!(took.is_some(), "routes never healed:\n{}", net.dump());
    println!("healed in {:?}", took.unwrap());
    assert!(net.node(2).neighbours().contains(&b));
    net.stop();
}

/// Line 1-2-3 in which node 2's file knows only nodes 1 and 2: node 3 is a stranger to it until
/// node 3's hellos arrive from a socket it has never heard of (seed §3.5).
fn without_node_3(addr: NodeAddr, full: &Topology) -> Topology {
    if addr != n(2) {
        return full.clone();
    }
    Topology {
        nodes: full
            .nodes
            .iter()
            .filter(|s| s.addr != n(3))
            .cloned()
            .collect(),
        links: vec![LinkSpec {
            a: n(1),
            b: n(2),
            faults: Faults::default(),
        }],
        ..full.clone()
    }
}

fn learnt(node: &ThreadedNode) -> Vec<(NodeAddr, SocketAddr)> {
    node.peers()
        .into_iter()
        .filter(|p| p.learned)
        .map(|p| (p.addr, p.socket))
        .collect()
}

fn counter(node: &ThreadedNode, name: &str) -> u64 {
    let s = node.stats();
    s.get(name)
        .unwrap_or_else(|| panic!("no counter {name}:\n{s}"))
}

/// A DRP packet for node `to` claiming to come from node `from`.
fn drp_claim(to: u16, from: u16, body: &[u8]) -> Vec<u8> {
    dnp::frame(Addr::Node(n(to)), Addr::Node(n(from)), Flag::Drp, body)
}

/// Line 1-2-3 with node 2's file lacking node 3, and only nodes 1 and 2 running.
fn start_without_node_3() -> Net {
    Net::start_some(
        build::line(3, 7001),
        |a| a != n(3),
        |_| ThreadedOptions::default(),
        without_node_3,
    )
}

#[test]
fn a_neighbour_missing_from_the_file_is_learned_from_its_drp_packets() {
    let net = Net::start_with(
        build::line(3, 7001),
        |_| ThreadedOptions::default(),
        without_node_3,
    );
    net.converge();
    assert_eq!(learnt(net.node(2)), [(n(3), net.node(3).local_addr())]);
    assert_eq!(net.node(2).stats().dnp.peers_learned, 1);
    assert_eq!(net.node(1).next_hop(n(3)), Some(n(2)));
    net.stop();
}

#[test]
fn a_junk_drp_packet_from_a_stranger_teaches_nothing_and_the_real_node_becomes_a_neighbour() {
    let mut net = start_without_node_3();
    let node2 = net.node(2);
    // Passes the DNP checksum, but its body is no DRP message (its CRC trailer is wrong).
    let junk = drp_claim(2, 3, &[0xA5; 12]);
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&junk, node2.local_addr()).unwrap();
    let seen = |s: &NodeStats| s.dnp.rx_unknown_peer + s.dnp.peers_learned > 0;
    assert!(
        wait_until(LIMIT, || seen(&node2.stats())).is_some(),
        "the packet never arrived:\n{}",
        node2.stats()
    );
    let s = node2.stats();
    assert_eq!(s.dnp.peers_learned, 0, "learnt from a junk body:\n{s}");
    assert_eq!(s.dnp.drp_malformed, 0, "the junk reached DRP");
    assert_eq!(s.get("dnp.learn_refused_body"), Some(1), "{s}");
    assert_eq!(s.dnp.rx_unknown_peer, 1);
    assert!(learnt(node2).is_empty());
    assert!(!node2.neighbours().contains(&n(3)));

    let file = net.topology.clone();
    net.start_node(n(3), ThreadedOptions::default(), &file);
    net.converge();
    assert_eq!(learnt(net.node(2)), [(n(3), net.node(3).local_addr())]);
    net.stop();
}

#[test]
fn a_learnt_binding_expires_with_the_neighbour_and_the_real_node_takes_over() {
    let mut net = start_without_node_3();
    // A stranger claims to be node 3 with one valid hello: node 2 takes its word, for now.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hello = drp_claim(2, 3, &drp::hello());
    stranger.send_to(&hello, net.node(2).local_addr()).unwrap();
    assert!(
        wait_until(LIMIT, || net.node(2).neighbours().contains(&n(3))).is_some(),
        "the hello made no neighbour:\n{}",
        net.node(2).stats()
    );
    assert_eq!(
        learnt(net.node(2)),
        [(n(3), stranger.local_addr().unwrap())]
    );

    // The real node 3 says hello from its own socket all along; the stranger falls silent, DRP
    // declares "3" dead after the dead interval, its binding goes with it, and node 3 takes over.
    let file = net.topology.clone();
    net.start_node(n(3), ThreadedOptions::default(), &file);
    net.converge();
    let node2 = net.node(2);
    assert_eq!(learnt(node2), [(n(3), net.node(3).local_addr())]);
    assert_eq!(counter(node2, "dnp.peers_learned"), 2);
    assert_eq!(counter(node2, "dnp.peers_expired"), 1);
    assert!(
        counter(node2, "dnp.learn_refused_taken") > 0,
        "node 3's hellos while the stranger held its address"
    );
    net.stop();
}

#[test]
fn the_learnt_peer_table_is_bounded_and_refusals_are_counted() {
    let capacity = 2;
    let net = Net::start_with(
        build::line(2, 7001),
        |_| ThreadedOptions {
            learned_peer_capacity: capacity,
            ..ThreadedOptions::default()
        },
        |_, t| t.clone(),
    );
    let node1 = net.node(1);
    let claims = [10, 11, 12];
    let strangers: Vec<UdpSocket> = claims
        .iter()
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (s, &claimed) in strangers.iter().zip(&claims) {
        s.send_to(&drp_claim(1, claimed, &drp::hello()), node1.local_addr())
            .unwrap();
    }
    let handled = || {
        counter(node1, "dnp.peers_learned") + counter(node1, "dnp.learn_refused_full")
            == claims.len() as u64
    };
    assert!(wait_until(LIMIT, handled).is_some(), "{}", node1.stats());
    assert_eq!(counter(node1, "dnp.peers_learned"), capacity as u64);
    assert_eq!(counter(node1, "dnp.learn_refused_full"), 1);
    assert_eq!(learnt(node1).len(), capacity);
    // The file's own neighbour is not crowded out.
    net.converge();
    net.stop();
}

#[test]
fn a_stopping_node_says_terminate_and_its_neighbours_drop_it() {
    let mut net = Net::start(build::line(3, 7001));
    net.converge();
    net.nodes.remove(&n(3)).unwrap().stop();
    assert!(
        wait_until(LIMIT, || !net.node(2).neighbours().contains(&n(3))
            && net.node(1).next_hop(n(3)).is_none())
        .is_some(),
        "{}",
        net.dump()
    );
    assert_eq!(net.node(2).stats().drp.terminates_recv, 1);
    net.stop();
}
