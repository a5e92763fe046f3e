//! The simulator engine, exercised with a toy node that sends sealed DNP packets: hellos to its
//! neighbours on a timer and flooded pings with a hop counter. The toy checks every datagram with
//! `Packet::parse` and with its own end-to-end hash, so the tests can hold the engine's fault
//! counters against what a receiver really saw.

use control::topology::{
    Action, Faults, LinkSpec, NetworkOptions, NodeSpec, ScheduledEvent, Topology,
};
use control::wire::{DNP_HEADER_LEN, Flag, Packet, dnp};
use control::{Addr, GroupAddr, Instant, NodeAddr, Transmit};
use dataplane::sim::{Boot, LinkStats, Sim, SimError, SimNode};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

// ---- the toy node ---------------------------------------------------------------------------

const KIND_HELLO: u8 = 0;
const KIND_PING: u8 = 1;
/// kind, hops, tick (u32), index (u16).
const FIXED: usize = 8;
/// The end-to-end hash at the end of the body.
const HASH: usize = 8;

#[derive(Clone, Copy, Debug)]
struct ToyConfig {
    /// Hello period.
    interval: Duration,
    /// Hellos per neighbour per period, all sent at the same instant.
    burst: u16,
    /// Filler bytes in each hello.
    filler: usize,
    /// Keep a log of every valid arrival (small tests only).
    log: bool,
}

impl Default for ToyConfig {
    fn default() -> Self {
        ToyConfig {
            interval: Duration::from_secs(1),
            burst: 1,
            filler: 16,
            log: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    at: Instant,
    from: NodeAddr,
    kind: u8,
    tick: u32,
    index: u16,
    hops: u8,
    /// The DNP source: the originator.
    src: u16,
}

struct Toy {
    addr: NodeAddr,
    boot: Boot,
    neighbours: Vec<NodeAddr>,
    mtu: usize,
    cfg: ToyConfig,
    next_tick: Instant,
    tick: u32,
    out: VecDeque<Transmit>,
    /// Datagrams that passed DNP parsing and the end-to-end hash.
    valid: u64,
    /// Datagrams DNP parsing rejected.
    rejected: u64,
    /// Datagrams DNP accepted but whose bytes were not what was sent.
    e2e_bad: u64,
    /// Hellos that arrived behind a later one from the same neighbour.
    out_of_order: u64,
    highest: BTreeMap<NodeAddr, u64>,
    log: Vec<Seen>,
    pings: Vec<Seen>,
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A sealed toy packet whose last 8 bytes hash everything after the checksum field.
fn toy_packet(
    dst: Addr,
    src: Addr,
    kind: u8,
    hops: u8,
    tick: u32,
    index: u16,
    filler: usize,
) -> Vec<u8> {
    let mut body = vec![0u8; FIXED + filler + HASH];
    body[0] = kind;
    body[1] = hops;
    body[2..6].copy_from_slice(&tick.to_be_bytes());
    body[6..8].copy_from_slice(&index.to_be_bytes());
    for (i, b) in body[FIXED..FIXED + filler].iter_mut().enumerate() {
        *b = (tick as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    let mut p = dnp::frame(dst, src, Flag::RmtpData, &body);
    let n = p.len();
    let h = fnv(&p[2..n - HASH]);
    p[n - HASH..].copy_from_slice(&h.to_be_bytes());
    dnp::seal(&mut p, dst, src, Flag::RmtpData).unwrap();
    p
}

impl Toy {
    fn new(boot: Boot, neighbours: Vec<NodeAddr>, mtu: usize, cfg: ToyConfig) -> Self {
        // Each node says hello at its own phase within the period, from its seed.
        let phase = boot.seed % (cfg.interval.as_nanos() as u64).max(1);
        Toy {
            addr: boot.addr,
            boot,
            neighbours,
            mtu,
            cfg,
            next_tick: boot.now + Duration::from_nanos(phase),
            tick: 0,
            out: VecDeque::new(),
            valid: 0,
            rejected: 0,
            e2e_bad: 0,
            out_of_order: 0,
            highest: BTreeMap::new(),
            log: Vec::new(),
            pings: Vec::new(),
        }
    }

    fn hellos(&mut self) {
        for &nb in &self.neighbours {
            for index in 0..self.cfg.burst {
                let packet = toy_packet(
                    nb.into(),
                    self.addr.into(),
                    KIND_HELLO,
                    0,
                    self.tick,
                    index,
                    self.cfg.filler,
                );
                self.out.push_back(Transmit { to: nb, packet });
            }
        }
        self.tick += 1;
    }

    /// Floods a ping to every neighbour; each hop forwards it with one hop fewer.
    fn ping(&mut self, hops: u8) {
        let flood = Addr::Group(GroupAddr::new(0xF000).unwrap());
        for &nb in &self.neighbours {
            let packet = toy_packet(flood, self.addr.into(), KIND_PING, hops, 0, 0, 0);
            self.out.push_back(Transmit { to: nb, packet });
        }
    }

    fn send_raw(&mut self, to: NodeAddr) {
        let packet = toy_packet(to.into(), self.addr.into(), KIND_HELLO, 0, 0, 0, 0);
        self.out.push_back(Transmit { to, packet });
    }

    fn seen_from(&self, from: NodeAddr) -> impl Iterator<Item = &Seen> {
        self.log.iter().filter(move |s| s.from == from)
    }
}

impl SimNode for Toy {
    fn handle_datagram(&mut self, now: Instant, from: NodeAddr, datagram: &[u8]) {
        let Ok(packet) = Packet::parse(datagram, self.mtu) else {
            self.rejected += 1;
            return;
        };
        let n = datagram.len();
        let intact = n >= DNP_HEADER_LEN + FIXED + HASH
            && datagram[n - HASH..] == fnv(&datagram[2..n - HASH]).to_be_bytes();
        if !intact {
            self.e2e_bad += 1;
            return;
        }
        self.valid += 1;
        let body = packet.body();
        let seen = Seen {
            at: now,
            from,
            kind: body[0],
            hops: body[1],
            tick: u32::from_be_bytes([body[2], body[3], body[4], body[5]]),
            index: u16::from_be_bytes([body[6], body[7]]),
            src: packet.src_raw(),
        };
        if self.cfg.log {
            self.log.push(seen);
        }
        match seen.kind {
            KIND_HELLO => {
                let key = u64::from(seen.tick) << 16 | u64::from(seen.index);
                let high = self.highest.entry(from).or_insert(key);
                if key < *high {
                    self.out_of_order += 1;
                }
                *high = (*high).max(key);
            }
            KIND_PING => {
                self.pings.push(seen);
                if seen.hops > 1 {
                    for &nb in self.neighbours.iter().filter(|&&nb| nb != from) {
                        let packet = toy_packet(
                            packet.dst(),
                            packet.src(),
                            KIND_PING,
                            seen.hops - 1,
                            0,
                            0,
                            0,
                        );
                        self.out.push_back(Transmit { to: nb, packet });
                    }
                }
            }
            _ => {}
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    fn handle_timeout(&mut self, now: Instant) {
        while self.next_tick <= now {
            self.hellos();
            self.next_tick += self.cfg.interval;
        }
    }
}

// ---- helpers --------------------------------------------------------------------------------

fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).unwrap()
}

fn ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

fn topology(
    nodes: u16,
    edges: &[(u16, u16)],
    faults: Faults,
    schedule: Vec<ScheduledEvent>,
) -> Topology {
    Topology {
        network: NetworkOptions::default(),
        nodes: (1..=nodes)
            .map(|a| NodeSpec {
                addr: n(a),
                socket: SocketAddr::from(([127, 0, 0, 1], 20_000 + a)),
            })
            .collect(),
        links: edges
            .iter()
            .map(|&(a, b)| LinkSpec {
                a: n(a.min(b)),
                b: n(a.max(b)),
                faults,
            })
            .collect(),
        schedule,
    }
}

fn line(nodes: u16) -> Vec<(u16, u16)> {
    (1..nodes).map(|a| (a, a + 1)).collect()
}

fn toy_sim(topo: &Topology, seed: u64, cfg: ToyConfig) -> Sim<Toy> {
    let mut neighbours: BTreeMap<NodeAddr, Vec<NodeAddr>> = BTreeMap::new();
    for l in &topo.links {
        neighbours.entry(l.a).or_default().push(l.b);
        neighbours.entry(l.b).or_default().push(l.a);
    }
    let mtu = topo.network.mtu;
    Sim::new(topo, seed, move |boot| {
        let nbs = neighbours.get(&boot.addr).cloned().unwrap_or_default();
        Toy::new(boot, nbs, mtu, cfg)
    })
    .expect("valid topology")
}

fn toy(sim: &Sim<Toy>, a: u16) -> &Toy {
    sim.node(n(a)).expect("node is up")
}

fn stats(sim: &Sim<Toy>, from: u16, to: u16) -> LinkStats {
    sim.link_stats(n(from), n(to)).expect("link exists")
}

/// Every offered packet (and every extra duplicate) is accounted for exactly once.
fn assert_balanced(sim: &Sim<Toy>) {
    for (from, to, s) in sim.link_stats_all() {
        let in_flight = sim.in_flight(from, to).unwrap();
        assert_eq!(
            s.offered + s.duplicated,
            s.delivered
                + s.lost
                + s.dropped_queue
                + s.dropped_down
                + s.dropped_node_down
                + in_flight,
            "{from}->{to}: {s}"
        );
    }
}

fn noisy() -> Faults {
    Faults {
        loss: 0.1,
        corrupt: 0.05,
        duplicate: 0.05,
        reorder: 0.1,
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(3),
        down: false,
        ..Faults::default()
    }
}

// ---- tests ----------------------------------------------------------------------------------

#[test]
fn one_seed_one_run_bit_for_bit() {
    let edges = [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1), (1, 4)];
    let schedule = vec![
        ScheduledEvent {
            at: Duration::from_secs(7),
            action: Action::LinkDown(n(1), n(4)),
        },
        ScheduledEvent {
            at: Duration::from_secs(9),
            action: Action::NodeDown(n(3)),
        },
        ScheduledEvent {
            at: Duration::from_secs(12),
            action: Action::NodeUp(n(3)),
        },
        ScheduledEvent {
            at: Duration::from_secs(15),
            action: Action::LinkUp(n(1), n(4)),
        },
    ];
    let topo = topology(6, &edges, noisy(), schedule);
    let cfg = ToyConfig {
        burst: 5,
        ..ToyConfig::default()
    };
    let run = |seed| {
        let mut sim = toy_sim(&topo, seed, cfg);
        sim.run_until(ms(30000));
        assert_balanced(&sim);
        let per_node: Vec<(u64, u64, u64, u64)> = sim
            .nodes()
            .map(|(_, t)| (t.valid, t.rejected, t.e2e_bad, t.out_of_order))
            .collect();
        (sim.trace_hash(), sim.totals(), sim.engine_stats(), per_node)
    };
    let a = run(1);
    let b = run(1);
    let c = run(2);
    println!("seed 1: hash {:016x} {}", a.0, a.1);
    println!("seed 1: {}", a.2);
    println!("seed 2: hash {:016x} {}", c.0, c.1);
    assert!(a.1.delivered > 1000, "{}", a.1);
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    assert_ne!(a.1, c.1);
}

#[test]
fn loss_rate_is_close_to_configured() {
    let faults = Faults {
        loss: 0.25,
        delay: Duration::from_millis(2),
        ..Faults::default()
    };
    let topo = topology(2, &[(1, 2)], faults, vec![]);
    let cfg = ToyConfig {
        burst: 50,
        ..ToyConfig::default()
    };
    let mut sim = toy_sim(&topo, 42, cfg);
    sim.run_until(ms(100500));
    for (from, to) in [(1, 2), (2, 1)] {
        let s = stats(&sim, from, to);
        println!("{from}->{to}: loss rate {:.4} ({s})", s.loss_rate());
        assert_eq!(s.offered, 5000);
        // 3.3 standard deviations of a binomial(5000, 0.25) rate.
        assert!((s.loss_rate() - 0.25).abs() < 0.02, "{}", s.loss_rate());
        assert_eq!(s.delivered + s.lost, s.offered);
        assert_eq!(toy(&sim, to).valid, s.delivered);
    }
}

#[test]
fn caught_corruption_is_rejected_by_dnp_exactly() {
    let faults = Faults {
        corrupt: 0.2,
        delay: Duration::from_millis(2),
        ..Faults::default()
    };
    let topo = topology(2, &[(1, 2)], faults, vec![]);
    let cfg = ToyConfig {
        burst: 50,
        filler: 40,
        ..ToyConfig::default()
    };
    let mut sim = toy_sim(&topo, 7, cfg);
    sim.run_until(ms(100500));
    for (from, to) in [(1, 2), (2, 1)] {
        let s = stats(&sim, from, to);
        let t = toy(&sim, to);
        println!(
            "{from}->{to}: corrupted {} rejected by DNP {} escaped the checksum {} ({:.2}%)",
            s.corrupted,
            t.rejected,
            s.corrupted_escaped,
            100.0 * s.corrupted_escaped as f64 / s.corrupted as f64
        );
        assert!((900..1100).contains(&s.corrupted), "{s}");
        // What DNP catches is exactly the corruption minus the flips that cancel out in the sum;
        // those the toy's end-to-end hash catches, and nothing else is wrong.
        assert_eq!(t.rejected, s.corrupted - s.corrupted_escaped);
        assert_eq!(t.e2e_bad, s.corrupted_escaped);
        assert_eq!(t.valid, s.delivered - s.corrupted);
        assert!(s.corrupted_escaped * 20 < s.corrupted, "{s}");
    }
}

#[test]
fn undetected_corruption_passes_dnp_but_changes_payload() {
    let faults = Faults {
        delay: Duration::from_millis(2),
        ..Faults::default()
    };
    let topo = topology(2, &[(1, 2)], faults, vec![]);
    let cfg = ToyConfig {
        burst: 50,
        ..ToyConfig::default()
    };
    let mut sim = toy_sim(&topo, 11, cfg);
    sim.set_undetected_corruption(n(1), n(2), 0.1).unwrap();
    sim.run_until(ms(100500));
    for (from, to) in [(1, 2), (2, 1)] {
        let s = stats(&sim, from, to);
        let t = toy(&sim, to);
        println!(
            "{from}->{to}: undetected {} seen by end-to-end hash {} rejected by DNP {}",
            s.corrupted_undetected, t.e2e_bad, t.rejected
        );
        assert!((400..600).contains(&s.corrupted_undetected), "{s}");
        assert_eq!(t.rejected, 0);
        assert_eq!(t.e2e_bad, s.corrupted_undetected);
        assert_eq!(t.valid + t.e2e_bad, s.delivered);
    }
}

#[test]
fn down_links_carry_nothing_and_the_schedule_is_on_time() {
    let schedule = vec![
        ScheduledEvent {
            at: Duration::from_secs(10),
            action: Action::LinkDown(n(1), n(2)),
        },
        ScheduledEvent {
            at: Duration::from_secs(20),
            action: Action::LinkUp(n(2), n(1)),
        },
    ];
    let faults = Faults {
        delay: Duration::from_millis(50),
        ..Faults::default()
    };
    let topo = topology(3, &line(3), faults, schedule);
    let cfg = ToyConfig {
        log: true,
        ..ToyConfig::default()
    };
    let mut sim = toy_sim(&topo, 3, cfg);

    sim.run_until(Instant::from_nanos(9_999_999_999));
    assert!(sim.is_link_up(n(1), n(2)));
    sim.run_until(ms(10000));
    assert!(!sim.is_link_up(n(1), n(2)));
    assert!(sim.faults(n(2), n(1)).unwrap().down);
    sim.run_until(Instant::from_nanos(19_999_999_999));
    assert!(!sim.is_link_up(n(1), n(2)));
    sim.run_until(ms(20000));
    assert!(sim.is_link_up(n(1), n(2)));
    sim.run_until(ms(30000));

    let node2 = toy(&sim, 2);
    let before: Vec<Instant> = node2
        .seen_from(n(1))
        .map(|s| s.at)
        .filter(|&t| t < ms(10000))
        .collect();
    let after: Vec<Instant> = node2
        .seen_from(n(1))
        .map(|s| s.at)
        .filter(|&t| t >= ms(10000))
        .collect();
    let (last_before, first_after) = (*before.last().unwrap(), after[0]);
    println!(
        "2 heard 1 last at {last_before}, again at {first_after}; {}",
        stats(&sim, 1, 2)
    );
    assert!(last_before >= ms(9000), "{last_before}");
    // Nothing crosses while down, including what was on the wire at 10 s.
    assert!(
        first_after >= ms(20050) && first_after < ms(21050),
        "{first_after}"
    );
    // The other link was never affected.
    assert!(
        node2
            .seen_from(n(3))
            .any(|s| s.at > ms(10000) && s.at < ms(20000))
    );
    for (from, to) in [(1, 2), (2, 1)] {
        let s = stats(&sim, from, to);
        assert!((10..=11).contains(&s.dropped_down), "{from}->{to}: {s}");
    }
    assert_eq!(stats(&sim, 2, 3).dropped_down, 0);

    // The API does the same, and in-flight packets are lost with the link.
    sim.node_mut(n(3)).unwrap().hellos();
    sim.link_down(n(2), n(3)).unwrap();
    assert_eq!(sim.in_flight(n(3), n(2)), Some(1));
    sim.run_until(ms(35000));
    assert!(toy(&sim, 2).seen_from(n(3)).all(|s| s.at < ms(30000)));
    assert_eq!(sim.in_flight(n(3), n(2)), Some(0));
    assert!(stats(&sim, 3, 2).dropped_down >= 6);
    assert_balanced(&sim);
}

#[test]
fn node_down_and_up_reboots_with_fresh_state() {
    let schedule = vec![
        ScheduledEvent {
            at: Duration::from_secs(5),
            action: Action::NodeDown(n(2)),
        },
        ScheduledEvent {
            at: Duration::from_secs(8),
            action: Action::NodeUp(n(2)),
        },
    ];
    let faults = Faults {
        delay: Duration::from_millis(10),
        ..Faults::default()
    };
    let topo = topology(3, &line(3), faults, schedule);
    let cfg = ToyConfig {
        log: true,
        ..ToyConfig::default()
    };
    let mut sim = toy_sim(&topo, 5, cfg);

    sim.run_until(ms(4990));
    let old_ticks = toy(&sim, 2).tick;
    assert!(old_ticks >= 4, "{old_ticks}");
    sim.run_until(ms(6000));
    assert!(!sim.is_up(n(2)));
    assert!(sim.node(n(2)).is_none());
    assert_eq!(
        sim.nodes().map(|(a, _)| a.get()).collect::<Vec<_>>(),
        [1, 3]
    );
    assert_eq!(sim.incarnation(n(2)), Some(1));
    sim.run_until(ms(12000));
    let node2 = toy(&sim, 2);
    assert_eq!(node2.boot.incarnation, 1);
    assert_eq!(node2.boot.now, ms(8000));
    // Fresh state: nothing remembered from before 8 s, the hello counter restarted.
    assert!(node2.log.iter().all(|s| s.at >= ms(8000)));
    assert!(node2.tick <= 4, "{}", node2.tick);
    let node1 = toy(&sim, 1);
    assert!(
        !node1
            .seen_from(n(2))
            .any(|s| s.at >= ms(5000) && s.at < ms(8000))
    );
    let reborn = node1.seen_from(n(2)).find(|s| s.at >= ms(8000)).unwrap();
    assert_eq!(reborn.tick, 0);
    // Hellos that 1 sent to the dead node landed nowhere.
    let s = stats(&sim, 1, 2);
    println!("1->2 after the reboot: {s}");
    assert!((2..=4).contains(&s.dropped_node_down), "{s}");

    // What is in flight to or from a node when it goes down never arrives.
    let before = (stats(&sim, 2, 1), stats(&sim, 1, 2));
    let (tick1, tick2) = (toy(&sim, 1).tick, toy(&sim, 2).tick);
    sim.node_mut(n(2)).unwrap().hellos();
    sim.node_mut(n(1)).unwrap().hellos();
    assert_eq!(sim.in_flight(n(2), n(1)), Some(1));
    assert_eq!(sim.in_flight(n(1), n(2)), Some(1));
    sim.reboot(n(2)).unwrap();
    assert_eq!(sim.incarnation(n(2)), Some(2));
    sim.run_until(ms(12_100));
    assert_eq!(
        stats(&sim, 2, 1).dropped_node_down,
        before.0.dropped_node_down + 1
    );
    assert_eq!(
        stats(&sim, 1, 2).dropped_node_down,
        before.1.dropped_node_down + 1
    );
    let late = |s: &&Seen| s.at >= ms(12_000);
    assert!(
        !toy(&sim, 1)
            .seen_from(n(2))
            .filter(late)
            .any(|s| s.tick == tick2)
    );
    assert!(
        !toy(&sim, 2)
            .seen_from(n(1))
            .filter(late)
            .any(|s| s.tick == tick1)
    );

    assert_eq!(sim.node_up(n(99)), Err(SimError::UnknownNode(n(99))));
    assert_balanced(&sim);
}

#[test]
fn reorder_makes_later_packets_overtake() {
    let base = Faults {
        delay: Duration::from_millis(5),
        ..Faults::default()
    };
    let cfg = ToyConfig {
        burst: 20,
        ..ToyConfig::default()
    };
    let run = |faults| {
        let topo = topology(2, &[(1, 2)], faults, vec![]);
        let mut sim = toy_sim(&topo, 9, cfg);
        sim.run_until(ms(50500));
        (stats(&sim, 1, 2), toy(&sim, 2).out_of_order)
    };
    // Equal delays and no jitter: a FIFO, even for packets sent at one instant.
    let (s, ooo) = run(base);
    assert_eq!((s.reordered, ooo), (0, 0));
    let (s, ooo) = run(Faults {
        reorder: 0.2,
        ..base
    });
    println!(
        "held back {} of {}, arrived out of order {ooo}",
        s.reordered, s.offered
    );
    assert!((150..250).contains(&s.reordered), "{s}");
    assert!(ooo <= s.reordered && ooo * 2 >= s.reordered, "{ooo} {s}");
}

#[test]
fn flood_arrives_after_exactly_the_hop_delays() {
    let faults = Faults {
        delay: Duration::from_millis(7),
        ..Faults::default()
    };
    let topo = topology(6, &line(6), faults, vec![]);
    let cfg = ToyConfig {
        interval: Duration::from_secs(1000),
        ..ToyConfig::default()
    };
    let mut sim = toy_sim(&topo, 1, cfg);
    sim.run_until(ms(1000));
    {
        let mut one = sim.node_mut(n(1)).unwrap();
        assert_eq!(one.now(), ms(1000));
        one.ping(5);
    }
    let reached = sim.run_until_cond(ms(2000), |s| !toy(s, 6).pings.is_empty());
    assert_eq!(reached, Some(ms(1035)));
    assert_eq!(sim.now(), ms(1035));
    let ping = toy(&sim, 6).pings[0];
    assert_eq!(
        (ping.at, ping.from, ping.hops, ping.src),
        (ms(1035), n(5), 1, 1)
    );
    for (hop, a) in (2..=5).enumerate() {
        assert_eq!(toy(&sim, a).pings[0].at, ms(1000 + 7 * (hop as u64 + 1)));
    }
    // A condition that never holds runs to the deadline.
    assert_eq!(
        sim.run_until_cond(ms(3000), |s| toy(s, 6).pings.len() > 1),
        None
    );
    assert_eq!(sim.now(), ms(3000));
}

#[test]
fn transmits_without_a_link_are_dropped_and_counted() {
    let topo = topology(3, &line(3), Faults::default(), vec![]);
    let cfg = ToyConfig {
        interval: Duration::from_secs(1000),
        log: true,
        ..ToyConfig::default()
    };
    let mut sim = toy_sim(&topo, 1, cfg);
    {
        let mut one = sim.node_mut(n(1)).unwrap();
        one.send_raw(n(3));
        one.send_raw(n(1));
        one.send_raw(n(99));
        one.send_raw(n(2));
    }
    sim.run_until(ms(1000));
    assert_eq!(sim.totals().dropped_no_link, 3);
    assert!(toy(&sim, 3).log.is_empty());
    assert_eq!(toy(&sim, 2).log.len(), 1);
    assert_eq!(sim.neighbours(n(2)).collect::<Vec<_>>(), [n(1), n(3)]);
    assert_eq!(sim.link_down(n(1), n(3)), Err(SimError::NoLink(n(1), n(3))));
}

#[test]
fn bad_topologies_are_errors() {
    let bad_link = topology(2, &[(1, 3)], Faults::default(), vec![]);
    assert_eq!(
        Sim::new(&bad_link, 1, |b| Toy::new(
            b,
            vec![],
            1024,
            ToyConfig::default()
        ))
        .err(),
        Some(SimError::UnknownNode(n(3)))
    );
    let dup = topology(2, &[(1, 2), (2, 1)], Faults::default(), vec![]);
    assert_eq!(
        Sim::new(&dup, 1, |b| Toy::new(b, vec![], 1024, ToyConfig::default())).err(),
        Some(SimError::DuplicateLink(n(1), n(2)))
    );
    let sched = vec![ScheduledEvent {
        at: Duration::from_secs(1),
        action: Action::LinkDown(n(1), n(3)),
    }];
    let no_link = topology(3, &[(1, 2)], Faults::default(), sched);
    assert_eq!(
        Sim::new(&no_link, 1, |b| Toy::new(
            b,
            vec![],
            1024,
            ToyConfig::default()
        ))
        .err(),
        Some(SimError::NoLink(n(1), n(3)))
    );
}

#[test]
fn duplicates_are_delivered_twice() {
    let faults = Faults {
        duplicate: 0.1,
        delay: Duration::from_millis(1),
        ..Faults::default()
    };
    let topo = topology(2, &[(1, 2)], faults, vec![]);
    let cfg = ToyConfig {
        burst: 50,
        ..ToyConfig::default()
    };
    let mut sim = toy_sim(&topo, 13, cfg);
    sim.run_until(ms(100500));
    let s = stats(&sim, 1, 2);
    println!("1->2: {s}");
    assert!((400..600).contains(&s.duplicated), "{s}");
    assert_eq!(s.delivered, s.offered + s.duplicated);
    assert_eq!(toy(&sim, 2).valid, s.delivered);
}

/// A random connected graph: a random spanning tree plus `extra` random edges.
fn random_graph(nodes: u16, extra: usize, seed: u64) -> Vec<(u16, u16)> {
    let mut rng = control::rng::Rng::new(seed);
    let mut edges = std::collections::BTreeSet::new();
    for a in 2..=nodes {
        let b = 1 + rng.below(u64::from(a - 1)) as u16;
        edges.insert((b, a));
    }
    while edges.len() < usize::from(nodes) - 1 + extra {
        let a = 1 + rng.below(u64::from(nodes)) as u16;
        let b = 1 + rng.below(u64::from(nodes)) as u16;
        if a != b {
            edges.insert((a.min(b), a.max(b)));
        }
    }
    edges.into_iter().collect()
}

#[test]
fn thousand_nodes_sixty_seconds_of_hellos() {
    let edges = random_graph(1000, 1000, 2024);
    let faults = Faults {
        delay: Duration::from_millis(2),
        jitter: Duration::from_millis(1),
        ..Faults::default()
    };
    let topo = topology(1000, &edges, faults, vec![]);
    let started = std::time::Instant::now();
    let mut sim = toy_sim(&topo, 77, ToyConfig::default());
    sim.run_until(ms(60000));
    let real = started.elapsed().as_secs_f64();
    let e = sim.engine_stats();
    let totals = sim.totals();
    println!(
        "1000 nodes, {} links, 60 s virtual in {real:.2} s real: {} events ({:.0} events/s), {} delivered",
        edges.len(),
        e.events,
        e.events as f64 / real,
        totals.delivered
    );
    println!("engine: {e}");
    println!("totals: {totals}");
    // One hello per link per second each way: 59 or 60 per direction by 60 s (the phase of the
    // first one is in [0, 1 s) and a few are still on the wire at the end).
    for (from, to, s) in sim.link_stats_all() {
        assert!((59..=60).contains(&s.delivered), "{from}->{to}: {s}");
    }
    let valid: u64 = sim.nodes().map(|(_, t)| t.valid).sum();
    assert_eq!(valid, totals.delivered);
    assert_eq!(
        sim.nodes()
            .map(|(_, t)| t.rejected + t.e2e_bad)
            .sum::<u64>(),
        0
    );
    assert_eq!(
        e.timeouts,
        sim.nodes().map(|(_, t)| u64::from(t.tick)).sum::<u64>()
    );
}

/// A node with a deadline that moves later on every hello it hears (a dead-neighbour timer, as
/// DRP has), to exercise the engine's lazy re-arming. It insists it is never woken early.
struct Watch {
    addr: NodeAddr,
    peer: NodeAddr,
    next_hello: Instant,
    /// When the peer is declared dead unless heard from; `None` once it is.
    dead_at: Option<Instant>,
    heard: Vec<Instant>,
    declared_dead: Vec<Instant>,
    out: Vec<Transmit>,
}

const DEAD_AFTER: Duration = Duration::from_secs(3);

impl SimNode for Watch {
    fn handle_datagram(&mut self, now: Instant, from: NodeAddr, datagram: &[u8]) {
        assert_eq!(from, self.peer);
        assert!(Packet::parse(datagram, 1024).is_ok());
        self.heard.push(now);
        self.dead_at = Some(now + DEAD_AFTER);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(
            self.dead_at
                .map_or(self.next_hello, |d| d.min(self.next_hello)),
        )
    }

    fn handle_timeout(&mut self, now: Instant) {
        assert!(
            self.poll_timeout().is_some_and(|t| t <= now),
            "woken early at {now}"
        );
        if self.dead_at.is_some_and(|d| d <= now) {
            self.declared_dead.push(now);
            self.dead_at = None;
        }
        if self.next_hello <= now {
            let packet = toy_packet(self.peer.into(), self.addr.into(), KIND_HELLO, 0, 0, 0, 0);
            self.out.push(Transmit {
                to: self.peer,
                packet,
            });
            self.next_hello += Duration::from_secs(1);
        }
    }
}

#[test]
fn deadlines_that_move_later_fire_on_time_and_never_early() {
    let schedule = vec![
        ScheduledEvent {
            at: Duration::from_secs(10),
            action: Action::LinkDown(n(1), n(2)),
        },
        ScheduledEvent {
            at: Duration::from_secs(20),
            action: Action::LinkUp(n(1), n(2)),
        },
    ];
    let faults = Faults {
        delay: Duration::from_millis(10),
        ..Faults::default()
    };
    let topo = topology(2, &[(1, 2)], faults, schedule);
    let mut sim = Sim::new(&topo, 1, |b: Boot| Watch {
        addr: b.addr,
        peer: n(3 - b.addr.get()),
        // Only node 1 says hello; node 2 just listens, so its one deadline is the dead timer.
        next_hello: if b.addr == n(1) {
            b.now + Duration::from_millis(100)
        } else {
            Instant::from_nanos(u64::MAX)
        },
        dead_at: Some(b.now + DEAD_AFTER),
        heard: Vec::new(),
        declared_dead: Vec::new(),
        out: Vec::new(),
    })
    .unwrap();
    let mut most_pending = 0;
    while sim.now() < ms(30_000) {
        sim.run_for(Duration::from_millis(100));
        most_pending = most_pending.max(sim.pending_events());
    }
    let e = sim.engine_stats();
    println!("{e}; at most {most_pending} events pending");
    let listener = sim.node(n(2)).unwrap();
    let last_before = *listener.heard.iter().rfind(|&&t| t < ms(10_000)).unwrap();
    assert_eq!(last_before, ms(9_110));
    assert_eq!(listener.declared_dead, [last_before + DEAD_AFTER]);
    assert!(listener.heard.iter().any(|&t| t > ms(20_000)));
    // The talker never hears anything: dead at exactly 3 s.
    assert_eq!(sim.node(n(1)).unwrap().declared_dead, [ms(3_000)]);
    // Each hello pushed the deadline later without a new heap entry: the live entries are the
    // node's own, and stale ones never pile up.
    assert!(e.timers_rearmed > 0);
    assert!(most_pending <= 6, "{most_pending}");
}

// ---- arrivals handed in as GRO batches ------------------------------------------------------

/// Records how the engine hands datagrams in. Node 1 sends, at its first timeout, datagrams
/// of the given sizes to the given neighbours, in that order.
struct Gro {
    script: Vec<(u16, usize)>,
    out: VecDeque<Transmit>,
    /// Every hand-in: (payload bytes, segment size, datagrams).
    hand_ins: Vec<(usize, usize, usize)>,
}

impl SimNode for Gro {
    fn handle_datagram(&mut self, _now: Instant, _from: NodeAddr, datagram: &[u8]) {
        self.hand_ins.push((datagram.len(), datagram.len(), 1));
    }

    fn handle_batch(&mut self, _now: Instant, _from: NodeAddr, payload: &[u8], segment: usize) {
        self.hand_ins
            .push((payload.len(), segment, payload.len().div_ceil(segment)));
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.script.is_empty()).then_some(ms(1))
    }

    fn handle_timeout(&mut self, _now: Instant) {
        for (to, len) in self.script.drain(..) {
            self.out.push_back(Transmit {
                to: n(to),
                packet: vec![0xA5; len],
            });
        }
    }
}

#[test]
fn same_instant_arrivals_of_one_link_are_handed_in_as_one_gro_batch() {
    let faults = Faults {
        delay: Duration::from_millis(5),
        ..Faults::default()
    };
    let topo = topology(3, &[(1, 2), (1, 3)], faults, Vec::new());
    // To node 2: two equal (a batch), interrupted by one to node 3; then three of which the
    // last is shorter (a batch: GRO's last segment may be shorter); then one that a longer one
    // cannot follow.
    let script = vec![
        (2, 100),
        (2, 100),
        (3, 100),
        (2, 100),
        (2, 100),
        (2, 60),
        (2, 100),
        (2, 120),
    ];
    let mut sim = Sim::new(&topo, 1, move |b: Boot| Gro {
        script: if b.addr == n(1) {
            script.clone()
        } else {
            Vec::new()
        },
        out: VecDeque::new(),
        hand_ins: Vec::new(),
    })
    .unwrap();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        sim.node(n(2)).unwrap().hand_ins,
        [(200, 100, 2), (260, 100, 3), (100, 100, 1), (120, 120, 1)]
    );
    assert_eq!(sim.node(n(3)).unwrap().hand_ins, [(100, 100, 1)]);
    let e = sim.engine_stats();
    assert_eq!((e.arrivals, e.arrival_batches), (8, 2));
    assert_eq!(sim.link_stats(n(1), n(2)).unwrap().delivered, 7);
}
