//! `burghers ctl`: inspect and change a running node through its control socket.
//!
//! Every process that hosts a node (`burghers node`, `send`, `recv`) listens on a Unix socket
//! (see [`client::default_path`]); this command sends it one request line and prints the reply.

pub use burghers_lab::ctl_client as client;
pub mod handler;
pub mod server;

use crate::args::{
    load_topology, node_in, parse_group, parse_millis, parse_node, parse_probability,
};
use control::{GroupAddr, NodeAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How long `ctl` waits for a reply (the node answers at once; `services` waits on the network).
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// How to find a node's control socket: its topology file and address, or the socket's path.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// Topology file the node runs from: with --node, finds its socket by its UDP port.
    #[arg(long, short = 't', global = true, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// The node to talk to (without --topology: the one socket of that node in the default
    /// directory).
    #[arg(long, short = 'n', global = true, value_name = "N", value_parser = parse_node)]
    pub node: Option<NodeAddr>,
    /// The control socket itself, for a node started with --ctl PATH.
    #[arg(long, global = true, value_name = "PATH")]
    pub ctl: Option<PathBuf>,
}

impl Target {
    /// The socket of the target node.
    pub fn path(&self) -> Result<PathBuf, String> {
        if let Some(p) = &self.ctl {
            return Ok(p.clone());
        }
        let node = self
            .node
            .ok_or("say which node: --node N (with --topology FILE), or --ctl PATH")?;
        self.path_of(node)
    }

    /// The default socket of `node`, found through the topology file if one was given.
    pub fn path_of(&self, node: NodeAddr) -> Result<PathBuf, String> {
        match &self.topology {
            Some(file) => {
                let topology = load_topology(file)?;
                node_in(&topology, node)?;
                client::default_path(&topology, node)
            }
            None => client::find_default(node),
        }
    }
}

#[derive(clap::Args)]
#[command(after_help = "\
Talks to a node hosted by `burghers node`, `send` or `recv` on this machine. The node's
control socket is found from --topology FILE and --node N (it is
$TMPDIR/burghers/node-<N>-<udp port>.sock), from --node N alone when only one such socket
exists, or given with --ctl PATH.

Examples:
  burghers ctl --topology net.toml --node 3 routes
  burghers ctl --node 3 stats dnp.rx_error
  burghers ctl --node 1 garble --to 2 --loss 0.05 --both
  burghers ctl --node 1 garble --to 2 --down --both
  burghers ctl --ctl /run/n1.sock groups")]
pub struct CtlArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(clap::Subcommand)]
pub enum CtlCommand {
    /// The node's address, socket, process id, uptime, neighbours, routes and trees.
    #[command(after_help = "Example:\n  burghers ctl --topology net.toml --node 2 info")]
    Info,
    /// The routing table: every destination, its next hop and distance in hops.
    #[command(after_help = "Example:\n  burghers ctl --topology net.toml --node 2 routes")]
    Routes,
    /// The live DRP neighbours, one per line.
    #[command(after_help = "Example:\n  burghers ctl --topology net.toml --node 2 neighbours")]
    Neighbours,
    /// Multicast tree membership: per (group, sender), upstream, downstream and local members.
    #[command(after_help = "Example:\n  burghers ctl --topology net.toml --node 2 groups")]
    Groups,
    /// Every counter of the node as `name value` lines (optionally those starting with PREFIX).
    #[command(after_help = "\
Examples:
  burghers ctl --topology net.toml --node 2 stats
  burghers ctl --topology net.toml --node 2 stats dnp.rx_error
  burghers ctl --topology net.toml --node 2 stats garbler.")]
    Stats {
        /// Only the counters whose name starts with this.
        prefix: Option<String>,
    },
    /// Change the faults this node applies to what it sends to a neighbour.
    #[command(after_help = "\
Settings not named keep their value (--clear first resets them all). A link has two
directions, each garbled by its sender: --both applies the same settings at the neighbour
too (its control socket is found the same way as this node's). Without settings it prints
the ones in force.

Examples:
  burghers ctl --topology net.toml --node 1 garble --to 2 --loss 0.05 --corrupt 0.01
  burghers ctl --topology net.toml --node 1 garble --to 2 --down --both
  burghers ctl --topology net.toml --node 1 garble --to 2 --up --both
  burghers ctl --topology net.toml --node 1 garble --to 2 --clear --both")]
    Garble(GarbleArgs),
    /// A local client joins the multicast tree of (group, sender).
    #[command(after_help = "\
Groups are given by index (1 is group 0xF001), as g1, or as 0xF001.

Example:
  burghers ctl --topology net.toml --node 4 join --group 1 --sender 1")]
    Join(MemberArgs),
    /// A local client leaves the multicast tree of (group, sender).
    #[command(
        after_help = "Example:\n  burghers ctl --topology net.toml --node 4 leave --group 1 --sender 1"
    )]
    Leave(MemberArgs),
    /// What the senders and receivers hosted with this node have done so far.
    #[command(after_help = "Example:\n  burghers ctl --topology net.toml --node 4 transfers")]
    Transfers,
    /// Stop the node cleanly, as SIGTERM does.
    #[command(after_help = "Example:\n  burghers ctl --topology net.toml --node 2 stop")]
    Stop,
}

#[derive(clap::Args)]
pub struct GarbleArgs {
    /// The neighbour whose direction to garble.
    #[arg(long, value_name = "N", value_parser = parse_node)]
    pub to: NodeAddr,
    /// Probability a packet is dropped.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub loss: Option<f64>,
    /// Probability a packet has bits flipped (caught by the DNP checksum).
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub corrupt: Option<f64>,
    /// Probability a packet is sent twice.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub duplicate: Option<f64>,
    /// Probability a packet is held back behind later ones.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub reorder: Option<f64>,
    /// One-way delay added to every packet.
    #[arg(long = "delay-ms", value_name = "MS", value_parser = parse_millis)]
    pub delay: Option<Duration>,
    /// Extra random delay, uniform in [0, MS].
    #[arg(long = "jitter-ms", value_name = "MS", value_parser = parse_millis)]
    pub jitter: Option<Duration>,
    /// Take the direction down: nothing is sent on it.
    #[arg(long, conflicts_with = "up")]
    pub down: bool,
    /// Bring the direction back up.
    #[arg(long)]
    pub up: bool,
    /// Reset every setting to none before applying the others.
    #[arg(long)]
    pub clear: bool,
    /// Apply the same settings at the neighbour, toward this node.
    #[arg(long)]
    pub both: bool,
}

impl GarbleArgs {
    /// The request's settings, `key=value` words after the neighbour.
    fn settings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.clear {
            out.push("clear".to_string());
        }
        let probabilities = [
            ("loss", self.loss),
            ("corrupt", self.corrupt),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ];
        for (key, value) in probabilities {
            if let Some(p) = value {
                out.push(format!("{key}={p}"));
            }
        }
        for (key, value) in [("delay_ms", self.delay), ("jitter_ms", self.jitter)] {
            if let Some(d) = value {
                out.push(format!("{key}={}", d.as_secs_f64() * 1000.0));
            }
        }
        if self.down {
            out.push("down=true".into());
        }
        if self.up {
            out.push("down=false".into());
        }
        out
    }
}

#[derive(clap::Args)]
pub struct MemberArgs {
    /// The group: index (1 = 0xF001), g1 or 0xF001.
    #[arg(long, short, value_name = "G", value_parser = parse_group)]
    pub group: GroupAddr,
    /// The sender whose tree to join or leave.
    #[arg(long, short, value_name = "N", value_parser = parse_node)]
    pub sender: NodeAddr,
    /// The local client's service id.
    #[arg(long, default_value_t = 100)]
    pub sid: u16,
}

pub fn run(args: CtlArgs) -> Result<(), String> {
    let path = args.target.path()?;
    let line = match &args.command {
        CtlCommand::Info => "info".to_string(),
        CtlCommand::Routes => "routes".to_string(),
        CtlCommand::Neighbours => "neighbours".to_string(),
        CtlCommand::Groups => "groups".to_string(),
        CtlCommand::Stats { prefix } => match prefix {
            Some(p) if p.split_whitespace().count() == 1 => format!("stats {p}"),
            Some(p) => return Err(format!("a counter prefix has no spaces, got {p:?}")),
            None => "stats".to_string(),
        },
        CtlCommand::Garble(g) => {
            let mut words = vec!["garble".to_string(), g.to.to_string()];
            words.extend(g.settings());
            words.join(" ")
        }
        CtlCommand::Join(m) | CtlCommand::Leave(m) => format!(
            "{} {} {} {}",
            if matches!(args.command, CtlCommand::Join(_)) {
                "join"
            } else {
                "leave"
            },
            m.group,
            m.sender,
            m.sid
        ),
        CtlCommand::Transfers => "transfers".to_string(),
        CtlCommand::Stop => "stop".to_string(),
    };
    // With --both, find the neighbour's socket before changing anything.
    let reverse = match &args.command {
        CtlCommand::Garble(g) if g.both => {
            let me = match args.target.node {
                Some(n) => n,
                None => node_of(&path)?,
            };
            let peer = args
                .target
                .path_of(g.to)
                .map_err(|e| format!("--both: cannot find node {}'s control socket: {e}", g.to))?;
            let mut words = vec!["garble".to_string(), me.to_string()];
            words.extend(g.settings());
            Some((peer, words.join(" ")))
        }
        _ => None,
    };
    print!("{}", client::request(&path, &line, REPLY_TIMEOUT)?);
    if let Some((peer, line)) = reverse {
        print!("{}", client::request(&peer, &line, REPLY_TIMEOUT)?);
    }
    Ok(())
}

/// The address of the node behind a control socket, from its `info`.
fn node_of(path: &std::path::Path) -> Result<NodeAddr, String> {
    let info = client::request(path, "info", REPLY_TIMEOUT)?;
    info.lines()
        .find_map(|l| l.strip_prefix("node "))
        .ok_or_else(|| format!("{}: no node address in its info", path.display()))
        .and_then(parse_node)
}
