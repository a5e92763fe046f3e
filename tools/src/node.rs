//! `burghers node`: run one node until SIGINT, SIGTERM or `ctl stop`.

use crate::host::{Host, NodeArgs};
use dataplane::host::counter;
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "\
Binds the node's UDP socket at its address in the topology file, runs DRP, GMP and RAP with
the other nodes, and forwards their traffic. It listens for `burghers ctl` on a control socket
and answers `burghers services` with what it announces. SIGINT (Ctrl-C) or SIGTERM stops it
cleanly: it leaves its multicast trees, sends DRP terminates to its neighbours so they reroute
at once, and exits 0.

Examples:
  burghers node --topology topologies/tree7.toml --addr 1
  burghers node -t net.toml -a 3 -v --ctl /tmp/n3.sock
  burghers node -t net.toml -a 3 --schedule        # apply the file's link events")]
pub struct NodeCmd {
    #[command(flatten)]
    pub node: NodeArgs,
}

pub fn run(args: NodeCmd) -> Result<(), String> {
    let mut host = Host::start(&args.node)?;
    println!(
        "node {} of {} up on {} (engine {}), control socket {}",
        host.addr(),
        host.topology.nodes.len(),
        host.node.local_addr(),
        host.node.engine(),
        host.ctl_path()
            .map_or("-".into(), |p| p.display().to_string())
    );
    while !host.wait(Duration::from_secs(3600)) {}
    tracing::info!(
        reason = host.shutdown.reason().unwrap_or("?"),
        "stopping the node"
    );
    let addr = host.addr();
    let stats = host.stop();
    let count = |name: &str| counter(&stats, name).unwrap_or(0);
    let malformed: u64 = stats
        .iter()
        .filter(|(name, _)| name.starts_with("dnp.rx_error_"))
        .map(|&(_, v)| v)
        .sum();
    println!(
        "node {addr} stopped after {:.1}s: {} datagrams in, {} out, {malformed} dropped as malformed",
        count("node.uptime_ms") as f64 / 1000.0,
        count("dnp.rx_datagrams"),
        count("dnp.tx_packets"),
    );
    Ok(())
}
