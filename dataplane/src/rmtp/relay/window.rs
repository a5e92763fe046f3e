//! Window (MAB) aggregation: the minimum `mab` and `received` over the tree's live peers,
//! sent upstream.

use super::*;

impl Tree {
    /// Prunes peers that left the tree or went silent while unreachable, and recomputes the
    /// minimum MAB over the rest; marks a MAB due when it changed.
    pub(super) fn refresh_min(
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
}
