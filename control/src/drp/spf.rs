//! Shortest paths by hop count: a breadth-first search from this node over the link-state
//! database, O((V + E) log V) (address lookups are binary searches over the sorted originators).
//!
//! A link `u – v` is used only if both ends list each other (the two-way check), so that a
//! link one side still believes in, or a one-way link, carries no route. This node's own links
//! are its live neighbours (its current view, not its last LSP), each still subject to the
//! neighbour listing this node.
//!
//! A flush (an LSP at the top sequence) carries no link state anyone can trust: the list it
//! holds may be a forgery's. A link to a flushed node rests on the other end's LSP alone, and a
//! flushed node's links are those its neighbours list (see [`Flushed`]).
//!
//! Tie-break, so that every run (and every node) picks the same path: among equal-length paths
//! to a destination, the one whose first hop has the lowest address wins. The search finds it
//! without extra passes: all predecessors of a node lie on the previous level, and a FIFO search
//! expands a whole level before the next, so taking the minimum first hop over predecessors as
//! they are seen is final before the node itself is expanded.

use super::lsdb::{Lsdb, LspEntry};
use super::table::Route;
use crate::addr::NodeAddr;
use std::collections::VecDeque;

const UNSEEN: u32 = u32::MAX;

/// Routes from `me` to every node reachable from it. `live` are `me`'s live neighbours.
pub fn shortest_paths(me: NodeAddr, live: &[NodeAddr], lsdb: &Lsdb) -> Vec<Route> {
    let nodes: Vec<(NodeAddr, &LspEntry)> = lsdb.iter().collect();
    let index = |a: NodeAddr| nodes.binary_search_by_key(&a, |&(n, _)| n).ok();
    let flushed = Flushed::new(&nodes, index);
    let mut dist = vec![UNSEEN; nodes.len()];
    // Index (into `nodes`) of the first hop of the chosen path.
    let mut first = vec![0usize; nodes.len()];
    let mut queue = VecDeque::new();

    if let Some(me_i) = index(me) {
        dist[me_i] = 0;
    }
    for &n in live {
        // Our side of the link is our live view; a flushed neighbour's held list cannot deny it.
        if let Some(i) = index(n)
            && n != me
            && dist[i] == UNSEEN
            && (flushed.is(i) || nodes[i].1.lists(me))
        {
            dist[i] = 1;
            first[i] = i;
            queue.push_back(i);
        }
    }
    while let Some(u) = queue.pop_front() {
        let u_entry = nodes[u].1;
        let next = dist[u] + 1;
        let held = u_entry.neighbours.iter().filter_map(|&v| index(v));
        for vi in held.chain(flushed.listing(u).iter().copied()) {
            if nodes[vi].0 == me || !flushed.two_way(&nodes, u, vi) {
                continue;
            }
            if dist[vi] == UNSEEN {
                dist[vi] = next;
                first[vi] = first[u];
                queue.push_back(vi);
            } else if dist[vi] == next && nodes[first[u]].0 < nodes[first[vi]].0 {
                first[vi] = first[u];
            }
        }
    }

    nodes
        .iter()
        .enumerate()
        .filter(|&(i, &(addr, _))| addr != me && dist[i] != UNSEEN)
        .map(|(i, &(dst, _))| Route {
            dst,
            next_hop: nodes[first[i]].0,
            hops: u16::try_from(dist[i]).unwrap_or(u16::MAX),
        })
        .collect()
}

/// Which entries are flushes, and who lists each of them. A flush says only that its
/// originator's sequence space restarted, and anyone can seal one; its held list may be a
/// forgery's (a forged LSP just below the top makes the originator flush). So a link to a
/// flushed node rests on the other end's own LSP, and only a link between two flushed nodes
/// falls back on their held lists.
struct Flushed {
    flags: Vec<bool>,
    /// For each flushed node (by index), the non-flushed nodes listing it; empty otherwise.
    listed_by: Vec<Vec<usize>>,
}

impl Flushed {
    fn new(nodes: &[(NodeAddr, &LspEntry)], index: impl Fn(NodeAddr) -> Option<usize>) -> Self {
        let flags: Vec<bool> = nodes.iter().map(|(_, e)| e.is_flush()).collect();
        let mut listed_by = Vec::new();
        if flags.contains(&true) {
            listed_by = vec![Vec::new(); nodes.len()];
            for (i, (_, e)) in nodes.iter().enumerate().filter(|&(i, _)| !flags[i]) {
                for vi in e.neighbours.iter().filter_map(|&v| index(v)) {
                    if flags[vi] {
                        listed_by[vi].push(i);
                    }
                }
            }
        }
        Flushed { flags, listed_by }
    }

    fn is(&self, i: usize) -> bool {
        self.flags[i]
    }

    /// The non-flushed nodes listing flushed node `i` (none if `i` is not flushed).
    fn listing(&self, i: usize) -> &[usize] {
        self.listed_by.get(i).map_or(&[], Vec::as_slice)
    }

    /// Whether `a`'s entry vouches for a link to `b`: its list does, or `a` is flushed and `b`
    /// (not flushed) speaks for the link itself.
    fn claims(&self, nodes: &[(NodeAddr, &LspEntry)], a: usize, b: usize) -> bool {
        nodes[a].1.lists(nodes[b].0) || (self.flags[a] && !self.flags[b])
    }

    /// The two-way check between `u` and `v`.
    fn two_way(&self, nodes: &[(NodeAddr, &LspEntry)], u: usize, v: usize) -> bool {
        self.claims(nodes, u, v) && self.claims(nodes, v, u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    fn db(adj: &[(u16, &[u16])]) -> Lsdb {
        let mut db = Lsdb::default();
        for &(a, ns) in adj {
            let list = ns.iter().map(|&v| n(v)).collect();
            db.insert(n(a), LspEntry::new(n(a), 1, list, 100).0);
        }
        db
    }

    #[test]
    fn square_prefers_lowest_first_hop() {
        // 1 - 2 - 4 and 1 - 3 - 4: two paths of length 2 to node 4.
        let db = db(&[(1, &[2, 3]), (2, &[1, 4]), (3, &[1, 4]), (4, &[2, 3])]);
        let routes = shortest_paths(n(1), &[n(3), n(2)], &db);
        let r4 = routes.iter().find(|r| r.dst == n(4)).unwrap();
        assert_eq!((r4.next_hop, r4.hops), (n(2), 2));
        // From 4, both first hops tie for node 1 as well.
        let routes = shortest_paths(n(4), &[n(2), n(3)], &db);
        assert_eq!(
            routes.iter().find(|r| r.dst == n(1)).unwrap().next_hop,
            n(2)
        );
    }

    #[test]
    fn tie_break_reaches_past_the_second_level() {
        // Two disjoint paths of length 3 from 1 to 9: via 5 (5-6-9) and via 2 (2-3-9).
        // The path via 2 is discovered second at level 1 but must win.
        let db = db(&[
            (1, &[5, 2]),
            (5, &[1, 6]),
            (6, &[5, 9]),
            (2, &[1, 3]),
            (3, &[2, 9]),
            (9, &[6, 3]),
        ]);
        let routes = shortest_paths(n(1), &[n(5), n(2)], &db);
        let r9 = routes.iter().find(|r| r.dst == n(9)).unwrap();
        assert_eq!((r9.next_hop, r9.hops), (n(2), 3));
    }

    #[test]
    fn one_sided_links_are_not_used() {
        // 2 claims a link to 3, but 3 does not list 2: 3 is unreachable.
        let db = db(&[(1, &[2]), (2, &[1, 3]), (3, &[])]);
        let routes = shortest_paths(n(1), &[n(2)], &db);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].dst, n(2));
        // A live neighbour whose LSP does not list me is not a first hop.
        let db2 = self::db(&[(1, &[2]), (2, &[])]);
        assert!(shortest_paths(n(1), &[n(2)], &db2).is_empty());
        // And a neighbour that is not live is not a first hop even if both list each other.
        assert!(shortest_paths(n(1), &[], &db).is_empty());
    }

    #[test]
    fn a_flushed_node_has_the_links_its_neighbours_list() {
        // Line 1 - 2 - 3 - 4; 3 flushed, its held list a forgery's (no links at all).
        let mut db = db(&[(1, &[2]), (2, &[1, 3]), (4, &[3])]);
        db.insert(n(3), LspEntry::flush_of(None));
        let routes = shortest_paths(n(1), &[n(2)], &db);
        let hops: Vec<_> = routes
            .iter()
            .map(|r| (r.dst.get(), r.next_hop.get(), r.hops))
            .collect();
        assert_eq!(hops, [(2, 2, 1), (3, 2, 2), (4, 2, 3)]);
        // The flushed node's own view: its live neighbours are first hops.
        let routes = shortest_paths(n(3), &[n(2), n(4)], &db);
        assert_eq!(routes.len(), 3);
        // A live neighbour that is flushed is a first hop for its neighbour too.
        let routes = shortest_paths(n(4), &[n(3)], &db);
        assert_eq!(routes.len(), 3);
        // Two flushed ends fall back on their held lists: none here, so no link.
        db.insert(n(2), LspEntry::flush_of(None));
        let routes = shortest_paths(n(1), &[n(2)], &db);
        assert_eq!(routes.len(), 1, "{routes:?}");
    }
}
