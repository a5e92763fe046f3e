//! The routing table DRP publishes: an immutable snapshot, shared by `Arc` and swapped whole
//! (RCU style) when routes change. Lookups are a binary search over destinations (O(log n)), as
//! in the seed's §3.1 parallel arrays, without a 64K-entry array per snapshot.

use crate::addr::NodeAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: NodeAddr,
    /// The neighbour to hand a packet for `dst` to.
    pub next_hop: NodeAddr,
    /// Path length in hops (1 for a neighbour).
    pub hops: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingTable {
    me: NodeAddr,
    /// Sorted by `dst`, unique, never containing `me`.
    routes: Vec<Route>,
}

impl RoutingTable {
    /// A table from routes in any order. Routes to `me` are dropped; later duplicates lose.
    pub fn new(me: NodeAddr, mut routes: Vec<Route>) -> Self {
        routes.retain(|r| r.dst != me);
        routes.sort_by_key(|r| r.dst);
        routes.dedup_by_key(|r| r.dst);
        RoutingTable { me, routes }
    }

    /// The table of a node that knows no one yet.
    pub fn empty(me: NodeAddr) -> Self {
        RoutingTable {
            me,
            routes: Vec::new(),
        }
    }

    pub fn me(&self) -> NodeAddr {
        self.me
    }

    pub fn route(&self, dst: NodeAddr) -> Option<&Route> {
        self.routes
            .binary_search_by_key(&dst, |r| r.dst)
            .ok()
            .map(|i| &self.routes[i])
    }

    /// The seed's one query: where to send a packet for `dst`. `None` if unreachable or `me`.
    pub fn next_hop(&self, dst: NodeAddr) -> Option<NodeAddr> {
        self.route(dst).map(|r| r.next_hop)
    }

    pub fn is_reachable(&self, dst: NodeAddr) -> bool {
        dst == self.me || self.route(dst).is_some()
    }

    /// Routes ascending by destination.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl std::fmt::Display for RoutingTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "node {}: {} routes", self.me, self.routes.len())?;
        for r in &self.routes {
            let plural = if r.hops == 1 { "" } else { "s" };
            writeln!(
                f,
                "  {:>5} via {:>5} ({} hop{plural})",
                r.dst, r.next_hop, r.hops
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    #[test]
    fn lookup_by_binary_search() {
        let t = RoutingTable::new(
            n(1),
            vec![
                Route {
                    dst: n(30000),
                    next_hop: n(2),
                    hops: 3,
                },
                Route {
                    dst: n(2),
                    next_hop: n(2),
                    hops: 1,
                },
                Route {
                    dst: n(1),
                    next_hop: n(2),
                    hops: 0,
                },
            ],
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_hop(n(30000)), Some(n(2)));
        assert_eq!(t.next_hop(n(1)), None);
        assert_eq!(t.next_hop(n(5)), None);
        assert!(t.is_reachable(n(1)));
        assert!(!t.is_reachable(n(5)));
    }
}
