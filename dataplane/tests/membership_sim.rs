//! GMP and RAP through whole simulated nodes: membership soft state and service announcements
//! over lossy links.

use control::topology::{Faults, build};
use dataplane::node::{Node, NodeEvent, RmtpOptions, sim_factory};
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
