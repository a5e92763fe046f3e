//! A small deterministic in-test network for the RMTP cores: one sender, relays on every node,
//! receivers as local members, links with a delay, an optional rate, and seeded loss and
//! corruption. Tables are hand-made snapshots of one tree. Not the simulator: just enough loop
//! to pass packets between cores.
#![allow(dead_code)]

use control::drp::{Route, RoutingTable};
use control::gmp::{MulticastTable, TreeEntry};
use control::rng::Rng;
use control::wire::dnp::{self, DEFAULT_MTU, Flag, Packet};
use control::{GroupAddr, Instant, NodeAddr};
use dataplane::rmtp::{
    Hop, MemSink, MemSource, ReceiverConfig, RelayAction, RelayConfig, RmtpReceiver, RmtpRelay,
    RmtpSender, SenderConfig,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub const GROUP: u16 = 0xF000;
pub const SENDER: u16 = 1;
pub const TICK: Duration = Duration::from_micros(500);

pub fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).unwrap()
}

pub fn g() -> GroupAddr {
    GroupAddr::new(GROUP).unwrap()
}

pub struct Node {
    pub addr: NodeAddr,
    pub relay: RmtpRelay,
    pub routing: RoutingTable,
    pub mcast: MulticastTable,
    pub sender: Option<RmtpSender<MemSource>>,
    /// Local member id -> receiver.
    pub receivers: BTreeMap<u16, RmtpReceiver<MemSink>>,
}

struct InFlight {
    at: Instant,
    from: u16,
    to: u16,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LinkCounters {
    pub sent: u64,
    pub lost: u64,
    pub corrupted: u64,
    /// Packets addressed to a node outside the net (a forger's address): dropped.
    pub to_absent: u64,
}

pub struct Net {
    pub now: Instant,
    pub nodes: BTreeMap<u16, Node>,
    edges: Vec<(u16, u16)>,
    flight: VecDeque<InFlight>,
    rng: Rng,
    pub loss: f64,
    /// Chance that a DATA/RETRANSMIT gets a payload byte flipped and its DNP checksum resealed.
    pub corrupt: f64,
    pub delay: Duration,
    /// Bytes per second of a directed link (from, to); unlimited if absent.
    pub rates: BTreeMap<(u16, u16), u64>,
    next_free: BTreeMap<(u16, u16), Instant>,
    /// Nodes cut off: nothing reaches or leaves them.
    pub dead: BTreeSet<u16>,
    pub links: LinkCounters,
    /// NACK packets that reached the sender core.
    pub nacks_at_sender: u64,
    buf: Vec<u8>,
}

pub struct Spec<'a> {
    /// (parent, child) tree edges; the root is the sender's node 1.
    pub edges: &'a [(u16, u16)],
    /// (node, member count) receivers.
    pub members: &'a [(u16, u16)],
    pub data: Vec<u8>,
    pub seed: u64,
    pub sender: SenderConfig,
    pub receiver: ReceiverConfig,
    pub relay: RelayConfig,
    /// Per-receiver window overrides: (node, member, window).
    pub windows: &'a [(u16, u16, u64)],
}

impl<'a> Spec<'a> {
    pub fn new(edges: &'a [(u16, u16)], members: &'a [(u16, u16)], data: Vec<u8>) -> Self {
        let mut sender = SenderConfig::new(n(SENDER), g(), DEFAULT_MTU);
        sender.initial_window = 64 * 1024;
        Spec {
            edges,
            members,
            data,
            seed: 1,
            sender,
            receiver: ReceiverConfig::new(n(SENDER), g(), n(SENDER), DEFAULT_MTU),
            relay: RelayConfig::new(n(SENDER), DEFAULT_MTU),
            windows: &[],
        }
    }
}

/// Next hop from `a` to `b` along the tree's (undirected) edges.
fn tree_routes(me: u16, edges: &[(u16, u16)], all: &BTreeSet<u16>) -> Vec<Route> {
    let mut routes = Vec::new();
    // BFS from me, remembering the first hop.
    let mut first: BTreeMap<u16, (u16, u16)> = BTreeMap::new();
    let mut queue = VecDeque::from([me]);
    let mut seen = BTreeSet::from([me]);
    while let Some(x) = queue.pop_front() {
        for &(a, b) in edges {
            let y = if a == x {
                b
            } else if b == x {
                a
            } else {
                continue;
            };
            if seen.insert(y) {
                let (hop, hops) = match first.get(&x) {
                    Some(&(h, d)) => (h, d + 1),
                    None => (y, 1),
                };
                first.insert(y, (hop, hops));
                queue.push_back(y);
            }
        }
    }
    for (&dst, &(hop, hops)) in &first {
        if all.contains(&dst) {
            routes.push(Route {
                dst: n(dst),
                next_hop: n(hop),
                hops,
            });
        }
    }
    routes
}

impl Net {
    pub fn new(spec: Spec<'_>) -> Net {
        let mut ids: BTreeSet<u16> = BTreeSet::from([SENDER]);
        for &(a, b) in spec.edges {
            ids.insert(a);
            ids.insert(b);
        }
        let now = Instant::ZERO;
        let mut nodes = BTreeMap::new();
        for &id in &ids {
            let upstream = spec
                .edges
                .iter()
                .find(|(_, c)| *c == id)
                .map(|(p, _)| n(*p));
            let mut downstream: Vec<NodeAddr> = spec
                .edges
                .iter()
                .filter(|(p, _)| *p == id)
                .map(|(_, c)| n(*c))
                .collect();
            downstream.sort();
            let count = spec
                .members
                .iter()
                .find(|(node, _)| *node == id)
                .map_or(0, |(_, c)| *c);
            let entry = TreeEntry {
                group: g(),
                sender: n(SENDER),
                upstream,
                downstream,
                local_members: (1..=count).collect(),
            };
            let mut rc = spec.relay.clone();
            rc.me = n(id);
            let sender = (id == SENDER).then(|| {
                let mut sc = spec.sender.clone();
                sc.me = n(id);
                RmtpSender::new(sc, MemSource::new(spec.data.clone()), now)
            });
            let receivers = (1..=count)
                .map(|m| {
                    let mut c = spec.receiver.clone();
                    c.me = n(id);
                    if let Some(&(_, _, w)) =
                        spec.windows.iter().find(|(x, y, _)| *x == id && *y == m)
                    {
                        c.window = w;
                    }
                    (m, RmtpReceiver::new(c, MemSink::new(), now))
                })
                .collect();
            nodes.insert(
                id,
                Node {
                    addr: n(id),
                    relay: RmtpRelay::new(rc),
                    routing: RoutingTable::new(n(id), tree_routes(id, spec.edges, &ids)),
                    mcast: MulticastTable::new(vec![entry]),
                    sender,
                    receivers,
                },
            );
        }
        Net {
            now,
            nodes,
            edges: spec.edges.to_vec(),
            flight: VecDeque::new(),
            rng: Rng::new(spec.seed),
            loss: 0.0,
            corrupt: 0.0,
            delay: Duration::from_millis(1),
            rates: BTreeMap::new(),
            next_free: BTreeMap::new(),
            dead: BTreeSet::new(),
            links: LinkCounters::default(),
            nacks_at_sender: 0,
            buf: vec![0; DEFAULT_MTU],
        }
    }

    /// Cuts `id` off: links to it drop everything and every other node's routing forgets it.
    pub fn kill(&mut self, id: u16) {
        self.dead.insert(id);
        let ids: BTreeSet<u16> = self
            .nodes
            .keys()
            .copied()
            .filter(|x| !self.dead.contains(x))
            .collect();
        let edges: Vec<(u16, u16)> = self
            .edges
            .iter()
            .copied()
            .filter(|(a, b)| !self.dead.contains(a) && !self.dead.contains(b))
            .collect();
        for (&x, node) in self.nodes.iter_mut() {
            if !self.dead.contains(&x) {
                node.routing = RoutingTable::new(n(x), tree_routes(x, &edges, &ids));
            }
        }
    }

    fn send(&mut self, from: u16, to: u16, bytes: Vec<u8>) {
        let mut at = self.now + self.delay;
        if let Some(&rate) = self.rates.get(&(from, to)) {
            let free = self.next_free.get(&(from, to)).copied().unwrap_or(self.now);
            let start = free.max(self.now);
            let ser = Duration::from_nanos(bytes.len() as u64 * 1_000_000_000 / rate);
            self.next_free.insert((from, to), start + ser);
            at = start + ser + self.delay;
        }
        self.links.sent += 1;
        self.flight.push_back(InFlight {
            at,
            from,
            to,
            bytes,
        });
    }

    fn execute(&mut self, id: u16, action: RelayAction, bytes: &[u8]) {
        if let RelayAction::Forward { to, deliver_local } = action {
            for nb in to.iter() {
                self.send(id, nb.get(), bytes.to_vec());
            }
            if deliver_local {
                self.deliver_local(id, bytes);
            }
        }
    }

    fn deliver_local(&mut self, id: u16, bytes: &[u8]) {
        let now = self.now;
        let p = Packet::parse(bytes, DEFAULT_MTU).expect("relay output is valid");
        let node = self.nodes.get_mut(&id).unwrap();
        match p.flag() {
            Flag::RmtpNack | Flag::RmtpMab => {
                if p.flag() == Flag::RmtpNack {
                    self.nacks_at_sender += 1;
                }
                if let Some(s) = node.sender.as_mut() {
                    s.handle_packet(now, &p).expect("sender takes its NACK/MAB");
                }
            }
            _ => {
                for r in node.receivers.values_mut() {
                    let _ = r.handle_packet(now, &p);
                }
            }
        }
    }

    fn arrive(&mut self, f: InFlight) {
        if self.dead.contains(&f.from) || self.dead.contains(&f.to) {
            return;
        }
        if !self.nodes.contains_key(&f.to) {
            self.links.to_absent += 1;
            return;
        }
        let lost = self.rng.chance(self.loss);
        if lost {
            self.links.lost += 1;
            return;
        }
        let mut bytes = f.bytes;
        let flag = u16::from_be_bytes([bytes[6], bytes[7]]);
        let is_data = flag == Flag::RmtpData as u16 || flag == Flag::RmtpRetransmit as u16;
        if is_data && bytes.len() > 31 && self.rng.chance(self.corrupt) {
            // Corrupt the payload and reseal: the DNP checksum is defeated, only the CRC-32C
            // can notice.
            let i = 30 + self.rng.below((bytes.len() - 30) as u64) as usize;
            bytes[i] ^= 1 << self.rng.below(8);
            let (dst, src) = (
                u16::from_be_bytes([bytes[2], bytes[3]]),
                u16::from_be_bytes([bytes[4], bytes[5]]),
            );
            dnp::seal(
                &mut bytes,
                control::Addr::from_raw(dst),
                control::Addr::from_raw(src),
                Flag::from_raw(flag).unwrap(),
            )
            .unwrap();
            self.links.corrupted += 1;
        }
        let now = self.now;
        let node = self.nodes.get_mut(&f.to).unwrap();
        let p = Packet::parse(&bytes, DEFAULT_MTU).expect("resealed packets stay valid");
        let action = node
            .relay
            .handle(now, n(f.from), &p, &node.mcast, &node.routing);
        self.execute(f.to, action, &bytes);
    }

    /// Hands `bytes` to the relay of `to` as if it arrived from neighbour `from` (which may be
    /// outside the net: a forger), and carries out the decision.
    pub fn inject(&mut self, from: u16, to: u16, bytes: &[u8]) -> RelayAction {
        let now = self.now;
        let node = self.nodes.get_mut(&to).unwrap();
        let p = Packet::parse(bytes, DEFAULT_MTU).expect("injected packets are valid DNP");
        let action = node
            .relay
            .handle(now, n(from), &p, &node.mcast, &node.routing);
        self.execute(to, action, bytes);
        action
    }

    /// A forged packet (already sealed) arriving at `to` as if neighbour `from` had sent it:
    /// what an attacker with a spoofed source address on that link can do.
    pub fn inject_forged_from_neighbour(&mut self, from: u16, to: u16, bytes: &[u8]) {
        self.arrive(InFlight {
            at: self.now,
            from,
            to,
            bytes: bytes.to_vec(),
        });
    }

    /// Lets every core on `id` send what it has.
    fn pump(&mut self, id: u16) {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let mut progress = false;
            let node = self.nodes.get_mut(&id).unwrap();
            if let Some(s) = node.sender.as_mut()
                && let Some(len) = s.poll_transmit(now, &mut buf)
            {
                let p = Packet::parse(&buf[..len], DEFAULT_MTU).unwrap();
                let action = node.relay.handle_local(now, &p, &node.mcast, &node.routing);
                self.execute(id, action, &buf[..len]);
                progress = true;
            }
            let node = self.nodes.get_mut(&id).unwrap();
            for (&m, r) in node.receivers.iter_mut() {
                while let Some(len) = r.poll_transmit(now, &mut buf) {
                    let p = Packet::parse(&buf[..len], DEFAULT_MTU).unwrap();
                    let _ = node
                        .relay
                        .handle_local_member(now, m, &p, &node.mcast, &node.routing);
                    progress = true;
                }
            }
            while let Some(t) = self
                .nodes
                .get_mut(&id)
                .unwrap()
                .relay
                .poll_transmit(now, &mut buf)
            {
                let bytes = buf[..t.len].to_vec();
                match t.to {
                    Hop::Neighbour(nb) => self.send(id, nb.get(), bytes),
                    Hop::Local => self.deliver_local(id, &bytes),
                }
                progress = true;
            }
            if !progress {
                break;
            }
        }
        self.buf = buf;
    }

    /// One tick: deliver what is due, run timers, let every core send.
    pub fn step(&mut self) {
        self.now += TICK;
        let now = self.now;
        let mut due = Vec::new();
        let mut rest = VecDeque::new();
        for f in self.flight.drain(..) {
            if f.at <= now {
                due.push(f)
            } else {
                rest.push_back(f)
            }
        }
        self.flight = rest;
        for f in due {
            self.arrive(f);
        }
        let ids: Vec<u16> = self.nodes.keys().copied().collect();
        for &id in &ids {
            if self.dead.contains(&id) {
                continue;
            }
            let node = self.nodes.get_mut(&id).unwrap();
            if node.relay.poll_timeout().is_some_and(|t| t <= now) {
                node.relay.handle_timeout(now, &node.mcast, &node.routing);
            }
            if let Some(s) = node.sender.as_mut() {
                s.handle_timeout(now);
            }
            self.pump(id);
        }
    }

    pub fn sender(&self) -> &RmtpSender<MemSource> {
        self.nodes[&SENDER].sender.as_ref().unwrap()
    }

    pub fn receivers(&self) -> impl Iterator<Item = (u16, u16, &RmtpReceiver<MemSink>)> {
        self.nodes
            .iter()
            .flat_map(|(&id, node)| node.receivers.iter().map(move |(&m, r)| (id, m, r)))
    }

    /// Runs until every live receiver completed (or failed), or `limit` of virtual time passed.
    /// Returns the virtual time taken.
    pub fn run(&mut self, limit: Duration, mut check: impl FnMut(&Net)) -> Duration {
        let end = self.now + limit;
        while self.now < end {
            self.step();
            check(self);
            let dead = &self.dead;
            if self
                .receivers()
                .filter(|(id, _, _)| !dead.contains(id))
                .all(|(_, _, r)| r.is_complete() || r.is_failed())
            {
                break;
            }
        }
        self.now.saturating_since(Instant::ZERO)
    }

    /// Runs `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    pub fn relay_totals(&self) -> dataplane::rmtp::RelayStats {
        let mut t = dataplane::rmtp::RelayStats::default();
        for node in self.nodes.values() {
            let s = node.relay.stats();
            t.nacks_received += s.nacks_received;
            t.nacks_sent_upstream += s.nacks_sent_upstream;
            t.repairs_from_cache += s.repairs_from_cache;
            t.retransmissions_forwarded += s.retransmissions_forwarded;
            t.ncfs_sent += s.ncfs_sent;
            t.prunes += s.prunes;
            t.cache_corrupt += s.cache_corrupt;
            t.mabs_sent += s.mabs_sent;
            t.nack_seqs_aggregated += s.nack_seqs_aggregated;
            t.drops_malformed += s.drops_malformed;
            t.drops_not_on_tree += s.drops_not_on_tree;
            t.drops_not_from_upstream += s.drops_not_from_upstream;
        }
        t
    }
}

/// Deterministic test content.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}
