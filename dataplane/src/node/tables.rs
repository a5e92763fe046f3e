//! What the control plane publishes for the data path: the routing table, the multicast table
//! and a dense neighbour table, as one immutable snapshot behind an RCU-style pointer
//! (`arc_swap::ArcSwap`). The control plane builds a new snapshot when one of them changes and
//! swaps it in; a worker loads the current one once per batch, without a lock, and keeps it for
//! the batch even if a newer one is published meanwhile.

use arc_swap::{ArcSwap, Guard};
use control::NodeAddr;
use control::drp::RoutingTable;
use control::gmp::MulticastTable;
use control::topology::Topology;
use std::net::SocketAddr;
use std::sync::Arc;

/// One consistent view of the tables a worker reads.
#[derive(Debug)]
pub struct Tables {
    pub routes: Arc<RoutingTable>,
    pub multicast: Arc<MulticastTable>,
    pub neighbours: Arc<NeighbourTable>,
}

/// A worker's cached view of [`SharedTables`] (see [`SharedTables::cache`]).
pub type TablesCache = arc_swap::Cache<Arc<ArcSwap<Tables>>, Arc<Tables>>;

/// The published pointer. Cloning it is cheap: every clone sees the same snapshots.
#[derive(Clone, Debug)]
pub struct SharedTables(Arc<ArcSwap<Tables>>);

impl SharedTables {
    pub fn new(tables: Tables) -> Self {
        SharedTables(Arc::new(ArcSwap::from_pointee(tables)))
    }

    /// The current snapshot, for one batch (no lock; a reference count at most).
    pub fn load(&self) -> Guard<Arc<Tables>> {
        self.0.load()
    }

    /// A reader's own view of the pointer: [`TablesCache::load`] then costs one atomic load
    /// while nothing was published (no reference count is touched), so a worker may look at
    /// the tables for every datagram.
    pub fn cache(&self) -> TablesCache {
        arc_swap::Cache::new(Arc::clone(&self.0))
    }

    /// The current snapshot, owned: for a reader that keeps it longer than a batch.
    pub fn load_full(&self) -> Arc<Tables> {
        self.0.load_full()
    }

    /// Replaces the snapshot; readers that loaded the old one keep it until they drop it.
    pub(crate) fn publish(&self, tables: Tables) {
        self.0.store(Arc::new(tables));
    }
}

/// One neighbour of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub addr: NodeAddr,
    /// Its socket in the topology file, if the file lists the node (an engine may learn others).
    pub socket: Option<SocketAddr>,
    /// DRP holds the link live (hellos heard within the dead interval).
    pub live: bool,
}

/// Every neighbour this node has known, by a dense index that never changes while the node
/// runs: an engine keeps its per-neighbour state (a socket address, a send batch) in a vector
/// indexed by it. The file's neighbours come first, in address order; neighbours learnt later
/// are appended. It grows only with DRP's neighbour table, which has a capacity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NeighbourTable {
    by_index: Vec<Neighbour>,
    /// (address, index), sorted by address.
    by_addr: Vec<(NodeAddr, u16)>,
}

impl NeighbourTable {
    /// The neighbours the topology file gives `me`, none live yet.
    pub fn from_topology(me: NodeAddr, topology: &Topology) -> Self {
        let mut table = NeighbourTable::default();
        for addr in topology.neighbours(me) {
            if addr != me {
                table.push(Neighbour {
                    addr,
                    socket: topology.node(addr).map(|n| n.socket),
                    live: false,
                });
            }
        }
        table
    }

    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// The dense index of neighbour `addr`.
    pub fn index(&self, addr: NodeAddr) -> Option<usize> {
        self.by_addr
            .binary_search_by_key(&addr, |&(a, _)| a)
            .ok()
            .map(|i| usize::from(self.by_addr[i].1))
    }

    pub fn get(&self, index: usize) -> Option<&Neighbour> {
        self.by_index.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Neighbour> {
        self.by_index.iter()
    }

    /// A copy with `addr` live or not (appended if new); `None` if nothing changes.
    pub(crate) fn with_liveness(&self, addr: NodeAddr, live: bool) -> Option<NeighbourTable> {
        match self.index(addr) {
            Some(i) if self.by_index[i].live == live => None,
            Some(i) => {
                let mut next = self.clone();
                next.by_index[i].live = live;
                Some(next)
            }
            None => {
                let mut next = self.clone();
                next.push(Neighbour {
                    addr,
                    socket: None,
                    live,
                });
                Some(next)
            }
        }
    }

    fn push(&mut self, n: Neighbour) {
        // DRP caps its neighbours far below this; a table at the index limit takes no more.
        let Ok(index) = u16::try_from(self.by_index.len()) else {
            return;
        };
        let at = self.by_addr.partition_point(|&(a, _)| a < n.addr);
        self.by_addr.insert(at, (n.addr, index));
        self.by_index.push(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).expect("a node address")
    }

    #[test]
    fn indices_stay_put_as_neighbours_come_and_go() {
        let t = NeighbourTable::default();
        let t = t.with_liveness(n(7), true).expect("new");
        let t = t.with_liveness(n(3), true).expect("new");
        assert_eq!((t.index(n(7)), t.index(n(3))), (Some(0), Some(1)));
        assert!(t.with_liveness(n(3), true).is_none(), "no change, no copy");
        let t = t.with_liveness(n(7), false).expect("went down");
        assert_eq!(t.index(n(7)), Some(0));
        assert!(!t.get(0).expect("kept").live);
        assert_eq!(t.index(n(5)), None);
    }
}
