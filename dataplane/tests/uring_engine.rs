//! The io_uring engine's own duties, on real nodes on 127.0.0.1: strangers dropped and
//! counted, an aborted receive, pinning, busy polling, and RAP through the engine.

mod uring_common;

use control::rap::ServiceEntry;
use control::topology::{Action, Faults, ScheduledEvent, build};
use control::wire::{Flag, dnp, drp};
use control::{Addr, NodeAddr};
use dataplane::node::RAP_SERVER_SID;
use dataplane::rmtp::{FileSink, MemSource};
use dataplane::sim::scenario::content;
use dataplane::threaded::ReceiveState;
use dataplane::uring::{UringNode, UringOptions};
use std::net::UdpSocket;
use std::time::Duration;
use uring_common::*;

/// A line of two io_uring nodes, converged.
fn pair() -> Net {
    let net = Net::start(build::line(2, 7001), Faults::default(), |_| Engine::Uring);
    net.converge();
    net
}

fn uring(net: &Net, a: u16) -> &UringNode {
    net.node(a).uring().expect("an io_uring node")
}

#[test]
fn datagrams_from_a_socket_outside_the_topology_are_dropped_and_counted() {
    let net = pair();
    let node = uring(&net, 1);
    let before = node.stats();
    // A well-formed hello that claims to come from node 2, from a socket that is not node 2's.
    let hello = dnp::frame(Addr::Node(n(1)), Addr::Node(n(2)), Flag::Drp, &drp::hello());
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        stranger.send_to(&hello, node.local_addr()).unwrap();
    }
    let counted = wait_until(LIMIT, || node.stats().get("dnp.rx_unknown_peer") == Some(3));
    assert!(counted.is_some(), "{}", node.stats());
    assert_eq!(
        node.stats().get("dnp.rx_unknown_peer"),
        before.get("dnp.rx_unknown_peer").map(|v| v + 3)
    );
    net.stop();
}

#[test]
fn an_aborted_receive_fails_and_keeps_only_its_partial_file() {
    let dir = TempDir::new("abort");
    let net = pair();
    let sink = FileSink::create(&dir.of(n(2)), NAME).unwrap();
    let h = uring(&net, 2)
        .receive(g(3), n(1), 9, Box::new(sink), Default::default())
        .expect("start a receiver");
    assert_eq!(h.progress().state, ReceiveState::Receiving);
    h.abort();
    assert_eq!(
        h.wait(LIMIT),
        ReceiveState::Failed("aborted".into()),
        "{:?}",
        h.progress()
    );
    assert!(h.wait_ended(LIMIT), "the client left");
    assert!(dir.of(n(2)).join(format!("{NAME}.partial")).exists());
    assert!(!dir.of(n(2)).join(NAME).exists());
    // The id is free again.
    let again = uring(&net, 2).receive(
        g(3),
        n(1),
        9,
        Box::new(dataplane::rmtp::MemSink::new()),
        Default::default(),
    );
    assert!(again.is_ok(), "{:?}", again.err());
    net.stop();
}

#[test]
fn the_engine_thread_runs_on_the_core_it_was_pinned_to() {
    let core = core_affinity::get_core_ids()
        .and_then(|ids| ids.last().copied())
        .expect("the cores this process may run on");
    let mut topology = build::line(2, 7001);
    topology.network.timers = fast_timers();
    let mut sockets = bind_all(&mut topology);
    let node = UringNode::start_with_socket(
        &topology,
        n(1),
        sockets.remove(&n(1)).unwrap(),
        UringOptions {
            core: Some(core.id),
            ..UringOptions::default()
        },
    )
    .expect("start a pinned node");
    assert_eq!(
        node.stats().get("engine.pinned_core"),
        Some(core.id as u64 + 1)
    );
    node.stop();
}

/// A busy-polling receiver (it never sleeps in the kernel) gets the whole transfer, and the
/// sender's RAP server answers a request while the transfer runs.
#[test]
fn a_busy_polling_receiver_completes_and_rap_answers() {
    let data = content(1 << 20, 23);
    let mut topology = build::line(2, 7001);
    topology.network.timers = fast_timers();
    let mut sockets = bind_all(&mut topology);
    let mut start = |a: NodeAddr, busy_poll: bool| {
        UringNode::start_with_socket(
            &topology,
            a,
            sockets.remove(&a).unwrap(),
            UringOptions {
                busy_poll,
                ..UringOptions::default()
            },
        )
        .expect("start a node")
    };
    let sender = start(n(1), false);
    let receiver = start(n(2), true);
    let routed = wait_until(LIMIT, || receiver.next_hop(n(1)).is_some());
    assert!(routed.is_some(), "no route from 2 to 1");
    let sink = dataplane::rmtp::MemSink::new();
    let h = receiver
        .receive(g(1), n(1), 1, Box::new(sink), Default::default())
        .unwrap();
    let joined = wait_until(LIMIT, || {
        sender
            .multicast()
            .lookup(g(1), n(1))
            .is_some_and(|e| e.downstream.contains(&n(2)))
    });
    assert!(joined.is_some(), "the join reached the sender");
    // A pre-announcement of the same tree, which the transfer's own entry replaces.
    let early = ServiceEntry {
        group: g(1),
        sender: n(1),
        size: data.len() as u64,
        hash: [0; 32],
        segment_size: 1000,
        name: NAME.into(),
    };
    sender
        .set_rap_services(RAP_SERVER_SID, vec![early.clone()])
        .unwrap();
    assert!(
        sender.set_rap_services(9, vec![early]).is_err(),
        "one RAP server"
    );
    let send = sender
        .send(
            g(1),
            NAME,
            Box::new(MemSource::new(data.clone())),
            Default::default(),
        )
        .unwrap();
    let services = receiver
        .request_services(n(1), RAP_SERVER_SID, LIMIT)
        .expect("the sender's RAP server answers");
    let of_tree: Vec<_> = services.iter().filter(|e| e.group == g(1)).collect();
    assert_eq!(of_tree.len(), 1, "{services:?}");
    assert_eq!(of_tree[0], send.entry());
    assert_eq!(of_tree[0].size, data.len() as u64);
    assert_eq!(h.wait(LIMIT), ReceiveState::Complete, "{:?}", h.progress());
    assert_eq!(h.progress().delivered, data.len() as u64);
    assert!(send.wait(Duration::from_secs(30)), "{:?}", send.progress());
    receiver.stop();
    sender.stop();
}

/// Adaptive waiting: a node that looks at their ring for a while after a receive before sleeping
/// still completes a transfer and counts its spins (found work or gave up); by default a node
/// never spins.
#[test]
fn a_node_spinning_before_it_sleeps_completes_a_transfer_and_counts_its_spins() {
    let data = content(1 << 20, 29);
    let mut topology = build::line(2, 7001);
    topology.network.timers = fast_timers();
    let mut sockets = bind_all(&mut topology);
    let mut start = |a: NodeAddr, spin: Duration| {
        UringNode::start_with_socket(
            &topology,
            a,
            sockets.remove(&a).unwrap(),
            UringOptions {
                spin_before_sleep: spin,
                ..UringOptions::default()
            },
        )
        .expect("start a node")
    };
    let sender = start(n(1), Duration::from_micros(50));
    let receiver = start(n(2), UringOptions::default().spin_before_sleep);
    let routed = wait_until(LIMIT, || receiver.next_hop(n(1)).is_some());
    assert!(routed.is_some(), "no route from 2 to 1");
    let sink = dataplane::rmtp::MemSink::new();
    let h = receiver
        .receive(g(1), n(1), 1, Box::new(sink), Default::default())
        .unwrap();
    let joined = wait_until(LIMIT, || {
        sender
            .multicast()
            .lookup(g(1), n(1))
            .is_some_and(|e| e.downstream.contains(&n(2)))
    });
    assert!(joined.is_some(), "the join reached the sender");
    let send = sender
        .send(
            g(1),
            NAME,
            Box::new(MemSource::new(data.clone())),
            Default::default(),
        )
        .unwrap();
    assert_eq!(h.wait(LIMIT), ReceiveState::Complete, "{:?}", h.progress());
    // Complete means the sink verified the transfer's hash.
    assert_eq!(h.progress().delivered, data.len() as u64);
    assert!(send.wait(Duration::from_secs(30)), "{:?}", send.progress());
    let spins = |node: &UringNode| {
        let s = node.stats();
        (
            s.get("engine.spins_found_work").unwrap_or(0),
            s.get("engine.spins_gave_up").unwrap_or(0),
        )
    };
    let (found, gave_up) = spins(&sender);
    assert!(found + gave_up > 0, "the sender never spun");
    assert_eq!(spins(&receiver), (0, 0), "the default sleeps at once");
    receiver.stop();
    sender.stop();
}

/// With one receive buffer a burst exhausts the ring: the kernel ends the multishot receive,
/// the engine counts it and re-arms, and datagrams keep being received afterwards.
#[test]
fn an_exhausted_buffer_ring_is_counted_and_the_receive_resumes() {
    let mut topology = build::line(2, 7001);
    topology.network.timers = fast_timers();
    let mut sockets = bind_all(&mut topology);
    let node = UringNode::start_with_socket(
        &topology,
        n(1),
        sockets.remove(&n(1)).unwrap(),
        UringOptions {
            recv_buffers: 1,
            ..UringOptions::default()
        },
    )
    .expect("start a node with one receive buffer");
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = node.local_addr();
    // Well-formed, so each is counted as from an unknown peer once it is received.
    let hello = dnp::frame(Addr::Node(n(1)), Addr::Node(n(2)), Flag::Drp, &drp::hello());
    let exhausted = wait_until(LIMIT, || {
        for _ in 0..64 {
            let _ = stranger.send_to(&hello, to);
        }
        node.stats().get("engine.recv_buffers_exhausted") > Some(0)
    });
    assert!(exhausted.is_some(), "{}", node.stats());
    let seen = node.stats().get("dnp.rx_unknown_peer").unwrap();
    let resumed = wait_until(LIMIT, || {
        let _ = stranger.send_to(&hello, to);
        node.stats().get("dnp.rx_unknown_peer") > Some(seen)
    });
    assert!(resumed.is_some(), "{}", node.stats());
    node.stop();
}

#[test]
fn a_bad_option_says_what_was_expected() {
    let mut topology = build::line(2, 7001);
    let mut sockets = bind_all(&mut topology);
    let refused = UringNode::start_with_socket(
        &topology,
        n(1),
        sockets.remove(&n(1)).unwrap(),
        UringOptions {
            recv_buffers: 48,
            ..UringOptions::default()
        },
    );
    let e = refused.expect_err("48 buffers is no power of two");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("power of two"), "{e}");
}

/// Hosts share a node between threads (the control socket's handler, the transfer's loop).
#[test]
fn a_node_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<UringNode>();
}

/// The topology's schedule on two io_uring nodes (`UringOptions::apply_schedule`): the link
/// goes down at its time (each end's garbler drops what it sends, so DRP declares the other
/// dead), then comes back up, and the neighbours find each other again.
#[test]
fn the_topology_schedule_takes_a_link_down_and_up() {
    let mut topology = build::line(2, 7001);
    topology.network.timers = fast_timers();
    topology.schedule = vec![
        ScheduledEvent {
            at: Duration::from_millis(1_000),
            action: Action::LinkDown(n(1), n(2)),
        },
        ScheduledEvent {
            at: Duration::from_millis(3_000),
            action: Action::LinkUp(n(2), n(1)),
        },
    ];
    let mut sockets = bind_all(&mut topology);
    let nodes: Vec<UringNode> = [n(1), n(2)]
        .into_iter()
        .map(|a| {
            let options = UringOptions {
                apply_schedule: true,
                ..UringOptions::default()
            };
            UringNode::start_with_socket(&topology, a, sockets.remove(&a).unwrap(), options)
                .expect("start a node")
        })
        .collect();
    let both = |up: bool| {
        nodes[0].neighbours().contains(&n(2)) == up && nodes[1].neighbours().contains(&n(1)) == up
    };
    assert!(wait_until(LIMIT, || both(true)).is_some());
    assert!(
        wait_until(LIMIT, || both(false)).is_some(),
        "the link never went down"
    );
    assert!(nodes[0].faults(n(2)).unwrap().down && nodes[1].faults(n(1)).unwrap().down);
    assert!(
        wait_until(LIMIT, || both(true)).is_some(),
        "the link never came back"
    );
    assert!(!nodes[0].faults(n(2)).unwrap().down && !nodes[1].faults(n(1)).unwrap().down);
    for node in nodes {
        node.stop();
    }
}

/// The probe the demo falls back on: where the nodes of these tests run, it says io_uring runs.
#[test]
fn the_probe_finds_io_uring_where_nodes_start() {
    UringNode::probe().expect("io_uring runs here");
}

/// A neighbour floods node 2 with control-plane packets (RAP for a service it does not run:
/// each goes from a worker to the control thread) as fast as one socket sends, 100,000 of them.
/// The control thread's inbox is bounded: every packet node 2 accepted from the flood is counted
/// where it ended (refused by RAP, or dropped at the full inbox, or by the kernel at the full
/// socket), and the control plane stays live: node 2 keeps node 3 as a neighbour and still
/// routes to it, and answers a RAP request from node 3 after the flood.
#[test]
fn a_control_packet_flood_is_bounded_and_the_control_plane_stays_live() {
    let mut topology = build::line(3, 7001);
    topology.network.timers = fast_timers();
    let mut sockets = bind_all(&mut topology);
    let attacker = sockets.remove(&n(1)).unwrap();
    let start = |a: u16, sockets: &mut std::collections::BTreeMap<NodeAddr, UdpSocket>| {
        UringNode::start_with_socket(
            &topology,
            n(a),
            sockets.remove(&n(a)).unwrap(),
            UringOptions::default(),
        )
        .expect("start a node")
    };
    let (two, three) = (start(2, &mut sockets), start(3, &mut sockets));
    let neighbours = wait_until(LIMIT, || two.neighbours().contains(&n(3)));
    assert!(neighbours.is_some(), "{}", two.stats());
    let packet = {
        let mut body = vec![0xA5; 200];
        body[..2].copy_from_slice(&0xBE0C_u16.to_be_bytes());
        control::wire::trailer::push(&mut body);
        dnp::frame(Addr::Node(n(2)), Addr::Node(n(1)), Flag::Rap, &body)
    };
    let before = two.stats();
    const FLOOD: u64 = 100_000;
    for _ in 0..FLOOD {
        let _ = attacker.send_to(&packet, two.local_addr());
    }
    let counted = |s: &dataplane::uring::UringStats| {
        s.get("dnp.rap_no_endpoint").unwrap_or(0) + s.engine.control_inbox_full
    };
    // Whatever the kernel did not drop for a full socket queue reaches its end.
    let settled = wait_until(LIMIT, || {
        let s = two.stats();
        counted(&s) - counted(&before) + s.engine.rx_queue_overflows >= FLOOD
    });
    let after = two.stats();
    println!(
        "flood: {} refused by RAP, {} dropped at the full inbox, {} dropped by the kernel",
        after.get("dnp.rap_no_endpoint").unwrap_or(0),
        after.engine.control_inbox_full,
        after.engine.rx_queue_overflows
    );
    assert!(settled.is_some(), "{after}");
    assert!(two.neighbours().contains(&n(3)), "{after}");
    assert_eq!(two.next_hop(n(3)), Some(n(3)));
    let services = three.request_services(n(2), RAP_SERVER_SID, LIMIT);
    assert_eq!(services, Ok(Vec::new()), "node 2's RAP server answers");
    two.stop();
    three.stop();
}

/// A node with two workers passes end-to-end traffic of two origins on both workers (the
/// steering program spreads what names no tree by its DNP source), and its control plane,
/// fed from whichever worker receives, keeps its neighbours and answers RAP.
#[test]
fn two_workers_share_unicast_by_origin_and_both_feed_the_control_plane() {
    let mut topology = build::line(3, 7001);
    topology.network.timers = fast_timers();
    let mut sockets = bind_all(&mut topology);
    let source = sockets.remove(&n(1)).unwrap();
    let start = |a: u16, workers, sockets: &mut std::collections::BTreeMap<NodeAddr, UdpSocket>| {
        let options = UringOptions {
            workers,
            ..UringOptions::default()
        };
        UringNode::start_with_socket(&topology, n(a), sockets.remove(&n(a)).unwrap(), options)
            .expect("start a node")
    };
    let (two, three) = (start(2, 2, &mut sockets), start(3, 1, &mut sockets));
    let routed = wait_until(LIMIT, || two.next_hop(n(3)) == Some(n(3)));
    assert!(routed.is_some(), "{}", two.stats());
    // Origins 10 and 11: workers 0 and 1 of two. RAP for an unclaimed service: node 3 counts
    // each one it gets.
    let packet = |origin: u16| {
        let mut body = vec![0xA5; 200];
        body[..2].copy_from_slice(&0xBE0C_u16.to_be_bytes());
        control::wire::trailer::push(&mut body);
        dnp::frame(Addr::Node(n(3)), Addr::Node(n(origin)), Flag::Rap, &body)
    };
    let before = three.stats().get("dnp.rap_no_endpoint").unwrap_or(0);
    const EACH: u64 = 200;
    for _ in 0..EACH {
        for origin in [10, 11] {
            source.send_to(&packet(origin), two.local_addr()).unwrap();
        }
        // A few at a time: the test is about where they go, not the kernel's queues.
        std::thread::sleep(Duration::from_micros(200));
    }
    let delivered = wait_until(LIMIT, || {
        three.stats().get("dnp.rap_no_endpoint").unwrap_or(0) - before >= 2 * EACH
    });
    assert!(delivered.is_some(), "{}", three.stats());
    let workers = two.worker_counters();
    assert_eq!(workers.len(), 2);
    for (i, w) in workers.iter().enumerate() {
        assert!(w.datagrams_received >= EACH, "worker {i}: {w:?}");
        assert_eq!(w.rx_other_worker, 0, "worker {i}: {w:?}");
    }
    // Node 3's hellos and RAP (origin 3) reach node 2 through worker 1, not worker 0: its
    // control plane keeps the link and answers.
    assert_eq!(
        usize::from(control::wire::steer::worker_of(&packet(3), 2)),
        1
    );
    assert!(two.neighbours().contains(&n(3)), "{}", two.stats());
    let services = three.request_services(n(2), RAP_SERVER_SID, LIMIT);
    assert_eq!(services, Ok(Vec::new()), "node 2's RAP server answers");
    two.stop();
    three.stop();
}
