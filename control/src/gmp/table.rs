//! The multicast table GMP publishes: per (group, sender), the upstream neighbour and the
//! downstream neighbours and local members. An immutable snapshot, swapped whole like the
//! routing table.

use crate::addr::{GroupAddr, NodeAddr};

/// One multicast tree as seen from one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    pub group: GroupAddr,
    pub sender: NodeAddr,
    /// Toward the sender; `None` on the sender's own node (or while the sender is unreachable).
    pub upstream: Option<NodeAddr>,
    /// Neighbours that joined through us, ascending.
    pub downstream: Vec<NodeAddr>,
    /// Local clients (service ids) subscribed on this node, ascending.
    pub local_members: Vec<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MulticastTable {
    /// Sorted by (group, sender), unique.
    entries: Vec<TreeEntry>,
}

impl MulticastTable {
    pub fn new(mut entries: Vec<TreeEntry>) -> Self {
        entries.sort_by_key(|e| (e.group, e.sender));
        entries.dedup_by_key(|e| (e.group, e.sender));
        MulticastTable { entries }
    }

    pub fn lookup(&self, group: GroupAddr, sender: NodeAddr) -> Option<&TreeEntry> {
        self.entries
            .binary_search_by_key(&(group, sender), |e| (e.group, e.sender))
            .ok()
            .map(|i| &self.entries[i])
    }

    pub fn entries(&self) -> &[TreeEntry] {
        &self.entries
    }
}
