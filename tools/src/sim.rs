//! `burghers sim`: run a topology in the deterministic simulator.

use control::topology::Topology;
use dataplane::node::{Node, sim_factory};
use dataplane::sim::Sim;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "\
Boots every node of the file in one process on virtual time, runs until every node's routing
table equals the true shortest paths (or --until passes), and prints the tables.

Examples:
  burghers sim topologies/grid4x4.toml
  burghers sim net.toml --seed 7 --local-files --quiet")]
pub struct SimArgs {
    /// Topology file (TOML; see docs/TOPOLOGY.md).
    pub topology: PathBuf,
    /// Seed of the run: one seed, one run, bit for bit.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Give up if not converged after this many virtual seconds.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub until: f64,
    /// Boot each node knowing only its own links, so routes must be learned by flooding.
    #[arg(long)]
    pub local_files: bool,
    /// Print only the summary, not every routing table.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: SimArgs) -> Result<(), String> {
    let topology = Topology::load(&args.topology).map_err(|e| e.to_string())?;
    if !(args.until.is_finite() && args.until > 0.0) {
        return Err(format!(
            "--until takes a positive number of seconds, got {}",
            args.until
        ));
    }
    let mut sim = if args.local_files {
        let full = topology.clone();
        Sim::new(&topology, args.seed, move |boot: dataplane::sim::Boot| {
            Node::new(boot.addr, &full.local_view(boot.addr), boot.now)
        })
    } else {
        Sim::new(&topology, args.seed, sim_factory(&topology))
    }
    .map_err(|e| e.to_string())?;

    let wall = std::time::Instant::now();
    sim.set_cond_interval(Duration::from_millis(if topology.nodes.len() > 200 {
        100
    } else {
        10
    }));
    let deadline = sim.now() + Duration::from_secs_f64(args.until);
    let converged_at = sim.run_until_cond(deadline, |s| converged(s, &topology));
    if !args.quiet {
        for (_, node) in sim.nodes() {
            print!("{}", node.routes());
        }
    }
    let totals = sim.totals();
    let rejected: u64 = sim.nodes().map(|(_, n)| n.stats().rejected()).sum();
    match converged_at {
        Some(at) => println!(
            "converged: {} nodes, {} links in {at} virtual ({:.2}s real); {} packets delivered, {} lost, {} rejected by DNP",
            topology.nodes.len(),
            topology.links.len(),
            wall.elapsed().as_secs_f64(),
            totals.delivered,
            totals.lost,
            rejected
        ),
        None => {
            return Err(format!(
                "not converged after {} virtual seconds (is the graph connected? try `burghers topo check`)",
                args.until
            ));
        }
    }
    Ok(())
}

/// Every up node's table equals the true shortest paths over the links that are up.
fn converged(sim: &Sim<Node>, topology: &Topology) -> bool {
    let expected =
        topology.expected_routes(|a, b| sim.is_link_up(a, b) && sim.is_up(a) && sim.is_up(b));
    topology.nodes.iter().zip(&expected).all(|(spec, want)| {
        !sim.is_up(spec.addr)
            || sim
                .node(spec.addr)
                .is_some_and(|n| n.routes().routes() == want.routes())
    })
}
