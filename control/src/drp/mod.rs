//! DRP, the link-state routing protocol (seed §3), as a sans-IO state machine.
//!
//! One [`Drp`] per node. It boots from the topology file (neighbours from its links, a
//! sequence-zero LSP for every node of the file), says hello to its neighbours, floods link-state
//! packets reliably (per-neighbour acknowledgement, re-sent until acknowledged), and publishes a
//! [`RoutingTable`] computed by [`spf`] whenever the result changes.
//!
//! The engine feeds it packets ([`Drp::handle_packet`]) and time ([`Drp::handle_timeout`] whenever
//! [`Drp::poll_timeout`] is due), and drains [`Drp::poll_transmit`] and [`Drp::poll_event`].
//! Work that many inputs at one instant would repeat (originating our LSP, recomputing routes)
//! is deferred to the next `handle_timeout`, which `poll_timeout` then asks for at once; so a
//! batch of packets arriving at the same instant costs one origination and one SPF run.

pub mod lsdb;
pub mod spf;
pub mod stats;
pub mod table;

pub use lsdb::{FILE_SEQUENCE, Freshness, Lsdb, LspEntry, MAX_SEQUENCE};
pub use stats::DrpStats;
pub use table::{Route, RoutingTable};

use crate::Transmit;
use crate::addr::NodeAddr;
use crate::time::Instant;
use crate::topology::{Timers, Topology};
use crate::wire::BodyError;
use crate::wire::dnp::{DNP_HEADER_LEN, Flag, frame};
use crate::wire::drp::{self as body, DrpMessage, Lsp};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// DRP's table capacities and long timers. [`Drp::new`] uses [`DrpConfig::default`], the one
/// place their defaults are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrpConfig {
    /// Most originators the link-state database admits (own, file and neighbours' entries
    /// always stay). Far above the largest networks run (10,000 nodes), far below the 61,439
    /// node addresses a forger can claim.
    pub lsdb_capacity: usize,
    /// Most neighbours, live or former, a node keeps; the file's neighbours are always admitted.
    /// An LSP lists at most 500 neighbours at the default MTU.
    pub neighbour_capacity: usize,
    /// Another node's LSP not refreshed within this is removed (OSPF's MaxAge).
    pub max_age: Duration,
    /// Our own LSP is originated again this often (OSPF's LSRefreshTime), well inside
    /// `max_age`, so that live nodes never age out.
    pub refresh_interval: Duration,
    /// How long a flush (an LSP at [`MAX_SEQUENCE`]) is held before it is removed; then its
    /// originator starts again from sequence 1.
    pub flush_hold: Duration,
    /// A neighbour that comes back after we believed its terminate shows that terminate was
    /// false (or it restarted): its terminates are then not believed for this many dead
    /// intervals, so that a forger repeating them cannot keep taking a live link down. Its
    /// death is still noticed by the dead interval. 0 believes every terminate.
    pub terminate_hold_down_dead_intervals: u32,
}

impl Default for DrpConfig {
    fn default() -> Self {
        use crate::settings::drp as s;
        DrpConfig {
            lsdb_capacity: s::LSDB_CAPACITY,
            neighbour_capacity: s::NEIGHBOUR_CAPACITY,
            max_age: s::MAX_AGE,
            refresh_interval: s::REFRESH_INTERVAL,
            flush_hold: s::FLUSH_HOLD,
            terminate_hold_down_dead_intervals: s::TERMINATE_HOLD_DOWN_DEAD_INTERVALS,
        }
    }
}

/// What DRP tells the layers above (GMP re-evaluates upstreams, RMTP prunes downstreams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrpEvent {
    /// A new routing table was published ([`Drp::routes`]).
    RoutesChanged,
    NeighbourUp(NodeAddr),
    NeighbourDown(NodeAddr),
}

/// What we know of the link to one neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Listed in the topology file but never heard: hello every hello interval.
    Configured,
    Live {
        last_heard: Instant,
    },
    /// Was live, then went silent or terminated: probed every former-probe interval (seed §3.5).
    Former,
}

/// An LSP a neighbour has not acknowledged yet.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// When to send it (again).
    due: Instant,
    /// Whether it was sent already (so the next send is a retransmission).
    sent: bool,
}

#[derive(Debug)]
struct Neighbour {
    link: Link,
    /// By originator. Only live neighbours have entries; each is mirrored in `Drp::sends`.
    pending: BTreeMap<NodeAddr, Pending>,
    /// When the sequence-zero entries are offered to it (mirrored in `Drp::file_syncs`).
    file_sync: Option<Instant>,
    /// Its last loss was a terminate we believed, and it has not been heard from since.
    terminated: bool,
    /// Its terminates are not believed before this: it came back after one.
    terminates_held_until: Option<Instant>,
}

impl Neighbour {
    fn new(link: Link) -> Self {
        Neighbour {
            link,
            pending: BTreeMap::new(),
            file_sync: None,
            terminated: false,
            terminates_held_until: None,
        }
    }

    fn is_live(&self) -> bool {
        matches!(self.link, Link::Live { .. })
    }
}

/// One node's DRP. The rules, in brief (seed §3 and where we go beyond it):
///
/// - Hellos every hello interval to live neighbours and to file neighbours never heard yet;
///   every former-probe interval to former (dead or terminated) neighbours. Any hello, LSP or
///   LSP-ack from a node makes it a live neighbour, whether the file lists it or not; silence
///   for the dead interval, or a terminate, makes it former. A neighbour that comes back after
///   a terminate has its terminates held down (not believed) for the terminate hold-down.
/// - A change of the live neighbour set originates our LSP with the next sequence number; a
///   burst of changes is coalesced (no two originations closer than a tenth of the hello
///   interval, the `hold`).
/// - Flooding: every LSP we hold is pending for each live neighbour that has not acknowledged
///   it (or sent it to us), and is re-sent every LSP-retransmit interval until it is. A received
///   LSP is always acknowledged; a newer one replaces ours and is flooded to everyone but the
///   sender; an older one gets our copy sent back. An acknowledgement of a newer LSP than ours
///   (a forgery reached that neighbour over our link) gets our copy sent too, so that the
///   neighbour's copy comes back through us and reaches its originator.
/// - A new neighbour is sent our whole database: real LSPs at once, sequence-zero (file) ones
///   after one retransmit interval, if no real LSP replaced them by then.
/// - Restarts: our own LSP arriving with a sequence at least ours makes us jump past it; a
///   neighbour's own LSP arriving older than ours means it restarted, and it gets our database.
/// - The top of the sequence space (OSPF's way): an LSP at [`MAX_SEQUENCE`] is a flush. Where
///   we would originate it (we reached the top, or had to jump to or past the last sequence),
///   we flush instead; a flush is flooded like any newer LSP, held for `flush_hold` (and until
///   every neighbour acknowledged it), then removed, and its originator starts again from 1.
///   While a flush is held, older LSPs of its originator are dropped unacknowledged. A flush
///   is no link state: SPF takes a flushed node's links from its neighbours' LSPs.
/// - Bounds: LSPs of others expire unless refreshed within `max_age`; we refresh ours every
///   `refresh_interval`. A full database refuses new originators, a full neighbour table new
///   neighbours; neither evicts anything.
/// - Routes: [`spf::shortest_paths`] over the database, run when a neighbour changes (at once)
///   or flooding changed the database (at most once per `hold`); published only if different.
pub struct Drp {
    me: NodeAddr,
    timers: Timers,
    config: DrpConfig,
    /// Most neighbours one LSP can list under the network's MTU.
    max_listed: usize,
    /// Least time between two originations and between two SPF runs caused by flooding.
    hold: Duration,
    /// How long a neighbour back after a terminate has its terminates held down.
    terminate_hold_down: Duration,
    /// Our sequence number: the last one originated, or one we must pass (restart).
    my_seq: u32,
    lsdb: Lsdb,
    nbrs: BTreeMap<NodeAddr, Neighbour>,
    /// Every pending LSP send: (due, neighbour, originator), earliest first.
    sends: BTreeSet<(Instant, NodeAddr, NodeAddr)>,
    /// (when, neighbour): offer it the sequence-zero entries then.
    file_syncs: BTreeSet<(Instant, NodeAddr)>,
    next_hello: Instant,
    next_probe: Instant,
    /// No live neighbour can have died before this (may be early; then it is recomputed).
    dead_check: Option<Instant>,
    originate_at: Option<Instant>,
    last_originated: Option<Instant>,
    /// When our LSP is due to be refreshed (set at each origination).
    refresh_at: Option<Instant>,
    spf_at: Option<Instant>,
    last_spf: Option<Instant>,
    routes: Arc<RoutingTable>,
    out: VecDeque<Transmit>,
    events: VecDeque<DrpEvent>,
    stats: DrpStats,
    /// Set by [`Drp::terminate`]: the node is leaving and does nothing more.
    stopped: bool,
}

/// Intervals of zero would make `poll_timeout` ask for the same instant forever.
fn at_least_1ms(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

impl Drp {
    /// A node booting from the topology file at `now`. Nothing is sent until the first
    /// `handle_timeout` (which `poll_timeout` asks for at `now`).
    pub fn new(me: NodeAddr, topology: &Topology, now: Instant) -> Drp {
        Drp::with_config(me, topology, now, DrpConfig::default())
    }

    /// As [`Drp::new`], with other capacities and long timers.
    pub fn with_config(me: NodeAddr, topology: &Topology, now: Instant, config: DrpConfig) -> Drp {
        let config = DrpConfig {
            flush_hold: at_least_1ms(config.flush_hold),
            refresh_interval: at_least_1ms(config.refresh_interval),
            ..config
        };
        let t = topology.network.timers;
        let timers = Timers {
            hello_interval: at_least_1ms(t.hello_interval),
            dead_hellos: t.dead_hellos.max(1),
            lsp_retransmit: at_least_1ms(t.lsp_retransmit),
            former_probe_interval: at_least_1ms(t.former_probe_interval),
            ..t
        };
        // An MTU too small for any neighbour still allows empty LSPs rather than a panic.
        let mtu = topology.network.mtu.max(DNP_HEADER_LEN + 10);
        let max_listed = body::max_lsp_neighbours(mtu);
        let (mut lsdb, cut) = Lsdb::from_topology(topology, max_listed);
        lsdb.set_capacity(config.lsdb_capacity);
        if lsdb.get(me).is_none() {
            lsdb.insert(me, LspEntry::new(me, FILE_SEQUENCE, Vec::new(), 0).0);
        }
        let nbrs = topology
            .neighbours(me)
            .into_iter()
            .filter(|&n| n != me)
            .map(|n| (n, Neighbour::new(Link::Configured)))
            .collect();
        Drp {
            me,
            timers,
            config,
            max_listed,
            hold: timers.hello_interval / 10,
            terminate_hold_down: timers
                .dead_interval()
                .saturating_mul(config.terminate_hold_down_dead_intervals),
            my_seq: FILE_SEQUENCE,
            lsdb,
            nbrs,
            sends: BTreeSet::new(),
            file_syncs: BTreeSet::new(),
            next_hello: now,
            next_probe: now + timers.former_probe_interval,
            dead_check: None,
            originate_at: None,
            last_originated: None,
            refresh_at: None,
            spf_at: None,
            last_spf: None,
            routes: Arc::new(RoutingTable::empty(me)),
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: DrpStats {
                lsps_truncated: cut,
                ..DrpStats::default()
            },
            stopped: false,
        }
    }

    pub fn me(&self) -> NodeAddr {
        self.me
    }

    /// A DRP body that arrived over the link from neighbour `from`.
    pub fn handle_packet(&mut self, now: Instant, from: NodeAddr, msg: DrpMessage<'_>) {
        if self.stopped {
            self.stats.ignored_messages += 1;
            return;
        }
        if from == self.me {
            self.stats.bad_messages += 1;
            return;
        }
        match msg {
            DrpMessage::Terminate => {
                self.stats.terminates_recv += 1;
                // A terminate from a node that is not a live neighbour changes nothing, so it
                // needs no room in the neighbour table.
                let Some(nb) = self.nbrs.get_mut(&from).filter(|nb| nb.is_live()) else {
                    self.stats.ignored_messages += 1;
                    return;
                };
                if nb.terminates_held_until.is_some_and(|t| now < t) {
                    // Not believed, and not taken as a sign of life either: if it is true, the
                    // hellos stop and the dead interval removes the neighbour.
                    self.stats.terminates_held_down += 1;
                } else {
                    nb.terminated = true;
                    self.neighbour_lost(now, from);
                }
            }
            DrpMessage::Hello => {
                self.stats.hellos_recv += 1;
                self.heard(now, from);
            }
            DrpMessage::Lsp(lsp) => {
                self.stats.lsps_recv += 1;
                // Checked before anything moves: a malformed LSP is refused whole.
                let Some((orig, listed)) = lsp_addresses(&lsp) else {
                    self.stats.bad_messages += 1;
                    return;
                };
                if self.heard(now, from) {
                    self.handle_lsp(now, from, orig, lsp.sequence, listed);
                }
            }
            DrpMessage::LspAck {
                originator,
                sequence,
            } => {
                self.stats.acks_recv += 1;
                let Some(orig) = NodeAddr::new(originator) else {
                    self.stats.bad_messages += 1;
                    return;
                };
                if self.heard(now, from) {
                    self.handle_ack(now, from, orig, sequence);
                }
            }
        }
    }

    /// Parses a DRP body (after the DNP header) and handles it. A malformed body is counted in
    /// `bad_messages` and its error returned; nothing else happens.
    pub fn handle_body(
        &mut self,
        now: Instant,
        from: NodeAddr,
        body: &[u8],
    ) -> Result<(), BodyError> {
        match DrpMessage::parse(body) {
            Ok(msg) => {
                self.handle_packet(now, from, msg);
                Ok(())
            }
            Err(e) => {
                self.stats.bad_messages += 1;
                Err(e)
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        if self.dead_check.is_some_and(|t| t <= now) {
            self.check_dead(now);
        }
        while let Some(orig) = self.lsdb.expired(now) {
            self.expire(now, orig);
        }
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            self.stats.lsp_refreshes += 1;
            self.originate_at = Some(self.originate_at.map_or(now, |t| t.min(now)));
        }
        if self.next_hello <= now {
            self.say_hello(|l| matches!(l, Link::Live { .. } | Link::Configured));
            self.next_hello = next_tick(self.next_hello, self.timers.hello_interval, now);
        }
        if self.next_probe <= now {
            self.say_hello(|l| l == Link::Former);
            self.next_probe = next_tick(self.next_probe, self.timers.former_probe_interval, now);
        }
        if self.originate_at.is_some_and(|t| t <= now) {
            self.originate(now);
        }
        while let Some(&(at, n)) = self.file_syncs.first() {
            if at > now {
                break;
            }
            self.file_syncs.pop_first();
            self.offer_file_entries(now, n);
        }
        while let Some(&(due, n, orig)) = self.sends.first() {
            if due > now {
                break;
            }
            self.sends.pop_first();
            self.send_pending(now, n, orig);
        }
        if self.spf_at.is_some_and(|t| t <= now) {
            self.run_spf(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        [
            Some(self.next_hello),
            Some(self.next_probe),
            self.dead_check,
            self.originate_at,
            self.refresh_at,
            self.lsdb.next_expiry(),
            self.spf_at,
            self.sends.first().map(|s| s.0),
            self.file_syncs.first().map(|s| s.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DrpEvent> {
        self.events.pop_front()
    }

    /// The current routing table. The same `Arc` until routes change.
    pub fn routes(&self) -> Arc<RoutingTable> {
        Arc::clone(&self.routes)
    }

    /// Clean shutdown: a terminate to every live neighbour, which removes us at once (instead of
    /// after the dead interval). The instance is finished afterwards: it ignores input and has
    /// no timers; a node that comes back is a new `Drp`.
    pub fn terminate(&mut self, _now: Instant) {
        if self.stopped {
            return;
        }
        for n in self.neighbours() {
            self.transmit(n, &body::terminate());
            self.stats.terminates_sent += 1;
        }
        self.stopped = true;
    }

    /// Live neighbours, ascending.
    pub fn neighbours(&self) -> Vec<NodeAddr> {
        self.nbrs
            .iter()
            .filter(|(_, nb)| nb.is_live())
            .map(|(&n, _)| n)
            .collect()
    }

    /// Every originator in the link-state database (this node included), ascending.
    pub fn known_nodes(&self) -> Vec<NodeAddr> {
        self.lsdb.originators().collect()
    }

    /// The link-state database, read only (for tests and `burghers ctl`).
    pub fn lsdb(&self) -> &Lsdb {
        &self.lsdb
    }

    /// The sequence number of our current LSP (0 until the first origination).
    pub fn sequence(&self) -> u32 {
        self.lsdb.get(self.me).map_or(FILE_SEQUENCE, |e| e.sequence)
    }

    pub fn stats(&self) -> &DrpStats {
        &self.stats
    }

    // ---- neighbours ----

    /// Any DRP packet from `n` shows the link works: it is (again) a live neighbour. False if
    /// `n` is new and the neighbour table is full: then the packet is refused whole.
    fn heard(&mut self, now: Instant, n: NodeAddr) -> bool {
        if !self.nbrs.contains_key(&n) && self.nbrs.len() >= self.config.neighbour_capacity {
            self.stats.neighbours_refused += 1;
            return false;
        }
        let nb = self
            .nbrs
            .entry(n)
            .or_insert_with(|| Neighbour::new(Link::Configured));
        let was_live = nb.is_live();
        nb.link = Link::Live { last_heard: now };
        if was_live {
            return true;
        }
        if std::mem::take(&mut nb.terminated) {
            // Alive after its terminate: that one was forged (or it restarted). A forger that
            // can send one can repeat it, so further ones wait for the dead interval instead.
            nb.terminates_held_until = Some(now + self.terminate_hold_down);
        }
        self.stats.neighbours_up += 1;
        self.events.push_back(DrpEvent::NeighbourUp(n));
        // Answer at once so that it sees us live without waiting for our next hello tick.
        self.transmit(n, &body::hello());
        self.stats.hellos_sent += 1;
        let deadline = now + self.timers.dead_interval();
        self.dead_check = Some(self.dead_check.map_or(deadline, |t| t.min(deadline)));
        self.sync_database(now, n);
        self.local_change(now);
        true
    }

    fn neighbour_lost(&mut self, now: Instant, n: NodeAddr) {
        let Some(nb) = self.nbrs.get_mut(&n) else {
            return;
        };
        nb.link = Link::Former;
        for (orig, p) in std::mem::take(&mut nb.pending) {
            self.sends.remove(&(p.due, n, orig));
        }
        if let Some(at) = nb.file_sync.take() {
            self.file_syncs.remove(&(at, n));
        }
        self.stats.neighbours_down += 1;
        self.events.push_back(DrpEvent::NeighbourDown(n));
        self.local_change(now);
    }

    fn check_dead(&mut self, now: Instant) {
        let dead_after = self.timers.dead_interval();
        let dead: Vec<NodeAddr> = self
            .nbrs
            .iter()
            .filter(|(_, nb)| matches!(nb.link, Link::Live { last_heard } if last_heard + dead_after <= now))
            .map(|(&n, _)| n)
            .collect();
        for n in dead {
            self.neighbour_lost(now, n);
        }
        self.dead_check = self
            .nbrs
            .values()
            .filter_map(|nb| match nb.link {
                Link::Live { last_heard } => Some(last_heard + dead_after),
                _ => None,
            })
            .min();
    }

    fn say_hello(&mut self, to: impl Fn(Link) -> bool) {
        let targets: Vec<NodeAddr> = self
            .nbrs
            .iter()
            .filter(|(_, nb)| to(nb.link))
            .map(|(&n, _)| n)
            .collect();
        for n in targets {
            self.transmit(n, &body::hello());
            self.stats.hellos_sent += 1;
        }
    }

    /// Our neighbour set changed: routes now, and a new LSP (no sooner than the hold allows).
    fn local_change(&mut self, now: Instant) {
        self.spf_at = Some(now);
        let at = self
            .last_originated
            .map_or(now, |t| (t + self.hold).max(now));
        self.originate_at = Some(self.originate_at.map_or(at, |t| t.min(at)));
    }

    // ---- flooding ----

    fn originate(&mut self, now: Instant) {
        self.originate_at = None;
        if self.lsdb.get(self.me).is_some_and(LspEntry::is_flush) {
            // Our flush is still out; the new life starts when it is removed (`expire`).
            return;
        }
        self.last_originated = Some(now);
        self.refresh_at = Some(now + self.config.refresh_interval);
        let Some(next) = self.my_seq.checked_add(1).filter(|&s| s < MAX_SEQUENCE) else {
            self.flush_own(now, None);
            return;
        };
        self.my_seq = next;
        let live = self.neighbours();
        let (entry, cut) = LspEntry::new(self.me, self.my_seq, live.clone(), self.max_listed);
        self.stats.lsps_truncated += u64::from(cut);
        self.stats.lsps_originated += 1;
        self.lsdb.insert(self.me, entry);
        for n in live {
            self.offer(now, n, self.me, now);
        }
    }

    /// Our LSP at the top of the sequence space, withdrawn: flooded to every live neighbour but
    /// `from` (which has it), held for the flush hold, then removed by `expire`, which starts
    /// the new life at sequence 1.
    fn flush_own(&mut self, now: Instant, from: Option<NodeAddr>) {
        self.stats.flushes_originated += 1;
        self.my_seq = MAX_SEQUENCE;
        self.refresh_at = None;
        let until = now + self.config.flush_hold;
        let flush = LspEntry::flush_of(self.lsdb.get(self.me));
        self.lsdb.insert_until(self.me, flush, Some(until));
        if let Some(n) = from {
            self.clear_pending(n, self.me);
        }
        let others: Vec<NodeAddr> = self
            .neighbours()
            .into_iter()
            .filter(|&n| Some(n) != from)
            .collect();
        for n in others {
            self.offer(now, n, self.me, now);
        }
    }

    /// The entry of `orig` expired: an LSP not refreshed in time goes; a flush goes once every
    /// neighbour has it (else it is held one more retransmit interval). Our own flush gone, we
    /// originate again from sequence 1.
    fn expire(&mut self, now: Instant, orig: NodeAddr) {
        let Some(entry) = self.lsdb.get(orig) else {
            return;
        };
        let flush = entry.is_flush();
        if flush && self.nbrs.values().any(|nb| nb.pending.contains_key(&orig)) {
            let until = now + self.timers.lsp_retransmit;
            let held = entry.clone();
            self.lsdb.insert_until(orig, held, Some(until));
            return;
        }
        self.lsdb.remove(orig);
        let nbrs: Vec<NodeAddr> = self.nbrs.keys().copied().collect();
        for n in nbrs {
            self.clear_pending(n, orig);
        }
        if flush {
            self.stats.flushes_removed += 1;
        } else {
            self.stats.lsps_aged_out += 1;
        }
        if orig == self.me {
            self.my_seq = FILE_SEQUENCE;
            self.originate_at = Some(now);
        }
        self.request_spf(now);
    }

    fn handle_lsp(
        &mut self,
        now: Instant,
        from: NodeAddr,
        orig: NodeAddr,
        sequence: u32,
        listed: Vec<NodeAddr>,
    ) {
        let held = self.lsdb.get(orig);
        if held.is_some_and(LspEntry::is_flush) && sequence < MAX_SEQUENCE {
            // Not acknowledged: the sender repeats it until our flush is gone and it is news.
            self.stats.lsps_behind_flush += 1;
            return;
        }
        let newcomer = held.is_none();
        // A new originator needs room; a neighbour's own LSP always gets it (there are at most
        // `neighbour_capacity` of those), so that a flood cannot cut us off from our neighbours.
        if newcomer && !(from == orig || self.lsdb.admits(orig)) {
            self.stats.lsps_refused_full += 1;
            return;
        }
        // Acknowledged from here on, so the sender stops re-sending whatever we do with it.
        self.transmit(from, &body::lsp_ack(orig, sequence));
        self.stats.acks_sent += 1;
        let entry = if sequence == MAX_SEQUENCE {
            LspEntry::flush_of(self.lsdb.get(orig))
        } else {
            let (entry, cut) = LspEntry::new(orig, sequence, listed, self.max_listed);
            self.stats.lsps_truncated += u64::from(cut);
            entry
        };
        if orig == self.me {
            self.handle_own_lsp(now, from, entry);
            return;
        }
        match self.lsdb.freshness(orig, entry.sequence) {
            Freshness::Newer => {
                self.stats.lsps_new += 1;
                let keep_for = if entry.is_flush() {
                    self.config.flush_hold
                } else {
                    self.config.max_age
                };
                self.lsdb.insert_until(orig, entry, Some(now + keep_for));
                self.clear_pending(from, orig);
                let others: Vec<NodeAddr> = self
                    .neighbours()
                    .into_iter()
                    .filter(|&n| n != from)
                    .collect();
                for n in others {
                    self.offer(now, n, orig, now);
                }
                self.request_spf(now);
            }
            Freshness::Same => {
                self.stats.lsps_dup += 1;
                self.clear_pending(from, orig);
                // The originator itself with other content at our sequence (it restarted and
                // reused a sequence): show it our copy so that it jumps past it.
                if from == orig && self.lsdb.get(orig).is_some_and(|e| *e != entry) {
                    self.offer(now, from, orig, now);
                }
            }
            Freshness::Older => {
                self.stats.lsps_old += 1;
                self.offer(now, from, orig, now);
                if from == orig {
                    // A neighbour's own LSP going backwards: it restarted and lost its database,
                    // without us noticing (quicker than the dead interval). Send it everything.
                    self.stats.neighbour_restarts += 1;
                    self.sync_database(now, from);
                }
            }
        }
    }

    /// An LSP claiming to be ours. If it is at least as new as our own (we restarted and the
    /// network remembers an earlier life), we jump past its sequence and originate again.
    /// A flush of ours (forged, or an echo of a former life) makes us flush too.
    fn handle_own_lsp(&mut self, now: Instant, from: NodeAddr, entry: LspEntry) {
        let Some(own) = self.lsdb.get(self.me) else {
            return;
        };
        let claims_ours = entry.sequence != FILE_SEQUENCE
            && (entry.sequence > own.sequence || (entry.sequence == own.sequence && *own != entry));
        if claims_ours && entry.is_flush() {
            self.stats.sequence_jumps += 1;
            self.flush_own(now, Some(from));
        } else if claims_ours {
            self.stats.sequence_jumps += 1;
            self.my_seq = self.my_seq.max(entry.sequence);
            self.originate_at = Some(now);
        } else if entry.sequence == own.sequence {
            self.stats.lsps_dup += 1;
            self.clear_pending(from, self.me);
        } else {
            self.stats.lsps_old += 1;
            self.offer(now, from, self.me, now);
        }
    }

    fn handle_ack(&mut self, now: Instant, from: NodeAddr, orig: NodeAddr, sequence: u32) {
        if self.lsdb.get(orig).is_some_and(|e| sequence > e.sequence) {
            // `from` acknowledges an LSP newer than any we hold, so not one we sent it: a
            // forgery reached it over our link, and flooding takes it everywhere but back to
            // us (nor to its originator, if we are the only way there). Offer it our copy: it
            // answers an older copy with its own, which then floods through us to the
            // originator, which overtakes it.
            self.stats.acks_ahead += 1;
            self.offer(now, from, orig, now);
            return;
        }
        let current = self.lsdb.get(orig).is_some_and(|e| e.sequence == sequence);
        if !current || !self.clear_pending(from, orig) {
            // Unknown or superseded LSP, or a duplicate acknowledgement.
            self.stats.ignored_messages += 1;
        }
    }

    /// A new neighbour (or one that restarted) learns our database: the real LSPs now, the
    /// sequence-zero ones after a retransmit interval (by then the real LSP of almost every node
    /// has arrived and replaced them, so a booting network does not carry its file around).
    /// The higher-addressed end of a link waits a little before sending, so that what the lower
    /// end sends first counts as acknowledged and only the difference crosses back.
    fn sync_database(&mut self, now: Instant, n: NodeAddr) {
        let due = if self.me < n { now } else { now + self.hold };
        let Some(nb) = self.nbrs.get(&n) else {
            return;
        };
        let todo: Vec<NodeAddr> = self
            .lsdb
            .iter()
            .filter(|(o, e)| e.sequence != FILE_SEQUENCE && !nb.pending.contains_key(o))
            .map(|(o, _)| o)
            .collect();
        for orig in todo {
            self.offer(now, n, orig, due);
        }
        let at = now + self.timers.lsp_retransmit;
        if let Some(nb) = self.nbrs.get_mut(&n) {
            if let Some(old) = nb.file_sync.replace(at) {
                self.file_syncs.remove(&(old, n));
            }
            self.file_syncs.insert((at, n));
        }
    }

    fn offer_file_entries(&mut self, now: Instant, n: NodeAddr) {
        let Some(nb) = self.nbrs.get_mut(&n) else {
            return;
        };
        nb.file_sync = None;
        if !nb.is_live() {
            return;
        }
        let todo: Vec<NodeAddr> = self
            .lsdb
            .iter()
            .filter(|(o, e)| e.sequence == FILE_SEQUENCE && !nb.pending.contains_key(o))
            .map(|(o, _)| o)
            .collect();
        for orig in todo {
            self.offer(now, n, orig, now);
        }
    }

    /// Makes our current LSP of `orig` pending for live neighbour `n`, first sent at `due` and
    /// then every retransmit interval until acknowledged. Even a send due now waits for the next
    /// `handle_timeout` (at this same instant): if the same LSP arrives from `n` meanwhile (in
    /// the same batch), it counts as acknowledged and is not sent at all.
    fn offer(&mut self, now: Instant, n: NodeAddr, orig: NodeAddr, due: Instant) {
        let Some(nb) = self.nbrs.get_mut(&n) else {
            return;
        };
        if !nb.is_live() {
            return;
        }
        if let Some(old) = nb.pending.remove(&orig) {
            self.sends.remove(&(old.due, n, orig));
        }
        let p = Pending {
            due: due.max(now),
            sent: false,
        };
        nb.pending.insert(orig, p);
        self.sends.insert((p.due, n, orig));
    }

    /// A pending send fell due (its entry was already taken off `sends`).
    fn send_pending(&mut self, now: Instant, n: NodeAddr, orig: NodeAddr) {
        let Some(p) = self
            .nbrs
            .get_mut(&n)
            .and_then(|nb| nb.pending.get_mut(&orig))
        else {
            return;
        };
        if p.sent {
            self.stats.retransmissions += 1;
        }
        p.sent = true;
        p.due = now + self.timers.lsp_retransmit;
        self.sends.insert((p.due, n, orig));
        self.transmit_lsp(n, orig);
    }

    /// `n` has our current LSP of `orig` (it acknowledged or sent it). True if it was pending.
    fn clear_pending(&mut self, n: NodeAddr, orig: NodeAddr) -> bool {
        let Some(p) = self
            .nbrs
            .get_mut(&n)
            .and_then(|nb| nb.pending.remove(&orig))
        else {
            return false;
        };
        self.sends.remove(&(p.due, n, orig));
        true
    }

    // ---- routes ----

    /// The database changed by flooding: recompute, at most once per hold.
    fn request_spf(&mut self, now: Instant) {
        let at = self.last_spf.map_or(now, |t| (t + self.hold).max(now));
        self.spf_at = Some(self.spf_at.map_or(at, |t| t.min(at)));
    }

    fn run_spf(&mut self, now: Instant) {
        self.spf_at = None;
        self.last_spf = Some(now);
        self.stats.spf_runs += 1;
        let routes = spf::shortest_paths(self.me, &self.neighbours(), &self.lsdb);
        if routes != self.routes.routes() {
            self.routes = Arc::new(RoutingTable::new(self.me, routes));
            self.stats.routes_published += 1;
            self.events.push_back(DrpEvent::RoutesChanged);
        }
    }

    // ---- output ----

    fn transmit(&mut self, to: NodeAddr, body: &[u8]) {
        self.out.push_back(Transmit {
            to,
            packet: frame(to.into(), self.me.into(), Flag::Drp, body),
        });
    }

    fn transmit_lsp(&mut self, to: NodeAddr, orig: NodeAddr) {
        let Some(e) = self.lsdb.get(orig) else {
            return;
        };
        // Entries are cut to what one LSP under the MTU can list, far below the count limit.
        let Ok(b) = body::lsp(orig, e.sequence, &e.neighbours) else {
            return;
        };
        self.transmit(to, &b);
        self.stats.lsps_sent += 1;
    }
}

/// The originator and neighbours of an LSP, if every one is a node address.
fn lsp_addresses(lsp: &Lsp<'_>) -> Option<(NodeAddr, Vec<NodeAddr>)> {
    let orig = NodeAddr::new(lsp.originator)?;
    let listed = lsp.neighbours().map(NodeAddr::new).collect::<Option<_>>()?;
    Some((orig, listed))
}

/// The next tick of a periodic timer, skipping ticks missed while the engine was late.
fn next_tick(prev: Instant, every: Duration, now: Instant) -> Instant {
    let next = prev + every;
    if next <= now { now + every } else { next }
}
