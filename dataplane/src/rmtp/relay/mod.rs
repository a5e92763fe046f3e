//! The RMTP relay (seed §6.1, the "middle layer"): one per node, for every (group, sender) tree
//! through the node. It takes a borrowed, DNP-validated packet and returns a decision the
//! engine carries out without copying ([`RelayAction`]); packets that are really new (its own
//! NACKs, NCFs, MABs, repairs from its cache) come out of [`RmtpRelay::poll_transmit`], built
//! into a buffer the engine provides.
//!
//! - DATA and SPM fan out to every downstream neighbour but the one they came from, and to the
//!   local members. DATA is also copied into a bounded per-tree repair cache: the one copy a
//!   relay makes of a payload; not where the tree goes on to no neighbour and every local
//!   member reports receiving, on an engine that cannot drop on the way to them (see
//!   `fanout.rs`).
//! - NACKs are answered from the cache when it holds the sequence (PGM's nearest repairer);
//!   otherwise the first NACK for a sequence goes upstream and later ones only record who waits,
//!   until the entry is stale. Every NACKer gets an NCF.
//! - RETRANSMIT goes only toward those who asked (the NACK table), and the entry goes with it.
//! - MABs: the latest per downstream neighbour and per local member; the minimum goes upstream
//!   periodically, when it changes and when an SPM passes down (the sender probing a closed
//!   window). A peer that left the tree, or a downstream neighbour whose link is gone, no
//!   longer holds the window, but keeps holding the trailing edge (`received`) until it has
//!   been silent (no MAB, in the tree or out of it) for `mab_expire` and is pruned, so a branch
//!   that comes back (by another path, or by its next join after a forged leave) can still be
//!   repaired, and is not counted complete meanwhile.
//!
//! On the sender's own node the "upstream" is the local sender: NACKs and MABs reaching the root
//! come out as packets for [`Hop::Local`].
//!
//! Every field may be forged: NACKs and MABs are judged against the edges the relay has itself
//! forwarded (`edges.rs`), what cannot be right is refused and counted, and every table has a
//! capacity in [`RelayConfig`] (see `max_trees` for who may take a slot when it is full).
//!
//! By job: `fanout.rs` (DATA, SPM and RETRANSMIT down the tree), `nacks.rs` (NACK aggregation
//! and NCFs), `repairs.rs` (repairs from the cache, `super::cache`), `window.rs` (MAB
//! aggregation), `trees.rs` (the tree table and a tree's peers and timers); this file holds the
//! settings, counters, decisions and state, and the entry points and timers that dispatch to
//! them.
//!
//! The per-packet path does not allocate: trees and peers are sized when a tree is first seen,
//! its NACK table and cache at its first traffic, decisions use a fixed-capacity [`Fanout`],
//! waiters are bitmasks over a per-tree peer index.

use super::cache::{Cache, CacheRepair};
use super::edges::Edges;
use super::rtt::{AnswerTiming, Asked, RttEstimate};
use super::{MAX_RANGES, RangeBuf};
use control::drp::RoutingTable;
use control::gmp::{MulticastTable, TreeEntry};
use control::wire::dnp::{DNP_HEADER_LEN, Flag, Packet};
use control::wire::rmtp::{self, Data, Mab, Nack, SeqRange, SpmFields};
use control::{Addr, GroupAddr, Instant, NodeAddr};
use std::collections::VecDeque;
use std::time::Duration;

mod fanout;
mod nacks;
mod repairs;
#[cfg(test)]
mod tests;
mod trees;
mod window;

use nacks::{build_ncf, build_upstream_nack};

/// The most downstream neighbours one decision names, and the most peers (neighbours and local
/// members) a tree tracks: waiters are a `u64` bitmask.
pub const MAX_FANOUT: usize = 64;

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
    /// A NACK entry older than this is re-sent upstream when another NACK for it arrives, and
    /// an unconfirmed one is repeated. Once the tree's upstream repair round trip is measured,
    /// `srtt + 4 rttvar` of it (at least `timer_floor`) when shorter.
    pub nack_stale: Duration,
    /// A NACK entry older than this is forgotten.
    pub nack_expire: Duration,
    pub mab_interval: Duration,
    /// A peer out of the tree or unreachable whose last MAB is older than this is pruned.
    pub mab_expire: Duration,
    /// Repair cache per tree, bytes (0: no cache). Rounded down to whole MTU-sized slots.
    pub cache_bytes: usize,
    /// Cache on the sender's own node too (the sender can re-read its source, so off by default).
    pub cache_at_root: bool,
    /// The engine hands the local members what the relay delivers without ever dropping it
    /// (it calls them directly): a leaf then stops copying DATA into its cache once every
    /// local member reports receiving. Off where a buffer between them may drop (the
    /// threaded engine's impatient buffers of the seed): their losses are repaired there.
    pub lossless_to_members: bool,
    /// Queued cache repairs at most; more are dropped (the receiver asks again).
    pub repair_queue: usize,
    /// A sequence repaired from the cache toward a peer is not repaired toward it again sooner.
    /// Half the tree's smallest upstream repair round trip once measured (at least
    /// `repair_holdoff_floor`) when shorter. A repair forwarded from upstream toward a peer
    /// counts as one served to it.
    pub repair_holdoff: Duration,
    /// The shortest cache hold-off, whatever round trip is measured: a forged RETRANSMIT that
    /// answers the relay's NACK at once makes the measurement as short as it likes, so this,
    /// a loopback round trip's worth, bounds what NACKs of one sequence draw toward one peer.
    pub repair_holdoff_floor: Duration,
    /// The shortest timer derived from a measured round trip.
    pub timer_floor: Duration,
    /// A tree without a multicast entry and without traffic for this long is forgotten.
    pub tree_idle: Duration,
    /// The most one packet may advance what the relay believes of a tree's leading edge
    /// (sequences, bytes), and the most bytes a MAB sent upstream may run ahead of the data
    /// forwarded here: a forged MAB never opens the sender's window further.
    pub max_edge_step: u64,
}

impl RelayConfig {
    pub fn new(me: NodeAddr, mtu: usize) -> Self {
        use control::settings::{relay as s, rmtp};
        RelayConfig {
            me,
            mtu,
            max_trees: s::MAX_TREES,
            peers_per_tree: MAX_FANOUT,
            nack_entries: rmtp::NACK_ENTRIES,
            nack_seqs_per_packet: s::NACK_SEQS_PER_PACKET,
            nack_stale: s::NACK_STALE,
            nack_expire: s::NACK_EXPIRE,
            mab_interval: rmtp::MAB_INTERVAL,
            mab_expire: s::MAB_EXPIRE,
            cache_bytes: s::CACHE_BYTES,
            cache_at_root: s::CACHE_AT_ROOT,
            lossless_to_members: true,
            repair_queue: s::REPAIR_QUEUE,
            repair_holdoff: rmtp::REPAIR_HOLDOFF,
            repair_holdoff_floor: s::REPAIR_HOLDOFF_FLOOR,
            timer_floor: rmtp::TIMER_FLOOR,
            tree_idle: s::TREE_IDLE,
            max_edge_step: s::MAX_EDGE_STEP,
        }
    }
}

control::counters! {
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
        /// Upstream repair round trips measured (a sequence NACKed upstream once to its
        /// RETRANSMIT), over every tree.
        pub upstream_rtt_samples: u64,
        /// Repairs that came sooner after a NACK went upstream again than any repair ever
        /// came: answers to an earlier NACK, so sending it again was needless.
        pub upstream_retries_spurious: u64,
        pub repairs_from_cache: u64,
        /// Cached copies that failed their CRC when about to be served (evicted, asked upstream).
        pub cache_corrupt: u64,
        /// Cached copies dropped because peers they were served to asked for them again after the
        /// hold-off, twice (repairs lost, or a forged DATA with a valid CRC that the receiver
        /// refuses); the sequence is asked upstream instead.
        pub cache_copies_asked_again: u64,
        pub mabs_received: u64,
        pub mabs_sent: u64,
        /// Peers pruned: out of the tree or unreachable, and silent for `mab_expire`.
        pub prunes: u64,
        /// Pruned peers that held less than every byte forwarded here (as counted): the sender
        /// may then complete for the receivers still in the tree without them.
        pub prunes_unfinished: u64,
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
        /// one), or a `received` past the window the peer reported before, not yet counted:
        /// a claim counts from the peer's second claim in a row and only while it is in the tree
        /// entry, a leap past its window from its next report.
        pub mab_completions_held: u64,
        /// MABs from a peer the relay tracks that is no longer in the tree entry (it still
        /// answers: not pruned, holds `received`, not the window).
        pub mabs_out_of_tree: u64,
        /// DATA/RETRANSMIT refused: `sequence + 1` or `offset + length` past 2^64 - 1.
        pub data_implausible: u64,
        /// SPMs refused: trailing edge beyond the leading edge.
        pub spms_implausible: u64,
    }
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
    /// The last report claimed every byte forwarded here, from within the tree (see
    /// `RelayStats::mab_completions_held`).
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
    /// When it went upstream, to time its repair.
    sent: Asked,
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
    /// Local members in the tree that reported receiving (a MAB past byte 0): they know the
    /// transfer's shape, so they refuse no in-window DATA that the cache would repair.
    receiving_locals: usize,
    /// When DATA or SPM last came through; `None`: never (made by a NACK or MAB, which forged
    /// joins can bring for any group).
    last_traffic: Option<Instant>,
    /// When unconfirmed upstream NACKs are due again.
    next_retry_at: Option<Instant>,
    /// The upstream repair round trip: a NACK sent upstream once to its RETRANSMIT.
    rtt: RttEstimate,
    last_activity: Instant,
    /// NACK table entries moved to keep it sorted: the work NACKs cost beyond their own
    /// sequences.
    #[cfg(test)]
    entries_moved: u64,
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
                    tree.refresh_min(now, entry, routing, cfg.mab_expire, &mut self.stats);
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
                let stale = tree.nack_stale(cfg);
                for e in tree.nacks.iter_mut() {
                    if e.confirmed || e.upstream_due {
                        continue;
                    }
                    if now.saturating_since(e.requested_at) >= stale {
                        e.upstream_due = true;
                        e.requested_at = now;
                        tree.nack_upstream_pending = true;
                    } else {
                        let at = e.requested_at + stale;
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
        for slot in 0..self.trees.len() {
            let Some(tree) = self.trees[slot].as_mut() else {
                continue;
            };
            if tree.nack_upstream_pending
                && let Some(t) = build_upstream_nack(tree, &self.config, now, buf)
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
}
