//! RAP between nodes: a tiny harness routes each end-to-end packet hop by hop by the nodes'
//! hand-made routing tables, over perfect or seeded-lossy links, in virtual time.

mod common;

use common::{Links, bfs_routes, edges, g, n};
use control::drp::RoutingTable;
use control::rap::{
    ListError, RapBody, RapClient, RapError, RapEvent, RapMessage, RapServer, RapServerOptions,
    ServiceEntry,
};
use control::topology::Timers;
use control::wire::rap as wire;
use control::wire::{DEFAULT_MTU, Flag, Packet};
use control::{Addr, Instant, NodeAddr};
use std::collections::BTreeMap;
use std::time::Duration;

const DELAY: Duration = Duration::from_millis(1);
const SERVER_SID: u16 = 10;
const CLIENT_SID: u16 = 20;

fn services() -> Vec<ServiceEntry> {
    vec![
        ServiceEntry {
            group: g(1),
            sender: n(1),
            size: 10_000_000,
            hash: [0xAB; 32],
            segment_size: 1000,
            name: "video.mp4".into(),
        },
        ServiceEntry {
            group: g(2),
            sender: n(1),
            size: 42,
            hash: [0x01; 32],
            segment_size: 512,
            name: "notes.txt".into(),
        },
    ]
}

/// Decides, for a packet a node puts on a link, whether it may go (`false` drops it).
type Filter = Box<dyn FnMut(NodeAddr, &RapMessage<'_>) -> bool>;

#[derive(Default)]
struct Node {
    server: Option<RapServer>,
    client: Option<RapClient>,
}

struct Net {
    now: Instant,
    nodes: BTreeMap<NodeAddr, Node>,
    routes: BTreeMap<NodeAddr, RoutingTable>,
    links: Links,
    /// In flight: arrival time and order -> (arriving at, packet).
    queue: BTreeMap<(Instant, u64), (NodeAddr, Vec<u8>)>,
    seq: u64,
    unroutable: u64,
    /// Called for every packet a node is about to put on a link; `false` drops it.
    filter: Filter,
}

impl Net {
    fn new(edge_list: &[(u16, u16)], loss: f64, seed: u64) -> Net {
        let es = edges(edge_list);
        let mut nodes = BTreeMap::new();
        let mut routes = BTreeMap::new();
        for &(a, b) in &es {
            for x in [a, b] {
                nodes.entry(x).or_insert_with(Node::default);
                routes.insert(x, bfs_routes(&es, x));
            }
        }
        Net {
            now: Instant::ZERO,
            nodes,
            routes,
            links: Links::new(edge_list, loss, seed),
            queue: BTreeMap::new(),
            seq: 0,
            unroutable: 0,
            filter: Box::new(|_, _| true),
        }
    }

    fn with_server(mut self, at: u16, options: RapServerOptions) -> Net {
        let s = RapServer::with_options(n(at), SERVER_SID, services(), options).unwrap();
        self.nodes.get_mut(&n(at)).unwrap().server = Some(s);
        self
    }

    fn with_client(mut self, at: u16) -> Net {
        let c = RapClient::new(n(at), CLIENT_SID, &Timers::default());
        self.nodes.get_mut(&n(at)).unwrap().client = Some(c);
        self
    }

    fn server(&mut self, at: u16) -> &mut RapServer {
        self.nodes.get_mut(&n(at)).unwrap().server.as_mut().unwrap()
    }

    fn client(&mut self, at: u16) -> &mut RapClient {
        self.nodes.get_mut(&n(at)).unwrap().client.as_mut().unwrap()
    }

    /// Node `at` sends or relays `packet` toward its destination.
    fn route(&mut self, at: NodeAddr, packet: Vec<u8>) {
        let p = Packet::parse(&packet, DEFAULT_MTU).expect("well-formed packet");
        assert_eq!(p.flag(), Flag::Rap);
        let Addr::Node(dst) = p.dst() else {
            panic!("RAP goes to a node")
        };
        if dst == at {
            self.seq += 1;
            self.queue.insert((self.now, self.seq), (at, packet));
            return;
        }
        let Some(next) = self.routes[&at].next_hop(dst) else {
            self.unroutable += 1;
            return;
        };
        let msg = RapMessage::parse(p.body()).expect("body");
        if !(self.filter)(at, &msg) {
            return;
        }
        if self.links.carries(at, next) {
            self.seq += 1;
            self.queue
                .insert((self.now + DELAY, self.seq), (next, packet));
        }
    }

    fn flush(&mut self) {
        let mut out = Vec::new();
        for (&x, node) in &mut self.nodes {
            if let Some(s) = &mut node.server {
                while let Some(p) = s.poll_transmit() {
                    out.push((x, p));
                }
            }
            if let Some(c) = &mut node.client {
                while let Some(p) = c.poll_transmit() {
                    out.push((x, p));
                }
            }
        }
        for (x, p) in out {
            // End to end: the header names the originator, whoever relays it.
            let src = Packet::parse(&p, DEFAULT_MTU).unwrap().src();
            assert_eq!(src, Addr::Node(x));
            self.route(x, p);
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let q = self.queue.keys().next().map(|k| k.0);
        let timers = self.nodes.values().flat_map(|node| {
            let s = node.server.as_ref().and_then(RapServer::poll_timeout);
            let c = node.client.as_ref().and_then(RapClient::poll_timeout);
            [s, c].into_iter().flatten()
        });
        q.into_iter().chain(timers).min()
    }

    fn deliver(&mut self, at: NodeAddr, packet: Vec<u8>) {
        let p = Packet::parse(&packet, DEFAULT_MTU).unwrap();
        let Addr::Node(dst) = p.dst() else { return };
        if dst != at {
            self.route(at, packet);
            return;
        }
        let Addr::Node(src) = p.src() else { return };
        let msg = RapMessage::parse(p.body()).expect("body");
        let now = self.now;
        let node = self.nodes.get_mut(&at).unwrap();
        match (&mut node.server, &mut node.client) {
            (Some(s), _) if s.service_id() == msg.dst_sid => s.handle_packet(now, src, msg),
            (_, Some(c)) if c.service_id() == msg.dst_sid => c.handle_packet(now, src, msg),
            _ => panic!("no service {} on node {at}", msg.dst_sid),
        }
    }

    /// One step: everything due at the next event time. `false` when nothing is left before
    /// `until`.
    fn step(&mut self, until: Instant) -> bool {
        let Some(t) = self.next_time().filter(|&t| t <= until) else {
            self.now = until;
            return false;
        };
        self.now = t;
        while let Some(e) = self.queue.first_entry() {
            if e.key().0 > t {
                break;
            }
            let (at, packet) = e.remove();
            self.deliver(at, packet);
        }
        for (x, node) in &mut self.nodes {
            if let Some(s) = &mut node.server
                && s.poll_timeout().is_some_and(|d| d <= t)
            {
                s.handle_timeout(t);
            }
            if let Some(c) = &mut node.client
                && c.poll_timeout().is_some_and(|d| d <= t)
            {
                c.handle_timeout(t, &self.routes[x]);
            }
        }
        self.flush();
        true
    }

    fn run_until(&mut self, until: Instant) {
        while self.step(until) {}
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn events(&mut self, at: u16) -> Vec<RapEvent> {
        let c = self.client(at);
        std::iter::from_fn(|| c.poll_event()).collect()
    }
}

fn opts(max_resends: u32) -> RapServerOptions {
    RapServerOptions {
        max_resends,
        ..RapServerOptions::default()
    }
}

#[test]
fn one_exchange_on_perfect_links() {
    let mut net = Net::new(&[(1, 2), (2, 3)], 0.0, 1)
        .with_server(1, opts(5))
        .with_client(3);
    net.client(3).request(Instant::ZERO, n(1), SERVER_SID);
    net.run_for(Duration::from_millis(10));
    assert_eq!(
        net.events(3),
        vec![RapEvent::Services {
            server: n(1),
            server_sid: SERVER_SID,
            rap_id: 1,
            list: services()
        }]
    );
    let s = *net.server(1).stats();
    let c = *net.client(3).stats();
    println!("server {s:?}\nclient {c:?}");
    assert_eq!(
        (s.requests_received, s.provides_sent, s.acks_received),
        (1, 1, 1)
    );
    assert_eq!(
        (c.requests_sent, c.provides_received, c.acks_sent),
        (1, 1, 1)
    );
    assert_eq!(net.server(1).pending(), 0, "no state after the ack");
    assert_eq!(net.client(3).outstanding(), 0);
    // Nothing more is ever sent.
    net.run_for(Duration::from_secs(30));
    assert_eq!(net.server(1).stats().provides_sent, 1);
    assert_eq!(net.client(3).stats().requests_sent, 1);
    assert_eq!(net.next_time(), None);
}

#[test]
fn client_learns_services_over_thirty_percent_lossy_links() {
    let mut freed_by_ack = 0;
    let mut learned_ms = Vec::new();
    for seed in 0..20 {
        let mut net = Net::new(&[(1, 2), (2, 3)], 0.3, seed)
            .with_server(1, opts(10))
            .with_client(3);
        net.client(3).request(Instant::ZERO, n(1), SERVER_SID);
        let mut learned = None;
        let mut acks = 0;
        let limit = Instant::from_millis(120_000);
        while net.step(limit) {
            let evs = net.events(3);
            if !evs.is_empty() {
                assert!(learned.is_none(), "seed {seed}: services emitted twice");
                assert_eq!(evs.len(), 1);
                let RapEvent::Services { list, .. } = &evs[0];
                assert_eq!(list, &services());
                learned = Some(net.now);
            }
            let now_acks = net.server(1).stats().acks_received;
            if now_acks > acks {
                acks = now_acks;
                assert_eq!(
                    net.server(1).pending(),
                    0,
                    "seed {seed}: state kept after ack"
                );
            }
        }
        let learned = learned.unwrap_or_else(|| panic!("seed {seed}: never learned"));
        learned_ms.push(learned.as_nanos() / 1_000_000);
        assert_eq!(net.server(1).pending(), 0, "seed {seed}");
        assert_eq!(net.client(3).outstanding(), 0);
        let s = *net.server(1).stats();
        assert_eq!(s.acks_received + s.gave_up, 1, "seed {seed}: {s:?}");
        freed_by_ack += s.acks_received;
    }
    learned_ms.sort_unstable();
    println!(
        "30% loss per link, 2 hops, 20 seeds: learned after {learned_ms:?} ms; \
         server state freed by ack in {freed_by_ack}/20, by giving up in the rest"
    );
    assert!(freed_by_ack >= 18, "{freed_by_ack}");
}

#[test]
fn lost_provide_is_recovered_by_the_server_even_if_the_client_retries_are_lost() {
    let mut net = Net::new(&[(1, 2)], 0.0, 1)
        .with_server(1, opts(5))
        .with_client(2);
    // The first provide and every retried request are lost.
    let mut provides = 0;
    let mut requests = 0;
    net.filter = Box::new(move |_, m| match m.body {
        RapBody::Provide(_) => {
            provides += 1;
            provides > 1
        }
        RapBody::Request { .. } => {
            requests += 1;
            requests == 1
        }
        RapBody::Ack => true,
    });
    net.client(2).request(Instant::ZERO, n(1), SERVER_SID);
    net.run_for(Duration::from_millis(1500));
    assert_eq!(net.events(2).len(), 1, "learned from the re-sent provide");
    let s = *net.server(1).stats();
    assert_eq!((s.requests_received, s.provides_sent, s.resends), (1, 2, 1));
    assert_eq!(net.server(1).pending(), 0);
    assert_eq!(net.client(2).stats().requests_sent, 2, "one retry, lost");
}

#[test]
fn duplicate_requests_reuse_the_id_and_duplicate_provides_are_acked_again() {
    let now = Instant::ZERO;
    let mut server = RapServer::new(n(1), SERVER_SID, services()).unwrap();
    let req = wire::padded_request(SERVER_SID, CLIENT_SID, DEFAULT_MTU);
    for _ in 0..3 {
        server.handle_body(now, n(5), &req).expect("request parses");
    }
    // A second client gets its own id.
    server.handle_body(now, n(6), &req).expect("request parses");
    let ids: Vec<u16> = std::iter::from_fn(|| server.poll_transmit())
        .map(|p| {
            let p = Packet::parse(&p, DEFAULT_MTU).unwrap();
            RapMessage::parse(p.body()).unwrap().rap_id
        })
        .collect();
    assert_eq!(ids, vec![1, 1, 1, 2]);
    assert_eq!(server.pending(), 2);
    assert_eq!(server.stats().duplicate_requests, 2);

    // The client: a provide answers once; its duplicates are acked, not re-emitted.
    let mut client = RapClient::new(n(5), CLIENT_SID, &Timers::default());
    let routes = bfs_routes(&edges(&[(1, 5)]), n(5));
    client.request(now, n(1), SERVER_SID);
    client.handle_timeout(now, &routes);
    assert!(client.poll_transmit().is_some());
    let provide = wire::provide(CLIENT_SID, SERVER_SID, 1, &services(), DEFAULT_MTU).unwrap();
    for _ in 0..3 {
        client.handle_body(now, n(1), &provide).unwrap();
    }
    assert_eq!(std::iter::from_fn(|| client.poll_event()).count(), 1);
    let acks: Vec<Vec<u8>> = std::iter::from_fn(|| client.poll_transmit()).collect();
    assert_eq!(acks.len(), 3);
    let c = *client.stats();
    assert_eq!(
        (c.provides_received, c.duplicate_provides, c.acks_sent),
        (1, 2, 3)
    );

    // Any one of the acks frees the server; the others are stale.
    for ack in &acks {
        let p = Packet::parse(ack, DEFAULT_MTU).unwrap();
        assert_eq!(p.dst(), Addr::Node(n(1)));
        server.handle_body(now, n(5), p.body()).unwrap();
    }
    assert_eq!(server.pending(), 1, "only client 6 left");
    assert_eq!(server.stats().acks_received, 1);
    assert_eq!(server.stats().stale_acks, 2);
}

#[test]
fn client_pauses_while_the_server_is_unreachable() {
    let mut net = Net::new(&[(1, 2), (2, 3)], 0.0, 1)
        .with_server(1, opts(5))
        .with_client(3);
    net.routes.insert(n(3), RoutingTable::empty(n(3)));
    net.client(3).request(Instant::ZERO, n(1), SERVER_SID);
    net.run_for(Duration::from_millis(10_500));
    let c = *net.client(3).stats();
    assert_eq!(c.requests_sent, 0, "nothing sent without a route");
    assert_eq!(c.paused, 11, "checked at 0, 1, ..., 10 s");
    assert_eq!(net.unroutable, 0);
    assert_eq!(net.server(1).stats().requests_received, 0);

    // The route returns: the request goes out at once, not at the next retry time.
    let routes = bfs_routes(&net.links.edges(), n(3));
    net.routes.insert(n(3), routes.clone());
    let now = net.now;
    net.client(3).routes_changed(now, &routes);
    net.flush();
    assert_eq!(net.client(3).stats().requests_sent, 1);
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.events(3).len(), 1);
    assert_eq!(net.server(1).pending(), 0);
    println!("client after the pause: {:?}", net.client(3).stats());
}

#[test]
fn server_gives_up_after_bounded_resends() {
    let mut net = Net::new(&[(1, 2)], 0.0, 1)
        .with_server(1, opts(3))
        .with_client(2);
    // Every provide is lost, and the client asks only once.
    net.filter = Box::new(|_, m| !matches!(m.body, RapBody::Provide(_)));
    net.client(2).request(Instant::ZERO, n(1), SERVER_SID);
    net.run_for(Duration::from_millis(100));
    // Keep the client from asking again: it is the server's bound under test.
    let mut quiet = RapClient::new(n(2), CLIENT_SID, &Timers::default());
    std::mem::swap(net.client(2), &mut quiet);
    net.run_for(Duration::from_secs(10));
    let s = *net.server(1).stats();
    assert_eq!((s.provides_sent, s.resends, s.gave_up), (4, 3, 1));
    assert_eq!(net.server(1).pending(), 0);
    assert_eq!(net.server(1).poll_timeout(), None);
}

#[test]
fn registration_refuses_lists_that_do_not_fit() {
    let name = "n".repeat(200);
    let mut big = services();
    big.truncate(1);
    big[0].name = name;
    let list: Vec<ServiceEntry> = std::iter::repeat_n(big[0].clone(), 5).collect();
    match RapServer::new(n(1), SERVER_SID, list.clone()) {
        Err(RapError::List(ListError::TooLarge { fits, mtu, .. })) => {
            assert_eq!((fits, mtu), (4, DEFAULT_MTU));
        }
        other => panic!("{other:?}"),
    }
    // A larger network MTU takes it; a bad list later leaves the old one in place.
    let mut s = RapServer::with_options(
        n(1),
        SERVER_SID,
        list.clone(),
        RapServerOptions {
            mtu: 1500,
            ..RapServerOptions::default()
        },
    )
    .unwrap();
    let mut bad = services();
    bad[1].name = "x".repeat(300);
    assert_eq!(
        s.set_services(bad),
        Err(RapError::List(ListError::NameTooLong {
            index: 1,
            len: 300
        }))
    );
    assert_eq!(s.services(), &list[..]);
    assert!(s.set_services(services()).is_ok());
}

#[test]
fn stray_and_malformed_packets_are_counted() {
    let now = Instant::ZERO;
    let mut server = RapServer::new(n(1), SERVER_SID, services()).unwrap();
    assert!(server.handle_body(now, n(2), &[0, 10, 0]).is_err());
    server
        .handle_body(now, n(2), &wire::request(SERVER_SID + 1, CLIENT_SID))
        .unwrap();
    server
        .handle_body(now, n(2), &wire::ack(SERVER_SID, CLIENT_SID, 9))
        .unwrap();
    let s = *server.stats();
    assert_eq!((s.malformed, s.ignored, s.stale_acks), (1, 1, 1));
    assert_eq!(server.pending(), 0);
    assert!(server.poll_transmit().is_none());

    let mut client = RapClient::new(n(2), CLIENT_SID, &Timers::default());
    let unsolicited = wire::provide(CLIENT_SID, SERVER_SID, 4, &services(), DEFAULT_MTU).unwrap();
    client.handle_body(now, n(1), &unsolicited).unwrap();
    client
        .handle_body(now, n(1), &wire::request(CLIENT_SID, SERVER_SID))
        .unwrap();
    assert!(client.handle_body(now, n(1), &[0xFF]).is_err());
    let c = *client.stats();
    assert_eq!((c.unsolicited_provides, c.ignored, c.malformed), (1, 1, 1));
    assert!(
        client.poll_event().is_none(),
        "nothing asked, nothing emitted"
    );
    assert_eq!(
        client.stats().acks_sent,
        1,
        "acked so a server can forget it"
    );
}

/// What a server did under a flood of spoofed requests while one real client asked it.
struct Flood {
    spoofed_request_bytes: u64,
    answer_bytes_to_spoofed: u64,
    pending_before: (usize, usize),
    /// The most pending entries at once, and their approximate bytes.
    pending_most: (usize, usize),
    pending_after: (usize, usize),
    real_client_lists: Vec<RapEvent>,
    server: RapServer,
}

/// The `i`-th spoofed request, each from a distinct claimed client (node, service id), none of
/// which ever acknowledges: the cheapest an attacker can send (no padding) or one padded to
/// the MTU like a real client's.
fn spoofed_request(i: u32, padded: bool) -> (NodeAddr, Vec<u8>) {
    let node = n(u16::try_from(100 + i % 10_000).unwrap());
    let sid = u16::try_from(i / 10_000).unwrap();
    let len = if padded { DEFAULT_MTU } else { 0 };
    let body = wire::padded_request(SERVER_SID, sid, len);
    (node, wire::packet(n(1), node, &body))
}

/// Server 1, real client 2 one link away; `flood` spoofed requests spread over the first
/// second, the real client's first request in the middle of them, then 10 s of timers.
fn flood_server(flood: u32, padded: bool) -> Flood {
    let mut server = RapServer::new(n(1), SERVER_SID, services()).unwrap();
    let mut client = RapClient::new(n(2), CLIENT_SID, &Timers::default());
    let routes = bfs_routes(&edges(&[(1, 2)]), n(2));
    let mut report = Flood {
        spoofed_request_bytes: 0,
        answer_bytes_to_spoofed: 0,
        pending_before: (server.pending(), server.approx_bytes()),
        pending_most: (0, 0),
        pending_after: (0, 0),
        real_client_lists: Vec::new(),
        server: RapServer::new(n(1), SERVER_SID, Vec::new()).unwrap(),
    };
    let step = Duration::from_millis(10);
    let per_step = flood.div_ceil(100);
    let mut sent = 0;
    let mut now = Instant::ZERO;
    while now <= Instant::from_millis(11_000) {
        for _ in 0..per_step.min(flood - sent) {
            let (node, packet) = spoofed_request(sent, padded);
            sent += 1;
            report.spoofed_request_bytes += packet.len() as u64;
            let p = Packet::parse(&packet, DEFAULT_MTU).unwrap();
            server.handle_body(now, node, p.body()).unwrap();
        }
        if now == Instant::from_millis(500) {
            client.request(now, n(1), SERVER_SID);
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now, &routes);
        }
        // Perfect link, no delay: packets between 1 and 2 arrive at once.
        while let Some(packet) = client.poll_transmit() {
            let p = Packet::parse(&packet, DEFAULT_MTU).unwrap();
            server.handle_body(now, n(2), p.body()).unwrap();
        }
        while let Some(packet) = server.poll_transmit() {
            let p = Packet::parse(&packet, DEFAULT_MTU).unwrap();
            match p.dst() {
                Addr::Node(to) if to == n(2) => client.handle_body(now, n(1), p.body()).unwrap(),
                _ => report.answer_bytes_to_spoofed += packet.len() as u64,
            }
        }
        while let Some(packet) = client.poll_transmit() {
            let p = Packet::parse(&packet, DEFAULT_MTU).unwrap();
            server.handle_body(now, n(2), p.body()).unwrap();
        }
        report
            .real_client_lists
            .extend(std::iter::from_fn(|| client.poll_event()));
        report.pending_most = report
            .pending_most
            .max((server.pending(), server.approx_bytes()));
        now += step;
    }
    report.pending_after = (server.pending(), server.approx_bytes());
    let ratio = report.answer_bytes_to_spoofed as f64 / report.spoofed_request_bytes as f64;
    println!(
        "RAP flood of {flood} spoofed requests (padded: {padded}): {} request bytes in, {} \
         answer bytes out toward the spoofed sources (ratio {ratio:.3}); pending {:?} -> most \
         {:?} -> {:?} (entries, approx bytes); {:?}",
        report.spoofed_request_bytes,
        report.answer_bytes_to_spoofed,
        report.pending_before,
        report.pending_most,
        report.pending_after,
        server.stats()
    );
    report.server = server;
    report
}

fn assert_no_amplification_and_the_real_client_served(flood: &Flood) {
    assert!(
        flood.answer_bytes_to_spoofed <= flood.spoofed_request_bytes,
        "{} answer bytes for {} request bytes",
        flood.answer_bytes_to_spoofed,
        flood.spoofed_request_bytes
    );
    assert_eq!(flood.real_client_lists.len(), 1);
    let RapEvent::Services { list, .. } = &flood.real_client_lists[0];
    assert_eq!(list, &services());
}

#[test]
fn two_thousand_spoofed_requests_get_no_more_answer_bytes_than_they_carry() {
    for padded in [false, true] {
        let flood = flood_server(2_000, padded);
        assert_no_amplification_and_the_real_client_served(&flood);
    }
}

#[test]
fn a_request_flood_of_100_000_clients_keeps_the_pending_table_at_its_capacity() {
    // The cheapest requests leave no state at all.
    let flood = flood_server(100_000, false);
    assert_no_amplification_and_the_real_client_served(&flood);
    assert_eq!(flood.pending_most.0, 0);
    assert_eq!(flood.server.stats().requests_too_small, 100_000);
    // Requests that pay for their answer fill the table, and no further.
    let flood = flood_server(100_000, true);
    assert_no_amplification_and_the_real_client_served(&flood);
    let capacity = RapServerOptions::default().max_pending;
    assert_eq!(flood.pending_most.0, capacity);
    assert!(flood.server.stats().pending_table_full >= 100_000 - capacity as u64);
}

#[test]
fn a_request_too_small_to_pay_for_the_answer_is_refused_and_leaves_no_state() {
    let now = Instant::ZERO;
    let mut server = RapServer::new(n(1), SERVER_SID, services()).unwrap();
    let provide_len = wire::provide_packet_len(&services());
    let small = wire::request(SERVER_SID, CLIENT_SID);
    for _ in 0..10 {
        server.handle_body(now, n(5), &small).unwrap();
    }
    assert!(server.poll_transmit().is_none());
    assert_eq!(server.pending(), 0, "nothing remembered");
    assert_eq!(server.stats().requests_too_small, 10);

    // A request that pays for exactly one provide gets it, and no re-send on credit the
    // client never gave.
    let exact = wire::padded_request(SERVER_SID, CLIENT_SID, provide_len);
    server.handle_body(now, n(5), &exact).unwrap();
    assert_eq!(server.poll_transmit().map(|p| p.len()), Some(provide_len));
    server.handle_timeout(now + Duration::from_secs(1));
    assert!(server.poll_transmit().is_none());
    let s = *server.stats();
    assert_eq!((s.provides_withheld, s.resends), (1, 0));
    // Its small retries add up until they pay for another one.
    let needed = provide_len.div_ceil(wire::REQUEST_PACKET_LEN);
    for _ in 1..needed {
        server.handle_body(now, n(5), &small).unwrap();
    }
    assert!(server.poll_transmit().is_none());
    server.handle_body(now, n(5), &small).unwrap();
    assert_eq!(server.poll_transmit().map(|p| p.len()), Some(provide_len));
    let s = *server.stats();
    assert!(s.provide_bytes_sent <= s.request_bytes_received, "{s:?}");
}
