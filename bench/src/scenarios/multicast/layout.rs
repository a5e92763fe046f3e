//! Where the receivers sit: the topology of one transfer (node 1 sends).

use control::topology::{LinkSpec, Topology, build};

/// How the receivers hang off the sender.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Every receiver linked to the sender.
    Star,
    /// The sender linked to two relays (one for a single receiver) that share the receivers:
    /// NACKs aggregate and repairs come from the relays' caches.
    Tree,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Star => "star",
            Shape::Tree => "tree",
        }
    }
}

/// A topology for one transfer: node 1 sends.
pub struct Layout {
    pub topology: Topology,
    pub relays: Vec<u16>,
    pub receivers: Vec<u16>,
    /// The sender's neighbours in the tree (what `send --wait-branches` waits for).
    pub branches: Vec<u16>,
}

pub const SENDER: u16 = 1;

impl Layout {
    pub fn new(shape: Shape, receivers: usize) -> Layout {
        let relays: Vec<u16> = match shape {
            Shape::Star => Vec::new(),
            Shape::Tree if receivers == 1 => vec![2],
            Shape::Tree => vec![2, 3],
        };
        let first = 2 + relays.len() as u16;
        let leaves: Vec<u16> = (first..first + receivers as u16).collect();
        let parent = |i: usize| relays.get(i % relays.len().max(1)).copied();
        let mut pairs: Vec<(u16, u16)> = relays.iter().map(|&r| (SENDER, r)).collect();
        pairs.extend(
            leaves
                .iter()
                .enumerate()
                .map(|(i, &l)| (parent(i).unwrap_or(SENDER), l)),
        );
        // The star's nodes and options, with this layout's links.
        let mut topology = build::star(1 + relays.len() + receivers, build::DEFAULT_BASE_PORT);
        topology.links = pairs
            .iter()
            .map(|&(a, b)| LinkSpec {
                a: node(a),
                b: node(b),
                faults: Default::default(),
            })
            .collect();
        let branches = if relays.is_empty() {
            leaves.clone()
        } else {
            relays.clone()
        };
        Layout {
            topology,
            relays,
            receivers: leaves,
            branches,
        }
    }
}

fn node(n: u16) -> control::NodeAddr {
    control::NodeAddr::new(n).expect("a small node address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_put_every_receiver_below_the_sender() {
        let star = Layout::new(Shape::Star, 3);
        assert_eq!(star.receivers, vec![2, 3, 4]);
        assert_eq!(star.branches, star.receivers);
        assert_eq!(star.topology.links.len(), 3);
        let tree = Layout::new(Shape::Tree, 3);
        assert_eq!(tree.relays, vec![2, 3]);
        assert_eq!(tree.receivers, vec![4, 5, 6]);
        assert_eq!(tree.topology.nodes.len(), 6);
        // Two links from the sender, one to each receiver from a relay.
        assert_eq!(tree.topology.links.len(), 5);
        let one = Layout::new(Shape::Tree, 1);
        assert_eq!((one.relays, one.receivers), (vec![2], vec![3]));
    }
}
