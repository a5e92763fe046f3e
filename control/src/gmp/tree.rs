//! The soft state of one (group, sender) tree on one node.

use super::table::TreeEntry;
use crate::addr::{GroupAddr, NodeAddr};
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
pub(super) struct Tree {
    /// Where joins go; `None` on the sender's node or while the sender is unreachable.
    pub upstream: Option<NodeAddr>,
    /// Downstream neighbours and when each expires unless it joins again.
    pub downstream: BTreeMap<NodeAddr, Instant>,
    /// Local service ids subscribed here.
    pub local: BTreeSet<u16>,
    /// Next periodic join (or route check); `None` on the sender's own node.
    pub next_refresh: Option<Instant>,
}

impl Tree {
    /// A tree with nobody in it yet: the caller adds the member that created it.
    pub fn new(upstream: Option<NodeAddr>, next_refresh: Option<Instant>) -> Self {
        Tree {
            upstream,
            downstream: BTreeMap::new(),
            local: BTreeSet::new(),
            next_refresh,
        }
    }

    /// Nobody left to join for: the tree should be removed and left upstream.
    pub fn is_empty(&self) -> bool {
        self.downstream.is_empty() && self.local.is_empty()
    }

    /// The earliest time this tree needs attention.
    pub fn deadline(&self) -> Option<Instant> {
        let expiry = self.downstream.values().min().copied();
        match (expiry, self.next_refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn entry(&self, group: GroupAddr, sender: NodeAddr) -> TreeEntry {
        TreeEntry {
            group,
            sender,
            upstream: self.upstream,
            downstream: self.downstream.keys().copied().collect(),
            local_members: self.local.iter().copied().collect(),
        }
    }
}
