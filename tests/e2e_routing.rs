//! End to end, routing and control: real `burghers node` processes on loopback, inspected and
//! changed only through `burghers ctl`.

mod common;

use common::*;
use control::topology::{Action, ScheduledEvent, build};
use control::wire::gmp::GmpMessage;
use control::wire::{DEFAULT_MTU, Flag, Packet, checksum, dnp, drp};
use control::{Addr, GroupAddr};
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::Duration;

engine_tests!(
    routing_converges_on_the_grid,
    a_link_taken_down_with_ctl_garble_reroutes_and_comes_back,
    garbage_datagrams_are_counted_as_dropped_and_change_nothing,
    sigterm_leaves_trees_says_goodbye_and_exits_zero,
    the_files_schedule_takes_a_link_down_and_up_with_schedule,
);

/// Each node knows only its own links, so every route is learned by flooding between the
/// processes.
fn routing_converges_on_the_grid(engine: &'static str) {
    let mut lab = Lab::new(build::grid(4, 4, 7001), engine);
    lab.use_local_files();
    lab.start_all_nodes();
    let nodes = lab.all_nodes();
    let took = lab.wait_until("every node has the shortest-path routes", LIMIT, |lab| {
        lab.routes_are(&nodes, |_, _| true)
    });
    println!("4x4 grid of processes converged in {took:?}");
    // The neighbours each node reports are its links in the file.
    for &a in &nodes {
        let listed: Vec<u16> = lab
            .ctl_ok(a, &["neighbours"])
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        let expected: Vec<u16> = lab
            .topology
            .neighbours(n(a))
            .iter()
            .map(|x| x.get())
            .collect();
        assert_eq!(listed, expected, "neighbours of node {a}");
    }
    // A corner's table, in full: 15 destinations, the far corner 6 hops away.
    let corner = lab.routes(1).unwrap();
    assert_eq!(corner.len(), 15);
    assert_eq!(corner[&16], (2, 6));
}

fn a_link_taken_down_with_ctl_garble_reroutes_and_comes_back(engine: &'static str) {
    let mut lab = Lab::new(build::grid(3, 3, 7001), engine);
    lab.start_all_nodes();
    let nodes = lab.all_nodes();
    lab.wait_until("the 3x3 grid converges", LIMIT, |lab| {
        lab.routes_are(&nodes, |_, _| true)
    });
    // Node 1 reaches 2 directly; take that link down at both ends.
    assert_eq!(lab.routes(1).unwrap()[&2], (2, 1));
    let reply = lab.ctl_ok(1, &["garble", "--to", "2", "--down", "--both"]);
    assert!(
        reply.contains("node 1 -> 2:") && reply.contains("node 2 -> 1:"),
        "{reply}"
    );
    assert!(reply.lines().all(|l| l.ends_with(" down")), "{reply}");
    let cut = |a: control::NodeAddr, b: control::NodeAddr| {
        let (a, b) = (a.get().min(b.get()), a.get().max(b.get()));
        (a, b) != (1, 2)
    };
    let took = lab.wait_until("routes avoid the cut link 1-2", LIMIT, |lab| {
        lab.routes_are(&nodes, cut)
    });
    println!("rerouted around 1-2 in {took:?}");
    // 1 -> 2 now goes 1-4-5-2 (3 hops).
    assert_eq!(lab.routes(1).unwrap()[&2], (4, 3));
    let garbled = lab.stats(1, "garbler.2.");
    assert!(
        garbled.get("garbler.2.dropped_down").copied().unwrap_or(0) > 0,
        "node 1 counted nothing dropped on the down link: {garbled:?}"
    );

    lab.ctl_ok(1, &["garble", "--to", "2", "--up", "--both"]);
    let took = lab.wait_until("routes use 1-2 again", LIMIT, |lab| {
        lab.routes_are(&nodes, |_, _| true)
    });
    println!("link 1-2 back in use after {took:?}");
}

/// The datagrams to throw at a node, each with the counter it must land in.
fn garbage() -> Vec<(Vec<u8>, &'static str)> {
    let node = |v: u16| Addr::Node(n(v));
    let hello = dnp::frame(node(1), node(2), Flag::Drp, &drp::hello());
    let mut out = vec![
        (vec![], "rx_error_too_short"),
        (vec![1, 2, 3, 4, 5], "rx_error_too_short"),
        (vec![0x55; DEFAULT_MTU + 1], "rx_error_too_long"),
        (
            hello[..hello.len() - 1].to_vec(),
            "rx_error_length_mismatch",
        ),
    ];
    let mut flipped = hello.clone();
    flipped[11] ^= 0x10;
    out.push((flipped, "rx_error_bad_checksum"));
    let mut unknown = hello.clone();
    unknown[6..8].copy_from_slice(&0x0099u16.to_be_bytes());
    unknown[..2].copy_from_slice(&[0, 0]);
    let sum = checksum::checksum(&unknown);
    unknown[..2].copy_from_slice(&sum.to_be_bytes());
    out.push((unknown, "rx_error_unknown_flag"));
    // Pseudo-random bytes, some with a plausible length field: whatever DNP parsing says.
    let mut x: u64 = 0x2001;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..300 {
        let len = 1 + (next() % 120) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 && len >= 10 {
            bytes[8..10].copy_from_slice(&(len as u16).to_be_bytes());
        }
        let name = match Packet::parse(&bytes, DEFAULT_MTU) {
            Err(e) => match e.name() {
                "too_short" => "rx_error_too_short",
                "too_long" => "rx_error_too_long",
                "length_mismatch" => "rx_error_length_mismatch",
                "bad_checksum" => "rx_error_bad_checksum",
                _ => "rx_error_unknown_flag",
            },
            Ok(_) => "rx_unknown_peer",
        };
        out.push((bytes, name));
    }
    // Well-formed packets from a socket that is no node: a hello, a join, group data.
    out.push((
        dnp::frame(node(2), node(1), Flag::Drp, &drp::hello()),
        "rx_unknown_peer",
    ));
    out.push((
        dnp::frame(
            node(2),
            node(1),
            Flag::Gmp,
            &GmpMessage::join(GroupAddr::from_index(0).unwrap(), n(2)).encode(),
        ),
        "rx_unknown_peer",
    ));
    let group = Addr::Group(GroupAddr::from_index(0).unwrap());
    out.push((
        dnp::frame(group, node(2), Flag::RmtpData, &[1; 40]),
        "rx_unknown_peer",
    ));
    out
}

fn garbage_datagrams_are_counted_as_dropped_and_change_nothing(engine: &'static str) {
    let mut lab = Lab::new(build::line(3, 7001), engine);
    lab.start_all_nodes();
    let nodes = lab.all_nodes();
    lab.wait_until("the line converges", LIMIT, |lab| {
        lab.routes_are(&nodes, |_, _| true)
    });
    let counters = [
        "rx_error_too_short",
        "rx_error_too_long",
        "rx_error_length_mismatch",
        "rx_error_bad_checksum",
        "rx_error_unknown_flag",
        "rx_unknown_peer",
    ];
    let read = |lab: &Lab| -> BTreeMap<String, u64> {
        let all = lab.stats(2, "dnp.");
        counters
            .iter()
            .map(|c| (c.to_string(), all[&format!("dnp.{c}")]))
            .collect()
    };
    let before = read(&lab);
    let routes_before = lab.routes(2).unwrap();
    let neighbours_before = lab.ctl_ok(2, &["neighbours"]);

    let datagrams = garbage();
    let mut expected: BTreeMap<String, u64> = before.clone();
    for (_, name) in &datagrams {
        *expected.get_mut(*name).unwrap() += 1;
    }
    let target = lab.topology.node(n(2)).unwrap().socket;
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    // In small batches: a burst beyond the kernel's receive buffer would be lost before DNP.
    let counted = |seen: &BTreeMap<String, u64>| seen.values().sum::<u64>();
    let mut sent = counted(&before);
    for batch in datagrams.chunks(20) {
        for (bytes, _) in batch {
            attacker.send_to(bytes, target).unwrap();
        }
        sent += batch.len() as u64;
        lab.wait_until("the batch is counted", LIMIT, |lab| {
            counted(&read(lab)) >= sent
        });
    }
    lab.wait_until("every datagram is counted", LIMIT, |lab| {
        read(lab) == expected
    });
    println!(
        "{} garbage datagrams counted: {:?}",
        datagrams.len(),
        expected
            .iter()
            .map(|(k, v)| (k.clone(), v - before[k]))
            .collect::<BTreeMap<_, _>>()
    );
    // Nothing changed: the same routes and neighbours, still converged everywhere, and the
    // node still answers and forwards.
    assert_eq!(lab.routes(2).unwrap(), routes_before);
    assert_eq!(lab.ctl_ok(2, &["neighbours"]), neighbours_before);
    assert!(lab.routes_are(&nodes, |_, _| true));
    let info = lab.ctl_ok(2, &["info"]);
    assert!(info.contains("neighbours 1 3"), "{info}");
}

fn sigterm_leaves_trees_says_goodbye_and_exits_zero(engine: &'static str) {
    let mut lab = Lab::new(build::line(3, 7001), engine);
    let ids = lab.start_all_nodes();
    let nodes = lab.all_nodes();
    lab.wait_until("the line converges", LIMIT, |lab| {
        lab.routes_are(&nodes, |_, _| true)
    });
    // Node 3 joins the tree of group 1 sent by node 1: the tree runs 1 <- 2 <- 3.
    lab.ctl_ok(3, &["join", "--group", "1", "--sender", "1"]);
    lab.wait_until("node 1 has node 2 downstream", LIMIT, |lab| {
        lab.ctl_ok(1, &["groups"])
            .contains("g1 sender 1 upstream - downstream 2 local -")
    });
    let groups = lab.ctl_ok(2, &["groups"]);
    assert!(
        groups.contains("g1 sender 1 upstream 1 downstream 3 local -"),
        "{groups}"
    );
    let leaves_before = lab.stats(2, "gmp.leaves_received")["gmp.leaves_received"];
    let terms_before = lab.stats(2, "drp.terminates_recv")["drp.terminates_recv"];

    let socket_file = lab.path("burghers").join(format!(
        "node-3-{}.sock",
        lab.topology.node(n(3)).unwrap().socket.port()
    ));
    assert!(
        exists(&socket_file),
        "no control socket at {}",
        socket_file.display()
    );
    lab.signal(ids[2], "TERM");
    let status = lab.expect_exit(ids[2], Duration::from_secs(10));
    assert!(
        status.success(),
        "node 3 exited with {status}\n{}",
        lab.logs()
    );
    let said = lab.stdout_of(ids[2]);
    assert!(said.contains(&format!("(engine {engine})")), "{said}");
    assert!(said.contains("node 3 stopped after"), "{said}");
    assert!(!exists(&socket_file), "the control socket was left behind");
    // Node 2 heard the leave and the terminate (not the dead interval) and dropped node 3.
    let stats = lab.stats(2, "");
    assert!(
        stats["gmp.leaves_received"] > leaves_before,
        "no leave arrived"
    );
    assert!(
        stats["drp.terminates_recv"] > terms_before,
        "no terminate arrived"
    );
    lab.wait_until(
        "node 2 no longer lists node 3",
        Duration::from_secs(5),
        |lab| lab.ctl_ok(2, &["neighbours"]).trim() == "1",
    );
    // SIGINT stops a node as cleanly.
    lab.signal(ids[0], "INT");
    let status = lab.expect_exit(ids[0], Duration::from_secs(10));
    assert!(
        status.success(),
        "node 1 exited with {status}\n{}",
        lab.logs()
    );
}

/// `node --schedule` on two processes: the file's link_down of 1-2 makes each end's garbler
/// drop what it sends on the link (counted), and its link_up brings the neighbours back.
fn the_files_schedule_takes_a_link_down_and_up_with_schedule(engine: &'static str) {
    let mut topology = build::line(2, 7001);
    topology.schedule = vec![
        ScheduledEvent {
            at: Duration::from_millis(1_500),
            action: Action::LinkDown(n(1), n(2)),
        },
        ScheduledEvent {
            at: Duration::from_millis(4_000),
            action: Action::LinkUp(n(1), n(2)),
        },
    ];
    let mut lab = Lab::new(topology, engine);
    let topo = lab.path("net.toml").display().to_string();
    for a in ["1", "2"] {
        lab.spawn(
            &format!("node{a}"),
            &["node", "-v", "--topology", &topo, "--addr", a, "--schedule"],
        );
    }
    lab.wait_until("both nodes answer on their control sockets", LIMIT, |lab| {
        lab.ctl(1, &["info"]).is_ok() && lab.ctl(2, &["info"]).is_ok()
    });
    // A link's garbler counters are listed once they move (the ctl refuses the prefix before).
    let dropped = |lab: &Lab, a: u16, b: u16| -> u64 {
        let name = format!("garbler.{b}.dropped_down");
        lab.ctl(a, &["stats", &name])
            .ok()
            .and_then(|text| text.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    lab.wait_until("both ends drop on the scheduled down link", LIMIT, |lab| {
        dropped(lab, 1, 2) > 0 && dropped(lab, 2, 1) > 0
    });
    let neighbours = |lab: &Lab, a: u16| lab.ctl(a, &["neighbours"]).unwrap_or_default();
    let met = |lab: &Lab| neighbours(lab, 1).trim() == "2" && neighbours(lab, 2).trim() == "1";
    let apart =
        |lab: &Lab| neighbours(lab, 1).trim().is_empty() && neighbours(lab, 2).trim().is_empty();
    lab.wait_until("each end declares the other dead", LIMIT, |lab| apart(lab));
    lab.wait_until(
        "the link is back up and the neighbours meet again",
        LIMIT,
        |lab| met(lab),
    );
}
