//! DRP in the simulator engine: whole nodes (DNP framing, checksums, dispatch) on virtual links.
//! Every test checks every node's table against an independent BFS of the true graph.

use control::NodeAddr;
use control::topology::{Faults, Topology, build};
use control::wire::dnp::{self, Flag};
use control::wire::drp;
use dataplane::node::{Node, routes_converged, sim_factory};
use dataplane::sim::{Boot, Sim};
use std::time::Duration;

fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).unwrap()
}

/// Every node booted from the whole file: routes are right from the sequence-zero LSPs.
fn sim(topology: &Topology, seed: u64) -> Sim<Node> {
    Sim::new(topology, seed, sim_factory(topology)).expect("valid topology")
}

/// Every node booted knowing only its own links: routes must be learned by flooding.
fn sim_local_files(topology: &Topology, seed: u64) -> Sim<Node> {
    let full = topology.clone();
    let factory = move |boot: Boot| Node::new(boot.addr, &full.local_view(boot.addr), boot.now);
    Sim::new(topology, seed, factory).expect("valid topology")
}

/// Runs until converged (checked every `every`), returns the virtual time it took.
fn converge(
    sim: &mut Sim<Node>,
    topology: &Topology,
    within: Duration,
    every: Duration,
) -> Duration {
    let start = sim.now();
    sim.set_cond_interval(every);
    let deadline = start + within;
    let at = sim
        .run_until_cond(deadline, |s| routes_converged(s, topology))
        .unwrap_or_else(|| panic!("not converged within {within:?}"));
    at.saturating_since(start)
}

fn converge_and_report(name: &str, topology: &Topology, seed: u64) -> Duration {
    let mut topology = topology.clone();
    for link in &mut topology.links {
        link.faults.delay = Duration::from_millis(2);
    }
    let topology = &topology;
    let mut s = sim_local_files(topology, seed);
    let took = converge(
        &mut s,
        topology,
        Duration::from_secs(60),
        Duration::from_millis(10),
    );
    let totals = s.totals();
    println!(
        "{name}: {} nodes, {} links converged in {:.3}s virtual ({} packets delivered)",
        topology.nodes.len(),
        topology.links.len(),
        took.as_secs_f64(),
        totals.delivered
    );
    took
}

#[test]
fn converges_on_line_ring_grid_and_random_100() {
    converge_and_report("line", &build::line(8, 7001), 1);
    converge_and_report("ring", &build::ring(12, 7001), 2);
    converge_and_report("grid4x4", &build::grid(4, 4, 7001), 3);
    let random = build::random_connected(100, 60, 42, 7001);
    let took = converge_and_report("random100", &random, 4);
    assert!(took < Duration::from_secs(30), "random 100 took {took:?}");
}

#[test]
fn a_cut_link_is_avoided_and_a_healed_one_is_used_again() {
    let topology = build::grid(4, 4, 7001);
    let mut s = sim(&topology, 7);
    converge(
        &mut s,
        &topology,
        Duration::from_secs(30),
        Duration::from_millis(10),
    );
    assert_eq!(s.node(n(1)).unwrap().routes().next_hop(n(2)), Some(n(2)));

    s.link_down(n(1), n(2)).unwrap();
    let cut_at = s.now();
    let took = converge(
        &mut s,
        &topology,
        Duration::from_secs(30),
        Duration::from_millis(10),
    );
    let routes = s.node(n(1)).unwrap().routes().clone();
    assert_eq!(
        routes.next_hop(n(2)),
        Some(n(5)),
        "detour via the row below"
    );
    assert_eq!(routes.route(n(2)).unwrap().hops, 3);
    let dead = topology.network.timers.dead_interval();
    assert!(
        took >= dead - Duration::from_secs(1),
        "rerouted before the dead interval: {took:?}"
    );
    println!(
        "cut at {cut_at}: rerouted after {:.3}s (dead interval {dead:?})",
        took.as_secs_f64()
    );

    s.link_up(n(1), n(2)).unwrap();
    let took = converge(
        &mut s,
        &topology,
        Duration::from_secs(60),
        Duration::from_millis(10),
    );
    assert_eq!(s.node(n(1)).unwrap().routes().next_hop(n(2)), Some(n(2)));
    println!(
        "healed: routes use the link again after {:.3}s (former-neighbour probe every {:?})",
        took.as_secs_f64(),
        topology.network.timers.former_probe_interval
    );
}

#[test]
fn a_node_with_an_incomplete_file_learns_the_network() {
    let full = build::grid(4, 4, 7001);
    // Node 6 knows only itself and its link to node 7.
    let mut partial = full.clone();
    partial
        .nodes
        .retain(|spec| spec.addr == n(6) || spec.addr == n(7));
    partial.links.retain(|l| (l.a, l.b) == (n(6), n(7)));
    let factory = {
        let (full, partial) = (full.clone(), partial.clone());
        move |boot: Boot| {
            let file = if boot.addr == n(6) { &partial } else { &full };
            Node::new(boot.addr, file, boot.now)
        }
    };
    let mut s = Sim::new(&full, 11, factory).unwrap();
    let took = converge(
        &mut s,
        &full,
        Duration::from_secs(60),
        Duration::from_millis(10),
    );
    let learned = s.node(n(6)).unwrap().routes().len();
    assert_eq!(learned, 15);
    println!(
        "node 6 learned {learned} routes from its neighbours in {:.3}s",
        took.as_secs_f64()
    );
}

#[test]
fn flooding_is_reliable_at_30_percent_loss_and_corruption_is_never_acted_upon() {
    let mut topology = build::grid(4, 4, 7001);
    // Three lost hellos in a row are common at 30% loss; this test is about flooding, so the
    // dead interval is long enough that links do not flap.
    topology.network.timers.dead_hellos = 12;
    for link in &mut topology.links {
        link.faults = Faults {
            loss: 0.3,
            corrupt: 0.05,
            ..Faults::default()
        };
    }
    let mut s = sim_local_files(&topology, 13);
    // Besides the bit flips the checksum mostly catches, 5% of copies get body bytes changed
    // with the checksum recomputed: what escapes the checksum must meet the CRC trailer.
    for link in &topology.links {
        s.set_undetected_corruption(link.a, link.b, 0.05)
            .expect("link exists");
    }
    let took = converge(
        &mut s,
        &topology,
        Duration::from_secs(120),
        Duration::from_millis(10),
    );
    // Convergence at the first instant can be luck: stay converged through several hello periods.
    for _ in 0..20 {
        s.run_for(Duration::from_millis(500));
        assert!(routes_converged(&s, &topology), "diverged at {}", s.now());
    }
    let totals = s.totals();
    let rejected: u64 = s
        .nodes()
        .map(|(_, node)| node.stats().rx_error_bad_checksum)
        .sum();
    let escaped = totals.corrupted_escaped;
    let malformed: u64 = s.nodes().map(|(_, node)| node.stats().malformed_body).sum();
    println!(
        "30% loss: converged in {:.3}s; lost {} corrupted {} (checksum caught {rejected}, escaped {escaped}); \
         bodies changed past the checksum {}, refused by the CRC trailer {malformed}",
        took.as_secs_f64(),
        totals.lost,
        totals.corrupted,
        totals.corrupted_undetected
    );
    assert!(totals.lost > 0 && rejected > 0);
    // Every DRP body that got past the checksum changed is refused (BadCrc, counted) rather
    // than acted upon; only copies still on the wire at the end may be missing. An escaped
    // flip may have hit the header alone, which the trailer does not cover.
    let past_checksum = totals.corrupted_undetected + escaped;
    assert!(totals.corrupted_undetected > 0);
    assert!(malformed <= past_checksum, "{malformed} > {past_checksum}");
    assert!(
        malformed + 64 >= totals.corrupted_undetected,
        "{malformed} refused of {} changed",
        totals.corrupted_undetected
    );
    // Copies still on the wire when the run stopped are counted corrupted but not yet rejected.
    assert!(rejected + escaped <= totals.corrupted);
    assert!(rejected + escaped + 64 >= totals.corrupted);
}

#[test]
fn a_thousand_nodes_converge() {
    let mut topology = build::random_connected(1000, 1000, 1000, 7001);
    for link in &mut topology.links {
        link.faults.delay = Duration::from_millis(2);
    }
    let real = std::time::Instant::now();
    let mut s = sim_local_files(&topology, 99);
    let took = converge(
        &mut s,
        &topology,
        Duration::from_secs(120),
        Duration::from_millis(250),
    );
    let real = real.elapsed();
    println!(
        "1000 nodes, {} links: converged in {:.3}s virtual, {:.2}s real, {} events",
        topology.links.len(),
        took.as_secs_f64(),
        real.as_secs_f64(),
        s.engine_stats().events
    );
    assert!(took < Duration::from_secs(60));
}

#[test]
fn nodes_booted_from_the_whole_file_route_after_the_first_hellos() {
    let topology = build::grid(4, 4, 7001);
    let mut s = sim(&topology, 5);
    let took = converge(
        &mut s,
        &topology,
        Duration::from_secs(5),
        Duration::from_millis(1),
    );
    // Links are used once both ends are heard from, so the first hellos are all it takes.
    assert!(took < topology.network.timers.hello_interval, "{took:?}");
}

/// Forged LSPs at the top of the sequence space, whole DNP packets with a good checksum and CRC
/// trailer arriving on a link: for a neighbour of the node they reach and for a node across the
/// network. Within a bounded time every table is the true shortest paths again and stays so,
/// and every node agrees on the victim's sequence, back at the bottom of the space.
#[test]
fn forged_lsps_at_the_top_sequence_cost_a_bounded_disturbance() {
    let mut topology = build::grid(4, 4, 7001);
    for link in &mut topology.links {
        link.faults.delay = Duration::from_millis(2);
    }
    for (victim, seq) in [(n(2), u32::MAX), (n(16), u32::MAX), (n(2), u32::MAX - 1)] {
        let mut s = sim(&topology, 21);
        converge(
            &mut s,
            &topology,
            Duration::from_secs(10),
            Duration::from_millis(10),
        );
        s.run_for(Duration::from_secs(3));
        // Node 1 hears it from node 5; the forgery says the victim has no links.
        let body = drp::lsp(victim, seq, &[]).unwrap();
        let forged = dnp::frame(n(1).into(), victim.into(), Flag::Drp, &body);
        let now = s.now();
        s.node_mut(n(1))
            .unwrap()
            .handle_datagram(now, n(5), &forged);
        s.run_for(Duration::from_secs(30));
        for _ in 0..20 {
            s.run_for(Duration::from_millis(500));
            assert!(
                routes_converged(&s, &topology),
                "{victim} at {seq:#x}: diverged at {}",
                s.now()
            );
        }
        let own = s.node(victim).unwrap().drp().sequence();
        assert!(
            (1..10).contains(&own),
            "{victim} at {seq:#x}: sequence {own:#x}"
        );
        for (addr, node) in s.nodes() {
            let held = node.drp().lsdb().get(victim).map(|e| e.sequence);
            assert_eq!(held, Some(own), "{victim} at {seq:#x}, held by {addr}");
        }
        let flushes: u64 = s
            .nodes()
            .map(|(_, node)| node.drp().stats().flushes_removed)
            .sum();
        println!(
            "LSP of {victim} forged at {seq:#x}: routes right again, sequence {own}, {flushes} flushes removed"
        );
    }
}
