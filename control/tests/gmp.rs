//! GMP across a handful of nodes: a tiny harness delivers each node's transmits to the
//! neighbour they name, over perfect or seeded-lossy links, in virtual time.

mod common;

use common::{Links, bfs_routes, edges, g, n};
use control::drp::{Route, RoutingTable};
use control::gmp::{Gmp, GmpError, GmpEvent, TreeEntry};
use control::topology::Timers;
use control::wire::gmp::{GmpKind, GmpMessage};
use control::wire::{DEFAULT_MTU, Flag, Packet};
use control::{Addr, GroupAddr, Instant, NodeAddr};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const DELAY: Duration = Duration::from_millis(1);

struct Delivered {
    at: Instant,
    from: NodeAddr,
    to: NodeAddr,
    msg: GmpMessage,
}

struct Net {
    now: Instant,
    nodes: BTreeMap<NodeAddr, Gmp>,
    routes: BTreeMap<NodeAddr, RoutingTable>,
    links: Links,
    /// In flight, by arrival time and send order.
    queue: BTreeMap<(Instant, u64), (NodeAddr, NodeAddr, Vec<u8>)>,
    seq: u64,
    log: Vec<Delivered>,
}

impl Net {
    fn new(edge_list: &[(u16, u16)], loss: f64, seed: u64) -> Net {
        let links = Links::new(edge_list, loss, seed);
        let es = edges(edge_list);
        let timers = Timers::default();
        let mut nodes = BTreeMap::new();
        let mut routes = BTreeMap::new();
        for &(a, b) in &es {
            for x in [a, b] {
                nodes.entry(x).or_insert_with(|| Gmp::new(x, &timers));
                routes.insert(x, bfs_routes(&es, x));
            }
        }
        Net {
            now: Instant::ZERO,
            nodes,
            routes,
            links,
            queue: BTreeMap::new(),
            seq: 0,
            log: Vec::new(),
        }
    }

    fn gmp(&mut self, x: u16) -> &mut Gmp {
        self.nodes.get_mut(&n(x)).expect("node")
    }

    fn subscribe(
        &mut self,
        x: u16,
        group: GroupAddr,
        sender: u16,
        sid: u16,
    ) -> Result<(), GmpError> {
        let now = self.now;
        let routes = self.routes[&n(x)].clone();
        let r = self.gmp(x).subscribe(now, group, n(sender), sid, &routes);
        self.flush();
        r
    }

    fn unsubscribe(
        &mut self,
        x: u16,
        group: GroupAddr,
        sender: u16,
        sid: u16,
    ) -> Result<(), GmpError> {
        let now = self.now;
        let routes = self.routes[&n(x)].clone();
        let r = self.gmp(x).unsubscribe(now, group, n(sender), sid, &routes);
        self.flush();
        r
    }

    /// Gives every node the routes of the current links and tells it routing changed.
    fn recompute_routes(&mut self) {
        let es = self.links.edges();
        for (&x, gmp) in &mut self.nodes {
            let t = bfs_routes(&es, x);
            gmp.routes_changed(self.now, &t);
            self.routes.insert(x, t);
        }
        self.flush();
    }

    fn set_routes(&mut self, x: u16, t: RoutingTable) {
        let now = self.now;
        self.gmp(x).routes_changed(now, &t);
        self.routes.insert(n(x), t);
        self.flush();
    }

    /// Moves every node's transmits onto the links, checking the header on the way.
    fn flush(&mut self) {
        for (&from, gmp) in &mut self.nodes {
            while let Some(t) = gmp.poll_transmit() {
                let p = Packet::parse(&t.packet, DEFAULT_MTU).expect("well-formed packet");
                assert_eq!(p.flag(), Flag::Gmp);
                assert_eq!(p.dst(), Addr::Node(t.to), "GMP goes to the neighbour");
                assert_eq!(p.src(), Addr::Node(from), "GMP comes from the sending node");
                if self.links.carries(from, t.to) {
                    self.seq += 1;
                    self.queue
                        .insert((self.now + DELAY, self.seq), (from, t.to, t.packet));
                }
            }
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let q = self.queue.keys().next().map(|k| k.0);
        let t = self.nodes.values().filter_map(Gmp::poll_timeout).min();
        match (q, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs every arrival and timeout up to and including `until`.
    fn run_until(&mut self, until: Instant) {
        while let Some(t) = self.next_time().filter(|&t| t <= until) {
            self.now = t;
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > t {
                    break;
                }
                let (from, to, packet) = entry.remove();
                let p = Packet::parse(&packet, DEFAULT_MTU).expect("packet");
                let msg = GmpMessage::parse(p.body()).expect("body");
                self.log.push(Delivered {
                    at: t,
                    from,
                    to,
                    msg,
                });
                let routes = &self.routes[&to];
                let gmp = self.nodes.get_mut(&to).expect("node");
                gmp.handle_body(t, from, p.body(), routes).expect("parses");
            }
            for (x, gmp) in &mut self.nodes {
                if gmp.poll_timeout().is_some_and(|d| d <= t) {
                    gmp.handle_timeout(t, &self.routes[x]);
                }
            }
            self.flush();
        }
        self.now = until;
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn entry(&mut self, x: u16, group: GroupAddr, sender: u16) -> Option<TreeEntry> {
        self.gmp(x).table().lookup(group, n(sender)).cloned()
    }

    fn downstream(&mut self, x: u16, group: GroupAddr, sender: u16) -> Option<Vec<u16>> {
        self.entry(x, group, sender)
            .map(|e| e.downstream.iter().map(|d| d.get()).collect())
    }

    fn events(&mut self, x: u16) -> Vec<GmpEvent> {
        std::iter::from_fn(|| self.gmp(x).poll_event()).collect()
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Sender 1 at the root; 2 and 3 below it; 4 and 5 below 2; 6 below 3.
const TREE: [(u16, u16); 5] = [(1, 2), (1, 3), (2, 4), (2, 5), (3, 6)];

fn built_tree() -> (Net, GroupAddr) {
    let group = g(1);
    let mut net = Net::new(&TREE, 0.0, 1);
    for leaf in [4, 5, 6] {
        net.subscribe(leaf, group, 1, 100 + leaf).unwrap();
    }
    net.run_for(ms(50));
    (net, group)
}

#[test]
fn joins_propagate_up_a_three_level_tree() {
    let (mut net, group) = built_tree();
    for (x, down) in [(1, vec![2, 3]), (2, vec![4, 5]), (3, vec![6])] {
        assert_eq!(net.downstream(x, group, 1), Some(down), "node {x}");
    }
    let root = net.entry(1, group, 1).unwrap();
    assert_eq!(root.upstream, None);
    assert!(root.local_members.is_empty());
    let two = net.entry(2, group, 1).unwrap();
    assert_eq!(two.upstream, Some(n(1)));
    let four = net.entry(4, group, 1).unwrap();
    assert_eq!(
        (
            four.upstream,
            four.downstream.clone(),
            four.local_members.clone()
        ),
        (Some(n(2)), vec![], vec![104])
    );
    // Node 2 joined once for the tree, not once per downstream member.
    assert_eq!(net.nodes[&n(2)].stats().joins_sent, 1);
    assert_eq!(
        net.nodes[&n(1)].stats().joins_sent,
        0,
        "the sender joins no one"
    );
    assert!(net.events(2).contains(&GmpEvent::TreeChanged {
        group,
        sender: n(1)
    }));

    // Refreshes keep it, once per period, and do not republish an unchanged table.
    let before = net.gmp(2).table();
    net.run_for(Duration::from_secs(30));
    let after = net.gmp(2).table();
    assert!(Arc::ptr_eq(&before, &after), "refreshes change nothing");
    let s = *net.nodes[&n(2)].stats();
    println!("node 2 after 30 s: {s:?}");
    assert_eq!(s.refreshes, 30);
    assert_eq!(s.joins_sent, 31);
    assert_eq!(s.joins_received, 2 + 2 * 30);
    assert_eq!(s.expiries, 0);
    assert_eq!(net.downstream(1, group, 1), Some(vec![2, 3]));
}

#[test]
fn leave_propagates_and_removes_the_branch() {
    let (mut net, group) = built_tree();
    net.events(1);
    net.unsubscribe(6, group, 1, 106).unwrap();
    net.run_for(ms(10));
    assert_eq!(net.entry(6, group, 1), None);
    assert_eq!(net.entry(3, group, 1), None, "3 had no one else");
    assert_eq!(net.downstream(1, group, 1), Some(vec![2]));
    assert_eq!(
        net.events(1),
        vec![GmpEvent::TreeChanged {
            group,
            sender: n(1)
        }]
    );
    assert_eq!(net.nodes[&n(3)].stats().leaves_sent, 1);
    assert_eq!(net.nodes[&n(1)].stats().leaves_received, 1);

    // A leave below a node that still has members goes no further.
    net.unsubscribe(4, group, 1, 104).unwrap();
    net.run_for(ms(10));
    assert_eq!(net.downstream(2, group, 1), Some(vec![5]));
    assert_eq!(net.downstream(1, group, 1), Some(vec![2]));
    assert_eq!(net.nodes[&n(2)].stats().leaves_sent, 0);

    net.unsubscribe(5, group, 1, 105).unwrap();
    net.run_for(ms(10));
    for x in 1..=6 {
        assert_eq!(net.entry(x, group, 1), None, "node {x}");
    }
    // With nothing left, nobody has anything to time.
    assert!(net.nodes.values().all(|gmp| gmp.poll_timeout().is_none()));
}

#[test]
fn silent_downstream_expires_after_exactly_the_interval() {
    let group = g(2);
    let expire = Timers::default().gmp_expire;
    let mut net = Net::new(&[(1, 2), (2, 3)], 0.0, 1);
    net.subscribe(3, group, 1, 7).unwrap();
    net.run_for(ms(3500));
    assert_eq!(net.downstream(2, group, 1), Some(vec![3]));
    // Node 3 goes silent: nothing it sends arrives any more.
    net.links.cut(n(2), n(3));
    let last = net
        .log
        .iter()
        .rev()
        .find(|d| d.from == n(3) && d.to == n(2) && d.msg.kind == GmpKind::Join)
        .map(|d| d.at)
        .unwrap();
    assert_eq!(
        last,
        Instant::from_millis(3001),
        "join at 3 s, one ms on the link"
    );
    net.run_until(last + expire - Duration::from_nanos(1));
    assert_eq!(net.downstream(2, group, 1), Some(vec![3]), "not yet");
    assert_eq!(net.nodes[&n(2)].stats().expiries, 0);
    net.run_until(last + expire);
    assert_eq!(
        net.entry(2, group, 1),
        None,
        "expired at exactly {expire:?}"
    );
    assert_eq!(net.nodes[&n(2)].stats().expiries, 1);
    assert!(net.events(2).contains(&GmpEvent::DownstreamExpired {
        group,
        sender: n(1),
        neighbour: n(3)
    }));
    // The branch is pruned upstream by the leave node 2 sends at that moment.
    assert_eq!(net.downstream(1, group, 1), Some(vec![2]));
    net.run_for(DELAY);
    assert_eq!(net.entry(1, group, 1), None);
    println!(
        "last join {last}, expiry at {}, pruned at the sender at {}",
        last + expire,
        net.now
    );
}

#[test]
fn subscribe_twice_and_unsubscribe_non_member_are_refused() {
    let group = g(3);
    let mut net = Net::new(&[(1, 2)], 0.0, 1);
    assert_eq!(net.subscribe(2, group, 1, 9), Ok(()));
    assert_eq!(net.subscribe(2, group, 1, 9), Err(GmpError::AlreadyMember));
    assert_eq!(
        net.subscribe(2, group, 1, 10),
        Ok(()),
        "another service may"
    );
    assert_eq!(net.subscribe(2, g(4), 1, 9), Ok(()), "another group may");
    assert_eq!(net.unsubscribe(2, group, 1, 11), Err(GmpError::NotMember));
    assert_eq!(net.unsubscribe(2, g(5), 1, 9), Err(GmpError::NotMember));
    assert_eq!(
        net.unsubscribe(2, group, 2, 9),
        Err(GmpError::NotMember),
        "membership is per (group, sender)"
    );
    assert_eq!(net.unsubscribe(2, group, 1, 9), Ok(()));
    assert_eq!(net.unsubscribe(2, group, 1, 9), Err(GmpError::NotMember));
    assert_eq!(
        net.entry(2, group, 1).unwrap().local_members,
        vec![10],
        "the other member stays"
    );
    // Members on the sender's own node are kept, and nothing is sent upstream.
    assert_eq!(net.subscribe(1, group, 1, 3), Ok(()));
    assert_eq!(net.nodes[&n(1)].stats().joins_sent, 0);
}

#[test]
fn route_change_moves_the_join_and_the_detached_branch_goes_at_once() {
    // Diamond: 4 reaches sender 1 through 2 (tie to the smaller) or 3.
    let group = g(6);
    let mut net = Net::new(&[(1, 2), (1, 3), (2, 4), (3, 4)], 0.0, 1);
    net.subscribe(4, group, 1, 1).unwrap();
    net.run_for(ms(500));
    assert_eq!(net.downstream(1, group, 1), Some(vec![2]));
    assert_eq!(net.downstream(2, group, 1), Some(vec![4]));

    // Link 2-4 fails: the leave 4 sends to 2 is lost with it, but node 2's routing no longer
    // has 4 as a neighbour, so 2 drops it at once instead of waiting for the expiry.
    net.links.cut(n(2), n(4));
    net.recompute_routes();
    let changed_at = net.now;
    net.run_for(ms(10));
    assert_eq!(net.entry(4, group, 1).unwrap().upstream, Some(n(3)));
    assert_eq!(net.downstream(3, group, 1), Some(vec![4]));
    assert_eq!(net.entry(2, group, 1), None, "the detached branch is gone");
    assert_eq!(net.downstream(1, group, 1), Some(vec![3]));
    assert_eq!(net.nodes[&n(2)].stats().detached, 1);
    assert_eq!(net.nodes[&n(2)].stats().expiries, 0);
    assert_eq!(net.nodes[&n(4)].stats().upstream_changes, 1);
    assert_eq!(net.nodes[&n(4)].stats().leaves_sent, 1);
    println!(
        "route change at {changed_at}; old branch pruned by {}; node 2 {:?}",
        net.now,
        net.nodes[&n(2)].stats()
    );
}

#[test]
fn route_change_with_the_old_link_up_leaves_at_once() {
    let group = g(7);
    let mut net = Net::new(&[(1, 2), (1, 3), (2, 4), (3, 4)], 0.0, 1);
    net.subscribe(4, group, 1, 1).unwrap();
    net.run_for(ms(500));
    // Routing now prefers 3 (say, a metric changed) while the link to 2 stays up.
    let table = RoutingTable::new(
        n(4),
        vec![
            Route {
                dst: n(1),
                next_hop: n(3),
                hops: 2,
            },
            Route {
                dst: n(2),
                next_hop: n(2),
                hops: 1,
            },
            Route {
                dst: n(3),
                next_hop: n(3),
                hops: 1,
            },
        ],
    );
    net.set_routes(4, table);
    net.run_for(ms(10));
    assert_eq!(net.entry(2, group, 1), None, "2 pruned by the leave");
    assert_eq!(net.downstream(3, group, 1), Some(vec![4]));
    assert_eq!(net.downstream(1, group, 1), Some(vec![3]));
    assert_eq!(net.nodes[&n(2)].stats().expiries, 0);
}

#[test]
fn downstream_that_becomes_upstream_is_dropped() {
    // 2 is below 1 in sender 3's tree until routing says 2 is 1's way to 3.
    let group = g(8);
    let mut net = Net::new(&[(1, 2), (1, 3), (2, 3)], 0.0, 1);
    // First 2 reaches 3 through 1, so 2 joins through 1.
    let t2 = RoutingTable::new(
        n(2),
        vec![
            Route {
                dst: n(1),
                next_hop: n(1),
                hops: 1,
            },
            Route {
                dst: n(3),
                next_hop: n(1),
                hops: 2,
            },
        ],
    );
    net.set_routes(2, t2);
    net.subscribe(2, group, 3, 1).unwrap();
    net.subscribe(1, group, 3, 1).unwrap();
    net.run_for(ms(10));
    assert_eq!(net.downstream(1, group, 3), Some(vec![2]));
    // Now 1 routes to 3 through 2: 2 cannot stay downstream of 1.
    let t1 = RoutingTable::new(
        n(1),
        vec![
            Route {
                dst: n(2),
                next_hop: n(2),
                hops: 1,
            },
            Route {
                dst: n(3),
                next_hop: n(2),
                hops: 2,
            },
        ],
    );
    net.set_routes(1, t1);
    let e = net.entry(1, group, 3).unwrap();
    assert_eq!((e.upstream, e.downstream.clone()), (Some(n(2)), vec![]));
    // And 2 ignores 1's join for as long as 1 is its upstream (loop guard).
    net.run_for(ms(10));
    assert_eq!(net.nodes[&n(2)].stats().loop_guarded, 1);
    assert_eq!(net.downstream(2, group, 3), Some(vec![]));
}

#[test]
fn unreachable_sender_waits_and_joins_when_a_route_appears() {
    let group = g(9);
    let mut net = Net::new(&[(1, 2), (2, 3)], 0.0, 1);
    net.set_routes(3, RoutingTable::empty(n(3)));
    net.subscribe(3, group, 1, 1).unwrap();
    net.run_for(Duration::from_millis(2500));
    let e = net.entry(3, group, 1).unwrap();
    assert_eq!(e.upstream, None);
    assert_eq!(net.nodes[&n(3)].stats().joins_sent, 0);
    assert_eq!(net.nodes[&n(3)].stats().unroutable, 2);
    assert_eq!(net.entry(2, group, 1), None);
    net.recompute_routes();
    assert_eq!(net.nodes[&n(3)].stats().joins_sent, 1, "at once");
    net.run_for(ms(10));
    assert_eq!(net.downstream(1, group, 1), Some(vec![2]));
    assert_eq!(net.downstream(2, group, 1), Some(vec![3]));
}

#[test]
fn soft_state_survives_thirty_percent_loss() {
    let group = g(10);
    let mut net = Net::new(&TREE, 0.3, 42);
    for leaf in [4, 5, 6] {
        net.subscribe(leaf, group, 1, 1).unwrap();
    }
    let want = [(1, vec![2, 3]), (2, vec![4, 5]), (3, vec![6])];
    let formed = |net: &mut Net| {
        want.iter()
            .all(|(x, down)| net.downstream(*x, group, 1).as_ref() == Some(down))
    };
    while !formed(&mut net) {
        assert!(
            net.now < Instant::from_millis(20_000),
            "tree not formed in 20 s"
        );
        net.run_for(ms(1));
    }
    let formed_at = net.now;
    let versions: Vec<_> = net.nodes.values_mut().map(Gmp::table).collect();
    net.run_for(Duration::from_secs(120));
    let expiries: u64 = net.nodes.values().map(|x| x.stats().expiries).sum();
    assert_eq!(expiries, 0, "ten lost refreshes in a row never happened");
    for (gmp, before) in net.nodes.values_mut().zip(versions) {
        assert!(Arc::ptr_eq(&gmp.table(), &before), "tables stayed put");
    }
    let sent: u64 = net.nodes.values().map(|x| x.stats().joins_sent).sum();
    let received: u64 = net.nodes.values().map(|x| x.stats().joins_received).sum();
    println!(
        "30% loss: tree formed at {formed_at}; then 120 s: joins sent {sent}, received {received}"
    );
    assert!(received < sent && received * 10 > sent * 6);
}

#[test]
fn malformed_and_stray_messages_are_counted_not_obeyed() {
    let timers = Timers::default();
    let mut gmp = Gmp::new(n(2), &timers);
    let routes = bfs_routes(&edges(&[(1, 2), (2, 3)]), n(2));
    let now = Instant::ZERO;
    assert!(
        gmp.handle_body(now, n(3), &[0xF0, 0, 0, 1, 0, 7], &routes)
            .is_err()
    );
    assert!(gmp.handle_body(now, n(3), &[1, 2, 3], &routes).is_err());
    assert_eq!(gmp.stats().malformed, 2);
    // A leave from a neighbour that never joined, and a join claiming to come from us.
    gmp.handle_packet(now, n(3), GmpMessage::leave(g(0), n(1)), &routes);
    gmp.handle_packet(now, n(2), GmpMessage::join(g(0), n(1)), &routes);
    // A join from 1, our upstream toward sender 1: a loop if accepted.
    gmp.handle_packet(now, n(1), GmpMessage::join(g(0), n(1)), &routes);
    assert_eq!(gmp.stats().ignored, 3);
    assert_eq!(gmp.stats().loop_guarded, 1);
    assert!(gmp.table().entries().is_empty());
    assert!(gmp.poll_transmit().is_none());
    assert!(gmp.poll_event().is_none());
}

/// The `i`-th of 100,000 and more distinct (group, sender) keys a flood can name.
fn flood_key(i: u32) -> (GroupAddr, NodeAddr) {
    let groups = 0x1000;
    let group = g(u16::try_from(i % groups).unwrap());
    let sender = n(u16::try_from(100 + i / groups).unwrap());
    (group, sender)
}

#[test]
fn a_join_flood_cannot_grow_the_tree_table_past_its_capacity() {
    const FLOOD: u32 = 100_000;
    // Node 2 relays the tree of (g(1), sender 1) to neighbour 3 and has a local member.
    let routes = bfs_routes(&edges(&[(1, 2), (2, 3)]), n(2));
    let mut gmp = Gmp::new(n(2), &Timers::default());
    let capacity = gmp.options().max_trees;
    let real = (g(1), n(1));
    let mut now = Instant::ZERO;
    gmp.subscribe(now, real.0, real.1, 7, &routes).unwrap();
    gmp.handle_packet(now, n(3), GmpMessage::join(real.0, real.1), &routes);
    let before = gmp.memory();

    // The flood comes from neighbour 3 over 20 s, much longer than the 10 s expiry, while 3
    // keeps refreshing its real membership every second and node 2 runs its timers.
    let per_second = FLOOD / 20;
    for i in 0..FLOOD {
        if i > 0 && i % per_second == 0 {
            now += Duration::from_secs(1);
            gmp.handle_packet(now, n(3), GmpMessage::join(real.0, real.1), &routes);
            while gmp.poll_timeout().is_some_and(|t| t <= now) {
                gmp.handle_timeout(now, &routes);
            }
            while gmp.poll_transmit().is_some() {}
            while gmp.poll_event().is_some() {}
            let trees = gmp.memory().trees;
            assert!(
                trees <= capacity,
                "join {i}: {trees} trees, capacity {capacity}"
            );
        }
        let (group, sender) = flood_key(i);
        gmp.handle_packet(now, n(3), GmpMessage::join(group, sender), &routes);
    }
    gmp.table();
    let after = gmp.memory();
    println!(
        "GMP join flood of {FLOOD} keys: trees {} -> {}, about {} -> {} bytes; \
         refused {}, table rebuilds {}",
        before.trees,
        after.trees,
        before.approx_bytes,
        after.approx_bytes,
        gmp.stats().trees_refused,
        gmp.stats().table_rebuilds
    );
    assert_eq!(after.trees, capacity, "full, and no fuller");
    // Room comes back only as flood trees age out (once, at 10 s): two tables' worth got in.
    let admitted = 2 * (capacity as u64 - 1);
    assert_eq!(gmp.stats().trees_refused, u64::from(FLOOD) - admitted);
    assert_eq!(
        gmp.stats().expiries,
        capacity as u64 - 1,
        "the first ones aged out"
    );
    let entry = gmp.table().lookup(real.0, real.1).cloned().unwrap();
    assert_eq!(entry.downstream, vec![n(3)], "the refreshed member stayed");
    assert_eq!(entry.local_members, vec![7]);
    // The node's own clients still join while the network has the table full.
    gmp.subscribe(now, g(2), n(1), 8, &routes).unwrap();
    assert!(gmp.table().lookup(g(2), n(1)).is_some());
}

#[test]
fn a_batch_of_joins_rebuilds_the_table_once() {
    const BATCH: u32 = 1000;
    let routes = bfs_routes(&edges(&[(1, 2), (2, 3)]), n(2));
    let mut gmp = Gmp::new(n(2), &Timers::default());
    let now = Instant::ZERO;
    for i in 0..BATCH {
        let (group, sender) = flood_key(i);
        gmp.handle_packet(now, n(3), GmpMessage::join(group, sender), &routes);
    }
    // The engine reads the table once per batch: one rebuild, not one per join.
    assert_eq!(gmp.table().entries().len(), BATCH as usize);
    assert_eq!(gmp.stats().table_rebuilds, 1);
    assert_eq!(
        std::iter::from_fn(|| gmp.poll_event()).count(),
        BATCH as usize,
        "every new tree is still reported"
    );
    // Reading again without a change rebuilds nothing.
    let table = gmp.table();
    assert!(Arc::ptr_eq(&table, &gmp.table()));
    assert_eq!(gmp.stats().table_rebuilds, 1);
}

mod random_operations {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Subscribe(u16, u16, u16),
        Unsubscribe(u16, u16, u16),
        Join(u16, u16, u16),
        Leave(u16, u16, u16),
        Routes(usize),
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..3, 1u16..6, 0u16..3).prop_map(|(a, b, c)| Op::Subscribe(a, b, c)),
            (0u16..3, 1u16..6, 0u16..3).prop_map(|(a, b, c)| Op::Unsubscribe(a, b, c)),
            (0u16..3, 1u16..6, 1u16..6).prop_map(|(a, b, c)| Op::Join(a, b, c)),
            (0u16..3, 1u16..6, 1u16..6).prop_map(|(a, b, c)| Op::Leave(a, b, c)),
            (0usize..3).prop_map(Op::Routes),
            (0u64..15_000).prop_map(Op::Wait),
        ]
    }

    /// Three views node 1 may have of nodes 2..=5: all direct, all through 2, none.
    fn tables() -> [RoutingTable; 3] {
        let direct = bfs_routes(&edges(&[(1, 2), (1, 3), (1, 4), (1, 5)]), n(1));
        let via2 = bfs_routes(&edges(&[(1, 2), (2, 3), (2, 4), (2, 5)]), n(1));
        [direct, via2, RoutingTable::empty(n(1))]
    }

    proptest! {
        #[test]
        fn invariants_hold_whatever_happens(ops in proptest::collection::vec(op(), 1..80)) {
            let tables = tables();
            let mut routes = tables[0].clone();
            let mut gmp = Gmp::new(n(1), &Timers::default());
            let mut now = Instant::ZERO;
            for op in ops {
                match op {
                    Op::Subscribe(gr, s, sid) => {
                        let _ = gmp.subscribe(now, g(gr), n(s), sid, &routes);
                    }
                    Op::Unsubscribe(gr, s, sid) => {
                        let _ = gmp.unsubscribe(now, g(gr), n(s), sid, &routes);
                    }
                    Op::Join(gr, s, from) => {
                        gmp.handle_packet(now, n(from), GmpMessage::join(g(gr), n(s)), &routes)
                    }
                    Op::Leave(gr, s, from) => {
                        gmp.handle_packet(now, n(from), GmpMessage::leave(g(gr), n(s)), &routes)
                    }
                    Op::Routes(i) => {
                        routes = tables[i].clone();
                        gmp.routes_changed(now, &routes);
                    }
                    Op::Wait(ms) => {
                        let until = now + Duration::from_millis(ms);
                        while let Some(t) = gmp.poll_timeout().filter(|&t| t <= until) {
                            prop_assert!(t >= now, "deadline {t} in the past of {now}");
                            now = t;
                            gmp.handle_timeout(now, &routes);
                            prop_assert!(gmp.poll_timeout().is_none_or(|d| d > now));
                        }
                        now = until;
                    }
                }
                for e in gmp.table().entries() {
                    prop_assert!(!e.downstream.is_empty() || !e.local_members.is_empty(), "{e:?}");
                    if let Some(up) = e.upstream {
                        prop_assert!(!e.downstream.contains(&up), "{e:?}");
                        prop_assert!(e.sender != n(1));
                    }
                    prop_assert!(!e.downstream.contains(&n(1)));
                }
                while let Some(t) = gmp.poll_transmit() {
                    let p = Packet::parse(&t.packet, DEFAULT_MTU).unwrap();
                    prop_assert_eq!(p.dst(), Addr::Node(t.to));
                    prop_assert!(GmpMessage::parse(p.body()).is_ok());
                }
            }
        }
    }
}
