//! NACK aggregation: the first NACK of a sequence goes upstream as the relay's own, later
//! ones only add a waiter until the entry is stale; every NACKer gets an NCF; upstream NCFs
//! confirm the relay's own NACKs.

use super::repairs::nack_hop;
use super::*;

impl RmtpRelay {
    /// Upstream confirms NACKs of ours: stop retrying them (PGM: a network element repeats its
    /// NAK until it sees the NCF).
    pub(super) fn on_ncf(&mut self, packet: &Packet<'_>) -> RelayAction {
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

    /// `ranges` gives the NACK's ranges afresh each call: they are read twice, once to judge
    /// them, then to act.
    pub(super) fn nack<I: Iterator<Item = SeqRange>>(
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
        let (stale, holdoff) = (tree.nack_stale(cfg), tree.repair_holdoff(cfg));
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
            let claim = tree.cache.claim_repair(seq, bit, now, holdoff);
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
                    match record_nack(tree, seq, bit, now, stale, &mut self.fresh) {
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
}

pub(super) enum Recorded {
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
pub(super) fn record_nack(
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
                sent: Asked::default(),
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
pub(super) fn merge_fresh(tree: &mut Tree, fresh: &mut Vec<NackEntry>) {
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

pub(super) fn build_upstream_nack(
    tree: &mut Tree,
    cfg: &RelayConfig,
    now: Instant,
    buf: &mut [u8],
) -> Option<(RelayTransmit, u64)> {
    // Without a way up (sender unreachable) the entries wait for one.
    let me = cfg.me;
    let hop = tree.upstream_hop(me)?;
    let stale = tree.nack_stale(cfg);
    let limit = rmtp::max_nack_ranges(cfg.mtu).min(MAX_RANGES);
    let mut ranges = RangeBuf::<MAX_RANGES>::default();
    let mut seqs = 0;
    let mut more = false;
    for e in tree.nacks.iter_mut().filter(|e| e.upstream_due) {
        if !ranges.push(e.seq, limit) {
            more = true;
            break;
        }
        e.upstream_due = false;
        // The round trip is timed from when it leaves.
        e.requested_at = now;
        e.sent.sent(now);
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
pub(super) fn build_ncf(
    tree: &mut Tree,
    me: NodeAddr,
    mtu: usize,
    buf: &mut [u8],
) -> Option<RelayTransmit> {
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
