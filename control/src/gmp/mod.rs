//! GMP, soft-state multicast group membership (seed §4), as a sans-IO state machine.
//!
//! Membership is per (group, sender): each pair has its own tree rooted at the sender. A node
//! that has local members or downstream neighbours for a tree joins toward the sender (to
//! `next_hop(sender)`) at once and then every refresh period; a downstream neighbour that has
//! not joined for the expiry period is dropped; the last member leaving sends a leave upstream.

mod machine;
pub mod table;
mod tree;

pub use machine::{Gmp, GmpMemory};
pub use table::{MulticastTable, TreeEntry};

use crate::addr::{GroupAddr, NodeAddr};

/// Limits on what the network can make GMP hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GmpOptions {
    /// Most (group, sender) trees this node keeps (default: `settings::gmp::MAX_TREES`, every
    /// group address once over, well under a megabyte when full). A join that would create one
    /// more is refused and counted (`GmpStats::trees_refused`); established trees, their refreshes and
    /// local subscriptions (the node's own clients, not the network) are never refused.
    pub max_trees: usize,
}

impl Default for GmpOptions {
    fn default() -> Self {
        GmpOptions {
            max_trees: crate::settings::gmp::MAX_TREES,
        }
    }
}

/// Why a local subscription change was refused (the seed's `-1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GmpError {
    /// The service is already subscribed to this (group, sender).
    AlreadyMember,
    /// The service is not subscribed to this (group, sender).
    NotMember,
}

impl std::fmt::Display for GmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GmpError::AlreadyMember => write!(f, "already a member of this group and sender"),
            GmpError::NotMember => write!(f, "not a member of this group and sender"),
        }
    }
}

impl std::error::Error for GmpError {}

/// What GMP tells the layer above (RMTP, the node's status output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GmpEvent {
    /// The tree's published entry changed (created, removed, new upstream, members changed).
    /// At most one per tree per call into [`Gmp`].
    TreeChanged { group: GroupAddr, sender: NodeAddr },
    /// A downstream neighbour stopped refreshing and was dropped.
    DownstreamExpired {
        group: GroupAddr,
        sender: NodeAddr,
        neighbour: NodeAddr,
    },
}

crate::counters! {
    /// Counters; every message GMP sends, receives, refuses or times out is counted here.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct GmpStats {
        pub joins_sent: u64,
        pub joins_received: u64,
        pub leaves_sent: u64,
        pub leaves_received: u64,
        /// Periodic joins (a subset of `joins_sent`).
        pub refreshes: u64,
        /// Downstream entries dropped for want of a join.
        pub expiries: u64,
        /// Times a tree's upstream neighbour changed (route changes, routes appearing).
        pub upstream_changes: u64,
        /// Refresh times at which the sender had no route (the tree waits for one).
        pub unroutable: u64,
        /// Received messages that changed nothing: joins from our own upstream (see
        /// `loop_guarded`), joins from ourselves, leaves from neighbours that were not downstream.
        pub ignored: u64,
        /// Joins ignored because they came from the tree's upstream neighbour (a subset of
        /// `ignored`): accepting one would make a two-node loop.
        pub loop_guarded: u64,
        /// Downstream neighbours dropped because routing says they are no longer adjacent (their
        /// link died): they cannot be downstream of us, and their leave could not reach us.
        pub detached: u64,
        /// Bodies that did not parse.
        pub malformed: u64,
        /// Joins refused because they would have created a tree beyond `GmpOptions::max_trees`.
        pub trees_refused: u64,
        /// Times the published multicast table was rebuilt.
        pub table_rebuilds: u64,
    }
}
