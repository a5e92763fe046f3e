//! The engine proper: the clock, the nodes, the links and the loop that applies events.

use super::link::{Copy, DirLink, Offer};
use super::queue::{Arrival, Event, EventQueue, Gather};
use super::stats::{EngineStats, LinkStats};
use super::trace::TraceHash;
use super::{Boot, MAX_ARRIVAL_BATCH, SimError, SimNode};
use control::rng::Rng;
use control::topology::{Action, Faults, Topology};
use control::{Instant, NodeAddr, Transmit};
use std::ops::{Deref, DerefMut};
use std::time::Duration;

/// Labels that separate the run's random streams (links, node seeds) from each other.
const LINK_STREAMS: u64 = 0x4c49_4e4b;
const NODE_SEEDS: u64 = 0x4e4f_4445;

/// A node that asks for a timeout at or before `now` this many times in a row at one instant
/// never lets time move: that is a bug in the node, and a panic beats a hung test.
const SPIN_LIMIT: u32 = 100_000;

/// One node's place in the engine: its state (`None` while down) and its bookkeeping.
struct Slot<N> {
    addr: NodeAddr,
    node: Option<N>,
    /// Bumped when the node goes down; copies stamped with an older one are discarded.
    incarnation: u32,
    /// Links out of this node, sorted by neighbour: (neighbour, directed link index).
    out: Vec<(NodeAddr, u32)>,
    /// Only the timer entry carrying this generation is live.
    timer_generation: u32,
    /// The time of the live timer entry, if any.
    armed: Option<Instant>,
    spin_at: Instant,
    spins: u32,
}

impl<N> Slot<N> {
    fn new(addr: NodeAddr) -> Self {
        Slot {
            addr,
            node: None,
            incarnation: 0,
            out: Vec::new(),
            timer_generation: 0,
            armed: None,
            spin_at: Instant::ZERO,
            spins: 0,
        }
    }

    fn link_to(&self, to: NodeAddr) -> Option<usize> {
        self.out
            .binary_search_by_key(&to, |&(n, _)| n)
            .ok()
            .map(|i| self.out[i].1 as usize)
    }
}

/// A simulated network of nodes of type `N`. See the module documentation for the event model.
/// An observer of delivered datagrams: `(now, from, to, datagram)`.
type Tap = dyn FnMut(Instant, NodeAddr, NodeAddr, &[u8]);

pub struct Sim<N> {
    now: Instant,
    seed: u64,
    mtu: usize,
    /// Sorted by address: iteration is always in address order.
    slots: Vec<Slot<N>>,
    links: Vec<DirLink>,
    queue: EventQueue,
    make_node: Box<dyn FnMut(Boot) -> N>,
    node_seeds: Rng,
    trace: TraceHash,
    /// Sees every delivered datagram (tests count packets with it).
    tap: Option<Box<Tap>>,
    dropped_no_link: u64,
    engine: EngineStats,
    reorder_window: Duration,
    cond_interval: Duration,
    /// Reused buffers, so steady state does not allocate per call.
    outbox: Vec<Transmit>,
    copies: Vec<Copy>,
    /// Arrivals handed in together, and their datagrams end to end.
    arrivals: Vec<Arrival>,
    batch: Vec<u8>,
}

impl<N: SimNode> Sim<N> {
    /// Builds the network of `topology` and boots every node (in address order) at time zero.
    /// The topology's schedule is queued and applied at its times. `make_node` is called again
    /// whenever a node comes back up.
    pub fn new(
        topology: &Topology,
        seed: u64,
        make_node: impl FnMut(Boot) -> N + 'static,
    ) -> Result<Self, SimError> {
        let mut addrs: Vec<NodeAddr> = topology.nodes.iter().map(|n| n.addr).collect();
        addrs.sort_unstable();
        if let Some(w) = addrs.windows(2).find(|w| w[0] == w[1]) {
            return Err(SimError::DuplicateNode(w[0]));
        }
        let mut slots: Vec<Slot<N>> = addrs.iter().map(|&a| Slot::new(a)).collect();
        let index = |a: NodeAddr| {
            addrs
                .binary_search(&a)
                .map_err(|_| SimError::UnknownNode(a))
        };

        let link_seeds = Rng::new(seed).fork(LINK_STREAMS);
        let mut links = Vec::with_capacity(topology.links.len() * 2);
        for spec in &topology.links {
            if spec.a == spec.b {
                return Err(SimError::SelfLink(spec.a));
            }
            let (ia, ib) = (index(spec.a)?, index(spec.b)?);
            for (from, to) in [(ia, ib), (ib, ia)] {
                let to_addr = addrs[to];
                let out = &mut slots[from].out;
                match out.binary_search_by_key(&to_addr, |&(n, _)| n) {
                    Ok(_) => return Err(SimError::DuplicateLink(spec.a, spec.b)),
                    Err(pos) => out.insert(pos, (to_addr, links.len() as u32)),
                }
                let label = u64::from(addrs[from].get()) << 16 | u64::from(to_addr.get());
                links.push(DirLink::new(
                    from as u32,
                    to as u32,
                    spec.faults,
                    link_seeds.fork(label),
                ));
            }
        }

        let mut queue = EventQueue::default();
        for ev in &topology.schedule {
            match ev.action {
                Action::LinkDown(a, b) | Action::LinkUp(a, b) => {
                    let ia = index(a)?;
                    index(b)?;
                    if slots[ia].link_to(b).is_none() {
                        return Err(SimError::NoLink(a, b));
                    }
                }
                Action::NodeDown(a) | Action::NodeUp(a) => {
                    index(a)?;
                }
            }
            queue.push(Instant::ZERO + ev.at, Event::Scheduled(ev.action));
        }

        let mut sim = Sim {
            now: Instant::ZERO,
            seed,
            mtu: topology.network.mtu,
            slots,
            links,
            queue,
            make_node: Box::new(make_node),
            node_seeds: Rng::new(seed).fork(NODE_SEEDS),
            trace: TraceHash::default(),
            tap: None,
            dropped_no_link: 0,
            engine: EngineStats::default(),
            reorder_window: Duration::from_millis(10),
            cond_interval: Duration::from_millis(1),
            outbox: Vec::new(),
            arrivals: Vec::new(),
            batch: Vec::new(),
            copies: Vec::new(),
        };
        for idx in 0..sim.slots.len() {
            sim.boot(idx);
        }
        Ok(sim)
    }

    // ---- time ---------------------------------------------------------------------------

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The network's MTU (from the topology), for nodes and checks that parse packets.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The time of the earliest pending event (possibly a stale timer).
    pub fn next_event_time(&self) -> Option<Instant> {
        self.queue.peek_time()
    }

    /// Runs every event at the earliest pending instant (including events that this creates at
    /// the same instant) and returns that instant; `None` when nothing is pending.
    pub fn step(&mut self) -> Option<Instant> {
        let t = self.queue.peek_time()?;
        self.run_batch(t);
        Some(t)
    }

    /// Runs every event due at or before `t`, then sets the clock to `t` (if it is later).
    pub fn run_until(&mut self, t: Instant) {
        while let Some(next) = self.queue.peek_time().filter(|&n| n <= t) {
            self.run_batch(next);
        }
        self.now = self.now.max(t);
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until `cond` holds or the clock reaches `deadline`. Returns the time at which `cond`
    /// was seen to hold (the clock stays there), or `None` with the clock at `deadline`.
    ///
    /// `cond` is checked at the start, then after an event batch once at least the condition
    /// interval ([`Sim::set_cond_interval`], default 1 ms) of virtual time has passed since the
    /// last check, before a batch that would jump the clock past that interval, and once more
    /// at the end. State only changes at events, so the answer is late by at most one interval
    /// and never wrong.
    pub fn run_until_cond(
        &mut self,
        deadline: Instant,
        mut cond: impl FnMut(&Self) -> bool,
    ) -> Option<Instant> {
        if cond(self) {
            return Some(self.now);
        }
        let mut last_check = self.now;
        let mut unchecked = false;
        while let Some(t) = self.queue.peek_time().filter(|&n| n <= deadline) {
            // Time is about to jump past the interval: look at the state the last batch left
            // first, so the instant returned is when the condition became true, not the next
            // event's (which may be far later).
            if unchecked && t >= last_check + self.cond_interval {
                last_check = self.now;
                if cond(self) {
                    return Some(self.now);
                }
            }
            self.run_batch(t);
            unchecked = true;
            if t >= last_check + self.cond_interval {
                last_check = t;
                unchecked = false;
                if cond(self) {
                    return Some(t);
                }
            }
        }
        if unchecked && cond(self) {
            return Some(self.now);
        }
        self.now = self.now.max(deadline);
        None
    }

    /// How much virtual time may pass between checks of a `run_until_cond` condition: raise it
    /// for expensive conditions over many nodes.
    pub fn set_cond_interval(&mut self, d: Duration) {
        self.cond_interval = d;
    }

    /// The largest extra hold-back of a reordered copy (uniform in `(0, window]`, default
    /// 10 ms). Packets sent within that window after it may overtake it.
    pub fn set_reorder_window(&mut self, window: Duration) {
        self.reorder_window = window;
    }

    // ---- nodes --------------------------------------------------------------------------

    /// The node at `addr`, if it is in the topology and up.
    pub fn node(&self, addr: NodeAddr) -> Option<&N> {
        self.slots[self.index(addr).ok()?].node.as_ref()
    }

    /// Mutable access to an up node, e.g. to start a transfer. When the guard is dropped the
    /// engine drains the node's transmits and re-reads its timeout, as after any event.
    pub fn node_mut(&mut self, addr: NodeAddr) -> Option<NodeMut<'_, N>> {
        let idx = self.index(addr).ok()?;
        self.slots[idx].node.as_ref()?;
        Some(NodeMut { sim: self, idx })
    }

    /// The up nodes, in ascending address order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeAddr, &N)> {
        self.slots
            .iter()
            .filter_map(|s| s.node.as_ref().map(|n| (s.addr, n)))
    }

    /// Every node of the topology, up or down, ascending.
    pub fn addrs(&self) -> impl Iterator<Item = NodeAddr> + '_ {
        self.slots.iter().map(|s| s.addr)
    }

    pub fn is_up(&self, addr: NodeAddr) -> bool {
        self.node(addr).is_some()
    }

    /// How many times the node has gone down (its current incarnation number).
    pub fn incarnation(&self, addr: NodeAddr) -> Option<u32> {
        Some(self.slots[self.index(addr).ok()?].incarnation)
    }

    /// The node's neighbours by the topology (whether the links are up or not), ascending.
    pub fn neighbours(&self, addr: NodeAddr) -> impl Iterator<Item = NodeAddr> + '_ {
        let out = match self.index(addr) {
            Ok(i) => &self.slots[i].out[..],
            Err(_) => &[],
        };
        out.iter().map(|&(n, _)| n)
    }

    /// Takes a node down: its state is dropped, its timer cancelled, and every copy in flight to
    /// or from it is discarded when it lands. Nothing happens if it is already down.
    pub fn node_down(&mut self, addr: NodeAddr) -> Result<(), SimError> {
        let idx = self.index(addr)?;
        let slot = &mut self.slots[idx];
        if slot.node.take().is_some() {
            slot.incarnation = slot.incarnation.wrapping_add(1);
            slot.timer_generation = slot.timer_generation.wrapping_add(1);
            slot.armed = None;
        }
        Ok(())
    }

    /// Brings a down node back with fresh state from `make_node`. Nothing happens if it is up.
    pub fn node_up(&mut self, addr: NodeAddr) -> Result<(), SimError> {
        let idx = self.index(addr)?;
        if self.slots[idx].node.is_none() {
            self.boot(idx);
        }
        Ok(())
    }

    /// Down and up at once: the node starts over with fresh state.
    pub fn reboot(&mut self, addr: NodeAddr) -> Result<(), SimError> {
        self.node_down(addr)?;
        self.node_up(addr)
    }

    // ---- links --------------------------------------------------------------------------

    /// Takes the link down in both directions; what is on it is lost.
    pub fn link_down(&mut self, a: NodeAddr, b: NodeAddr) -> Result<(), SimError> {
        self.update_link(a, b, |f| f.down = true)
    }

    pub fn link_up(&mut self, a: NodeAddr, b: NodeAddr) -> Result<(), SimError> {
        self.update_link(a, b, |f| f.down = false)
    }

    /// True when the link exists and neither direction is down.
    pub fn is_link_up(&self, a: NodeAddr, b: NodeAddr) -> bool {
        match (self.dir_link(a, b), self.dir_link(b, a)) {
            (Ok(x), Ok(y)) => !self.links[x].is_down() && !self.links[y].is_down(),
            _ => false,
        }
    }

    /// Sets the faults of both directions (including `down`).
    pub fn set_faults(&mut self, a: NodeAddr, b: NodeAddr, faults: Faults) -> Result<(), SimError> {
        self.update_link(a, b, |f| *f = faults)
    }

    /// Sets the faults of the direction `from -> to` only.
    pub fn set_faults_one_way(
        &mut self,
        from: NodeAddr,
        to: NodeAddr,
        faults: Faults,
    ) -> Result<(), SimError> {
        let l = self.dir_link(from, to)?;
        self.links[l].set_faults(faults);
        Ok(())
    }

    pub fn faults(&self, from: NodeAddr, to: NodeAddr) -> Option<Faults> {
        Some(self.links[self.dir_link(from, to).ok()?].faults())
    }

    /// In both directions, with probability `p` a copy has 1..=3 payload bytes changed and its
    /// DNP checksum recomputed, so DNP accepts it: for testing end-to-end integrity checks.
    pub fn set_undetected_corruption(
        &mut self,
        a: NodeAddr,
        b: NodeAddr,
        p: f64,
    ) -> Result<(), SimError> {
        let (x, y) = (self.dir_link(a, b)?, self.dir_link(b, a)?);
        self.links[x].undetected = p;
        self.links[y].undetected = p;
        Ok(())
    }

    // ---- counters -----------------------------------------------------------------------

    /// Counters of the direction `from -> to`.
    pub fn link_stats(&self, from: NodeAddr, to: NodeAddr) -> Option<LinkStats> {
        Some(self.links[self.dir_link(from, to).ok()?].stats)
    }

    /// Copies on the wire `from -> to` right now.
    pub fn in_flight(&self, from: NodeAddr, to: NodeAddr) -> Option<u64> {
        Some(self.links[self.dir_link(from, to).ok()?].in_flight)
    }

    /// Every direction's counters as (from, to, stats), ordered by (from, to).
    pub fn link_stats_all(&self) -> impl Iterator<Item = (NodeAddr, NodeAddr, &LinkStats)> {
        self.slots.iter().flat_map(move |s| {
            s.out
                .iter()
                .map(move |&(to, l)| (s.addr, to, &self.links[l as usize].stats))
        })
    }

    /// All directions summed, plus the transmits that had no link to go on.
    pub fn totals(&self) -> LinkStats {
        let mut t = LinkStats::default();
        for l in &self.links {
            t += &l.stats;
        }
        t.dropped_no_link = self.dropped_no_link;
        t
    }

    pub fn engine_stats(&self) -> EngineStats {
        self.engine
    }

    /// Events in the queue (stale timer entries included).
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// A hash of every delivery so far (time, link, bytes, in order): equal for two runs with
    /// one seed and one setup, different (with overwhelming probability) otherwise.
    /// Gives the direction `from` → `to` a serialisation rate in bytes per second (`None`:
    /// infinitely fast). Packets queue behind each other, up to the link's `queue_bytes`.
    pub fn set_rate(
        &mut self,
        from: NodeAddr,
        to: NodeAddr,
        rate: Option<u64>,
    ) -> Result<(), SimError> {
        let l = self.dir_link(from, to)?;
        self.links[l].set_rate(rate);
        Ok(())
    }

    /// Calls `tap(now, from, to, datagram)` for every datagram delivered from now on, before
    /// the receiving node sees it. One tap at a time; a new one replaces the old.
    pub fn set_tap(&mut self, tap: impl FnMut(Instant, NodeAddr, NodeAddr, &[u8]) + 'static) {
        self.tap = Some(Box::new(tap));
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace.value()
    }

    // ---- internals ----------------------------------------------------------------------

    fn index(&self, addr: NodeAddr) -> Result<usize, SimError> {
        self.slots
            .binary_search_by_key(&addr, |s| s.addr)
            .map_err(|_| SimError::UnknownNode(addr))
    }

    fn dir_link(&self, from: NodeAddr, to: NodeAddr) -> Result<usize, SimError> {
        self.slots[self.index(from)?]
            .link_to(to)
            .ok_or(SimError::NoLink(from, to))
    }

    fn update_link(
        &mut self,
        a: NodeAddr,
        b: NodeAddr,
        change: impl Fn(&mut Faults),
    ) -> Result<(), SimError> {
        for l in [self.dir_link(a, b)?, self.dir_link(b, a)?] {
            let mut f = self.links[l].faults();
            change(&mut f);
            self.links[l].set_faults(f);
        }
        Ok(())
    }

    fn boot(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        let label = u64::from(slot.addr.get()) | u64::from(slot.incarnation) << 16;
        let boot = Boot {
            addr: slot.addr,
            now: self.now,
            seed: self.node_seeds.fork(label).next_u64(),
            incarnation: slot.incarnation,
        };
        slot.node = Some((self.make_node)(boot));
        self.engine.boots += 1;
        self.after_touch(idx);
    }

    fn run_batch(&mut self, t: Instant) {
        self.now = self.now.max(t);
        while let Some((at, event)) = self.queue.pop_due(t) {
            self.engine.events += 1;
            match event {
                Event::Arrival(a) => self.arrive(at, a),
                Event::Timer { node, generation } => self.fire(node as usize, generation),
                Event::Scheduled(action) => self.apply(action),
            }
        }
    }

    fn apply(&mut self, action: Action) {
        self.engine.scheduled += 1;
        // Every scheduled action was checked against the topology in `new`.
        let _ = match action {
            Action::LinkDown(a, b) => self.link_down(a, b),
            Action::LinkUp(a, b) => self.link_up(a, b),
            Action::NodeDown(a) => self.node_down(a),
            Action::NodeUp(a) => self.node_up(a),
        };
    }

    /// Hands `first`, and the arrivals due at the same instant `at` right after it that would
    /// make one `UDP_GRO` receive with it, to the node at the link's far end. On a link that
    /// coalesces, its arrivals at `at` join wherever they are among that instant's events.
    fn arrive(&mut self, at: Instant, first: Arrival) {
        let mut arrivals = std::mem::take(&mut self.arrivals);
        let segment = first.packet.len();
        let coalesces = !self.links[first.link as usize].faults().coalesce.is_zero();
        arrivals.push(first);
        if coalesces && segment > 0 {
            // What the link brought in its interval arrives at one instant: its arrivals
            // make a batch even where another link's come between them in the queue.
            let key = stamp(&arrivals[0]);
            let (mut count, mut last_full) = (1, true);
            let taken = self.queue.take_arrivals_at(at, &mut arrivals, |next| {
                if !last_full || count >= MAX_ARRIVAL_BATCH {
                    return Gather::Stop;
                }
                if stamp(next) != key {
                    return Gather::Pass;
                }
                if !(1..=segment).contains(&next.packet.len()) {
                    return Gather::Stop;
                }
                count += 1;
                last_full = next.packet.len() == segment;
                Gather::Take
            });
            self.engine.events += taken as u64;
        }
        while segment > 0 && arrivals.len() < MAX_ARRIVAL_BATCH {
            let last = &arrivals[arrivals.len() - 1];
            if last.packet.len() != segment {
                break;
            }
            let joins = |next: &Arrival| {
                stamp(next) == stamp(last) && (1..=segment).contains(&next.packet.len())
            };
            let Some(next) = self.queue.pop_arrival_at(at, joins) else {
                break;
            };
            self.engine.events += 1;
            arrivals.push(next);
        }
        self.deliver(&arrivals, segment);
        arrivals.clear();
        self.arrivals = arrivals;
    }

    /// Delivers arrivals of one link, stamped alike, as one batch.
    fn deliver(&mut self, arrivals: &[Arrival], segment: usize) {
        let Some(first) = arrivals.first() else {
            return;
        };
        let count = arrivals.len() as u64;
        self.engine.arrivals += count;
        let link = &mut self.links[first.link as usize];
        link.in_flight -= count;
        if link.epoch != first.link_epoch {
            link.stats.dropped_down += count;
            return;
        }
        let (from, to) = (link.from as usize, link.to as usize);
        let from_addr = self.slots[from].addr;
        let from_same = self.slots[from].incarnation == first.from_incarnation;
        let slot = &mut self.slots[to];
        let node = match slot.node.as_mut() {
            Some(node) if from_same && slot.incarnation == first.to_incarnation => node,
            _ => {
                link.stats.dropped_node_down += count;
                return;
            }
        };
        link.stats.delivered += count;
        for a in arrivals {
            self.trace
                .delivery(self.now, from_addr, slot.addr, &a.packet);
            if let Some(tap) = self.tap.as_mut() {
                tap(self.now, from_addr, slot.addr, &a.packet);
            }
        }
        if let [one] = arrivals {
            node.handle_datagram(self.now, from_addr, &one.packet);
        } else {
            self.engine.arrival_batches += 1;
            self.batch.clear();
            for a in arrivals {
                self.batch.extend_from_slice(&a.packet);
            }
            node.handle_batch(self.now, from_addr, &self.batch, segment);
        }
        self.after_touch(to);
    }

    fn fire(&mut self, idx: usize, generation: u32) {
        let now = self.now;
        let slot = &mut self.slots[idx];
        let live = slot.timer_generation == generation && slot.armed.is_some();
        let Some(node) = slot.node.as_mut().filter(|_| live) else {
            self.engine.timers_stale += 1;
            return;
        };
        slot.armed = None;
        match node.poll_timeout() {
            Some(t) if t <= now => {
                if slot.spin_at == now {
                    slot.spins += 1;
                    assert!(
                        slot.spins < SPIN_LIMIT,
                        "node {} keeps asking for a timeout at or before {now}: its poll_timeout \
                         never moves past the time handle_timeout was called with",
                        slot.addr
                    );
                } else {
                    slot.spin_at = now;
                    slot.spins = 0;
                }
                node.handle_timeout(now);
                self.engine.timeouts += 1;
                self.after_touch(idx);
            }
            later => {
                // The deadline moved later (or away) since the entry was pushed.
                self.engine.timers_rearmed += 1;
                self.arm(idx, later);
            }
        }
    }

    /// After any call into a node: send what it queued and follow its deadline.
    fn after_touch(&mut self, idx: usize) {
        let Some(node) = self.slots[idx].node.as_mut() else {
            return;
        };
        while let Some(t) = node.poll_transmit() {
            self.outbox.push(t);
        }
        let deadline = node.poll_timeout();
        let mut outbox = std::mem::take(&mut self.outbox);
        for t in outbox.drain(..) {
            self.route(idx, t);
        }
        self.outbox = outbox;
        self.arm(idx, deadline);
    }

    /// Keeps one live timer entry per node at its earliest deadline. A later deadline keeps the
    /// current entry (it re-arms when it fires), so moving deadlines do not flood the heap.
    fn arm(&mut self, idx: usize, deadline: Option<Instant>) {
        let Some(t) = deadline else { return };
        let t = t.max(self.now);
        let slot = &mut self.slots[idx];
        if slot.armed.is_some_and(|a| a <= t) {
            return;
        }
        slot.timer_generation = slot.timer_generation.wrapping_add(1);
        slot.armed = Some(t);
        self.queue.push(
            t,
            Event::Timer {
                node: idx as u32,
                generation: slot.timer_generation,
            },
        );
    }

    fn route(&mut self, from: usize, t: Transmit) {
        let slot = &self.slots[from];
        let Some(l) = slot.link_to(t.to) else {
            self.dropped_no_link += 1;
            return;
        };
        let from_incarnation = slot.incarnation;
        let link = &mut self.links[l];
        let to_incarnation = self.slots[link.to as usize].incarnation;
        let how = Offer {
            mtu: self.mtu,
            reorder_window: self.reorder_window,
            now: self.now,
        };
        link.offer(t.packet, &how, &mut self.copies);
        let coalesce = link.faults().coalesce;
        for copy in self.copies.drain(..) {
            link.in_flight += 1;
            self.queue.push(
                coalesced(self.now + copy.delay, coalesce),
                Event::Arrival(Arrival {
                    link: l as u32,
                    link_epoch: link.epoch,
                    from_incarnation,
                    to_incarnation,
                    packet: copy.packet,
                }),
            );
        }
    }
}

/// What must match for two arrivals to make one batch: the link, its epoch, both ends'
/// incarnations.
fn stamp(a: &Arrival) -> (u32, u32, u32, u32) {
    (a.link, a.link_epoch, a.from_incarnation, a.to_incarnation)
}

/// When an arrival at `at` is handed in over a link that coalesces every `interval`: at the end
/// of the interval it falls in (monotonic, so a link's order is kept).
fn coalesced(at: Instant, interval: Duration) -> Instant {
    let step = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    if step == 0 {
        return at;
    }
    let nanos = at.as_nanos();
    match nanos % step {
        0 => at,
        into => Instant::from_nanos(nanos.saturating_add(step - into)),
    }
}

/// Mutable access to one up node; on drop the engine collects what the node now wants to send
/// and when it next wants a timeout.
pub struct NodeMut<'a, N: SimNode> {
    sim: &'a mut Sim<N>,
    idx: usize,
}

impl<N: SimNode> NodeMut<'_, N> {
    /// The engine's clock, for calls into the node that take `now`.
    pub fn now(&self) -> Instant {
        self.sim.now
    }
}

impl<N: SimNode> Deref for NodeMut<'_, N> {
    type Target = N;
    fn deref(&self) -> &N {
        self.sim.slots[self.idx]
            .node
            .as_ref()
            .expect("a NodeMut exists only for an up node")
    }
}

impl<N: SimNode> DerefMut for NodeMut<'_, N> {
    fn deref_mut(&mut self) -> &mut N {
        self.sim.slots[self.idx]
            .node
            .as_mut()
            .expect("a NodeMut exists only for an up node")
    }
}

impl<N: SimNode> Drop for NodeMut<'_, N> {
    fn drop(&mut self) {
        self.sim.after_touch(self.idx);
    }
}
