//! Standard shapes and random connected graphs, built in code.
//!
//! Every builder numbers nodes from 1 and puts node `k` on `127.0.0.1:(base_port + k - 1)`, with
//! default network options and fault-free links. Sizes are the caller's choice; a size that cannot
//! be built (too many nodes for the address or port range, a ring of two) is a programming error
//! and panics with the message of the matching `check_*` function, which a command line should
//! call first to report the problem instead.

use super::{Faults, LinkSpec, NetworkOptions, NodeSpec, Topology};
use crate::addr::{GROUP_BASE, NodeAddr};
use crate::rng::Rng;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};

/// The most nodes a topology can have: every node address below the group range.
pub const MAX_NODES: usize = GROUP_BASE as usize - 1;

/// The port of node 1 in the shipped topologies.
pub const DEFAULT_BASE_PORT: u16 = 7001;

/// Whether `nodes` nodes numbered from 1 fit the address range and, from `base_port`, the ports.
pub fn check_nodes(nodes: usize, base_port: u16) -> Result<(), String> {
    if nodes == 0 {
        return Err("a topology needs at least 1 node".into());
    }
    if nodes > MAX_NODES {
        return Err(format!(
            "{nodes} nodes do not fit the node address range 1..{GROUP_BASE} (at most {MAX_NODES})"
        ));
    }
    if base_port == 0 {
        return Err("the base port must not be 0".into());
    }
    let last = base_port as usize + nodes - 1;
    if last > u16::MAX as usize {
        return Err(format!(
            "{nodes} nodes from port {base_port} would need ports up to {last}, beyond 65535"
        ));
    }
    Ok(())
}

/// Whether a ring of `nodes` can be built (a ring needs 3 distinct nodes).
pub fn check_ring(nodes: usize, base_port: u16) -> Result<(), String> {
    if nodes < 3 {
        return Err(format!("a ring needs at least 3 nodes, not {nodes}"));
    }
    check_nodes(nodes, base_port)
}

/// The node count of a full binary tree of `levels` levels, if it fits.
pub fn check_tree(levels: u32, base_port: u16) -> Result<usize, String> {
    if levels == 0 {
        return Err("a tree needs at least 1 level".into());
    }
    let nodes = 1usize
        .checked_shl(levels)
        .map(|p| p - 1)
        .filter(|&n| n <= MAX_NODES)
        .ok_or_else(|| format!("a {levels}-level binary tree has more than {MAX_NODES} nodes"))?;
    check_nodes(nodes, base_port)?;
    Ok(nodes)
}

/// The node count of a `width` × `height` grid, if it fits.
pub fn check_grid(width: usize, height: usize, base_port: u16) -> Result<usize, String> {
    if width == 0 || height == 0 {
        return Err(format!(
            "a grid needs a non-zero size, not {width}x{height}"
        ));
    }
    let nodes = width
        .checked_mul(height)
        .ok_or_else(|| format!("a {width}x{height} grid is too large"))?;
    check_nodes(nodes, base_port)?;
    Ok(nodes)
}

/// How many links can be added to a spanning tree of `nodes` nodes before the graph is complete.
pub fn max_extra_links(nodes: usize) -> usize {
    let pairs = nodes.saturating_mul(nodes.saturating_sub(1)) / 2;
    pairs.saturating_sub(nodes.saturating_sub(1))
}

/// Whether a random connected graph of `nodes` nodes with `extra_links` extra links can be built.
pub fn check_random(nodes: usize, extra_links: usize, base_port: u16) -> Result<(), String> {
    check_nodes(nodes, base_port)?;
    let max = max_extra_links(nodes);
    if extra_links > max {
        return Err(format!(
            "{nodes} nodes have room for at most {max} links beyond a spanning tree, not {extra_links}"
        ));
    }
    Ok(())
}

fn ok_or_panic<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn addr(k: usize) -> NodeAddr {
    // Callers checked `k <= MAX_NODES`.
    NodeAddr::new(k as u16).unwrap_or_else(|| panic!("node address {k} out of range"))
}

/// `nodes` nodes and the given links (1-based indices, any order), sorted and normalised.
fn assemble(
    nodes: usize,
    base_port: u16,
    pairs: impl IntoIterator<Item = (usize, usize)>,
) -> Topology {
    ok_or_panic(check_nodes(nodes, base_port));
    let nodes: Vec<NodeSpec> = (1..=nodes)
        .map(|k| NodeSpec {
            addr: addr(k),
            socket: SocketAddr::from((Ipv4Addr::LOCALHOST, base_port + (k - 1) as u16)),
        })
        .collect();
    let mut links: Vec<LinkSpec> = pairs
        .into_iter()
        .map(|(x, y)| LinkSpec {
            a: addr(x.min(y)),
            b: addr(x.max(y)),
            faults: Faults::default(),
        })
        .collect();
    links.sort_by_key(|l| (l.a, l.b));
    Topology {
        network: NetworkOptions::default(),
        nodes,
        links,
        schedule: Vec::new(),
    }
}

/// Nodes 1–2–…–n in a line.
pub fn line(n: usize, base_port: u16) -> Topology {
    assemble(n, base_port, (1..n).map(|k| (k, k + 1)))
}

/// Nodes 1–2–…–n–1 in a ring (n ≥ 3).
pub fn ring(n: usize, base_port: u16) -> Topology {
    ok_or_panic(check_ring(n, base_port));
    assemble(n, base_port, (1..n).map(|k| (k, k + 1)).chain([(1, n)]))
}

/// Node 1 linked to every other node.
pub fn star(n: usize, base_port: u16) -> Topology {
    assemble(n, base_port, (2..=n).map(|k| (1, k)))
}

/// A full binary tree of `levels` levels rooted at node 1; node k's children are 2k and 2k+1.
pub fn binary_tree(levels: u32, base_port: u16) -> Topology {
    let n = ok_or_panic(check_tree(levels, base_port));
    assemble(n, base_port, (2..=n).map(|k| (k / 2, k)))
}

/// A `width` × `height` grid numbered row-major from 1; each node links right and down.
pub fn grid(width: usize, height: usize, base_port: u16) -> Topology {
    let n = ok_or_panic(check_grid(width, height, base_port));
    let at = |row: usize, col: usize| row * width + col + 1;
    let right =
        (0..height).flat_map(move |r| (0..width - 1).map(move |c| (at(r, c), at(r, c + 1))));
    let down = (0..height - 1).flat_map(move |r| (0..width).map(move |c| (at(r, c), at(r + 1, c))));
    assemble(n, base_port, right.chain(down))
}

/// A random spanning tree over `n` nodes plus `extra_links` distinct extra links, the same for
/// the same seed. The tree attaches each node (in a random order) to a random earlier one, so
/// no address is favoured as a hub.
pub fn random_connected(n: usize, extra_links: usize, seed: u64, base_port: u16) -> Topology {
    ok_or_panic(check_random(n, extra_links, base_port));
    let mut rng = Rng::new(seed);
    let mut order: Vec<usize> = (1..=n).collect();
    shuffle(&mut order, &mut rng);
    let mut links: BTreeSet<(usize, usize)> = BTreeSet::new();
    for i in 1..n {
        let parent = order[rng.below(i as u64) as usize];
        let child = order[i];
        links.insert((parent.min(child), parent.max(child)));
    }
    let free = max_extra_links(n);
    if extra_links * 2 <= free {
        // Sparse: draw pairs until enough new ones; at least half of all draws succeed.
        let mut added = 0;
        while added < extra_links {
            let x = 1 + rng.below(n as u64) as usize;
            let y = 1 + rng.below(n as u64) as usize;
            if x != y && links.insert((x.min(y), x.max(y))) {
                added += 1;
            }
        }
    } else {
        // Dense: list every missing pair and pick some, so the cost does not depend on luck.
        let mut missing: Vec<(usize, usize)> = (1..=n)
            .flat_map(|x| (x + 1..=n).map(move |y| (x, y)))
            .filter(|p| !links.contains(p))
            .collect();
        for i in 0..extra_links {
            let j = i + rng.below((missing.len() - i) as u64) as usize;
            missing.swap(i, j);
        }
        links.extend(missing.into_iter().take(extra_links));
    }
    assemble(n, base_port, links)
}

/// Fisher–Yates with our seeded generator.
fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(t: &Topology) -> Vec<(u16, u16)> {
        t.links.iter().map(|l| (l.a.get(), l.b.get())).collect()
    }

    #[test]
    fn small_shapes_have_the_expected_links() {
        assert_eq!(pairs(&line(4, 7001)), [(1, 2), (2, 3), (3, 4)]);
        assert_eq!(pairs(&ring(4, 7001)), [(1, 2), (1, 4), (2, 3), (3, 4)]);
        assert_eq!(pairs(&star(4, 7001)), [(1, 2), (1, 3), (1, 4)]);
        assert_eq!(
            pairs(&binary_tree(3, 7001)),
            [(1, 2), (1, 3), (2, 4), (2, 5), (3, 6), (3, 7)]
        );
        assert_eq!(
            pairs(&grid(3, 2, 7001)),
            [(1, 2), (1, 4), (2, 3), (2, 5), (3, 6), (4, 5), (5, 6)]
        );
        let t = line(3, 9000);
        assert_eq!(t.nodes[2].socket, "127.0.0.1:9002".parse().unwrap());
        assert_eq!(line(1, 7001).links.len(), 0);
    }

    #[test]
    fn impossible_sizes_are_reported() {
        assert!(check_ring(2, 7001).unwrap_err().contains("at least 3"));
        assert!(check_nodes(100, 65500).unwrap_err().contains("65599"));
        assert!(
            check_nodes(MAX_NODES + 1, 1)
                .unwrap_err()
                .contains("address range")
        );
        assert_eq!(check_tree(3, 7001), Ok(7));
        assert!(check_tree(16, 1).is_err());
        assert_eq!(max_extra_links(4), 3);
        assert!(check_random(4, 4, 7001).unwrap_err().contains("at most 3"));
        assert!(check_random(4, 3, 7001).is_ok());
    }

    #[test]
    fn dense_random_graph_becomes_complete() {
        let t = random_connected(6, max_extra_links(6), 3, 7001);
        assert_eq!(t.links.len(), 15);
    }

    #[test]
    #[should_panic(expected = "at least 3 nodes")]
    fn ring_of_two_panics_with_the_check_message() {
        ring(2, 7001);
    }
}
