//! The link-state database: the newest LSP known from every originator, keyed by address.
//!
//! Sequence zero marks an LSP derived from the topology file (seed §3.5); any LSP an originator
//! really sent has a sequence of at least one and so always replaces it. The top sequence,
//! [`MAX_SEQUENCE`], is a flush: the originator's sequence space restarted; the entry keeps the
//! links last known (SPF relies on them only between two flushed nodes), is held a while and
//! then removed.
//!
//! Entries learnt from the network expire (they are aged: see `Drp`); the database has a
//! capacity, which `Drp` checks before it admits a new originator ([`Lsdb::admits`]).

use crate::addr::NodeAddr;
use crate::time::Instant;
use crate::topology::Topology;
use std::collections::{BTreeMap, BTreeSet};

/// The sequence number of an LSP derived from the topology file rather than received.
pub const FILE_SEQUENCE: u32 = 0;
/// The top of the sequence space: an LSP carrying it is a flush (OSPF's MaxSequenceNumber
/// flushed by premature aging), never a link state.
pub const MAX_SEQUENCE: u32 = u32::MAX;

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

    /// A flush of the originator whose entry was `previous`: the top sequence, with the links
    /// last known (none if nothing was). A flush only restarts the sequence space; the list it
    /// carries on the wire is ignored, and the list it keeps (possibly a forgery's, which is
    /// what made the originator flush) counts only between two flushed nodes: SPF takes a
    /// flushed node's links from its neighbours' LSPs.
    pub fn flush_of(previous: Option<&LspEntry>) -> LspEntry {
        LspEntry {
            sequence: MAX_SEQUENCE,
            neighbours: previous.map(|e| e.neighbours.clone()).unwrap_or_default(),
        }
    }

    /// Whether this entry lists `n` as a neighbour.
    pub fn lists(&self, n: NodeAddr) -> bool {
        self.neighbours.binary_search(&n).is_ok()
    }

    pub fn is_flush(&self) -> bool {
        self.sequence == MAX_SEQUENCE
    }

    /// Bytes this entry takes in the database, roughly (its map slot and its list).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<(NodeAddr, Slot)>() + std::mem::size_of_val(&*self.neighbours)
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

#[derive(Clone, Debug)]
struct Slot {
    entry: LspEntry,
    /// When it is removed unless replaced first; `None` for our own and the file's entries.
    expires: Option<Instant>,
}

#[derive(Clone, Debug)]
pub struct Lsdb {
    entries: BTreeMap<NodeAddr, Slot>,
    /// (expiry, originator) of every entry that expires, earliest first.
    expiries: BTreeSet<(Instant, NodeAddr)>,
    /// Most originators [`Lsdb::admits`] lets in.
    capacity: usize,
}

impl Default for Lsdb {
    fn default() -> Self {
        Lsdb {
            entries: BTreeMap::new(),
            expiries: BTreeSet::new(),
            capacity: usize::MAX,
        }
    }
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
                (
                    addr,
                    Slot {
                        entry,
                        expires: None,
                    },
                )
            })
            .collect();
        let db = Lsdb {
            entries,
            ..Lsdb::default()
        };
        (db, cut)
    }

    /// Sets how many originators [`Lsdb::admits`] lets in. Entries already held all stay,
    /// even beyond it (the file's, for one).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether an LSP of `originator` may be stored: it has an entry already, or there is room.
    pub fn admits(&self, originator: NodeAddr) -> bool {
        self.entries.contains_key(&originator) || self.entries.len() < self.capacity
    }

    pub fn get(&self, originator: NodeAddr) -> Option<&LspEntry> {
        self.entries.get(&originator).map(|s| &s.entry)
    }

    pub fn freshness(&self, originator: NodeAddr, sequence: u32) -> Freshness {
        match self.get(originator) {
            None => Freshness::Newer,
            Some(e) if sequence > e.sequence => Freshness::Newer,
            Some(e) if sequence == e.sequence => Freshness::Same,
            Some(_) => Freshness::Older,
        }
    }

    /// Stores an entry that never expires (our own, the file's), whatever the capacity.
    pub fn insert(&mut self, originator: NodeAddr, entry: LspEntry) {
        self.insert_until(originator, entry, None);
    }

    /// Stores an entry that is removed at `expires` unless replaced first. The caller checked
    /// [`Lsdb::admits`].
    pub fn insert_until(
        &mut self,
        originator: NodeAddr,
        entry: LspEntry,
        expires: Option<Instant>,
    ) {
        let slot = Slot { entry, expires };
        if let Some(old) = self.entries.insert(originator, slot)
            && let Some(at) = old.expires
        {
            self.expiries.remove(&(at, originator));
        }
        if let Some(at) = expires {
            self.expiries.insert((at, originator));
        }
    }

    /// Removes the entry of `originator`.
    pub fn remove(&mut self, originator: NodeAddr) -> Option<LspEntry> {
        let slot = self.entries.remove(&originator)?;
        if let Some(at) = slot.expires {
            self.expiries.remove(&(at, originator));
        }
        Some(slot.entry)
    }

    /// The earliest expiry of any entry.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|&(at, _)| at)
    }

    /// An originator whose entry has expired by `now`, earliest first.
    pub fn expired(&self, now: Instant) -> Option<NodeAddr> {
        self.expiries
            .first()
            .filter(|&&(at, _)| at <= now)
            .map(|&(_, o)| o)
    }

    /// Bytes the entries take, roughly (map slots and neighbour lists; not the map's nodes).
    pub fn approx_bytes(&self) -> usize {
        self.entries.values().map(|s| s.entry.approx_bytes()).sum()
    }

    /// Entries ascending by originator.
    pub fn iter(&self) -> impl Iterator<Item = (NodeAddr, &LspEntry)> {
        self.entries.iter().map(|(&a, s)| (a, &s.entry))
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

    #[test]
    fn a_full_database_admits_only_known_originators_and_expiries_follow_replacements() {
        let mut db = Lsdb::default();
        db.set_capacity(2);
        let e = |seq| LspEntry::new(n(1), seq, vec![n(2)], 10).0;
        db.insert(n(1), e(1));
        let t = |ms| Instant::from_millis(ms);
        db.insert_until(n(2), e(1), Some(t(50)));
        assert!(db.admits(n(2)) && !db.admits(n(3)));
        // Replaced before it expired: the new expiry counts, the old one is gone.
        db.insert_until(n(2), e(2), Some(t(90)));
        assert_eq!(db.next_expiry(), Some(t(90)));
        assert_eq!(db.expired(t(89)), None);
        assert_eq!(db.expired(t(90)), Some(n(2)));
        assert_eq!(db.remove(n(2)).map(|e| e.sequence), Some(2));
        assert_eq!(db.next_expiry(), None);
        assert!(db.admits(n(3)));
    }
}
