//! The RMTP relay (seed §6.1, the "middle layer"): one per node, for every (group, sender) tree
//! through the node. It takes a borrowed, DNP-validated packet and returns a decision the
//! engine carries out without copying ([`RelayAction`]); packets that are really new (its own
//! NACKs, NCFs, MABs, repairs from its cache) come out of [`RmtpRelay::poll_transmit`], built
//! into a buffer the engine provides.
//!
//! - DATA and SPM fan out to every downstream neighbour but the one they came from, and to the
//!   local members. DATA is also copied into a bounded per-tree repair cache: the one copy a
//!   relay makes of a payload.
//! - NACKs are answered from the cache when it holds the sequence (PGM's nearest repairer);
//!   otherwise the first NACK for a sequence goes upstream and later ones only record who waits,
//!   until the entry is stale. Every NACKer gets an NCF.
//! - RETRANSMIT goes only toward those who asked (the NACK table), and the entry goes with it.
//! - MABs: the latest per downstream neighbour and per local member; the minimum goes upstream
//!   periodically and when it changes. A peer that left the tree, or a downstream neighbour
//!   whose link is gone, no longer holds the window, but keeps holding the trailing edge
//!   (`received`) until it has been silent for `mab_expire` and is pruned, so a branch that
//!   comes back (by another path, or by its next join after a forged leave) can still be
//!   repaired, and is not counted complete meanwhile.
//!
//! On the sender's own node the "upstream" is the local sender: NACKs and MABs reaching the root
//! come out as packets for [`Hop::Local`].
//!
//! Every field may be forged: NACKs and MABs are judged against the edges the relay has itself
//! forwarded (`edges.rs`), what cannot be right is refused and counted, and every table has a
//! capacity in [`RelayConfig`] (see `max_trees` for who may take a slot when it is full).
//!
//! The per-packet path does not allocate: trees and peers are sized when a tree is first seen,
//! its NACK table and cache at its first traffic, decisions use a fixed-capacity [`Fanout`],
//! waiters are bitmasks over a per-tree peer index.

use super::cache::{Cache, CacheRepair};
use super::edges::Edges;
use super::{MAX_RANGES, RangeBuf};
use control::drp::RoutingTable;
use control::gmp::{MulticastTable, TreeEntry};
use control::wire::dnp::{DNP_HEADER_LEN, Flag, Packet};
use control::wire::rmtp::{self, Data, Mab, Nack, SeqRange, SpmFields};
use control::{Addr, GroupAddr, Instant, NodeAddr};
use std::collections::VecDeque;
use std::time::Duration;

/// The most downstream neighbours one decision names, and the most peers (neighbours and local
/// members) a tree tracks: waiters are a `u64` bitmask.
pub const MAX_FANOUT: usize = 64;

/// Default NACK table entries (sequences) per tree ([`RelayConfig::nack_entries`]).
pub const DEFAULT_NACK_ENTRIES: usize = 4096;
/// Default number of trees tracked at once ([`RelayConfig::max_trees`]).
pub const DEFAULT_MAX_TREES: usize = 64;

#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub me: NodeAddr,
    pub mtu: usize,
    /// Trees tracked at once. A NACK or MAB makes a tree only in a free slot; when the table
    /// is full, traffic (DATA/SPM) takes the slot of a tree without local member or sender that
    /// never carried any, or that was silent for `tree_idle`, and a tree with a local member or
    /// sender takes the slot of the longest-silent tree without.
    pub max_trees: usize,
    /// Peers (downstream neighbours and local members) per tree, at most [`MAX_FANOUT`].
    pub peers_per_tree: usize,
    /// NACK table entries (sequences) per tree.
    pub nack_entries: usize,
    /// Sequences one NACK packet may ask for; the rest of it is refused (the receiver asks
    /// again).
    pub nack_seqs_per_packet: usize,
    /// A NACK entry older than this is re-sent upstream when another NACK for it arrives.
    pub nack_stale: Duration,
    /// A NACK entry older than this is forgotten.
    pub nack_expire: Duration,
    pub mab_interval: Duration,
    /// An unreachable peer whose MAB is older than this is pruned.
    pub mab_expire: Duration,
    /// Repair cache per tree, bytes (0: no cache). Rounded down to whole MTU-sized slots.
    pub cache_bytes: usize,
    /// Cache on the sender's own node too (the sender can re-read its source, so off by default).
    pub cache_at_root: bool,
    /// Queued cache repairs at most; more are dropped (the receiver asks again).
    pub repair_queue: usize,
    /// A sequence repaired from the cache toward a peer is not repaired toward it again sooner.
    pub repair_holdoff: Duration,
    /// A tree without a multicast entry and without traffic for this long is forgotten.
    pub tree_idle: Duration,
    /// The most one packet may advance what the relay believes of a tree's leading edge
    /// (sequences, bytes), and the most bytes a MAB sent upstream may run ahead of the data
    /// forwarded here: a forged MAB never opens the sender's window further.
    pub max_edge_step: u64,
}

impl RelayConfig {
    pub fn new(me: NodeAddr, mtu: usize) -> Self {
        RelayConfig {
            me,
            mtu,
            max_trees: DEFAULT_MAX_TREES,
            peers_per_tree: MAX_FANOUT,
            nack_entries: DEFAULT_NACK_ENTRIES,
            nack_seqs_per_packet: 1024,
            nack_stale: Duration::from_millis(10),
            nack_expire: Duration::from_secs(2),
            mab_interval: Duration::from_millis(50),
            mab_expire: Duration::from_secs(3),
            cache_bytes: 1 << 20,
            cache_at_root: false,
            repair_queue: 1024,
            repair_holdoff: Duration::from_millis(10),
            tree_idle: Duration::from_secs(30),
            max_edge_step: 64 << 20,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// DATA/SPM decisions that forwarded or delivered.
    pub forwarded: u64,
    /// Packet copies sent to neighbours by those decisions (fan-out summed).
    pub forwarded_copies: u64,
    pub delivered_local: u64,
    pub nacks_received: u64,
    /// Sequences whose NACK only recorded a waiter (aggregated away).
    pub nack_seqs_aggregated: u64,
    /// NACK packets sent upstream (or to the local sender), after aggregation.
    pub nacks_sent_upstream: u64,
    pub nack_seqs_sent_upstream: u64,
    pub ncfs_sent: u64,
    pub ncfs_received: u64,
    pub retransmissions_forwarded: u64,
    pub repairs_from_cache: u64,
    /// Cached copies that failed their CRC when about to be served (evicted, asked upstream).
    pub cache_corrupt: u64,
    /// Cached copies dropped because peers they were served to asked for them again after the
    /// hold-off, twice (repairs lost, or a forged DATA with a valid CRC that the receiver
    /// refuses); the sequence is asked upstream instead.
    pub cache_copies_asked_again: u64,
    pub mabs_received: u64,
    pub mabs_sent: u64,
    pub prunes: u64,
    pub drops_malformed: u64,
    pub drops_not_on_tree: u64,
    pub drops_not_from_upstream: u64,
    pub retransmit_unrequested: u64,
    pub nack_table_full: u64,
    pub tree_table_full: u64,
    /// Packets dropped because a tree or its peer table (64 peers) was full.
    pub drops_table_full: u64,
    pub fanout_overflow: u64,
    pub repair_queue_full: u64,
    pub nacks_below_trailing: u64,
    /// NACKed sequences at or beyond the leading edge seen here: refused (a NACK naming only
    /// such sequences moves nothing).
    pub nack_seqs_beyond_leading: u64,
    /// NACKed sequences past `nack_seqs_per_packet` in one packet: refused.
    pub nack_seqs_over_cap: u64,
    /// Cache repairs not repeated toward a peer within `repair_holdoff`.
    pub repairs_held_off: u64,
    /// Trees dropped to make room for a newcomer (see `RelayConfig::max_trees`).
    pub trees_evicted: u64,
    /// NACKs and MABs from a new peer of a tree whose peer table is full.
    pub peer_table_full: u64,
    /// MABs refused: `received` beyond `mab`.
    pub mabs_implausible: u64,
    /// MABs cut to the bytes forwarded here (`received`) or one `max_edge_step` beyond (`mab`).
    pub mabs_clamped: u64,
    /// MABs claiming every byte forwarded here (a completed receiver's report, or a forged
    /// one) not yet counted: a peer's claim counts from its second report in a row.
    pub mab_completions_held: u64,
    /// DATA/RETRANSMIT refused: `sequence + 1` or `offset + length` past 2^64 - 1.
    pub data_implausible: u64,
    /// SPMs refused: trailing edge beyond the leading edge.
    pub spms_implausible: u64,
}

/// Entries in the relay's tables (summed over trees) and the bytes they reserve, roughly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayFootprint {
    pub trees: usize,
    pub peers: usize,
    pub nack_entries: usize,
    pub repair_jobs: usize,
    pub bytes: usize,
}

/// Up to [`MAX_FANOUT`] neighbours, inline: a decision costs no allocation.
#[derive(Clone, Copy)]
pub struct Fanout {
    addrs: [u16; MAX_FANOUT],
    len: u8,
}

impl Fanout {
    pub const fn empty() -> Self {
        Fanout {
            addrs: [0; MAX_FANOUT],
            len: 0,
        }
    }

    fn push(&mut self, n: NodeAddr) -> bool {
        if usize::from(self.len) >= MAX_FANOUT {
            return false;
        }
        self.addrs[usize::from(self.len)] = n.get();
        self.len += 1;
        true
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = NodeAddr> + '_ {
        self.addrs[..self.len()]
            .iter()
            .filter_map(|&a| NodeAddr::new(a))
    }

    pub fn contains(&self, n: NodeAddr) -> bool {
        self.addrs[..self.len()].contains(&n.get())
    }
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.addrs[..self.len()]).finish()
    }
}

impl PartialEq for Fanout {
    fn eq(&self, other: &Self) -> bool {
        self.addrs[..self.len()] == other.addrs[..other.len()]
    }
}

/// Why the relay dropped a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not an RMTP flag, or a body that does not parse.
    Malformed,
    /// No tree for it here, or the peer is not part of the tree.
    NotOnTree,
    /// Data arriving from a neighbour that is not this tree's upstream (a loop or a stale route).
    NotFromUpstream,
    /// A RETRANSMIT nobody here asked for.
    Unrequested,
    /// The tree table is full.
    TableFull,
    /// A value that cannot be right (counted by what it was).
    Implausible,
}

/// What the engine does with the packet it handed in. The packet is never retained.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RelayAction {
    /// Send the packet unchanged to each neighbour in `to`; if `deliver_local`, hand it to the
    /// local members of its tree (group = DNP dst, sender = DNP src).
    Forward {
        to: Fanout,
        deliver_local: bool,
    },
    /// Taken in by the relay (NACK, MAB, NCF); whatever it causes comes from `poll_transmit`.
    Consumed,
    Drop(DropReason),
}

/// Where a packet from `poll_transmit` goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    Neighbour(NodeAddr),
    /// This node: repairs and NCFs to the local members of the tree, NACKs and MABs to the local
    /// sender of the tree.
    Local,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayTransmit {
    pub to: Hop,
    /// Bytes of the sealed packet at the start of the caller's buffer.
    pub len: usize,
    pub group: GroupAddr,
    pub sender: NodeAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerKey {
    Neighbour(NodeAddr),
    Local(u16),
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    key: PeerKey,
    used: bool,
    has_mab: bool,
    mab: u64,
    received: u64,
    /// The last report claimed every byte forwarded here (see `RelayStats::mab_completions_held`).
    claimed_all: bool,
    last_heard: Instant,
}

#[derive(Clone, Copy, Debug)]
struct NackEntry {
    seq: u64,
    /// Peers waiting for the repair.
    waiters: u64,
    /// Peers owed an NCF for this sequence.
    ncf_due: u64,
    /// When the sequence last went upstream (or was first asked).
    requested_at: Instant,
    upstream_due: bool,
    /// Upstream confirmed it with an NCF (or it went to the local sender): no more retries of
    /// our own; only a NACK arriving after the entry is stale sends it again.
    confirmed: bool,
}

struct Tree {
    group: GroupAddr,
    sender: NodeAddr,
    upstream: Option<NodeAddr>,
    peers: Vec<Peer>,
    /// Sorted by sequence, capacity fixed at creation.
    nacks: Vec<NackEntry>,
    nack_upstream_pending: bool,
    ncf_pending: u64,
    cache: Cache,
    /// Current minimum (mab, received) over live peers, and the last one sent upstream.
    min: Option<(u64, u64)>,
    sent: Option<(u64, u64)>,
    mab_due: bool,
    next_mab_at: Instant,
    /// Leading and trailing edges as far as the traffic forwarded here shows them.
    edges: Edges,
    /// A local member or the local sender is in this tree: it is never evicted for another.
    local: bool,
    /// When DATA or SPM last came through; `None`: never (made by a NACK or MAB, which forged
    /// joins can bring for any group).
    last_traffic: Option<Instant>,
    /// When unconfirmed upstream NACKs are due again.
    next_retry_at: Option<Instant>,
    last_activity: Instant,
    /// NACK table entries moved to keep it sorted: the work NACKs cost beyond their own
    /// sequences.
    #[cfg(test)]
    entries_moved: u64,
}

impl Tree {
    fn is_root(&self, me: NodeAddr) -> bool {
        self.sender == me
    }

    fn upstream_hop(&self, me: NodeAddr) -> Option<Hop> {
        if self.is_root(me) {
            Some(Hop::Local)
        } else {
            self.upstream.map(Hop::Neighbour)
        }
    }

    fn peer_index(&mut self, key: PeerKey, now: Instant, capacity: usize) -> Option<usize> {
        if let Some(i) = self.peers.iter().position(|p| p.used && p.key == key) {
            return Some(i);
        }
        let fresh = Peer {
            key,
            used: true,
            has_mab: false,
            mab: 0,
            received: 0,
            claimed_all: false,
            last_heard: now,
        };
        if let Some(i) = self.peers.iter().position(|p| !p.used) {
            self.peers[i] = fresh;
            return Some(i);
        }
        if self.peers.len() < capacity.min(MAX_FANOUT) {
            self.peers.push(fresh);
            return Some(self.peers.len() - 1);
        }
        None
    }

    fn find_nack(&self, seq: u64) -> Result<usize, usize> {
        self.nacks.binary_search_by_key(&seq, |e| e.seq)
    }

    fn remove_peer(&mut self, i: usize) {
        self.peers[i].used = false;
        let bit = !(1u64 << i);
        for e in &mut self.nacks {
            e.waiters &= bit;
            e.ncf_due &= bit;
        }
        self.nacks.retain(|e| e.waiters != 0);
        self.ncf_pending &= bit;
    }

    /// Prunes peers that left the tree or went silent while unreachable, and recomputes the
    /// minimum MAB over the rest; marks a MAB due when it changed.
    fn refresh_min(
        &mut self,
        now: Instant,
        entry: &TreeEntry,
        routing: &RoutingTable,
        expire: Duration,
    ) -> u64 {
        let mut prunes = 0;
        let mut mab: Option<u64> = None;
        let mut received: Option<u64> = None;
        for i in 0..self.peers.len() {
            let p = self.peers[i];
            if !p.used {
                continue;
            }
            // A downstream peer counts for the window only while it is still our direct
            // neighbour: once its link is gone its reports cannot reach us, even if routing
            // reaches it another way (it joins through its new upstream), and waiting for it
            // would stall the tree.
            let (in_tree, reachable) = match p.key {
                PeerKey::Neighbour(n) => (
                    entry.downstream.binary_search(&n).is_ok(),
                    routing.next_hop(n) == Some(n),
                ),
                PeerKey::Local(m) => (entry.local_members.binary_search(&m).is_ok(), true),
            };
            // A peer out of the tree or out of reach no longer holds the window, but holds the
            // trailing edge until it has been silent for `expire`: a branch that comes back (a
            // new path, or its next join after a forged leave) must find what it lacks still
            // repairable, and the sender must not count it complete meanwhile.
            let holds_window = in_tree && reachable;
            if !holds_window && now.saturating_since(p.last_heard) >= expire {
                self.remove_peer(i);
                prunes += 1;
                continue;
            }
            if p.has_mab {
                received = Some(received.map_or(p.received, |r| r.min(p.received)));
                if holds_window {
                    mab = Some(mab.map_or(p.mab, |m| m.min(p.mab)));
                }
            }
        }
        let min = mab.zip(received);
        self.min = min;
        if min.is_some() && min != self.sent {
            self.mab_due = true;
        }
        prunes
    }
}

/// A DATA/RETRANSMIT or SPM that passed the plausibility checks.
#[derive(Clone, Copy)]
enum Downward {
    Spm(SpmFields),
    /// `len` payload bytes ending before byte `end`.
    Data {
        seq: u64,
        len: u64,
        end: u64,
    },
}

/// What asks for a tree slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// DATA, RETRANSMIT or SPM from the tree's upstream or the local sender.
    Traffic,
    /// A NACK or MAB from below.
    Report,
}

#[derive(Clone, Copy, Debug)]
struct RepairJob {
    tree: u16,
    peer: u8,
    seq: u64,
}

pub struct RmtpRelay {
    config: RelayConfig,
    /// Tree slots; `None` is free. Indices are stable while a tree lives.
    trees: Vec<Option<Tree>>,
    /// (group, sender) -> slot, sorted.
    index: Vec<((u16, u16), u16)>,
    repairs: VecDeque<RepairJob>,
    /// New NACK entries of the packet being handled, before they are merged into its tree's
    /// table (sized once: a NACK names at most `nack_seqs_per_packet` sequences).
    fresh: Vec<NackEntry>,
    stats: RelayStats,
}

fn nack_hop(key: PeerKey) -> Hop {
    match key {
        PeerKey::Neighbour(n) => Hop::Neighbour(n),
        PeerKey::Local(_) => Hop::Local,
    }
}

impl RmtpRelay {
    pub fn new(config: RelayConfig) -> Self {
        let max_trees = config.max_trees.min(usize::from(u16::MAX));
        RmtpRelay {
            trees: (0..max_trees).map(|_| None).collect(),
            index: Vec::with_capacity(max_trees),
            repairs: VecDeque::with_capacity(config.repair_queue),
            fresh: Vec::with_capacity(config.nack_seqs_per_packet.max(1)),
            config,
            stats: RelayStats::default(),
        }
    }

    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// What the relay's tables hold now, and roughly the memory they reserve.
    pub fn footprint(&self) -> RelayFootprint {
        use std::mem::size_of;
        let mut f = RelayFootprint {
            repair_jobs: self.repairs.len(),
            bytes: self.trees.capacity() * size_of::<Option<Tree>>()
                + self.index.capacity() * size_of::<((u16, u16), u16)>()
                + self.repairs.capacity() * size_of::<RepairJob>()
                + self.fresh.capacity() * size_of::<NackEntry>(),
            ..RelayFootprint::default()
        };
        for t in self.trees.iter().flatten() {
            f.trees += 1;
            f.peers += t.peers.iter().filter(|p| p.used).count();
            f.nack_entries += t.nacks.len();
            f.bytes += t.peers.capacity() * size_of::<Peer>()
                + t.nacks.capacity() * size_of::<NackEntry>()
                + t.cache.reserved_bytes();
        }
        f
    }

    /// The slot of the tree (group, sender), if tracked.
    fn slot_of(&self, group: u16, sender: u16) -> Option<usize> {
        let i = self
            .index
            .binary_search_by_key(&(group, sender), |(k, _)| *k)
            .ok()?;
        Some(usize::from(self.index[i].1))
    }

    /// The slot of `entry`'s tree, made if new and there is room (see `max_trees`).
    fn tree_slot(
        &mut self,
        entry: &TreeEntry,
        now: Instant,
        claim: Claim,
    ) -> Result<usize, DropReason> {
        let key = (entry.group.get(), entry.sender.get());
        let local = !entry.local_members.is_empty()
            || (claim == Claim::Traffic && entry.sender == self.config.me);
        let slot = match self.slot_of(key.0, key.1) {
            Some(slot) => slot,
            None => {
                let Some(slot) = self.free_slot(now, claim, local) else {
                    self.stats.tree_table_full += 1;
                    return Err(DropReason::TableFull);
                };
                self.trees[slot] = Some(Tree {
                    group: entry.group,
                    sender: entry.sender,
                    upstream: entry.upstream,
                    peers: Vec::with_capacity(self.config.peers_per_tree.min(MAX_FANOUT)),
                    // Sized at the first traffic: before it, nothing can be NACKed or cached,
                    // and a tree that forged reports made costs little.
                    nacks: Vec::new(),
                    nack_upstream_pending: false,
                    ncf_pending: 0,
                    cache: Cache::new(0, self.config.mtu),
                    min: None,
                    sent: None,
                    mab_due: false,
                    next_mab_at: now + self.config.mab_interval,
                    edges: Edges::default(),
                    local,
                    last_traffic: None,
                    next_retry_at: None,
                    last_activity: now,
                    #[cfg(test)]
                    entries_moved: 0,
                });
                let pos = self.index.partition_point(|(k, _)| *k < key);
                self.index.insert(pos, (key, slot as u16));
                slot
            }
        };
        let tree = self.trees[slot].as_mut().expect("indexed slot is used");
        tree.upstream = entry.upstream;
        tree.last_activity = now;
        if claim == Claim::Traffic {
            if tree.last_traffic.is_none() {
                let cfg = &self.config;
                let cache = if tree.is_root(cfg.me) && !cfg.cache_at_root {
                    0
                } else {
                    cfg.cache_bytes
                };
                tree.nacks.reserve_exact(cfg.nack_entries);
                tree.cache = Cache::new(cache, cfg.mtu);
            }
            tree.last_traffic = Some(now);
        }
        // Only the local sender's own traffic makes a root tree "local" (forged joins can name
        // this node as the sender of any group).
        tree.local = !entry.local_members.is_empty()
            || (tree.is_root(self.config.me) && tree.last_traffic.is_some());
        Ok(slot)
    }

    /// A free tree slot, or the slot of the tree without local member or sender that carried
    /// traffic least recently (never, first) when the newcomer may take it.
    fn free_slot(&mut self, now: Instant, claim: Claim, local: bool) -> Option<usize> {
        if let Some(slot) = self.trees.iter().position(Option::is_none) {
            return Some(slot);
        }
        let (slot, last_traffic) = self
            .trees
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| (i, t)))
            .filter(|(_, t)| !t.local)
            .map(|(i, t)| (i, t.last_traffic))
            .min_by_key(|(_, at)| *at)?;
        let traffic = claim == Claim::Traffic;
        let evict = local
            || match last_traffic {
                None => traffic,
                Some(at) => traffic && now.saturating_since(at) >= self.config.tree_idle,
            };
        if !evict {
            return None;
        }
        self.forget_tree(slot);
        self.stats.trees_evicted += 1;
        Some(slot)
    }

    fn forget_tree(&mut self, slot: usize) {
        if let Some(tree) = self.trees[slot].take() {
            let key = (tree.group.get(), tree.sender.get());
            self.index.retain(|(k, _)| *k != key);
            self.repairs.retain(|j| usize::from(j.tree) != slot);
        }
    }

    /// A packet received from the neighbour `from`.
    pub fn handle(
        &mut self,
        now: Instant,
        from: NodeAddr,
        packet: &Packet<'_>,
        mcast: &MulticastTable,
        routing: &RoutingTable,
    ) -> RelayAction {
        let action = self.decide(now, Some(from), packet, mcast, routing);
        self.count(&action);
        action
    }

    /// A DATA, RETRANSMIT or SPM packet from the sender on this node.
    pub fn handle_local(
        &mut self,
        now: Instant,
        packet: &Packet<'_>,
        mcast: &MulticastTable,
        routing: &RoutingTable,
    ) -> RelayAction {
        let action = match packet.flag() {
            Flag::RmtpData | Flag::RmtpRetransmit | Flag::RmtpSpm
                if packet.src_raw() == self.config.me.get() =>
            {
                self.decide(now, None, packet, mcast, routing)
            }
            _ => RelayAction::Drop(DropReason::Malformed),
        };
        self.count(&action);
        action
    }

    fn count(&mut self, action: &RelayAction) {
        match action {
            RelayAction::Forward { to, deliver_local } => {
                self.stats.forwarded_copies += to.len() as u64;
                self.stats.delivered_local += u64::from(*deliver_local);
            }
            RelayAction::Consumed => {}
            RelayAction::Drop(r) => match r {
                DropReason::Malformed => self.stats.drops_malformed += 1,
                DropReason::NotOnTree => self.stats.drops_not_on_tree += 1,
                DropReason::NotFromUpstream => self.stats.drops_not_from_upstream += 1,
                DropReason::Unrequested => self.stats.retransmit_unrequested += 1,
                DropReason::TableFull => self.stats.drops_table_full += 1,
                // Counted where refused, by what was implausible.
                DropReason::Implausible => {}
            },
        }
    }

    fn decide(
        &mut self,
        now: Instant,
        from: Option<NodeAddr>,
        packet: &Packet<'_>,
        mcast: &MulticastTable,
        routing: &RoutingTable,
    ) -> RelayAction {
        match packet.flag() {
            Flag::RmtpData | Flag::RmtpRetransmit | Flag::RmtpSpm => {
                self.on_downward(now, from, packet, mcast)
            }
            Flag::RmtpNack | Flag::RmtpMab => {
                let Some(from) = from else {
                    return RelayAction::Drop(DropReason::Malformed);
                };
                self.on_upward(now, PeerKey::Neighbour(from), packet, mcast, routing)
            }
            Flag::RmtpNcf => self.on_ncf(packet),
            _ => RelayAction::Drop(DropReason::Malformed),
        }
    }

    /// Upstream confirms NACKs of ours: stop retrying them (PGM: a network element repeats its
    /// NAK until it sees the NCF).
    fn on_ncf(&mut self, packet: &Packet<'_>) -> RelayAction {
        self.stats.ncfs_received += 1;
        if packet.dst().raw() != self.config.me.get() {
            return RelayAction::Drop(DropReason::NotOnTree);
        }
        let Ok(ncf) = rmtp::Ncf::parse(packet.body()) else {
            return RelayAction::Drop(DropReason::Malformed);
        };
        let Some(slot) = self.slot_of(ncf.group, ncf.sender) else {
            return RelayAction::Drop(DropReason::NotOnTree);
        };
        let tree = self.trees[slot].as_mut().expect("indexed slot is used");
        for r in ncf.ranges.iter() {
            let from = tree.nacks.partition_point(|e| e.seq < r.first);
            for e in tree.nacks[from..]
                .iter_mut()
                .take_while(|e| e.seq < r.end())
            {
                e.confirmed = true;
            }
        }
        RelayAction::Consumed
    }

    fn on_downward(
        &mut self,
        now: Instant,
        from: Option<NodeAddr>,
        packet: &Packet<'_>,
        mcast: &MulticastTable,
    ) -> RelayAction {
        let (Addr::Group(group), Addr::Node(sender)) = (packet.dst(), packet.src()) else {
            return RelayAction::Drop(DropReason::Malformed);
        };
        let Some(entry) = mcast.lookup(group, sender) else {
            return RelayAction::Drop(DropReason::NotOnTree);
        };
        match from {
            None if sender != self.config.me => return RelayAction::Drop(DropReason::NotOnTree),
            Some(f) if entry.upstream != Some(f) => {
                return RelayAction::Drop(DropReason::NotFromUpstream);
            }
            _ => {}
        }
        let flag = packet.flag();
        // Values no sender can send (`None`) are refused before they touch anything.
        let down = match flag {
            Flag::RmtpSpm => SpmFields::parse(packet.body())
                .map(|spm| (spm.trailing <= spm.leading).then_some(Downward::Spm(spm))),
            _ => Data::parse(packet.body()).map(|d| {
                let end = d.offset().checked_add(d.payload().len() as u64);
                let seq = d.sequence();
                let len = d.payload().len() as u64;
                end.filter(|_| seq < u64::MAX)
                    .map(|end| Downward::Data { seq, len, end })
            }),
        };
        let down = match down {
            Ok(Some(down)) => down,
            Ok(None) => {
                match flag {
                    Flag::RmtpSpm => self.stats.spms_implausible += 1,
                    _ => self.stats.data_implausible += 1,
                }
                return RelayAction::Drop(DropReason::Implausible);
            }
            Err(_) => return RelayAction::Drop(DropReason::Malformed),
        };
        // A repair nobody here waits for moves nothing (not even the cache).
        if let Downward::Data { seq, .. } = down
            && flag == Flag::RmtpRetransmit
            && self
                .slot_of(group.get(), sender.get())
                .and_then(|slot| self.trees[slot].as_ref())
                .is_none_or(|tree| tree.find_nack(seq).is_err())
        {
            return RelayAction::Drop(DropReason::Unrequested);
        }
        let Ok(slot) = self.tree_slot(entry, now, Claim::Traffic) else {
            // No state to spare: still forward data, just without cache or NACK routing.
            return match flag {
                Flag::RmtpRetransmit => RelayAction::Drop(DropReason::TableFull),
                _ => self.fan_out(entry, from),
            };
        };
        let step = self.config.max_edge_step;
        let tree = self.trees[slot].as_mut().expect("slot in use");
        let seq = match down {
            Downward::Spm(spm) => {
                tree.edges.on_spm(&spm, step);
                let keep = tree
                    .nacks
                    .partition_point(|e| e.seq < tree.edges.trailing());
                if keep > 0 {
                    tree.nacks.drain(..keep);
                }
                return self.fan_out(entry, from);
            }
            Downward::Data { seq, len, end } => {
                tree.edges.on_data(seq, len, end, step);
                seq
            }
        };
        match flag {
            Flag::RmtpData => {
                tree.cache.insert(seq, packet.bytes());
                // Everyone downstream gets this one: nothing left to wait for.
                if let Ok(i) = tree.find_nack(seq) {
                    tree.nacks.remove(i);
                }
                self.fan_out(entry, from)
            }
            _ => {
                tree.cache.insert(seq, packet.bytes());
                let Ok(i) = tree.find_nack(seq) else {
                    return RelayAction::Drop(DropReason::Unrequested);
                };
                let e = tree.nacks.remove(i);
                let mut to = Fanout::empty();
                let mut deliver_local = false;
                for (bit, p) in tree.peers.iter().enumerate() {
                    if e.waiters & (1 << bit) == 0 || !p.used {
                        continue;
                    }
                    match p.key {
                        PeerKey::Neighbour(n) if Some(n) != from => {
                            to.push(n);
                        }
                        PeerKey::Neighbour(_) => {}
                        PeerKey::Local(_) => deliver_local = true,
                    }
                }
                self.stats.retransmissions_forwarded += 1;
                RelayAction::Forward { to, deliver_local }
            }
        }
    }

    fn fan_out(&mut self, entry: &TreeEntry, from: Option<NodeAddr>) -> RelayAction {
        let mut to = Fanout::empty();
        for &n in &entry.downstream {
            if Some(n) != from && !to.push(n) {
                self.stats.fanout_overflow += 1;
            }
        }
        self.stats.forwarded += 1;
        RelayAction::Forward {
            to,
            deliver_local: !entry.local_members.is_empty(),
        }
    }

    fn on_upward(
        &mut self,
        now: Instant,
        peer: PeerKey,
        packet: &Packet<'_>,
        mcast: &MulticastTable,
        routing: &RoutingTable,
    ) -> RelayAction {
        let Addr::Node(sender) = packet.dst() else {
            return RelayAction::Drop(DropReason::Malformed);
        };
        match packet.flag() {
            Flag::RmtpNack => match Nack::parse(packet.body()) {
                Ok(nack) => match GroupAddr::new(nack.group) {
                    Some(group) => {
                        self.nack(now, peer, group, sender, || nack.ranges.iter(), mcast)
                    }
                    None => RelayAction::Drop(DropReason::Malformed),
                },
                Err(_) => RelayAction::Drop(DropReason::Malformed),
            },
            Flag::RmtpMab => match Mab::parse(packet.body()) {
                Ok(m) => match GroupAddr::new(m.group) {
                    Some(group) => {
                        self.mab(now, peer, group, sender, m.mab, m.received, mcast, routing)
                    }
                    None => RelayAction::Drop(DropReason::Malformed),
                },
                Err(_) => RelayAction::Drop(DropReason::Malformed),
            },
            _ => RelayAction::Drop(DropReason::Malformed),
        }
    }

    /// A NACK or MAB packet from a local receiver (member id `member`), as its core built it.
    pub fn handle_local_member(
        &mut self,
        now: Instant,
        member: u16,
        packet: &Packet<'_>,
        mcast: &MulticastTable,
        routing: &RoutingTable,
    ) -> RelayAction {
        let action = self.on_upward(now, PeerKey::Local(member), packet, mcast, routing);
        self.count(&action);
        action
    }

    /// A local member misses these sequences.
    pub fn local_nack(
        &mut self,
        now: Instant,
        member: u16,
        group: GroupAddr,
        sender: NodeAddr,
        ranges: impl IntoIterator<Item = SeqRange> + Clone,
        mcast: &MulticastTable,
    ) -> RelayAction {
        let ranges = || ranges.clone().into_iter();
        let action = self.nack(now, PeerKey::Local(member), group, sender, ranges, mcast);
        self.count(&action);
        action
    }

    /// A local member's flow window.
    #[allow(clippy::too_many_arguments)]
    pub fn local_mab(
        &mut self,
        now: Instant,
        member: u16,
        group: GroupAddr,
        sender: NodeAddr,
        mab: u64,
        received: u64,
        mcast: &MulticastTable,
        routing: &RoutingTable,
    ) -> RelayAction {
        let action = self.mab(
            now,
            PeerKey::Local(member),
            group,
            sender,
            mab,
            received,
            mcast,
            routing,
        );
        self.count(&action);
        action
    }

    fn peer_in_tree(entry: &TreeEntry, peer: PeerKey) -> bool {
        match peer {
            PeerKey::Neighbour(n) => entry.downstream.binary_search(&n).is_ok(),
            PeerKey::Local(m) => entry.local_members.binary_search(&m).is_ok(),
        }
    }

    /// For a NACK or MAB from `peer`: the tree entry of (group, sender) and the relay's slot
    /// for that tree, or why the packet is dropped.
    fn report_tree<'m>(
        &mut self,
        now: Instant,
        peer: PeerKey,
        group: GroupAddr,
        sender: NodeAddr,
        mcast: &'m MulticastTable,
    ) -> Result<(&'m TreeEntry, usize), DropReason> {
        let entry = mcast.lookup(group, sender).ok_or(DropReason::NotOnTree)?;
        if !Self::peer_in_tree(entry, peer) {
            return Err(DropReason::NotOnTree);
        }
        Ok((entry, self.tree_slot(entry, now, Claim::Report)?))
    }

    /// The index of `peer` in the tree at `slot`, made if new and there is room.
    fn peer_slot(&mut self, slot: usize, peer: PeerKey, now: Instant) -> Result<usize, DropReason> {
        let tree = self.trees[slot].as_mut().expect("slot in use");
        tree.peer_index(peer, now, self.config.peers_per_tree)
            .ok_or_else(|| {
                self.stats.peer_table_full += 1;
                DropReason::TableFull
            })
    }

    /// `ranges` gives the NACK's ranges afresh each call: they are read twice, once to judge
    /// them, then to act.
    fn nack<I: Iterator<Item = SeqRange>>(
        &mut self,
        now: Instant,
        peer: PeerKey,
        group: GroupAddr,
        sender: NodeAddr,
        ranges: impl Fn() -> I,
        mcast: &MulticastTable,
    ) -> RelayAction {
        self.stats.nacks_received += 1;
        let slot = match self.report_tree(now, peer, group, sender, mcast) {
            Ok((_, slot)) => slot,
            Err(reason) => return RelayAction::Drop(reason),
        };
        // Sequences at or beyond the leading edge seen here were never sent: refused, and a
        // NACK naming nothing else moves nothing. What is left is cut to one packet's worth.
        let leading = self.trees[slot]
            .as_ref()
            .expect("slot in use")
            .edges
            .leading();
        let (mut within, mut beyond) = (0u64, 0u64);
        for r in ranges() {
            let cut = r.first.max(leading).min(r.end());
            within = within.saturating_add(cut - r.first);
            beyond = beyond.saturating_add(r.end() - cut);
        }
        self.stats.nack_seqs_beyond_leading =
            self.stats.nack_seqs_beyond_leading.saturating_add(beyond);
        if within == 0 {
            return RelayAction::Drop(DropReason::Implausible);
        }
        let cap = self.config.nack_seqs_per_packet;
        self.stats.nack_seqs_over_cap = self
            .stats
            .nack_seqs_over_cap
            .saturating_add(within.saturating_sub(cap as u64));
        let pi = match self.peer_slot(slot, peer, now) {
            Ok(pi) => pi,
            Err(reason) => return RelayAction::Drop(reason),
        };
        let cfg = &self.config;
        let tree = self.trees[slot].as_mut().expect("slot in use");
        tree.peers[pi].last_heard = now;
        let bit = 1u64 << pi;
        let trailing = tree.edges.trailing();
        let seqs = ranges()
            .flat_map(|r| r.first..r.end().min(leading))
            .take(cap);
        for seq in seqs {
            if seq < trailing {
                self.stats.nacks_below_trailing += 1;
                continue;
            }
            if self.repairs.len() >= cfg.repair_queue && tree.cache.get(seq).is_some() {
                self.stats.repair_queue_full += 1;
                continue;
            }
            let claim = tree.cache.claim_repair(seq, bit, now, cfg.repair_holdoff);
            match claim {
                CacheRepair::Serve => self.repairs.push_back(RepairJob {
                    tree: slot as u16,
                    peer: pi as u8,
                    seq,
                }),
                CacheRepair::HeldOff => self.stats.repairs_held_off += 1,
                CacheRepair::AskedAgain | CacheRepair::NotCached => {
                    if matches!(claim, CacheRepair::AskedAgain) {
                        self.stats.cache_copies_asked_again += 1;
                    }
                    match record_nack(tree, seq, bit, now, cfg.nack_stale, &mut self.fresh) {
                        Recorded::Full => self.stats.nack_table_full += 1,
                        Recorded::Waiting => self.stats.nack_seqs_aggregated += 1,
                        Recorded::Upstream => {}
                    }
                }
            }
        }
        merge_fresh(tree, &mut self.fresh);
        RelayAction::Consumed
    }

    #[allow(clippy::too_many_arguments)]
    fn mab(
        &mut self,
        now: Instant,
        peer: PeerKey,
        group: GroupAddr,
        sender: NodeAddr,
        mab: u64,
        received: u64,
        mcast: &MulticastTable,
        routing: &RoutingTable,
    ) -> RelayAction {
        self.stats.mabs_received += 1;
        // Nobody holds more than its window allows.
        if received > mab {
            self.stats.mabs_implausible += 1;
            return RelayAction::Drop(DropReason::Implausible);
        }
        let (entry, slot) = match self.report_tree(now, peer, group, sender, mcast) {
            Ok(found) => found,
            Err(reason) => return RelayAction::Drop(reason),
        };
        let pi = match self.peer_slot(slot, peer, now) {
            Ok(pi) => pi,
            Err(reason) => return RelayAction::Drop(reason),
        };
        let (expire, step) = (self.config.mab_expire, self.config.max_edge_step);
        let tree = self.trees[slot].as_mut().expect("slot in use");
        let bounded = tree.edges.bound_report(mab, received, step);
        self.stats.mabs_clamped += u64::from(bounded != (mab, received));
        // Only a receiver that verified the whole transfer claims every byte forwarded (the
        // others report one byte less): one forged MAB must not make the sender believe it,
        // so such a claim counts from the peer's second report in a row.
        let claims_all = bounded.1 >= tree.edges.leading_byte();
        let p = &mut tree.peers[pi];
        let received = if claims_all && !p.claimed_all {
            self.stats.mab_completions_held += 1;
            p.received.min(bounded.1)
        } else {
            bounded.1
        };
        p.has_mab = true;
        (p.mab, p.received, p.claimed_all) = (bounded.0, received, claims_all);
        p.last_heard = now;
        self.stats.prunes += tree.refresh_min(now, entry, routing, expire);
        RelayAction::Consumed
    }

    /// The earliest time `handle_timeout` has work (periodic MABs, expiries).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.trees
            .iter()
            .flatten()
            .map(|t| {
                t.next_retry_at
                    .map_or(t.next_mab_at, |r| r.min(t.next_mab_at))
            })
            .min()
    }

    /// Periodic work: prune peers and send the minimum MAB upstream, expire old NACK entries,
    /// forget idle trees.
    pub fn handle_timeout(&mut self, now: Instant, mcast: &MulticastTable, routing: &RoutingTable) {
        for slot in 0..self.trees.len() {
            let Some(tree) = self.trees[slot].as_ref() else {
                continue;
            };
            let entry = mcast.lookup(tree.group, tree.sender);
            if entry.is_none() && now.saturating_since(tree.last_activity) >= self.config.tree_idle
            {
                self.forget_tree(slot);
                continue;
            }
            let cfg = &self.config;
            let tree = self.trees[slot].as_mut().expect("slot in use");
            match entry {
                Some(entry) => {
                    tree.upstream = entry.upstream;
                    self.stats.prunes += tree.refresh_min(now, entry, routing, cfg.mab_expire);
                }
                None => tree.min = None,
            }
            if now >= tree.next_mab_at {
                tree.next_mab_at = now + cfg.mab_interval;
                if tree.min.is_some() {
                    tree.mab_due = true;
                }
            }
            let expire = cfg.nack_expire;
            tree.nacks
                .retain(|e| now.saturating_since(e.requested_at) < expire);
            // Unconfirmed NACKs of ours are repeated upstream every `nack_stale`.
            if tree.next_retry_at.is_some_and(|t| t <= now) {
                tree.next_retry_at = None;
                for e in tree.nacks.iter_mut() {
                    if e.confirmed || e.upstream_due {
                        continue;
                    }
                    if now.saturating_since(e.requested_at) >= cfg.nack_stale {
                        e.upstream_due = true;
                        e.requested_at = now;
                        tree.nack_upstream_pending = true;
                    } else {
                        let at = e.requested_at + cfg.nack_stale;
                        tree.next_retry_at = Some(tree.next_retry_at.map_or(at, |t| t.min(at)));
                    }
                }
            }
        }
    }

    /// The next packet the relay itself sends (a cache repair, a NACK upstream, an NCF, a MAB),
    /// built into `buf` (at least `mtu` bytes).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<RelayTransmit> {
        while let Some(job) = self.repairs.pop_front() {
            if let Some(t) = self.serve_repair(now, job, buf) {
                return Some(t);
            }
        }
        let me = self.config.me;
        let mtu = self.config.mtu;
        let stale = self.config.nack_stale;
        for slot in 0..self.trees.len() {
            let Some(tree) = self.trees[slot].as_mut() else {
                continue;
            };
            if tree.nack_upstream_pending
                && let Some(t) = build_upstream_nack(tree, me, mtu, stale, now, buf)
            {
                self.stats.nacks_sent_upstream += 1;
                self.stats.nack_seqs_sent_upstream += t.1;
                return Some(t.0);
            }
            while tree.ncf_pending != 0 {
                if let Some(t) = build_ncf(tree, me, mtu, buf) {
                    self.stats.ncfs_sent += 1;
                    return Some(t);
                }
            }
            if tree.mab_due {
                tree.mab_due = false;
                if let (Some((mab, received)), Some(hop)) = (tree.min, tree.upstream_hop(me)) {
                    tree.sent = Some((mab, received));
                    tree.edges.on_report_sent(received);
                    let m = Mab {
                        group: tree.group.get(),
                        mab,
                        received,
                    };
                    let len = rmtp::build_mab(buf, tree.sender, me, &m).ok()?;
                    self.stats.mabs_sent += 1;
                    return Some(RelayTransmit {
                        to: hop,
                        len,
                        group: tree.group,
                        sender: tree.sender,
                    });
                }
            }
        }
        None
    }

    fn serve_repair(
        &mut self,
        now: Instant,
        job: RepairJob,
        buf: &mut [u8],
    ) -> Option<RelayTransmit> {
        let tree = self.trees.get_mut(usize::from(job.tree))?.as_mut()?;
        let peer = *tree.peers.get(usize::from(job.peer))?;
        if !peer.used {
            return None;
        }
        let cached = tree.cache.get(job.seq)?;
        let intact = Data::parse(&cached[DNP_HEADER_LEN..]).is_ok_and(|d| d.crc_ok());
        if !intact {
            // A copy corrupted on the way in (the DNP checksum let it through): never serve it,
            // ask upstream instead.
            self.stats.cache_corrupt += 1;
            tree.cache.evict(job.seq);
            let stale = self.config.nack_stale;
            record_nack(tree, job.seq, 1 << job.peer, now, stale, &mut self.fresh);
            merge_fresh(tree, &mut self.fresh);
            return None;
        }
        let len = cached.len();
        buf[..len].copy_from_slice(cached);
        self.stats.repairs_from_cache += 1;
        Some(RelayTransmit {
            to: nack_hop(peer.key),
            len,
            group: tree.group,
            sender: tree.sender,
        })
    }
}

enum Recorded {
    /// New or stale: the sequence goes upstream.
    Upstream,
    /// Already asked recently: the peer only joins the waiters.
    Waiting,
    Full,
}

/// Records that the peer `bit` waits for `seq`: a new entry goes upstream, an existing one only
/// goes again when stale. The peer is owed an NCF either way. A new entry waits in `fresh`
/// until [`merge_fresh`] puts the packet's new entries into the table at once: inserted one by
/// one, a NACK's thousand sequences below a full table would each move every entry above.
fn record_nack(
    tree: &mut Tree,
    seq: u64,
    bit: u64,
    now: Instant,
    stale: Duration,
    fresh: &mut Vec<NackEntry>,
) -> Recorded {
    let outcome = match tree.find_nack(seq) {
        Ok(i) => {
            let e = &mut tree.nacks[i];
            e.waiters |= bit;
            e.ncf_due |= bit;
            if e.upstream_due {
                Recorded::Waiting
            } else if now.saturating_since(e.requested_at) >= stale {
                e.upstream_due = true;
                e.confirmed = false;
                e.requested_at = now;
                tree.nack_upstream_pending = true;
                Recorded::Upstream
            } else {
                Recorded::Waiting
            }
        }
        Err(_) => {
            let full = tree.nacks.len() + fresh.len() >= tree.nacks.capacity();
            if full || fresh.len() >= fresh.capacity() {
                return Recorded::Full;
            }
            fresh.push(NackEntry {
                seq,
                waiters: bit,
                ncf_due: bit,
                requested_at: now,
                upstream_due: true,
                confirmed: false,
            });
            tree.nack_upstream_pending = true;
            Recorded::Upstream
        }
    };
    tree.ncf_pending |= bit;
    outcome
}

/// Puts the entries [`record_nack`] left in `fresh` into the table, keeping it sorted: one
/// merge from the back, so each entry of the table moves at most once; `fresh` is left empty.
fn merge_fresh(tree: &mut Tree, fresh: &mut Vec<NackEntry>) {
    if fresh.is_empty() {
        return;
    }
    // Overlapping ranges of one NACK name a sequence twice: both copies are alike.
    fresh.sort_unstable_by_key(|e| e.seq);
    fresh.dedup_by_key(|e| e.seq);
    let old = tree.nacks.len();
    // Within the capacity reserved at the tree's first traffic (`record_nack` checked).
    tree.nacks.extend_from_slice(fresh);
    let (mut i, mut j) = (old, fresh.len());
    while j > 0 {
        let write = i + j - 1;
        if i > 0 && tree.nacks[i - 1].seq > fresh[j - 1].seq {
            i -= 1;
            tree.nacks[write] = tree.nacks[i];
            #[cfg(test)]
            {
                tree.entries_moved += 1;
            }
        } else {
            j -= 1;
            tree.nacks[write] = fresh[j];
        }
    }
    fresh.clear();
}

fn build_upstream_nack(
    tree: &mut Tree,
    me: NodeAddr,
    mtu: usize,
    stale: Duration,
    now: Instant,
    buf: &mut [u8],
) -> Option<(RelayTransmit, u64)> {
    // Without a way up (sender unreachable) the entries wait for one.
    let hop = tree.upstream_hop(me)?;
    let limit = rmtp::max_nack_ranges(mtu).min(MAX_RANGES);
    let mut ranges = RangeBuf::<MAX_RANGES>::default();
    let mut seqs = 0;
    let mut more = false;
    for e in tree.nacks.iter_mut().filter(|e| e.upstream_due) {
        if !ranges.push(e.seq, limit) {
            more = true;
            break;
        }
        e.upstream_due = false;
        // Handing a NACK to the local sender cannot be lost: nothing to confirm.
        e.confirmed = hop == Hop::Local;
        seqs += 1;
    }
    tree.nack_upstream_pending = more;
    if hop != Hop::Local {
        let at = now + stale;
        tree.next_retry_at = Some(tree.next_retry_at.map_or(at, |t| t.min(at)));
    }
    if ranges.is_empty() {
        return None;
    }
    let len = rmtp::build_nack(buf, tree.sender, me, tree.group, ranges.as_slice()).ok()?;
    Some((
        RelayTransmit {
            to: hop,
            len,
            group: tree.group,
            sender: tree.sender,
        },
        seqs,
    ))
}

/// The NCF owed to the lowest pending peer; `None` when its entries went meanwhile (repaired).
fn build_ncf(tree: &mut Tree, me: NodeAddr, mtu: usize, buf: &mut [u8]) -> Option<RelayTransmit> {
    let pi = tree.ncf_pending.trailing_zeros() as usize;
    let bit = 1u64 << pi;
    let limit = rmtp::max_ncf_ranges(mtu).min(MAX_RANGES);
    let mut ranges = RangeBuf::<MAX_RANGES>::default();
    let mut more = false;
    for e in tree.nacks.iter_mut().filter(|e| e.ncf_due & bit != 0) {
        if !ranges.push(e.seq, limit) {
            more = true;
            break;
        }
        e.ncf_due &= !bit;
    }
    if !more {
        tree.ncf_pending &= !bit;
    }
    let key = tree.peers[pi].key;
    let dst = match key {
        PeerKey::Neighbour(n) => n,
        PeerKey::Local(_) => me,
    };
    if ranges.is_empty() {
        return None;
    }
    let len = rmtp::build_ncf(buf, dst, me, tree.group, tree.sender, ranges.as_slice()).ok()?;
    Some(RelayTransmit {
        to: nack_hop(key),
        len,
        group: tree.group,
        sender: tree.sender,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::drp::Route;
    use control::wire::DEFAULT_MTU;
    use control::wire::dnp::frame;
    use control::wire::rmtp::{Ncf, RmtpMessage, data_packet};
    use proptest::prelude::*;

    const G: u16 = 0xF000;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    fn g() -> GroupAddr {
        GroupAddr::new(G).unwrap()
    }

    /// Node 2: upstream 1 (the sender), downstream 3 and 4, local member 9.
    fn tables(reachable: &[u16]) -> (MulticastTable, RoutingTable) {
        let entry = TreeEntry {
            group: g(),
            sender: n(1),
            upstream: Some(n(1)),
            downstream: vec![n(3), n(4)],
            local_members: vec![9],
        };
        let routes = reachable
            .iter()
            .map(|&d| Route {
                dst: n(d),
                next_hop: n(d),
                hops: 1,
            })
            .collect();
        (
            MulticastTable::new(vec![entry]),
            RoutingTable::new(n(2), routes),
        )
    }

    fn relay() -> RmtpRelay {
        RmtpRelay::new(RelayConfig::new(n(2), DEFAULT_MTU))
    }

    /// An SPM of `sender`'s tree: 100 segments of 100 bytes sent so far.
    fn spm(sender: u16) -> Vec<u8> {
        let mut buf = vec![0u8; DEFAULT_MTU];
        let fields = SpmFields {
            spm_sequence: 1,
            trailing: 0,
            leading: 100,
            segment_size: 100,
            total: rmtp::TOTAL_UNKNOWN,
            finished: false,
            hash: [0; 32],
        };
        let len = rmtp::build_spm(&mut buf, g(), n(sender), &fields).unwrap();
        buf.truncate(len);
        buf
    }

    /// The sender's SPM through node 2: the tree carries traffic, sequences below 100 exist.
    fn announced(r: &mut RmtpRelay, mc: &MulticastTable, rt: &RoutingTable, now: Instant) {
        announced_with(r, mc, rt, now, &spm(1));
    }

    fn announced_with(
        r: &mut RmtpRelay,
        mc: &MulticastTable,
        rt: &RoutingTable,
        now: Instant,
        spm: &[u8],
    ) {
        let action = r.handle(now, n(1), &p(spm), mc, rt);
        assert!(matches!(action, RelayAction::Forward { .. }), "{action:?}");
    }

    fn data(seq: u64, flag: Flag) -> Vec<u8> {
        data_packet(g(), n(1), flag, seq, seq * 100, &[seq as u8; 100])
    }

    fn nack(from: u16, seqs: &[SeqRange]) -> Vec<u8> {
        let mut buf = vec![0u8; DEFAULT_MTU];
        let len = rmtp::build_nack(&mut buf, n(1), n(from), g(), seqs).unwrap();
        buf.truncate(len);
        buf
    }

    fn p(bytes: &[u8]) -> Packet<'_> {
        Packet::parse(bytes, DEFAULT_MTU).unwrap()
    }

    /// Everything the relay wants to send: (hop, flag, ranges or data seq).
    fn drain(r: &mut RmtpRelay, now: Instant) -> Vec<(Hop, Flag, Vec<u8>)> {
        let mut buf = [0u8; DEFAULT_MTU];
        let mut out = Vec::new();
        while let Some(t) = r.poll_transmit(now, &mut buf) {
            let pk = p(&buf[..t.len]);
            out.push((t.to, pk.flag(), buf[..t.len].to_vec()));
        }
        out
    }

    fn ranges_of(bytes: &[u8]) -> Vec<SeqRange> {
        let pk = p(bytes);
        match RmtpMessage::parse(pk.flag(), pk.body()).unwrap() {
            RmtpMessage::Nack(x) => x.ranges.iter().collect(),
            RmtpMessage::Ncf(Ncf { ranges, .. }) => ranges.iter().collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_fans_out_from_upstream_only() {
        let (mc, rt) = tables(&[1, 3, 4]);
        let mut r = relay();
        let d = data(0, Flag::RmtpData);
        match r.handle(Instant::ZERO, n(1), &p(&d), &mc, &rt) {
            RelayAction::Forward { to, deliver_local } => {
                assert_eq!(to.iter().collect::<Vec<_>>(), [n(3), n(4)]);
                assert!(deliver_local);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.handle(Instant::ZERO, n(3), &p(&d), &mc, &rt),
            RelayAction::Drop(DropReason::NotFromUpstream)
        );
        let other = data_packet(
            GroupAddr::new(0xF001).unwrap(),
            n(1),
            Flag::RmtpData,
            0,
            0,
            b"x",
        );
        assert_eq!(
            r.handle(Instant::ZERO, n(1), &p(&other), &mc, &rt),
            RelayAction::Drop(DropReason::NotOnTree)
        );
        assert_eq!(r.stats().drops_not_from_upstream, 1);
        assert_eq!(r.stats().drops_not_on_tree, 1);
    }

    #[test]
    fn nacks_aggregate_and_retransmit_goes_only_to_those_who_asked() {
        let (mc, rt) = tables(&[1, 3, 4]);
        let mut cfg = RelayConfig::new(n(2), DEFAULT_MTU);
        cfg.cache_bytes = 0;
        let mut r = RmtpRelay::new(cfg);
        let t0 = Instant::ZERO;
        announced(&mut r, &mc, &rt, t0);
        let five = [SeqRange::single(5)];
        assert_eq!(
            r.handle(t0, n(3), &p(&nack(3, &five)), &mc, &rt),
            RelayAction::Consumed
        );
        let out = drain(&mut r, t0);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].0, out[0].1), (Hop::Neighbour(n(1)), Flag::RmtpNack));
        assert_eq!(ranges_of(&out[0].2), five);
        assert_eq!(p(&out[0].2).src_raw(), 2, "the relay's own NACK");
        assert_eq!((out[1].0, out[1].1), (Hop::Neighbour(n(3)), Flag::RmtpNcf));
        assert_eq!(p(&out[1].2).dst().raw(), 3);
        // A second NACK for 5 (from 4) only records a waiter, and is confirmed.
        r.handle(t0, n(4), &p(&nack(4, &five)), &mc, &rt);
        let out = drain(&mut r, t0);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, out[0].1), (Hop::Neighbour(n(4)), Flag::RmtpNcf));
        assert_eq!(r.stats().nack_seqs_aggregated, 1);
        // Upstream confirms: no retry of our own; a NACK after the entry is stale goes again.
        let mut ncf = vec![0u8; DEFAULT_MTU];
        let len = rmtp::build_ncf(&mut ncf, n(2), n(1), g(), n(1), &five).unwrap();
        r.handle(t0, n(1), &p(&ncf[..len]), &mc, &rt);
        let t1 = t0 + Duration::from_millis(50);
        r.handle_timeout(t1, &mc, &rt);
        assert!(
            drain(&mut r, t1)
                .iter()
                .all(|(_, f, _)| *f != Flag::RmtpNack)
        );
        r.handle(t1, n(3), &p(&nack(3, &five)), &mc, &rt);
        let out = drain(&mut r, t1);
        assert!(
            out.iter()
                .any(|(h, f, _)| *h == Hop::Neighbour(n(1)) && *f == Flag::RmtpNack)
        );
        assert_eq!(r.stats().nacks_sent_upstream, 2);
        // The repair goes to 3 and 4 only (not the local member), once.
        let rd = data(5, Flag::RmtpRetransmit);
        match r.handle(t1, n(1), &p(&rd), &mc, &rt) {
            RelayAction::Forward { to, deliver_local } => {
                assert_eq!(to.iter().collect::<Vec<_>>(), [n(3), n(4)]);
                assert!(!deliver_local);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.handle(t1, n(1), &p(&rd), &mc, &rt),
            RelayAction::Drop(DropReason::Unrequested)
        );
    }

    #[test]
    fn unconfirmed_nacks_are_repeated_upstream() {
        let (mc, rt) = tables(&[1, 3, 4]);
        let mut r = relay();
        let t0 = Instant::ZERO;
        announced(&mut r, &mc, &rt, t0);
        r.handle(
            t0,
            n(3),
            &p(&nack(3, &[SeqRange { first: 8, len: 3 }])),
            &mc,
            &rt,
        );
        assert_eq!(drain(&mut r, t0).len(), 2);
        let t1 = t0 + Duration::from_millis(10);
        assert!(r.poll_timeout().unwrap() <= t1);
        r.handle_timeout(t1, &mc, &rt);
        let out = drain(&mut r, t1);
        assert_eq!(out.len(), 1);
        assert_eq!(ranges_of(&out[0].2), [SeqRange { first: 8, len: 3 }]);
    }

    #[test]
    fn cached_data_answers_nacks_locally() {
        let (mc, rt) = tables(&[1, 3, 4]);
        let mut r = relay();
        let t0 = Instant::ZERO;
        let d = data(7, Flag::RmtpData);
        r.handle(t0, n(1), &p(&d), &mc, &rt);
        r.handle(t0, n(4), &p(&nack(4, &[SeqRange::single(7)])), &mc, &rt);
        let nine = [9u16];
        r.local_nack(t0, nine[0], g(), n(1), [SeqRange::single(7)], &mc);
        let out = drain(&mut r, t0);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].0, Hop::Neighbour(n(4)));
        assert_eq!(out[1].0, Hop::Local);
        for (_, flag, bytes) in &out {
            assert_eq!(*flag, Flag::RmtpRetransmit);
            assert_eq!(p(bytes).body(), p(&d).body());
        }
        assert_eq!(r.stats().repairs_from_cache, 2);
        assert_eq!(r.stats().nacks_sent_upstream, 0);
    }

    #[test]
    fn corrupted_cache_copy_is_not_served() {
        let (mc, rt) = tables(&[1, 3, 4]);
        let mut r = relay();
        let t0 = Instant::ZERO;
        let mut d = data(7, Flag::RmtpData);
        d[50] ^= 4;
        let d = frame(
            Addr::from_raw(G),
            Addr::from_raw(1),
            Flag::RmtpData,
            &d[10..],
        );
        r.handle(t0, n(1), &p(&d), &mc, &rt);
        r.handle(t0, n(3), &p(&nack(3, &[SeqRange::single(7)])), &mc, &rt);
        let out = drain(&mut r, t0);
        assert_eq!(r.stats().cache_corrupt, 1);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!((out[0].0, out[0].1), (Hop::Neighbour(n(1)), Flag::RmtpNack));
    }

    #[test]
    fn mab_minimum_goes_upstream_and_the_unreachable_are_ignored_then_pruned() {
        let (mc, rt) = tables(&[1, 3, 4]);
        let mut r = relay();
        let t0 = Instant::ZERO;
        announced(&mut r, &mc, &rt, t0);
        let mab = |from: u16, m: u64, rcv: u64| {
            let mut buf = vec![0u8; 64];
            let len = rmtp::build_mab(
                &mut buf,
                n(1),
                n(from),
                &Mab {
                    group: G,
                    mab: m,
                    received: rcv,
                },
            )
            .unwrap();
            buf.truncate(len);
            buf
        };
        let sent = |r: &mut RmtpRelay, now| -> Vec<(u64, u64)> {
            drain(r, now)
                .iter()
                .map(|(h, _, b)| {
                    assert_eq!(*h, Hop::Neighbour(n(1)));
                    let m = Mab::parse(p(b).body()).unwrap();
                    (m.mab, m.received)
                })
                .collect()
        };
        r.handle(t0, n(3), &p(&mab(3, 1000, 100)), &mc, &rt);
        r.handle(t0, n(4), &p(&mab(4, 2000, 50)), &mc, &rt);
        r.local_mab(t0, 9, g(), n(1), 5000, 4000, &mc, &rt);
        assert_eq!(sent(&mut r, t0), [(1000, 50)]);
        // Node 3 becomes unreachable: ignored at once, pruned once silent for mab_expire.
        let (_, rt2) = tables(&[1, 4]);
        let t1 = t0 + Duration::from_millis(50);
        r.handle_timeout(t1, &mc, &rt2);
        assert_eq!(sent(&mut r, t1), [(2000, 50)]);
        assert_eq!(r.stats().prunes, 0);
        let t2 = t0 + Duration::from_secs(4);
        r.handle_timeout(t2, &mc, &rt2);
        assert_eq!(r.stats().prunes, 1);
        // A member no longer in the tree entry is pruned at once.
        let entry = TreeEntry {
            group: g(),
            sender: n(1),
            upstream: Some(n(1)),
            downstream: vec![n(3)],
            local_members: vec![9],
        };
        let mc2 = MulticastTable::new(vec![entry]);
        r.handle_timeout(t2 + Duration::from_millis(50), &mc2, &rt);
        assert_eq!(r.stats().prunes, 2);
        assert_eq!(sent(&mut r, t2 + Duration::from_millis(50)), [(5000, 4000)]);
    }

    #[test]
    fn at_the_root_nacks_go_to_the_local_sender() {
        let entry = TreeEntry {
            group: g(),
            sender: n(2),
            upstream: None,
            downstream: vec![n(3)],
            local_members: vec![],
        };
        let mc = MulticastTable::new(vec![entry]);
        let rt = RoutingTable::new(
            n(2),
            vec![Route {
                dst: n(3),
                next_hop: n(3),
                hops: 1,
            }],
        );
        let mut r = relay();
        // The local sender's SPM makes the tree.
        r.handle_local(Instant::ZERO, &p(&spm(2)), &mc, &rt);
        let mut buf = vec![0u8; DEFAULT_MTU];
        let len = rmtp::build_nack(&mut buf, n(2), n(3), g(), &[SeqRange::single(1)]).unwrap();
        r.handle(Instant::ZERO, n(3), &p(&buf[..len]), &mc, &rt);
        let out = drain(&mut r, Instant::ZERO);
        assert_eq!((out[0].0, out[0].1), (Hop::Local, Flag::RmtpNack));
        assert_eq!(p(&out[0].2).dst().raw(), 2);
        // The local sender's DATA fans out; its RETRANSMIT follows the NACK table.
        let d = data_packet(g(), n(2), Flag::RmtpRetransmit, 1, 100, b"abc");
        match r.handle_local(Instant::ZERO, &p(&d), &mc, &rt) {
            RelayAction::Forward { to, .. } => assert_eq!(to.iter().collect::<Vec<_>>(), [n(3)]),
            other => panic!("{other:?}"),
        }
    }

    /// A forged NACK naming 1,024 sequences below the 3,072 a table already holds: inserting
    /// them one by one would move every higher entry once per sequence (3 million moves, some
    /// 10 ms of memmove per packet); a NACK moves each entry at most once.
    #[test]
    fn a_nack_moves_each_table_entry_at_most_once() {
        let (mc, rt) = tables(&[1, 3, 4]);
        let mut cfg = RelayConfig::new(n(2), DEFAULT_MTU);
        cfg.cache_bytes = 0;
        let per_packet = cfg.nack_seqs_per_packet as u64;
        let mut r = RmtpRelay::new(cfg);
        let t0 = Instant::ZERO;
        let mut buf = vec![0u8; DEFAULT_MTU];
        let fields = SpmFields {
            spm_sequence: 1,
            trailing: 0,
            leading: 1 << 20,
            segment_size: 100,
            total: rmtp::TOTAL_UNKNOWN,
            finished: false,
            hash: [0; 32],
        };
        let len = rmtp::build_spm(&mut buf, g(), n(1), &fields).unwrap();
        announced_with(&mut r, &mc, &rt, t0, &buf[..len]);
        let high = 100_000;
        for k in 0..3 {
            let range = SeqRange {
                first: high + k * per_packet,
                len: per_packet as u32,
            };
            r.handle(t0, n(3), &p(&nack(3, &[range])), &mc, &rt);
        }
        let tree = |r: &RmtpRelay| r.trees.iter().flatten().next().unwrap().entries_moved;
        let before = tree(&r);
        let below = SeqRange {
            first: 0,
            len: per_packet as u32,
        };
        r.handle(t0, n(3), &p(&nack(3, &[below])), &mc, &rt);
        assert_eq!(r.footprint().nack_entries, 4 * per_packet as usize);
        let moved = tree(&r) - before;
        assert!(
            moved <= 3 * per_packet,
            "{moved} entries moved for one NACK"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_packets_never_panic(flag in 0usize..9, from in 1u16..6, src in 0u16..6,
                                         dst in prop_oneof![Just(0xF000u16), 0u16..6],
                                         body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (mc, rt) = tables(&[1, 3, 4]);
            let mut r = relay();
            let pk = frame(Addr::from_raw(dst), Addr::from_raw(src), Flag::ALL[flag], &body);
            let pk = p(&pk);
            let now = Instant::from_millis(1);
            let _ = r.handle(now, n(from), &pk, &mc, &rt);
            let _ = r.handle_local(now, &pk, &mc, &rt);
            let _ = r.handle_local_member(now, 9, &pk, &mc, &rt);
            r.handle_timeout(now + Duration::from_secs(1), &mc, &rt);
            let mut buf = [0u8; DEFAULT_MTU];
            while let Some(t) = r.poll_transmit(now, &mut buf) {
                prop_assert!(Packet::parse(&buf[..t.len], DEFAULT_MTU).is_ok());
            }
        }
    }
}
