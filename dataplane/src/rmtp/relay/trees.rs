//! The relay's table of trees: finding and claiming a tree's slot (see
//! `RelayConfig::max_trees`), a tree's peers, and its timers.

use super::*;

impl Tree {
    pub(super) fn is_root(&self, me: NodeAddr) -> bool {
        self.sender == me
    }

    pub(super) fn upstream_hop(&self, me: NodeAddr) -> Option<Hop> {
        if self.is_root(me) {
            Some(Hop::Local)
        } else {
            self.upstream.map(Hop::Neighbour)
        }
    }

    pub(super) fn peer_index(
        &mut self,
        key: PeerKey,
        now: Instant,
        capacity: usize,
    ) -> Option<usize> {
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

    /// How long a NACK sent upstream waits for its repair before it may go again: the
    /// measured upstream repair round trip's `srtt + 4 rttvar`, `nack_stale` at most.
    pub(super) fn nack_stale(&self, cfg: &RelayConfig) -> Duration {
        self.rtt
            .timeout(cfg.nack_stale, cfg.timer_floor, cfg.nack_stale)
    }

    /// Repairs toward one peer of one sequence, at most one per this: half the smallest
    /// upstream repair round trip measured, `repair_holdoff` at most (and until measured), and
    /// never less than `repair_holdoff_floor`, which no forged round trip moves: it bounds what
    /// a forging peer draws.
    pub(super) fn repair_holdoff(&self, cfg: &RelayConfig) -> Duration {
        let floor = cfg.repair_holdoff_floor.max(cfg.timer_floor);
        self.rtt
            .holdoff(cfg.repair_holdoff, floor, cfg.repair_holdoff)
    }

    pub(super) fn find_nack(&self, seq: u64) -> Result<usize, usize> {
        self.nacks.binary_search_by_key(&seq, |e| e.seq)
    }

    pub(super) fn remove_peer(&mut self, i: usize) {
        self.peers[i].used = false;
        let bit = !(1u64 << i);
        for e in &mut self.nacks {
            e.waiters &= bit;
            e.ncf_due &= bit;
        }
        self.nacks.retain(|e| e.waiters != 0);
        self.ncf_pending &= bit;
    }
}

impl RmtpRelay {
    /// The slot of the tree (group, sender), if tracked.
    pub(super) fn slot_of(&self, group: u16, sender: u16) -> Option<usize> {
        let i = self
            .index
            .binary_search_by_key(&(group, sender), |(k, _)| *k)
            .ok()?;
        Some(usize::from(self.index[i].1))
    }

    /// The slot of `entry`'s tree, made if new and there is room (see `max_trees`).
    pub(super) fn tree_slot(
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
                    receiving_locals: 0,
                    last_traffic: None,
                    next_retry_at: None,
                    rtt: RttEstimate::default(),
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
    pub(super) fn free_slot(&mut self, now: Instant, claim: Claim, local: bool) -> Option<usize> {
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

    pub(super) fn forget_tree(&mut self, slot: usize) {
        if let Some(tree) = self.trees[slot].take() {
            let key = (tree.group.get(), tree.sender.get());
            self.index.retain(|(k, _)| *k != key);
            self.repairs.retain(|j| usize::from(j.tree) != slot);
        }
    }

    pub(super) fn peer_in_tree(entry: &TreeEntry, peer: PeerKey) -> bool {
        match peer {
            PeerKey::Neighbour(n) => entry.downstream.binary_search(&n).is_ok(),
            PeerKey::Local(m) => entry.local_members.binary_search(&m).is_ok(),
        }
    }

    /// For a NACK or MAB from `peer`: the tree entry of (group, sender) and the relay's slot
    /// for that tree, or why the packet is dropped.
    pub(super) fn report_tree<'m>(
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
    pub(super) fn peer_slot(
        &mut self,
        slot: usize,
        peer: PeerKey,
        now: Instant,
    ) -> Result<usize, DropReason> {
        let tree = self.trees[slot].as_mut().expect("slot in use");
        tree.peer_index(peer, now, self.config.peers_per_tree)
            .ok_or_else(|| {
                self.stats.peer_table_full += 1;
                DropReason::TableFull
            })
    }
}
