//! DRP scenarios on a tiny in-test network: every node a `Drp`, perfect in-memory links with a
//! fixed delay and optional seeded loss, virtual time advanced to the next packet or timer.
//! Routes are checked against an independent oracle: for source `s` and destination `d`, the
//! lowest-addressed neighbour of `s` one hop closer to `d` (distances by BFS from `d` over the
//! links that really carry packets).

use control::addr::NodeAddr;
use control::drp::{Drp, DrpConfig, DrpEvent};
use control::rng::Rng;
use control::time::Instant;
use control::topology::{Faults, LinkSpec, NetworkOptions, NodeSpec, Topology};
use control::wire::dnp::{Flag, Packet};
use control::wire::drp::DrpMessage;
use control::{Addr, Transmit};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).unwrap()
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

// ---- topologies, built by hand ----

fn topology(addrs: &[u16], links: &[(u16, u16)]) -> Topology {
    let mut nodes: Vec<NodeSpec> = addrs
        .iter()
        .map(|&a| NodeSpec {
            addr: n(a),
            socket: format!("127.0.0.1:{}", 20000 + a).parse().unwrap(),
        })
        .collect();
    nodes.sort_by_key(|s| s.addr);
    let mut links: Vec<LinkSpec> = links
        .iter()
        .map(|&(x, y)| LinkSpec {
            a: n(x.min(y)),
            b: n(x.max(y)),
            faults: Faults::default(),
        })
        .collect();
    links.sort_by_key(|l| (l.a, l.b));
    Topology {
        network: NetworkOptions::default(),
        nodes,
        links,
        schedule: Vec::new(),
    }
}

/// Addresses scrambled (a permutation of 1..=count) so that address order is not the order in
/// which a search meets nodes, and the tie-break is really exercised.
fn scrambled(i: usize, count: usize) -> u16 {
    let k = (count / 3 + 1..count).find(|&k| gcd(k, count) == 1);
    (1 + (i * k.unwrap_or(1)) % count) as u16
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn line(count: usize) -> Topology {
    let a: Vec<u16> = (0..count).map(|i| scrambled(i, count)).collect();
    let links: Vec<(u16, u16)> = (1..count).map(|i| (a[i - 1], a[i])).collect();
    topology(&a, &links)
}

fn ring(count: usize) -> Topology {
    let a: Vec<u16> = (0..count).map(|i| scrambled(i, count)).collect();
    let links: Vec<(u16, u16)> = (0..count).map(|i| (a[i], a[(i + 1) % count])).collect();
    topology(&a, &links)
}

fn grid(w: usize, h: usize) -> Topology {
    let a = |r: usize, c: usize| scrambled(r * w + c, w * h);
    let mut links = Vec::new();
    for r in 0..h {
        for c in 0..w {
            if c + 1 < w {
                links.push((a(r, c), a(r, c + 1)));
            }
            if r + 1 < h {
                links.push((a(r, c), a(r + 1, c)));
            }
        }
    }
    let addrs: Vec<u16> = (0..w * h).map(|i| scrambled(i, w * h)).collect();
    topology(&addrs, &links)
}

// ---- the network ----

type Key = (NodeAddr, NodeAddr);

fn key(x: NodeAddr, y: NodeAddr) -> Key {
    (x.min(y), x.max(y))
}

struct Net {
    now: Instant,
    mtu: usize,
    nodes: BTreeMap<NodeAddr, Drp>,
    /// Physical links (what can carry packets), minus `cut`.
    links: BTreeSet<Key>,
    cut: BTreeSet<Key>,
    delay: Duration,
    loss: f64,
    rng: Rng,
    /// (arrival, order) -> (from, to, packet)
    queue: BTreeMap<(Instant, u64), (NodeAddr, NodeAddr, Vec<u8>)>,
    order: u64,
    events: BTreeMap<NodeAddr, Vec<DrpEvent>>,
    /// Nodes that left: nobody may route to them.
    gone: BTreeSet<NodeAddr>,
    packets: u64,
    lost: u64,
}

impl Net {
    /// Every node boots at time zero from `topology` (the same file for all).
    fn new(topology: &Topology) -> Net {
        let mut net = Net::empty(topology);
        for s in &topology.nodes {
            net.boot(s.addr, topology);
        }
        net
    }

    /// The links of `topology`, no nodes yet.
    fn empty(topology: &Topology) -> Net {
        Net {
            now: Instant::ZERO,
            mtu: topology.network.mtu,
            nodes: BTreeMap::new(),
            links: topology.links.iter().map(|l| key(l.a, l.b)).collect(),
            cut: BTreeSet::new(),
            delay: ms(10),
            loss: 0.0,
            rng: Rng::new(0x5eed),
            queue: BTreeMap::new(),
            order: 0,
            events: BTreeMap::new(),
            gone: BTreeSet::new(),
            packets: 0,
            lost: 0,
        }
    }

    /// Starts (or restarts) `addr` now, with its own view of the network.
    fn boot(&mut self, addr: NodeAddr, file: &Topology) {
        self.nodes.insert(addr, Drp::new(addr, file, self.now));
    }

    fn carries(&self, x: NodeAddr, y: NodeAddr) -> bool {
        let k = key(x, y);
        self.links.contains(&k) && !self.cut.contains(&k)
    }

    fn drain(&mut self, addr: NodeAddr) {
        let Some(node) = self.nodes.get_mut(&addr) else {
            return;
        };
        let mut out = Vec::new();
        while let Some(t) = node.poll_transmit() {
            out.push(t);
        }
        let evs = self.events.entry(addr).or_default();
        while let Some(e) = node.poll_event() {
            evs.push(e);
        }
        for Transmit { to, packet } in out {
            // The wire contract: a sealed DNP packet from me to the neighbour.
            let p = Packet::parse(&packet, self.mtu).expect("DRP sends valid DNP packets");
            assert_eq!(p.flag(), Flag::Drp);
            assert_eq!(p.dst(), Addr::Node(to));
            assert_eq!(p.src(), Addr::Node(addr));
            self.packets += 1;
            if !self.carries(addr, to) {
                continue;
            }
            if self.rng.chance(self.loss) {
                self.lost += 1;
                continue;
            }
            self.order += 1;
            self.queue
                .insert((self.now + self.delay, self.order), (addr, to, packet));
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let timers = self.nodes.values().filter_map(Drp::poll_timeout).min();
        let packets = self.queue.first_key_value().map(|(k, _)| k.0);
        timers.into_iter().chain(packets).min()
    }

    /// Advances to the next packet or timer if it is no later than `until`.
    fn step(&mut self, until: Instant) -> bool {
        let Some(t) = self.next_time().filter(|&t| t <= until) else {
            return false;
        };
        self.now = self.now.max(t);
        let now = self.now;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (from, to, packet) = entry.remove();
            let Some(node) = self.nodes.get_mut(&to) else {
                continue;
            };
            let p = Packet::parse(&packet, self.mtu).unwrap();
            let msg = DrpMessage::parse(p.body()).unwrap();
            node.handle_packet(now, from, msg);
            self.drain(to);
        }
        let due: Vec<NodeAddr> = self
            .nodes
            .iter()
            .filter(|(_, d)| d.poll_timeout().is_some_and(|t| t <= now))
            .map(|(&a, _)| a)
            .collect();
        for a in due {
            self.nodes.get_mut(&a).unwrap().handle_timeout(now);
            self.drain(a);
        }
        true
    }

    /// A body arriving at `at` over the link from `via` (a forger on that link, or a neighbour
    /// flooding what a forger gave it).
    fn inject(&mut self, at: NodeAddr, via: NodeAddr, body: &[u8]) {
        let msg = DrpMessage::parse(body).expect("a well-formed forgery");
        let now = self.now;
        self.nodes
            .get_mut(&at)
            .unwrap()
            .handle_packet(now, via, msg);
        self.drain(at);
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
        self.now = until;
    }

    /// Runs until every node's routes match the oracle; the time it took, or `None` by `limit`.
    fn converge(&mut self, limit: Duration) -> Option<Duration> {
        let start = self.now;
        let until = start + limit;
        let expected = self.oracle();
        loop {
            if self.mismatches(&expected).is_empty() {
                return Some(self.now.saturating_since(start));
            }
            if !self.step(until) {
                return None;
            }
        }
    }

    /// Expected next hop for every (source, destination) among running nodes; `None` if
    /// unreachable. Distances by BFS from each destination over links that carry packets.
    fn oracle(&self) -> BTreeMap<Key, Option<NodeAddr>> {
        let alive: Vec<NodeAddr> = self.nodes.keys().copied().collect();
        let mut adj: BTreeMap<NodeAddr, Vec<NodeAddr>> = BTreeMap::new();
        for &(x, y) in &self.links {
            if self.carries(x, y) && self.nodes.contains_key(&x) && self.nodes.contains_key(&y) {
                adj.entry(x).or_default().push(y);
                adj.entry(y).or_default().push(x);
            }
        }
        let mut out = BTreeMap::new();
        for &d in &alive {
            let mut dist = BTreeMap::from([(d, 0u32)]);
            let mut q = VecDeque::from([d]);
            while let Some(u) = q.pop_front() {
                for &v in adj.get(&u).into_iter().flatten() {
                    if !dist.contains_key(&v) {
                        dist.insert(v, dist[&u] + 1);
                        q.push_back(v);
                    }
                }
            }
            for &s in &alive {
                if s == d {
                    continue;
                }
                let hop = dist.get(&s).and_then(|&ds| {
                    adj[&s]
                        .iter()
                        .copied()
                        .filter(|v| dist.get(v) == Some(&(ds - 1)))
                        .min()
                });
                out.insert((s, d), hop);
            }
        }
        for &g in &self.gone {
            for &s in &alive {
                out.insert((s, g), None);
            }
        }
        out
    }

    fn mismatches(&self, expected: &BTreeMap<Key, Option<NodeAddr>>) -> Vec<String> {
        let mut bad = Vec::new();
        for (&(s, d), &hop) in expected {
            let got = self.nodes[&s].routes().next_hop(d);
            if got != hop {
                bad.push(format!("{s}->{d}: got {got:?}, want {hop:?}"));
            }
        }
        bad
    }

    fn assert_converged(&self) {
        let bad = self.mismatches(&self.oracle());
        assert!(
            bad.is_empty(),
            "{} wrong routes: {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }

    fn total<F: Fn(&control::drp::DrpStats) -> u64>(&self, f: F) -> u64 {
        self.nodes.values().map(|d| f(d.stats())).sum()
    }

    fn report(&self, label: &str, took: Duration) {
        println!(
            "{label}: {} nodes converged in {:.3}s; {} packets ({} lost), {} LSPs originated, {} LSPs sent, {} retransmissions, {} SPF runs",
            self.nodes.len(),
            took.as_secs_f64(),
            self.packets,
            self.lost,
            self.total(|s| s.lsps_originated),
            self.total(|s| s.lsps_sent),
            self.total(|s| s.retransmissions),
            self.total(|s| s.spf_runs),
        );
    }
}

// ---- scenarios ----

#[test]
fn converges_on_line_ring_and_grid() {
    for (shape, topo) in [
        ("line of 7", line(7)),
        ("ring of 9", ring(9)),
        ("4x4 grid", grid(4, 4)),
    ] {
        for whole_file in [true, false] {
            converges(shape, &topo, whole_file);
        }
    }
}

/// With the whole file, routes are right from the first hellos (the sequence-zero LSPs) and
/// flooding confirms them; with only its own links in each node's file, routes come from
/// flooding alone.
fn converges(shape: &str, topo: &Topology, whole_file: bool) {
    {
        let label = format!(
            "{shape}, {}",
            if whole_file {
                "whole file"
            } else {
                "own links only"
            }
        );
        let label = label.as_str();
        let mut net = Net::empty(topo);
        for s in &topo.nodes {
            let file = if whole_file {
                topo.clone()
            } else {
                own_links(topo, s.addr)
            };
            net.boot(s.addr, &file);
        }
        let took = net.converge(secs(5)).unwrap_or_else(|| {
            panic!("{label}: {:?}", net.mismatches(&net.oracle()));
        });
        net.report(label, took);
        // Once flooding is done the network is quiet: hellos only, no LSP re-sent, routes kept.
        net.run_for(secs(2));
        let lsps = net.total(|s| s.lsps_sent);
        let published = net.total(|s| s.routes_published);
        net.run_for(secs(5));
        net.assert_converged();
        assert_eq!(
            net.total(|s| s.lsps_sent),
            lsps,
            "{label}: LSPs still flowing"
        );
        assert_eq!(net.total(|s| s.routes_published), published);
        // Every node knows every node, with a real (non-zero) sequence.
        for d in net.nodes.values() {
            assert_eq!(d.known_nodes().len(), topo.nodes.len());
            assert!(d.lsdb().iter().all(|(_, e)| e.sequence >= 1));
        }
    }
}

/// The file a node would have if it knew only itself and its neighbours.
fn own_links(topo: &Topology, me: NodeAddr) -> Topology {
    let mut addrs = vec![me.get()];
    addrs.extend(topo.neighbours(me).iter().map(|a| a.get()));
    let links: Vec<(u16, u16)> = topo
        .neighbours(me)
        .iter()
        .map(|a| (me.get(), a.get()))
        .collect();
    let mut t = topology(&addrs, &links);
    t.network = topo.network.clone();
    t
}

#[test]
fn a_cut_link_is_avoided_and_a_healed_one_comes_back() {
    let topo = grid(4, 4);
    let mut net = Net::new(&topo);
    net.converge(secs(5)).expect("converges");
    // Cut a link in the middle of the grid: rows 1-2, column 1.
    let (x, y) = (n(scrambled(5, 16)), n(scrambled(9, 16)));
    assert!(net.links.contains(&key(x, y)));
    let before = net.nodes[&x].routes();
    net.cut.insert(key(x, y));
    // Nothing changes before the dead interval (3 s) has passed.
    net.run_for(ms(2500));
    assert!(net.nodes[&x].neighbours().contains(&y));
    let took = net.converge(secs(3)).expect("routes avoid the cut link");
    println!(
        "cut {x}-{y}: routes avoided it {:.3}s after 2.5s",
        took.as_secs_f64()
    );
    assert!(!net.nodes[&x].neighbours().contains(&y));
    assert!(net.events[&x].contains(&DrpEvent::NeighbourDown(y)));
    assert!(net.events[&y].contains(&DrpEvent::NeighbourDown(x)));
    assert_ne!(net.nodes[&x].routes(), before);
    net.assert_converged();

    // Heal: former-neighbour probes (every 5 s) find the link again.
    net.cut.remove(&key(x, y));
    let took = net.converge(secs(7)).expect("routes use the healed link");
    println!(
        "healed {x}-{y}: routes back after {:.3}s",
        took.as_secs_f64()
    );
    assert!(net.nodes[&x].neighbours().contains(&y));
    assert_eq!(*net.nodes[&x].routes(), *before);
}

#[test]
fn a_node_with_an_incomplete_file_learns_the_network() {
    // A 4x4 grid and a newcomer 99 hanging off one grid node. The newcomer's file holds only
    // itself and that neighbour.
    let g = grid(4, 4);
    let anchor = g.nodes[3].addr.get();
    let mut addrs: Vec<u16> = g.nodes.iter().map(|s| s.addr.get()).collect();
    addrs.push(99);
    let mut links: Vec<(u16, u16)> = g.links.iter().map(|l| (l.a.get(), l.b.get())).collect();
    links.push((anchor, 99));
    let full = topology(&addrs, &links);
    let partial = topology(&[anchor, 99], &[(anchor, 99)]);

    // Case 1: everyone else's file has the newcomer. Case 2: nobody else's file has it.
    for (label, others) in [("others know it", &full), ("others do not", &g)] {
        let mut net = Net::empty(&full);
        for s in &g.nodes {
            net.boot(s.addr, others);
        }
        net.boot(n(99), &partial);
        assert_eq!(net.nodes[&n(99)].known_nodes().len(), 2);
        let took = net.converge(secs(5)).unwrap_or_else(|| {
            panic!("{label}: {:?}", net.mismatches(&net.oracle()));
        });
        net.report(&format!("incomplete file ({label})"), took);
        assert_eq!(net.nodes[&n(99)].known_nodes().len(), 17);
        assert_eq!(net.nodes[&n(99)].routes().len(), 16);
        for s in &g.nodes {
            assert!(net.nodes[&s.addr].routes().next_hop(n(99)).is_some());
        }
    }
}

#[test]
fn flooding_converges_at_30_percent_loss() {
    let mut topo = grid(4, 4);
    // This test is about reliable flooding, not failure detection: with 3 hellos per dead
    // interval, 30% loss would declare a link dead every second or so somewhere in the grid.
    topo.network.timers.dead_hellos = 12;
    // Each node's file holds only its own links, so every route must come from flooding.
    let mut net = Net::empty(&topo);
    for s in &topo.nodes {
        net.boot(s.addr, &own_links(&topo, s.addr));
    }
    net.loss = 0.3;
    let took = net.converge(secs(30)).unwrap_or_else(|| {
        panic!("{:?}", net.mismatches(&net.oracle()));
    });
    net.report("4x4 grid at 30% loss", took);
    assert!(net.lost > 0);
    assert!(net.total(|s| s.retransmissions) > 0);
    // Let retransmissions finish: every database then holds the same sequence per originator.
    net.run_for(secs(20));
    net.assert_converged();
    let reference: Vec<(NodeAddr, u32)> = net.nodes[&n(1)]
        .lsdb()
        .iter()
        .map(|(o, e)| (o, e.sequence))
        .collect();
    for d in net.nodes.values() {
        let mine: Vec<(NodeAddr, u32)> = d.lsdb().iter().map(|(o, e)| (o, e.sequence)).collect();
        assert_eq!(mine, reference, "database of {}", d.me());
        assert_eq!(d.neighbours().len(), topo.neighbours(d.me()).len());
    }
}

#[test]
fn terminate_removes_a_node_at_once() {
    let topo = grid(4, 4);
    let mut net = Net::new(&topo);
    net.converge(secs(5)).expect("converges");
    let t = n(scrambled(6, 16));
    let nbrs = net.nodes[&t].neighbours();
    assert_eq!(nbrs.len(), 4);
    net.nodes.get_mut(&t).unwrap().terminate(net.now);
    net.drain(t);
    net.nodes.remove(&t);
    net.gone.insert(t);
    // Well within the dead interval (3 s): one link delay for the terminates, then flooding.
    let took = net.converge(ms(500)).unwrap_or_else(|| {
        panic!("{:?}", net.mismatches(&net.oracle()));
    });
    println!(
        "terminate of {t}: routes without it after {:.3}s",
        took.as_secs_f64()
    );
    for x in nbrs {
        let d = &net.nodes[&x];
        assert!(!d.neighbours().contains(&t));
        assert_eq!(d.stats().terminates_recv, 1);
        assert!(net.events[&x].contains(&DrpEvent::NeighbourDown(t)));
    }
    for d in net.nodes.values() {
        assert_eq!(
            d.routes().next_hop(t),
            None,
            "{} still routes to {t}",
            d.me()
        );
    }
}

#[test]
fn a_restarted_node_with_a_lower_sequence_converges() {
    // Quick: back before the dead interval, so the neighbours never notice (only its LSP going
    // backwards shows it). Slow: the neighbours declared it dead meanwhile.
    for (label, down_for) in [("quick", ms(500)), ("slow", secs(5))] {
        let topo = ring(8);
        let mut net = Net::new(&topo);
        net.converge(secs(5)).expect("converges");
        let r = n(scrambled(2, 8));
        // Raise r's sequence: flap one of its links a few times.
        let other = net.nodes[&r].neighbours()[0];
        for _ in 0..3 {
            net.cut.insert(key(r, other));
            net.converge(secs(5)).expect("converges while cut");
            net.cut.remove(&key(r, other));
            net.converge(secs(7)).expect("converges when healed");
        }
        let old_seq = net.nodes[&r].sequence();
        assert!(old_seq >= 4, "{old_seq}");
        let others_up = |net: &Net| -> u64 {
            net.nodes
                .iter()
                .filter(|(a, _)| **a != r)
                .map(|(_, d)| d.stats().neighbours_up)
                .sum()
        };
        let ups = others_up(&net);
        // Crash (no terminate) and come back with a fresh instance.
        net.nodes.remove(&r);
        net.run_for(down_for);
        net.boot(r, &topo);
        assert_eq!(net.nodes[&r].sequence(), 0);
        let took = net.converge(secs(5)).expect("converges after restart");
        println!(
            "{label} restart of {r} (sequence was {old_seq}): routes right after {:.3}s",
            took.as_secs_f64()
        );
        // Let flooding settle, then every database agrees on r's new, higher sequence.
        net.run_for(secs(3));
        net.assert_converged();
        let d = &net.nodes[&r];
        assert!(
            d.sequence() > old_seq,
            "{label}: {} <= {old_seq}",
            d.sequence()
        );
        assert!(d.stats().sequence_jumps >= 1);
        assert!(d.lsdb().iter().all(|(_, e)| e.sequence >= 1));
        assert_eq!(d.known_nodes().len(), 8);
        for x in net.nodes.values() {
            assert_eq!(
                x.lsdb().get(r).unwrap().sequence,
                d.sequence(),
                "at {}",
                x.me()
            );
        }
        assert_eq!(d.stats().neighbours_up, 2);
        if label == "quick" {
            // The neighbours never saw it go; one of them noticed the restart from its LSP.
            assert_eq!(others_up(&net), ups);
            assert!(net.total(|s| s.neighbour_restarts) >= 1);
        } else {
            assert_eq!(others_up(&net), ups + 2);
        }
    }
}

#[test]
fn an_oversized_lsp_is_cut_to_the_mtu() {
    // A star of 14 leaves under an MTU that fits 10 neighbours per LSP:
    // (44 - 10 header - 10 LSP fields - 4 trailer) / 2.
    let addrs: Vec<u16> = (1..=15).collect();
    let links: Vec<(u16, u16)> = (2..=15).map(|l| (1, l)).collect();
    let mut topo = topology(&addrs, &links);
    topo.network.mtu = 44;
    assert_eq!(control::wire::drp::max_lsp_neighbours(44), 10);
    let mut net = Net::new(&topo);
    net.run_for(secs(5));
    let hub = &net.nodes[&n(1)];
    assert!(hub.stats().lsps_truncated > 0);
    assert_eq!(hub.lsdb().get(n(1)).unwrap().neighbours.len(), 10);
    // The hub routes by its live neighbours, so it still reaches every leaf.
    assert_eq!(hub.routes().len(), 14);
    // A leaf reaches the hub and the leaves the hub's LSP lists.
    assert_eq!(net.nodes[&n(2)].routes().len(), 10);
}

// ---- malformed and unexpected input ----

fn lsp_bytes(orig: u16, seq: u32, nbrs: &[u16]) -> Vec<u8> {
    let mut b = vec![0, 3];
    b.extend_from_slice(&orig.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&(nbrs.len() as u16).to_be_bytes());
    for v in nbrs {
        b.extend_from_slice(&v.to_be_bytes());
    }
    control::wire::trailer::push(&mut b);
    b
}

#[test]
fn bad_and_unexpected_input_is_counted_not_fatal() {
    let topo = line(3);
    let me = topo.nodes[0].addr;
    let nb = topo.neighbours(me)[0];
    let mut d = Drp::new(me, &topo, Instant::ZERO);
    d.handle_timeout(Instant::ZERO);
    while d.poll_transmit().is_some() {}
    let t = Instant::from_millis(10);

    // Ack for an LSP nobody has: ignored.
    d.handle_packet(
        t,
        nb,
        DrpMessage::LspAck {
            originator: 77,
            sequence: 5,
        },
    );
    assert_eq!(d.stats().ignored_messages, 1);
    // Ack with originator 0: bad.
    d.handle_packet(
        t,
        nb,
        DrpMessage::LspAck {
            originator: 0,
            sequence: 5,
        },
    );
    assert_eq!(d.stats().bad_messages, 1);
    // LSPs with originator 0, a neighbour 0, a neighbour in the group range: bad, not acked.
    let acks = d.stats().acks_sent;
    for body in [
        lsp_bytes(0, 3, &[1]),
        lsp_bytes(5, 3, &[0]),
        lsp_bytes(5, 3, &[2, 0xF001]),
    ] {
        d.handle_packet(t, nb, DrpMessage::parse(&body).unwrap());
    }
    assert_eq!(d.stats().bad_messages, 4);
    assert_eq!(d.stats().acks_sent, acks);
    assert!(d.lsdb().get(n(5)).is_none() || d.lsdb().get(n(5)).unwrap().sequence == 0);
    // A packet claiming to come from ourselves: bad.
    d.handle_packet(t, me, DrpMessage::Hello);
    assert_eq!(d.stats().bad_messages, 5);
    // Terminate from a node that is not a live neighbour: ignored.
    d.handle_packet(t, n(200), DrpMessage::Terminate);
    assert_eq!(d.stats().ignored_messages, 2);
    assert!(d.neighbours().iter().all(|&x| x == nb));
    // A good LSP from an unknown node is stored, acknowledged, and routes stay sane.
    let body = lsp_bytes(300, 1, &[nb.get()]);
    d.handle_packet(t, nb, DrpMessage::parse(&body).unwrap());
    assert_eq!(d.lsdb().get(n(300)).unwrap().sequence, 1);
    assert_eq!(d.stats().acks_sent, acks + 1);
    // Time moves on without a panic, and the first hellos went out.
    d.handle_timeout(Instant::from_millis(2000));
    assert!(d.stats().hellos_sent >= 1);
}

#[test]
fn a_terminate_takes_effect_on_the_packet() {
    let topo = line(3);
    let me = topo.nodes[0].addr;
    let nb = topo.neighbours(me)[0];
    let mut d = Drp::new(me, &topo, Instant::ZERO);
    d.handle_timeout(Instant::ZERO);
    let t = Instant::from_millis(10);
    d.handle_packet(t, nb, DrpMessage::Hello);
    d.handle_timeout(t);
    assert_eq!(d.neighbours(), vec![nb]);
    assert_eq!(d.routes().next_hop(nb), Some(nb));
    while d.poll_event().is_some() {}
    let t = Instant::from_millis(20);
    d.handle_packet(t, nb, DrpMessage::Terminate);
    assert!(d.neighbours().is_empty());
    assert_eq!(d.poll_event(), Some(DrpEvent::NeighbourDown(nb)));
    // Recomputing routes is due at this very instant.
    assert_eq!(d.poll_timeout(), Some(t));
    d.handle_timeout(t);
    assert_eq!(d.poll_event(), Some(DrpEvent::RoutesChanged));
    assert!(d.routes().is_empty());
}

#[test]
fn same_input_same_output() {
    let run = || {
        let mut net = Net::new(&grid(3, 3));
        net.loss = 0.2;
        net.run_for(secs(10));
        (net.packets, net.lost, net.total(|s| s.lsps_sent))
    };
    assert_eq!(run(), run());
}

/// The scale the simulator needs: a thousand nodes in one thread. Run with `--ignored`; it
/// prints the wall time (the assertions are on outcomes only).
#[test]
#[ignore]
fn a_thousand_nodes_converge() {
    let topo = grid(32, 32);
    let wall = std::time::Instant::now();
    let mut net = Net::new(&topo);
    // Routes come from the file at the first hellos; flooding then replaces every
    // sequence-zero entry with the real LSP.
    let took = net.converge(secs(1)).expect("routes from the file");
    net.report("32x32 grid, routes", took);
    net.run_for(secs(3));
    for d in net.nodes.values() {
        assert!(d.lsdb().iter().all(|(_, e)| e.sequence >= 1), "{}", d.me());
    }
    net.report("32x32 grid, databases full after 3s", took);
    let flooded = wall.elapsed();
    // A cut in the middle: detected after the dead interval, flooded to all 1024 nodes.
    let (x, y) = (
        n(scrambled(16 * 32 + 16, 1024)),
        n(scrambled(16 * 32 + 17, 1024)),
    );
    net.cut.insert(key(x, y));
    let packets = net.packets;
    let took = net.converge(secs(6)).expect("converges around the cut");
    println!(
        "32x32 grid: cut {x}-{y} routed around after {:.3}s, {} packets",
        took.as_secs_f64(),
        net.packets - packets
    );
    println!(
        "32x32 grid: wall {:.2}s to boot and flood, {:.2}s in all",
        flooded.as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
}

// ---- hostile input ----

/// The whole sequence space is the forger's: an LSP at (or near) `u32::MAX` for the node next
/// to where it is injected, or for one across the network, once made its originator jump to the
/// top and bounce its real LSP off the forged copy for ever. Now it costs a bounded disturbance:
/// within a bounded time every route is the true shortest path again and stays so, the
/// originator's sequence is back below the forged one, and flooding falls quiet.
#[test]
fn a_forged_lsp_at_the_top_of_the_sequence_space_costs_a_bounded_disturbance() {
    for (victim_index, seq) in [
        (1, u32::MAX),
        (1, u32::MAX - 1),
        (4, u32::MAX),
        (4, u32::MAX - 2),
    ] {
        let topo = ring(8);
        let mut net = Net::new(&topo);
        net.converge(secs(5)).expect("converges");
        net.run_for(secs(3));
        let at = n(scrambled(0, 8));
        let via = n(scrambled(7, 8));
        let victim = n(scrambled(victim_index, 8));
        let label = format!("LSP of {victim} at {seq:#x} forged at {at}");
        // The forgery says the victim has no links: whoever believes it cannot reach it.
        net.inject(at, via, &lsp_bytes(victim.get(), seq, &[]));
        net.run_for(secs(30));
        net.assert_converged();
        let lsps = net.total(|s| s.lsps_sent);
        for _ in 0..30 {
            net.run_for(secs(1));
            net.assert_converged();
        }
        assert_eq!(
            net.total(|s| s.lsps_sent),
            lsps,
            "{label}: LSPs still flowing"
        );
        let agreed = |net: &Net| {
            let own = net.nodes[&victim].sequence();
            for x in net.nodes.values() {
                let held = x.lsdb().get(victim).map(|e| e.sequence);
                assert_eq!(held, Some(own), "{label} at {}", x.me());
            }
            own
        };
        let own = agreed(&net);
        // Forged at the top, or one below: the victim flushed and started again from 1.
        // Further below it jumped past the forgery; its next origination reaches the top.
        assert!(own < 10 || own == seq + 1, "{label}: sequence {own:#x}");
        if own < 10 {
            let removed = net.total(|s| s.flushes_removed);
            assert!(removed >= 8, "{label}: {removed} flushes removed");
        }
        println!("{label}: routes right and quiet again, sequence {own:#x}");
        // The victim's next originations (a link cut and healed) leave it low in the space.
        let other = net.nodes[&victim].neighbours()[0];
        net.cut.insert(key(victim, other));
        net.converge(secs(30)).expect("converges while cut");
        net.cut.remove(&key(victim, other));
        net.converge(secs(30)).expect("converges when healed");
        // Routes stay right while a flush is held (its links come from its neighbours), so wait
        // out the hold that the flap's origination at the top may have started.
        net.run_for(DrpConfig::default().flush_hold + secs(5));
        net.assert_converged();
        let own = agreed(&net);
        assert!((1..10).contains(&own), "{label}: sequence {own:#x}");
        println!("{label}: after a link flap, sequence {own}");
    }
}

/// A forged LSP just below the top of the sequence space, saying the victim has no links,
/// forces the victim to flush (it cannot originate past it). A flush once kept the links its
/// holder last knew, which were the forged ones wherever the forgery arrived first: the
/// victim stayed cut off for the whole flush hold (10 s, longer than a sender's 5 s feedback
/// limit). A flush's links are now what the victim's neighbours say of it, so the routes are
/// right again as soon as the flush is flooded, and stay right while it is held.
#[test]
fn a_flush_does_not_keep_a_forged_link_state() {
    for (victim_index, at_index) in [(1, 0), (3, 0), (1, 1)] {
        let topo = line(6);
        let mut net = Net::new(&topo);
        net.converge(secs(5)).expect("converges");
        net.run_for(secs(3));
        let victim = n(scrambled(victim_index, 6));
        let at = n(scrambled(at_index, 6));
        let via = if at == victim {
            net.nodes[&victim].neighbours()[0]
        } else {
            net.nodes[&at].neighbours()[0]
        };
        let label = format!("LSP of {victim} at the top - 1, no links, forged at {at}");
        net.inject(at, via, &lsp_bytes(victim.get(), u32::MAX - 1, &[]));
        // Flooding the forgery and the victim's flush takes a few retransmit intervals at most.
        net.run_for(secs(2));
        // Right through the flush hold (its end costs a retransmit interval: the originator's
        // first LSP of its new life waits behind the flush its neighbours still hold).
        for _ in 0..7 {
            net.run_for(secs(1));
            net.assert_converged();
        }
        net.run_for(DrpConfig::default().flush_hold);
        net.converge(secs(3))
            .unwrap_or_else(|| panic!("{label}: routes wrong after the flush hold"));
        assert!(
            net.total(|s| s.flushes_removed) >= 6,
            "{label}: the victim did not flush"
        );
        println!("{label}: routes right 2 s later, through the flush hold and after");
    }
}

/// Forged LSPs from every originator the address space allows (every node address the network
/// does not use) fill each database up to its capacity and no further; established entries
/// stay, and routing keeps converging to the true shortest paths, also after a link is cut.
#[test]
fn a_flood_of_forged_originators_is_capped_and_routing_keeps_working() {
    let capacity = DrpConfig::default().lsdb_capacity;
    let topo = ring(6);
    let mut net = Net::new(&topo);
    net.converge(secs(5)).expect("converges");
    net.run_for(secs(3));
    let at = n(scrambled(0, 6));
    let via = n(scrambled(5, 6));
    let before: Vec<(usize, usize)> = net
        .nodes
        .values()
        .map(|d| (d.lsdb().len(), d.lsdb().approx_bytes()))
        .collect();
    let forged: Vec<u16> = (1..0xF000)
        .filter(|&a| !net.nodes.contains_key(&n(a)))
        .collect();
    for &a in &forged {
        net.inject(at, via, &lsp_bytes(a, 1, &[at.get()]));
    }
    net.run_for(secs(10));
    for (d, (len, bytes)) in net.nodes.values().zip(&before) {
        println!(
            "node {}: link-state database {len} entries (~{bytes} bytes) before {} forged originators, {} entries (~{} bytes) after, {} refused",
            d.me(),
            forged.len(),
            d.lsdb().len(),
            d.lsdb().approx_bytes(),
            d.stats().lsps_refused_full,
        );
        assert!(d.lsdb().len() <= capacity, "{}: {}", d.me(), d.lsdb().len());
        for s in &topo.nodes {
            assert!(d.lsdb().get(s.addr).is_some_and(|e| e.sequence >= 1));
        }
    }
    assert_eq!(net.nodes[&at].lsdb().len(), capacity);
    assert!(net.nodes[&at].stats().lsps_refused_full >= (forged.len() - capacity) as u64);
    net.assert_converged();
    let x = n(scrambled(2, 6));
    let y = n(scrambled(3, 6));
    net.cut.insert(key(x, y));
    net.converge(secs(10))
        .expect("routes around a cut during the flood");
}

/// Nothing refreshes an LSP whose originator does not exist: it ages out of every database
/// after the maximum age, while the real nodes' LSPs, refreshed by their originators, stay.
#[test]
fn an_lsp_nobody_refreshes_ages_out() {
    let topo = ring(8);
    let mut net = Net::new(&topo);
    net.converge(secs(5)).expect("converges");
    let at = n(scrambled(0, 8));
    let via = n(scrambled(7, 8));
    let ghost = n(0x4000);
    net.inject(at, via, &lsp_bytes(ghost.get(), 7, &[at.get()]));
    net.run_for(secs(5));
    assert!(net.nodes.values().all(|d| d.lsdb().get(ghost).is_some()));
    net.run_for(secs(2 * 3600));
    for d in net.nodes.values() {
        assert!(
            d.lsdb().get(ghost).is_none(),
            "{} still holds the ghost",
            d.me()
        );
        assert_eq!(d.stats().lsps_aged_out, 1, "{}", d.me());
        assert_eq!(d.known_nodes().len(), 8);
        assert!(d.sequence() >= 2, "{}: no refresh", d.me());
    }
    net.assert_converged();
}

/// Hellos from every node address (a forger on a link the engine maps to any source, or an
/// engine that learns unknown peers) fill the neighbour table up to its capacity and no
/// further; the file's neighbours stay live and routing through them keeps working.
#[test]
fn a_flood_of_forged_neighbours_is_capped() {
    let topo = line(3);
    let me = topo.nodes[1].addr;
    let config = DrpConfig::default();
    let mut d = Drp::new(me, &topo, Instant::ZERO);
    d.handle_timeout(Instant::ZERO);
    let t = Instant::from_millis(10);
    for s in &topo.nodes {
        if s.addr != me {
            let lsp = lsp_bytes(s.addr.get(), 1, &[me.get()]);
            d.handle_packet(t, s.addr, DrpMessage::parse(&lsp).unwrap());
        }
    }
    let before = d.neighbours().len();
    for a in 1..0xF000u16 {
        d.handle_packet(t, n(a), DrpMessage::Hello);
    }
    println!(
        "neighbours: {before} live before hellos from {} addresses, {} live after, {} refused",
        0xF000 - 1,
        d.neighbours().len(),
        d.stats().neighbours_refused
    );
    assert_eq!(d.neighbours().len(), config.neighbour_capacity);
    assert!(d.stats().neighbours_refused >= (0xF000 - 2 - config.neighbour_capacity) as u64);
    d.handle_timeout(t);
    for s in &topo.nodes {
        if s.addr != me {
            assert_eq!(d.routes().next_hop(s.addr), Some(s.addr));
        }
    }
}

/// Timers are checked when a file is read, but a `Topology` built in code is not: a dead
/// interval beyond `Duration::MAX` is taken as "never", not a panic on the first hello.
#[test]
fn a_dead_interval_past_the_largest_duration_does_not_panic() {
    let mut topo = line(2);
    topo.network.timers.hello_interval = Duration::MAX;
    topo.network.timers.dead_hellos = 3;
    assert_eq!(topo.network.timers.dead_interval(), Duration::MAX);
    let (me, nb) = (topo.nodes[0].addr, topo.nodes[1].addr);
    let mut d = Drp::new(me, &topo, Instant::ZERO);
    d.handle_timeout(Instant::ZERO);
    d.handle_packet(Instant::from_millis(1), nb, DrpMessage::Hello);
    assert_eq!(d.neighbours(), vec![nb]);
}

/// A terminate sent over the link from a live neighbour, with its address, is believed at once
/// (seed: a terminate removes a node at once), forged or not. The neighbour's next hello shows it
/// was false, so its terminates are then held down: a stream of forged ones over the whole
/// hold-down moves nothing. After the hold-down one is believed again; and a real terminate
/// during the hold-down is noticed within the dead interval, as if the node had gone silent.
#[test]
fn terminates_from_a_neighbour_that_came_back_are_held_down() {
    let topo = line(4);
    let timers = topo.network.timers;
    let dead = timers.dead_interval();
    let hold_down = dead * DrpConfig::default().terminate_hold_down_dead_intervals;
    let via = n(scrambled(0, 4)); // an end of the line
    let at = n(scrambled(1, 4));
    let mut net = Net::new(&topo);
    net.converge(secs(5)).expect("converges");
    net.run_for(secs(3));
    let terminate = control::wire::drp::terminate();
    let downs = |net: &Net| {
        let down = DrpEvent::NeighbourDown(via);
        net.events[&at].iter().filter(|&&e| e == down).count()
    };
    // Runs until `via` is live at `at` again, which its next hello makes it; returns when.
    let back = |net: &mut Net| {
        let by = net.now + timers.hello_interval + net.delay;
        while !net.nodes[&at].neighbours().contains(&via) {
            assert!(net.step(by), "{via} not back at {at} by {by}");
        }
        net.now
    };

    net.inject(at, via, &terminate);
    assert!(!net.nodes[&at].neighbours().contains(&via), "believed");
    assert_eq!(downs(&net), 1);
    let held_from = back(&mut net);
    let up = DrpEvent::NeighbourUp(via);
    assert_eq!(net.events[&at].iter().filter(|&&e| e == up).count(), 2);
    net.converge(secs(1)).expect("converges again");
    let seq = net.nodes[&at].sequence();

    let every = ms(250);
    let mut forged = 0;
    while net.now + every < held_from + hold_down {
        net.inject(at, via, &terminate);
        forged += 1;
        assert!(net.nodes[&at].neighbours().contains(&via), "held down");
        net.run_for(every);
        net.assert_converged();
    }
    let stats = net.nodes[&at].stats();
    println!(
        "{forged} terminates over {:.1}s after {via} came back: {} held down",
        hold_down.as_secs_f64(),
        stats.terminates_held_down
    );
    assert!(
        hold_down >= timers.hello_interval * 10,
        "several hello intervals"
    );
    assert_eq!(stats.terminates_held_down, forged);
    assert_eq!(downs(&net), 1);
    assert_eq!(net.nodes[&at].sequence(), seq, "no origination");

    // The hold-down is over: believed again, and it comes back again.
    net.run_for((held_from + hold_down).saturating_since(net.now));
    net.inject(at, via, &terminate);
    assert!(
        !net.nodes[&at].neighbours().contains(&via),
        "believed again"
    );
    assert_eq!(downs(&net), 2);
    back(&mut net);
    net.converge(secs(1)).expect("converges again");

    // A real terminate during the new hold-down: held down, but the hellos stop, so the dead
    // interval removes it (counted from its last hello, sent before the terminate).
    net.run_for(secs(5));
    net.nodes.get_mut(&via).unwrap().terminate(net.now);
    net.drain(via);
    net.nodes.remove(&via);
    net.gone.insert(via);
    let quit = net.now;
    net.run_for(net.delay);
    assert_eq!(net.nodes[&at].stats().terminates_held_down, forged + 1);
    assert!(net.nodes[&at].neighbours().contains(&via));
    net.run_for((quit + net.delay + dead).saturating_since(net.now));
    assert!(!net.nodes[&at].neighbours().contains(&via), "dead by now");
    assert_eq!(downs(&net), 3);
    net.converge(secs(1)).expect("converges without it");
}
