//! `burghers services`: what a node announces over RAP, asked through a running node.

use crate::args::{parse_millis, parse_node};
use crate::ctl::{Target, client};
use control::NodeAddr;
use dataplane::node::RAP_SERVER_SID;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "\
A running node (node N itself unless --via names another) sends a RAP request to node N's
server and prints the answer: one line per announced transfer (group, sender, size, segment
size, BLAKE3, name). The request travels through the network like any RAP packet, retried
while a route exists, until --wait-ms passes.

Examples:
  burghers services --topology net.toml --node 1
  burghers services --topology net.toml --node 1 --via 4
  burghers services --node 1 --ctl /tmp/n4.sock")]
pub struct ServicesArgs {
    /// The node whose announcements to list.
    #[arg(long, short = 'n', value_name = "N", value_parser = parse_node)]
    pub node: NodeAddr,
    /// Ask through this running node instead of node N itself.
    #[arg(long, value_name = "M", value_parser = parse_node)]
    pub via: Option<NodeAddr>,
    /// Topology file the nodes run from (finds the asking node's control socket).
    #[arg(long, short = 't', value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// The asking node's control socket, if it was started with --ctl PATH.
    #[arg(long, value_name = "PATH")]
    pub ctl: Option<PathBuf>,
    /// The RAP server's service id on node N.
    #[arg(long, default_value_t = RAP_SERVER_SID)]
    pub sid: u16,
    /// How long to wait for the answer.
    #[arg(long = "wait-ms", value_name = "MS", default_value = "5000", value_parser = parse_millis)]
    pub wait: Duration,
}

pub fn run(args: ServicesArgs) -> Result<(), String> {
    let target = Target {
        topology: args.topology.clone(),
        node: Some(args.via.unwrap_or(args.node)),
        ctl: args.ctl.clone(),
    };
    let path = target.path()?;
    let line = format!(
        "services {} {} {}",
        args.node,
        args.sid,
        args.wait.as_millis()
    );
    let reply = client::request(&path, &line, args.wait + Duration::from_secs(5))?;
    print!("{reply}");
    Ok(())
}
