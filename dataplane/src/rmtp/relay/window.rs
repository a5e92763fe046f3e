//! Window (MAB) aggregation: the minimum `mab` and `received` over the tree's live peers,
//! sent upstream.

use super::*;

impl Tree {
    /// Prunes peers that left the tree or went silent while unreachable (counted in `stats`),
    /// and recomputes the minimum MAB over the rest; marks a MAB due when it changed.
    pub(super) fn refresh_min(
        &mut self,
        now: Instant,
        entry: &TreeEntry,
        routing: &RoutingTable,
        expire: Duration,
        stats: &mut RelayStats,
    ) {
        let mut mab: Option<u64> = None;
        let mut received: Option<u64> = None;
        let mut receiving_locals = 0;
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
                stats.prunes += 1;
                stats.prunes_unfinished += u64::from(p.received < self.edges.leading_byte());
                continue;
            }
            if p.has_mab {
                received = Some(received.map_or(p.received, |r| r.min(p.received)));
                if holds_window {
                    mab = Some(mab.map_or(p.mab, |m| m.min(p.mab)));
                }
                if in_tree && p.received > 0 && matches!(p.key, PeerKey::Local(_)) {
                    receiving_locals += 1;
                }
            }
        }
        self.receiving_locals = receiving_locals;
        let min = mab.zip(received);
        self.min = min;
        if min.is_some() && min != self.sent {
            self.mab_due = true;
        }
    }
}

impl RmtpRelay {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mab(
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
        let found = match self.report_tree(now, peer, group, sender, mcast) {
            Ok((entry, slot)) => self
                .peer_slot(slot, peer, now)
                .map(|pi| (entry, slot, pi, true)),
            Err(DropReason::NotOnTree) => self
                .tracked_out_of_tree(peer, group, sender, mcast)
                .map(|(entry, slot, pi)| (entry, slot, pi, false)),
            Err(reason) => Err(reason),
        };
        let (entry, slot, pi, in_tree) = match found {
            Ok(found) => found,
            Err(reason) => return RelayAction::Drop(reason),
        };
        let (expire, step) = (self.config.mab_expire, self.config.max_edge_step);
        let tree = self.trees[slot].as_mut().expect("slot in use");
        let bounded = tree.edges.bound_report(mab, received, step);
        self.stats.mabs_clamped += u64::from(bounded != (mab, received));
        // Only a receiver that verified the whole transfer claims every byte forwarded, or the
        // announced total (the others report one byte less): one forged MAB must not make the
        // sender believe it, so
        // such a claim counts from the peer's second claim in a row, and not while the peer is
        // out of the tree (no data goes to it from here: forged leaves keep a lagging receiver
        // out, and a forged claim with its address is then all there is). No receiver holds
        // bytes past the window it reported before (the sender sent none there, the receiver
        // accepts none there): a forged SPM or DATA can raise what this relay believes was
        // sent, so that a forged claim of the real total looks like an ordinary report; such a
        // leap counts from the next report, which it must agree with.
        let claims_all = tree.edges.claims_everything(bounded.1);
        let p = &mut tree.peers[pi];
        let past_window = p.has_mab && bounded.1 > p.mab;
        let received = if past_window || (claims_all && (!p.claimed_all || !in_tree)) {
            self.stats.mab_completions_held += 1;
            p.received.min(bounded.1)
        } else {
            bounded.1
        };
        p.has_mab = true;
        (p.mab, p.received) = (bounded.0, received);
        p.claimed_all = claims_all && in_tree;
        p.last_heard = now;
        tree.refresh_min(now, entry, routing, expire, &mut self.stats);
        RelayAction::Consumed
    }

    /// A downstream neighbour this relay tracks in the tree of (group, sender) that is no
    /// longer in the tree entry (a leave, forged or not; routing that no longer sees its link):
    /// its MABs still come over its link, so it is alive. They keep it from being pruned and
    /// its `received` counted (never the window): forged leaves or DRP must not let the sender
    /// complete without a receiver that still answers. Anyone else out of the tree is refused
    /// (a local member's membership is this node's own, no packet takes it away).
    fn tracked_out_of_tree<'m>(
        &mut self,
        peer: PeerKey,
        group: GroupAddr,
        sender: NodeAddr,
        mcast: &'m MulticastTable,
    ) -> Result<(&'m TreeEntry, usize, usize), DropReason> {
        if matches!(peer, PeerKey::Local(_)) {
            return Err(DropReason::NotOnTree);
        }
        let entry = mcast.lookup(group, sender).ok_or(DropReason::NotOnTree)?;
        let slot = self
            .slot_of(group.get(), sender.get())
            .ok_or(DropReason::NotOnTree)?;
        let tree = self.trees[slot].as_ref().expect("indexed slot is used");
        let pi = tree
            .peers
            .iter()
            .position(|p| p.used && p.key == peer)
            .ok_or(DropReason::NotOnTree)?;
        self.stats.mabs_out_of_tree += 1;
        Ok((entry, slot, pi))
    }
}
