//! Shortest-path recomputation: DRP's own SPF (`control::drp::spf`) over a link-state database
//! built by DRP from the topology (`Lsdb::from_topology`, what every node holds at boot), then
//! the routing table DRP would publish (`RoutingTable::new`). The cost of one run is what a
//! node pays whenever a neighbour changes or flooding changes its database.

use super::shapes::Shape;
use crate::runner::{Metric, Sample, System};
use control::NodeAddr;
use control::drp::{Lsdb, RoutingTable, spf};
use control::topology::Topology;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

pub const SPF_RUN: Metric = Metric {
    name: "SPF + routing table build, per run",
    unit: "us",
    higher_is_better: false,
};

/// Runs from this many different nodes in turn, so that no one position in the graph decides.
const SOURCES: usize = 8;

/// One topology's database, measured by repeating SPF for at least `budget`.
pub struct SpfRun {
    shape: Shape,
    nodes: usize,
    links: usize,
    lsdb: Lsdb,
    /// (node, its live neighbours): what DRP passes to SPF.
    sources: Vec<(NodeAddr, Vec<NodeAddr>)>,
    budget: Duration,
}

impl SpfRun {
    pub fn new(shape: Shape, nodes: usize, budget: Duration) -> SpfRun {
        let topology = shape.build(nodes, nodes as u64);
        let max_listed = control::wire::drp::max_lsp_neighbours(topology.network.mtu);
        let (lsdb, _) = Lsdb::from_topology(&topology, max_listed);
        SpfRun {
            shape,
            nodes,
            links: topology.links.len(),
            lsdb,
            sources: sources(&topology),
            budget,
        }
    }
}

/// `SOURCES` nodes spread evenly over the addresses, with their neighbours.
fn sources(topology: &Topology) -> Vec<(NodeAddr, Vec<NodeAddr>)> {
    let step = (topology.nodes.len() / SOURCES).max(1);
    topology
        .nodes
        .iter()
        .step_by(step)
        .take(SOURCES)
        .map(|spec| (spec.addr, topology.neighbours(spec.addr)))
        .collect()
}

impl System for SpfRun {
    fn name(&self) -> String {
        format!("{} nodes ({})", self.nodes, self.shape.name())
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let start = Instant::now();
        let mut runs = 0u64;
        let mut routes = 0u64;
        while runs < 3 || start.elapsed() < self.budget {
            let (me, live) = &self.sources[runs as usize % self.sources.len()];
            let table = RoutingTable::new(*me, spf::shortest_paths(*me, live, &self.lsdb));
            routes += black_box(&table).len() as u64;
            runs += 1;
        }
        let per_run_us = start.elapsed().as_secs_f64() * 1e6 / runs as f64;
        let details = BTreeMap::from([
            ("nodes".to_string(), self.nodes as f64),
            ("links".to_string(), self.links as f64),
            ("routes_per_table".to_string(), routes as f64 / runs as f64),
            ("runs".to_string(), runs as f64),
        ]);
        Ok(Sample {
            value: per_run_us,
            details,
            limited_by: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_tables_are_the_true_shortest_paths() {
        for shape in Shape::ALL {
            let run = SpfRun::new(shape, 100, Duration::ZERO);
            let topology = shape.build(100, 100);
            let expected = topology.expected_routes(|_, _| true);
            for (me, live) in &run.sources {
                let table = RoutingTable::new(*me, spf::shortest_paths(*me, live, &run.lsdb));
                let i = topology.nodes.iter().position(|n| n.addr == *me).unwrap();
                assert_eq!(table, expected[i], "{} from {me}", shape.name());
            }
        }
    }
}
