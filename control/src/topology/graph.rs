//! Questions about the shape of a topology's links: who can reach whom, and how far apart the
//! farthest nodes are. Links are taken as drawn in the file; `down` flags and the schedule are
//! ignored, since they describe a moment of a run rather than the network.

use super::Topology;
use crate::addr::NodeAddr;
use std::collections::VecDeque;

impl Topology {
    /// Neighbours by node index (the position in `nodes`), each list ascending. Links naming a
    /// node that is not in `nodes` are skipped.
    pub fn adjacency(&self) -> Vec<Vec<usize>> {
        let index = |a: NodeAddr| self.nodes.binary_search_by_key(&a, |n| n.addr).ok();
        let mut adj = vec![Vec::new(); self.nodes.len()];
        for l in &self.links {
            if let (Some(a), Some(b)) = (index(l.a), index(l.b)) {
                adj[a].push(b);
                adj[b].push(a);
            }
        }
        for list in &mut adj {
            list.sort_unstable();
        }
        adj
    }

    /// Hop counts from `addr` to every node, by node index; `None` where unreachable (and for
    /// every node if `addr` is not in the topology).
    pub fn hops_from(&self, addr: NodeAddr) -> Vec<Option<usize>> {
        let adj = self.adjacency();
        match self.nodes.binary_search_by_key(&addr, |n| n.addr) {
            Ok(start) => bfs(&adj, start),
            Err(_) => vec![None; self.nodes.len()],
        }
    }

    /// The number of connected components (0 for an empty topology).
    pub fn components(&self) -> usize {
        let adj = self.adjacency();
        let mut seen = vec![false; adj.len()];
        let mut count = 0;
        for start in 0..adj.len() {
            if seen[start] {
                continue;
            }
            count += 1;
            seen[start] = true;
            let mut stack = vec![start];
            while let Some(u) = stack.pop() {
                for &v in &adj[u] {
                    if !seen[v] {
                        seen[v] = true;
                        stack.push(v);
                    }
                }
            }
        }
        count
    }

    pub fn is_connected(&self) -> bool {
        self.components() == 1
    }

    /// The largest hop count between two nodes, or `None` if the graph is not connected.
    /// One breadth-first search per node: fine for thousands of nodes, slow for tens of thousands.
    pub fn diameter(&self) -> Option<usize> {
        let adj = self.adjacency();
        if adj.is_empty() {
            return None;
        }
        let mut diameter = 0;
        for start in 0..adj.len() {
            for hops in bfs(&adj, start) {
                diameter = diameter.max(hops?);
            }
        }
        Some(diameter)
    }
}

fn bfs(adj: &[Vec<usize>], start: usize) -> Vec<Option<usize>> {
    let mut dist = vec![None; adj.len()];
    dist[start] = Some(0);
    let mut queue = VecDeque::from([(start, 0)]);
    while let Some((u, d)) = queue.pop_front() {
        for &v in &adj[u] {
            if dist[v].is_none() {
                dist[v] = Some(d + 1);
                queue.push_back((v, d + 1));
            }
        }
    }
    dist
}

impl Topology {
    /// The routing table every node should converge to over the links for which `link_up`
    /// holds: shortest paths by hop count, ties broken toward the lowest-addressed first hop.
    /// Tables by node index. An oracle written apart from DRP's own SPF, for tests and for
    /// telling when a run has converged.
    pub fn expected_routes(
        &self,
        link_up: impl Fn(NodeAddr, NodeAddr) -> bool,
    ) -> Vec<crate::drp::RoutingTable> {
        let addr = |i: usize| self.nodes[i].addr;
        let adj: Vec<Vec<usize>> = self
            .adjacency()
            .into_iter()
            .enumerate()
            .map(|(i, list)| {
                list.into_iter()
                    .filter(|&j| link_up(addr(i), addr(j)))
                    .collect()
            })
            .collect();
        let mut routes = vec![Vec::new(); adj.len()];
        for dst in 0..adj.len() {
            let dist = bfs(&adj, dst);
            for (src, d) in dist.iter().enumerate() {
                let Some(d) = *d else { continue };
                if src == dst {
                    continue;
                }
                // Neighbour lists ascend, so the first one a hop closer is the lowest.
                let next = adj[src].iter().find(|&&n| dist[n] == Some(d - 1));
                if let Some(&next) = next {
                    routes[src].push(crate::drp::Route {
                        dst: addr(dst),
                        next_hop: addr(next),
                        hops: u16::try_from(d).unwrap_or(u16::MAX),
                    });
                }
            }
        }
        routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| crate::drp::RoutingTable::new(addr(i), r))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::topology::build;

    #[test]
    fn diameters_of_the_standard_shapes() {
        assert_eq!(build::line(5, 7001).diameter(), Some(4));
        assert_eq!(build::ring(8, 7001).diameter(), Some(4));
        assert_eq!(build::star(6, 7001).diameter(), Some(2));
        assert_eq!(build::binary_tree(3, 7001).diameter(), Some(4));
        assert_eq!(build::grid(4, 4, 7001).diameter(), Some(6));
        assert_eq!(build::line(1, 7001).diameter(), Some(0));
    }

    #[test]
    fn a_missing_link_splits_the_graph() {
        let mut t = build::line(5, 7001);
        t.links.remove(1);
        assert_eq!(t.components(), 2);
        assert!(!t.is_connected());
        assert_eq!(t.diameter(), None);
        let hops = t.hops_from(crate::NodeAddr::new(1).unwrap());
        assert_eq!(hops, [Some(0), Some(1), None, None, None]);
    }
}
