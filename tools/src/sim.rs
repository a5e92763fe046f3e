//! `burghers sim`: run a topology in the deterministic simulator.

use crate::args::{parse_millis, parse_probability, parse_rate_mbit, parse_size};
use control::NodeAddr;
use control::topology::Topology;
use dataplane::node::{Node, RmtpOptions, routes_converged, sim_factory};
use dataplane::sim::Sim;
use dataplane::sim::scenario::{Scenario, content};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "\
Boots every node of the file in one process on virtual time, runs until every node's routing
table equals the true shortest paths (or --until passes), and prints the tables. With --send,
then multicasts that many bytes from one node to others through the file's link faults and
prints per-receiver completion times and the counters.

Examples:
  burghers sim topologies/grid4x4.toml
  burghers sim net.toml --seed 7 --local-files --quiet
  burghers sim topologies/tree7.toml --send 64MiB --to 4,5,6,7 --loss 0.1 --corrupt 0.01
  burghers sim topologies/tree7.toml -q --send 256MiB --to 4,5,6,7 --rate-mbit 10000 \
      --queue-bytes 1MiB --delay-ms 0.05 --window 4MiB --pace-mbit 10000 --loss 0.02")]
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
    /// After convergence, multicast this many bytes (e.g. 4MiB, 500k, 1000000).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub send: Option<u64>,
    /// The sending node (default: the lowest address).
    #[arg(long, value_name = "NODE")]
    pub from: Option<u16>,
    /// Receiving nodes, comma-separated (default: every other node).
    #[arg(long, value_name = "NODES", value_delimiter = ',')]
    pub to: Vec<u16>,
    /// Override every link's loss probability.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub loss: Option<f64>,
    /// Override every link's corruption probability.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub corrupt: Option<f64>,
    /// Override every link's one-way delay.
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    pub delay_ms: Option<Duration>,
    /// Override every link's rate (megabits per second; packets are serialised and queue).
    #[arg(long, value_name = "MBIT", value_parser = parse_rate_mbit)]
    pub rate_mbit: Option<u64>,
    /// Override every link's drop-tail queue (e.g. 1MiB); needs a rate (--rate-mbit or the
    /// file's rate_mbit).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub queue_bytes: Option<u64>,
    /// Override every link's coalescing interval: each node takes what a link brought once
    /// per interval, as one batch (a NIC's interrupt coalescing with GRO) [default: the file's
    /// coalesce_ms, else each packet as it arrives].
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    pub coalesce_ms: Option<Duration>,
    /// The receivers' window (bytes accepted beyond what they delivered) [default: 256k].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub window: Option<u64>,
    /// Pace the sender at this rate (megabits per second, headers included) [default: not
    /// paced, only the window holds it back].
    #[arg(long, value_name = "MBIT", value_parser = parse_rate_mbit)]
    pub pace_mbit: Option<u64>,
    /// What a receiver lets its sender have in flight past the highest byte it received,
    /// besides twice the measured bandwidth-delay product (0: no cap, the whole window)
    /// [default: receiver.in_flight_headroom, 256k].
    #[arg(long, value_name = "SIZE|off", value_parser = parse_headroom)]
    pub in_flight_headroom: Option<u64>,
}

/// A size, or `off` (0: no in-flight cap).
fn parse_headroom(text: &str) -> Result<u64, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        Ok(0)
    } else {
        parse_size(text)
    }
}

pub fn run(args: SimArgs) -> Result<(), String> {
    let mut topology = Topology::load(&args.topology).map_err(|e| e.to_string())?;
    for link in &mut topology.links {
        if let Some(p) = args.loss {
            link.faults.loss = p;
        }
        if let Some(p) = args.corrupt {
            link.faults.corrupt = p;
        }
        if let Some(d) = args.delay_ms {
            link.faults.delay = d;
        }
        if let Some(r) = args.rate_mbit {
            link.faults.rate = Some(r);
        }
        if let Some(q) = args.queue_bytes {
            if q == 0 {
                return Err("--queue-bytes takes a positive size".into());
            }
            if link.faults.rate.is_none() {
                return Err(format!(
                    "--queue-bytes needs a rate: link {}-{} has no rate_mbit (add --rate-mbit)",
                    link.a, link.b
                ));
            }
            link.faults.queue_bytes = Some(q);
        }
        if let Some(c) = args.coalesce_ms {
            link.faults.coalesce = c;
        }
    }
    // Check the transfer's nodes before spending time on the routing run.
    let endpoints = match args.send {
        Some(_) => Some(endpoints(&args, &topology)?),
        None => None,
    };
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
    let converged_at = sim.run_until_cond(deadline, |s| routes_converged(s, &topology));
    if !args.quiet {
        for (_, node) in sim.nodes() {
            print!("{}", node.routes());
        }
    }
    let totals = sim.totals();
    let rejected: u64 = sim.nodes().map(|(_, n)| n.stats().rejected()).sum();
    match converged_at {
        Some(at) => println!(
            "converged: {} nodes, {} links in {at} virtual ({:.2}s real); {} packets delivered, {} lost, {} queue-dropped, {} rejected by DNP",
            topology.nodes.len(),
            topology.links.len(),
            wall.elapsed().as_secs_f64(),
            totals.delivered,
            totals.lost,
            totals.dropped_queue,
            rejected
        ),
        None => {
            return Err(format!(
                "not converged after {} virtual seconds (is the graph connected? try `burghers topo check`)",
                args.until
            ));
        }
    }
    if let (Some(size), Some((from, to))) = (args.send, endpoints) {
        transfer(&args, topology, size, from, &to)?;
    }
    Ok(())
}

fn node_arg(topology: &Topology, raw: u16) -> Result<NodeAddr, String> {
    let addr = NodeAddr::try_new(raw).map_err(|e| format!("node {raw}: {e}"))?;
    topology
        .node(addr)
        .map(|n| n.addr)
        .ok_or_else(|| format!("node {raw} is not in the topology"))
}

/// The sending node and the receivers of `--send`.
fn endpoints(args: &SimArgs, topology: &Topology) -> Result<(NodeAddr, Vec<NodeAddr>), String> {
    let from = match args.from {
        Some(raw) => node_arg(topology, raw)?,
        None => topology
            .nodes
            .first()
            .map(|n| n.addr)
            .ok_or("the topology has no nodes")?,
    };
    let to: Vec<NodeAddr> = if args.to.is_empty() {
        topology
            .nodes
            .iter()
            .map(|n| n.addr)
            .filter(|&a| a != from)
            .collect()
    } else {
        args.to
            .iter()
            .map(|&raw| node_arg(topology, raw))
            .collect::<Result<_, _>>()?
    };
    Ok((from, to))
}

fn transfer(
    args: &SimArgs,
    topology: Topology,
    size: u64,
    from: NodeAddr,
    to: &[NodeAddr],
) -> Result<(), String> {
    let len = usize::try_from(size).map_err(|_| "size too large for this machine")?;
    let wall = std::time::Instant::now();
    let data = content(len, args.seed);
    let mut options = RmtpOptions::default();
    if let Some(w) = args.window {
        options.receiver_window = w.max(1);
    }
    options.sender_rate = args.pace_mbit;
    if let Some(h) = args.in_flight_headroom {
        options.receiver_in_flight_headroom = h;
    }
    let mut s = Scenario::start(topology, args.seed, options, from, to, data)?;
    let done = s.run_until_received(to, Duration::from_secs_f64(args.until.max(600.0)));
    s.report(&format!(
        "{size} bytes from node {from} to {} receivers",
        to.len()
    ));
    println!("  ({:.2}s real)", wall.elapsed().as_secs_f64());
    if !done {
        return Err("not every receiver completed".into());
    }
    for r in to {
        let o = s.outcomes[r].borrow();
        if o.hash != Some(s.data_hash) || o.written != s.data_len {
            return Err(format!("receiver {r} holds different bytes"));
        }
    }
    println!("every copy verified (BLAKE3 equal to the source)");
    Ok(())
}
