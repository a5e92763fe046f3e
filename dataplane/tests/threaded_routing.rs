//! DRP on real sockets: convergence to shortest paths, a link taken down and brought back by the
//! garbler at run time, a node whose file lacks a neighbour, and terminates on stop.

mod threaded_common;

use control::topology::{Faults, LinkSpec, Topology, build};
use threaded_common::*;

const DOWN: Faults = Faults {
    loss: 0.0,
    corrupt: 0.0,
    duplicate: 0.0,
    reorder: 0.0,
    delay: std::time::Duration::ZERO,
    jitter: std::time::Duration::ZERO,
    down: true,
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

#[test]
fn a_neighbour_missing_from_the_file_is_learned_from_its_drp_packets() {
    // Line 1-2-3. Node 2's file knows only nodes 1 and 2: node 3 is a stranger to it until
    // node 3's hellos arrive from a socket it has never heard of.
    let net = Net::start_with(
        build::line(3, 7001),
        |_| Default::default(),
        |addr, full| {
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
        },
    );
    net.converge();
    let learned: Vec<_> = net
        .node(2)
        .peers()
        .into_iter()
        .filter(|p| p.learned)
        .collect();
    assert_eq!(learned.len(), 1);
    assert_eq!(learned[0].addr, n(3));
    assert_eq!(learned[0].socket, net.node(3).local_addr());
    assert_eq!(net.node(2).stats().dnp.peers_learned, 1);
    assert_eq!(net.node(1).next_hop(n(3)), Some(n(2)));
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
