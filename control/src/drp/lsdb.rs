//! The link-state database: the newest LSP known from every originator, keyed by address.
//!
//! Sequence zero marks an LSP derived from the topology file (seed §3.5); any LSP an originator
//! really sent has a sequence of at least one and so always replaces it.

use crate::addr::NodeAddr;
use crate::topology::Topology;
use std::collections::BTreeMap;

/// The sequence number of an LSP derived from the topology file rather than received.
pub const FILE_SEQUENCE: u32 = 0;

/// One originator's link state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LspEntry {
    pub sequence: u32,
    /// Ascending, unique, never the originator itself: what the two-way check searches.
    pub neighbours: Box<[NodeAddr]>,
}

impl LspEntry {
    /// An entry from a neighbour list in any order; duplicates and self-links are dropped, and
    /// the list is cut to `max` addresses (the most one LSP can carry). Returns whether it was cut.
    pub fn new(
        originator: NodeAddr,
        sequence: u32,
        mut neighbours: Vec<NodeAddr>,
        max: usize,
    ) -> (LspEntry, bool) {
        neighbours.retain(|&n| n != originator);
        neighbours.sort_unstable();
        neighbours.dedup();
        let cut = neighbours.len() > max;
        neighbours.truncate(max);
        (
            LspEntry {
                sequence,
                neighbours: neighbours.into_boxed_slice(),
            },
            cut,
        )
    }

    /// Whether this entry lists `n` as a neighbour.
    pub fn lists(&self, n: NodeAddr) -> bool {
        self.neighbours.binary_search(&n).is_ok()
    }
}

/// How a received LSP compares with what the database holds for its originator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Unknown originator, or a higher sequence: the received LSP replaces ours.
    Newer,
    /// Same sequence: the sender already has what we have.
    Same,
    /// Lower sequence: the sender is behind us.
    Older,
}

#[derive(Clone, Debug, Default)]
pub struct Lsdb {
    entries: BTreeMap<NodeAddr, LspEntry>,
}

impl Lsdb {
    /// Sequence-zero entries for every node of the file, neighbours from its links. Built in one
    /// pass over the links (O(V + E)), since every node of a large simulation does this at boot.
    /// Returns the database and how many entries had to be cut to `max` neighbours.
    pub fn from_topology(topology: &Topology, max: usize) -> (Lsdb, u64) {
        let mut adjacency: BTreeMap<NodeAddr, Vec<NodeAddr>> = topology
            .nodes
            .iter()
            .map(|n| (n.addr, Vec::new()))
            .collect();
        for link in &topology.links {
            adjacency.entry(link.a).or_default().push(link.b);
            adjacency.entry(link.b).or_default().push(link.a);
        }
        let mut cut = 0;
        let entries = adjacency
            .into_iter()
            .map(|(addr, neighbours)| {
                let (entry, was_cut) = LspEntry::new(addr, FILE_SEQUENCE, neighbours, max);
                cut += u64::from(was_cut);
                (addr, entry)
            })
            .collect();
        (Lsdb { entries }, cut)
    }

    pub fn get(&self, originator: NodeAddr) -> Option<&LspEntry> {
        self.entries.get(&originator)
    }

    pub fn freshness(&self, originator: NodeAddr, sequence: u32) -> Freshness {
        match self.entries.get(&originator) {
            None => Freshness::Newer,
            Some(e) if sequence > e.sequence => Freshness::Newer,
            Some(e) if sequence == e.sequence => Freshness::Same,
            Some(_) => Freshness::Older,
        }
    }

    pub fn insert(&mut self, originator: NodeAddr, entry: LspEntry) {
        self.entries.insert(originator, entry);
    }

    /// Entries ascending by originator.
    pub fn iter(&self) -> impl Iterator<Item = (NodeAddr, &LspEntry)> {
        self.entries.iter().map(|(&a, e)| (a, e))
    }

    pub fn originators(&self) -> impl Iterator<Item = NodeAddr> + '_ {
        self.entries.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    #[test]
    fn entries_are_normalised_and_capped() {
        let (e, cut) = LspEntry::new(n(5), 3, vec![n(9), n(5), n(2), n(9), n(7)], 10);
        assert_eq!(&*e.neighbours, &[n(2), n(7), n(9)]);
        assert!(!cut);
        assert!(e.lists(n(7)) && !e.lists(n(5)));
        let (e, cut) = LspEntry::new(n(5), 3, vec![n(9), n(2), n(7)], 2);
        assert_eq!(&*e.neighbours, &[n(2), n(7)]);
        assert!(cut);
    }

    #[test]
    fn freshness_orders_by_sequence() {
        let mut db = Lsdb::default();
        assert_eq!(db.freshness(n(1), 0), Freshness::Newer);
        db.insert(n(1), LspEntry::new(n(1), 4, vec![n(2)], 10).0);
        assert_eq!(db.freshness(n(1), 5), Freshness::Newer);
        assert_eq!(db.freshness(n(1), 4), Freshness::Same);
        assert_eq!(db.freshness(n(1), 0), Freshness::Older);
    }
}
