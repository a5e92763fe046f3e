//! Pieces shared by the GMP and RAP harnesses: addresses, hand-made routing tables (breadth
//! first search over an edge list, so the tests do not depend on DRP), and lossy links.

#![allow(dead_code)]

use control::drp::{Route, RoutingTable};
use control::rng::Rng;
use control::{GroupAddr, NodeAddr};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).expect("node address")
}

pub fn g(v: u16) -> GroupAddr {
    GroupAddr::from_index(v).expect("group index")
}

/// Undirected links with a loss probability each, and the seeded dice for them.
pub struct Links {
    loss: BTreeMap<(NodeAddr, NodeAddr), f64>,
    rng: Rng,
}

fn key(a: NodeAddr, b: NodeAddr) -> (NodeAddr, NodeAddr) {
    if a < b { (a, b) } else { (b, a) }
}

impl Links {
    pub fn new(edges: &[(u16, u16)], loss: f64, seed: u64) -> Self {
        Links {
            loss: edges
                .iter()
                .map(|&(a, b)| (key(n(a), n(b)), loss))
                .collect(),
            rng: Rng::new(seed),
        }
    }

    pub fn cut(&mut self, a: NodeAddr, b: NodeAddr) {
        self.loss.remove(&key(a, b));
    }

    pub fn set_loss(&mut self, a: NodeAddr, b: NodeAddr, loss: f64) {
        self.loss.insert(key(a, b), loss);
    }

    /// Whether a packet sent from `a` to `b` arrives (no link: never).
    pub fn carries(&mut self, a: NodeAddr, b: NodeAddr) -> bool {
        match self.loss.get(&key(a, b)) {
            Some(&p) => !self.rng.chance(p),
            None => false,
        }
    }

    pub fn edges(&self) -> Vec<(NodeAddr, NodeAddr)> {
        self.loss.keys().copied().collect()
    }
}

/// Shortest-hop routes from `me` over `edges`; ties go to the smaller neighbour.
pub fn bfs_routes(edges: &[(NodeAddr, NodeAddr)], me: NodeAddr) -> RoutingTable {
    let mut adj: BTreeMap<NodeAddr, BTreeSet<NodeAddr>> = BTreeMap::new();
    for &(a, b) in edges {
        adj.entry(a).or_default().insert(b);
        adj.entry(b).or_default().insert(a);
    }
    let mut first_hop: BTreeMap<NodeAddr, (NodeAddr, u16)> = BTreeMap::new();
    let mut queue = VecDeque::new();
    for &nb in adj.get(&me).into_iter().flatten() {
        first_hop.insert(nb, (nb, 1));
        queue.push_back(nb);
    }
    while let Some(at) = queue.pop_front() {
        let (via, hops) = first_hop[&at];
        for &nb in adj.get(&at).into_iter().flatten() {
            if nb != me && !first_hop.contains_key(&nb) {
                first_hop.insert(nb, (via, hops + 1));
                queue.push_back(nb);
            }
        }
    }
    RoutingTable::new(
        me,
        first_hop
            .into_iter()
            .map(|(dst, (next_hop, hops))| Route {
                dst,
                next_hop,
                hops,
            })
            .collect(),
    )
}

pub fn edges(list: &[(u16, u16)]) -> Vec<(NodeAddr, NodeAddr)> {
    list.iter().map(|&(a, b)| (n(a), n(b))).collect()
}
