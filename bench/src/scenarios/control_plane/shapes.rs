//! The topologies the control-plane measurements run on, built by the product's own builders
//! (`control::topology::build`) at any size: a random connected graph of average degree 3.5 (a
//! spanning tree plus 0.75 extra links per node), a near-square grid and a random tree.

use control::topology::{Topology, build};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Random,
    Grid,
    Tree,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Random, Shape::Grid, Shape::Tree];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Random => "random, degree 3.5",
            Shape::Grid => "grid",
            Shape::Tree => "random tree",
        }
    }

    /// A topology of exactly `nodes` nodes (1..=`build::MAX_NODES`), the same for the same seed.
    pub fn build(self, nodes: usize, seed: u64) -> Topology {
        let port = build::DEFAULT_BASE_PORT;
        match self {
            Shape::Random => build::random_connected(nodes, random_extra_links(nodes), seed, port),
            Shape::Grid => {
                let width = grid_width(nodes);
                build::grid(width, nodes / width, port)
            }
            Shape::Tree => build::random_connected(nodes, 0, seed, port),
        }
    }
}

/// Links beyond the spanning tree's `n - 1` that bring the average degree to about 3.5.
pub fn random_extra_links(nodes: usize) -> usize {
    (nodes * 3 / 4).min(build::max_extra_links(nodes))
}

/// The largest divisor of `nodes` not above its square root: the most square exact grid.
fn grid_width(nodes: usize) -> usize {
    (1..=nodes.isqrt().max(1))
        .rev()
        .find(|&w| nodes.is_multiple_of(w))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_has_the_size_asked_and_is_connected() {
        for shape in Shape::ALL {
            for nodes in [7, 10, 100] {
                let t = shape.build(nodes, 1);
                assert_eq!(t.nodes.len(), nodes, "{}", shape.name());
                assert!(t.is_connected(), "{} of {nodes}", shape.name());
            }
        }
        assert_eq!(grid_width(1000), 25);
        assert_eq!(grid_width(10_000), 100);
        let random = Shape::Random.build(1000, 1);
        let degree = 2.0 * random.links.len() as f64 / 1000.0;
        assert!((3.0..4.0).contains(&degree), "{degree}");
    }
}
