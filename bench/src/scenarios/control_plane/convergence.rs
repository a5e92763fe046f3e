//! Routing convergence after a link cut, in the deterministic simulator: whole nodes (DNP, DRP,
//! GMP, RMTP) on virtual links of 2 ms delay. Every node boots from the whole file and the run
//! waits for the first converged tables; a link whose loss leaves the graph connected is then
//! cut, and the figure is the virtual time until every node's table is again the true shortest
//! paths (`Topology::expected_routes`, an oracle apart from DRP's SPF), checked every
//! millisecond of virtual time. Beside it, the wall-clock time the simulation took.
//!
//! Each repetition uses another seed and cuts at another phase of the hello period, so the
//! spread shows how the cut meets the timers. The dead interval (hello interval × dead hellos)
//! bounds it from below: a silent link is only noticed that late.

use super::shapes::Shape;
use crate::runner::{Metric, Sample, System};
use control::drp::RoutingTable;
use control::topology::Topology;
use control::{Instant as SimInstant, NodeAddr};
use dataplane::node::{Node, sim_factory};
use dataplane::sim::Sim;
use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

pub const CONVERGENCE: Metric = Metric {
    name: "virtual time to converge after a link cut",
    unit: "ms",
    higher_is_better: false,
};

/// Delay of every simulated link.
pub const LINK_DELAY: Duration = Duration::from_millis(2);
/// How often (virtual time) the tables are compared with the truth: the figure's resolution.
pub const CHECK_EVERY: Duration = Duration::from_millis(1);
/// A run that has not converged by then has failed.
const WITHIN: Duration = Duration::from_secs(60);

pub struct CutConvergence {
    nodes: usize,
    topology: Topology,
    cut: (NodeAddr, NodeAddr),
    /// The tables every node must reach once the link is gone, by node index.
    after_cut: Vec<RoutingTable>,
    seed: u64,
}

impl CutConvergence {
    pub fn new(nodes: usize) -> io::Result<CutConvergence> {
        let mut topology = Shape::Random.build(nodes, nodes as u64);
        for link in &mut topology.links {
            link.faults.delay = LINK_DELAY;
        }
        let cut = link_to_cut(&topology).ok_or_else(|| {
            io::Error::other(format!(
                "{nodes} nodes: every link is a bridge, none to cut"
            ))
        })?;
        let after_cut = topology.expected_routes(|a, b| !is_link(cut, a, b));
        Ok(CutConvergence {
            nodes,
            topology,
            cut,
            after_cut,
            seed: 0,
        })
    }

    fn converged(&self, sim: &Sim<Node>, want: &[RoutingTable]) -> bool {
        self.topology.nodes.iter().zip(want).all(|(spec, want)| {
            sim.node(spec.addr)
                .is_some_and(|node| node.routes().routes() == want.routes())
        })
    }
}

fn is_link(link: (NodeAddr, NodeAddr), a: NodeAddr, b: NodeAddr) -> bool {
    (a, b) == link || (b, a) == link
}

/// The first link (in file order) whose loss leaves the graph connected: a real reroute.
fn link_to_cut(topology: &Topology) -> Option<(NodeAddr, NodeAddr)> {
    topology.links.iter().find_map(|link| {
        let mut without = topology.clone();
        without.links.retain(|l| (l.a, l.b) != (link.a, link.b));
        without.is_connected().then_some((link.a, link.b))
    })
}

impl System for CutConvergence {
    fn name(&self) -> String {
        let (a, b) = self.cut;
        format!("{} nodes, cut {a}-{b}", self.nodes)
    }

    fn measure(&mut self) -> io::Result<Sample> {
        self.seed += 1;
        let wall = Instant::now();
        let mut sim = Sim::new(&self.topology, self.seed, sim_factory(&self.topology))
            .map_err(io::Error::other)?;
        sim.set_cond_interval(CHECK_EVERY);
        let before = self.topology.expected_routes(|_, _| true);
        let deadline = sim.now() + WITHIN;
        sim.run_until_cond(deadline, |s| self.converged(s, &before))
            .ok_or_else(|| io::Error::other("the first tables did not converge"))?;
        // Cut at another phase of the hello period each repetition.
        let hello = self.topology.network.timers.hello_interval;
        let phase = hello.mul_f64((self.seed as f64 * 0.377).fract());
        sim.run_for(hello + phase);

        let (a, b) = self.cut;
        sim.link_down(a, b).map_err(io::Error::other)?;
        let cut_at: SimInstant = sim.now();
        let events_before = sim.engine_stats().events;
        let wall_cut = Instant::now();
        let deadline = cut_at + WITHIN;
        let converged_at = sim
            .run_until_cond(deadline, |s| self.converged(s, &self.after_cut))
            .ok_or_else(|| io::Error::other(format!("not converged within {WITHIN:?}")))?;
        let wall_after_cut = wall_cut.elapsed();
        let took = converged_at.saturating_since(cut_at);
        let details = BTreeMap::from([
            ("nodes".to_string(), self.nodes as f64),
            ("links".to_string(), self.topology.links.len() as f64),
            ("wall_ms_after_cut".to_string(), ms(wall_after_cut)),
            ("wall_ms_whole_run".to_string(), ms(wall.elapsed())),
            (
                "events_after_cut".to_string(),
                (sim.engine_stats().events - events_before) as f64,
            ),
            (
                "dead_interval_ms".to_string(),
                ms(self.topology.network.timers.dead_interval()),
            ),
        ]);
        Ok(Sample {
            value: ms(took),
            details,
            limited_by: None,
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_link_exists_and_is_not_a_bridge() {
        for nodes in [7, 31, 127] {
            let c = CutConvergence::new(nodes).unwrap();
            let (a, b) = c.cut;
            assert!(c.topology.link(a, b).is_some());
            // Every node still reaches every other once the link is gone.
            assert!(c.after_cut.iter().all(|t| t.len() == nodes - 1));
        }
    }
}
