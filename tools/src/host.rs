//! Hosting one node in this process: the options every hosting subcommand shares (`node`,
//! `send`, `recv`), starting the engine with a RAP server and a control socket, logging what
//! changes while it runs, and the clean stop.

use crate::args::{load_topology, node_in, parse_node};
use crate::ctl::client::default_path;
use crate::ctl::handler::Handler;
use crate::ctl::server::Server;
use crate::shutdown::Shutdown;
use control::NodeAddr;
use control::drp::RoutingTable;
use control::gmp::MulticastTable;
use control::topology::Topology;
use dataplane::host::{EngineOptions, RunningNode};
use dataplane::node::RAP_SERVER_SID;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The engines a hosted node can run on, as clap lists them: the same names as
/// [`dataplane::host::Engine`], which starts them. Another engine is a variant here and there;
/// every subcommand, the demo's children and the tests take it by name.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// The seed's thread-per-protocol design on blocking UDP sockets (the baseline).
    Threaded,
    /// The product: the node on an io_uring event loop with batched (GSO/GRO) datagrams.
    #[default]
    Uring,
}

/// What every engine is started with, beyond the topology.
pub struct StartOptions {
    /// Seed of the garbler's random streams.
    pub seed: u64,
    /// Apply the topology's schedule of link events for this node.
    pub apply_schedule: bool,
    /// Dataplane workers (the uring engine; the threaded engine runs the seed's threads).
    pub cores: usize,
    /// Pin worker i to core `pin + i` (the uring engine); `None`: the scheduler places them.
    pub pin: Option<usize>,
}

impl Engine {
    /// The name `--engine` takes (and `ctl info` reports).
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_string())
    }

    /// Starts node `me` of `topology` on this engine, with a RAP server on
    /// [`RAP_SERVER_SID`] for what it will send.
    pub fn start(
        self,
        topology: &Topology,
        me: NodeAddr,
        options: &StartOptions,
    ) -> std::io::Result<Arc<dyn RunningNode>> {
        // dataplane's list of engines starts it; this enum only gives clap the names.
        let name = self.name();
        let engine = dataplane::host::Engine::from_name(&name).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("the dataplane has no engine {name}"),
            )
        })?;
        let options = EngineOptions {
            seed: options.seed,
            apply_schedule: options.apply_schedule,
            workers: options.cores,
            pin: options.pin,
            rap_servers: vec![RAP_SERVER_SID],
            ..EngineOptions::default()
        };
        engine.start(topology, me, options)
    }
}

/// Which node to run and how.
#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// Topology file (TOML; see docs/TOPOLOGY.md). Every node of a network reads the same one.
    #[arg(long, short = 't', value_name = "FILE")]
    pub topology: PathBuf,
    /// This node's address in the file.
    #[arg(long, short = 'a', value_name = "N", value_parser = parse_node)]
    pub addr: NodeAddr,
    /// The engine that runs the node.
    #[arg(long, value_enum, default_value_t = Engine::Uring)]
    pub engine: Engine,
    /// Control socket to listen on [default: $TMPDIR/burghers/node-<N>-<udp port>.sock].
    #[arg(long, value_name = "PATH")]
    pub ctl: Option<PathBuf>,
    /// Seed of the garbler's random streams [default: the node's address].
    #[arg(long, value_name = "SEED")]
    pub seed: Option<u64>,
    /// Apply the file's schedule of link_down/link_up events for this node's links, timed
    /// from the node's start.
    #[arg(long)]
    pub schedule: bool,
    /// Dataplane workers of the uring engine, each a thread with its own ring and socket on
    /// the node's port, the packets of one group's trees all on one of them.
    #[arg(long, value_name = "N", default_value_t = control::settings::uring::WORKERS,
          value_parser = crate::args::parse_cores)]
    pub cores: usize,
    /// Pin the uring engine's worker i to core CORE + i [default: not pinned, the scheduler
    /// places them]. For benchmarks on dedicated cores: nodes sharing a machine's cores are
    /// better left to the scheduler.
    #[arg(long, value_name = "CORE", value_parser = crate::args::parse_core)]
    pub pin: Option<usize>,
}

/// A node running in this process, with its control socket.
pub struct Host {
    pub node: Arc<dyn RunningNode>,
    pub handler: Arc<Handler>,
    pub shutdown: Shutdown,
    pub topology: Topology,
    ctl: Option<Server>,
    seen: Seen,
}

/// What the log last said about the node's tables.
struct Seen {
    routes: Arc<RoutingTable>,
    mcast: Arc<MulticastTable>,
    neighbours: Vec<NodeAddr>,
}

impl Host {
    pub fn start(args: &NodeArgs) -> Result<Host, String> {
        let shutdown = Shutdown::install()?;
        let topology = load_topology(&args.topology)?;
        let me = node_in(&topology, args.addr)?;
        let ctl_path = match &args.ctl {
            Some(p) => p.clone(),
            None => default_path(&topology, me)?,
        };
        let socket = topology.node(me).map(|n| n.socket);
        let options = StartOptions {
            seed: args.seed.unwrap_or(u64::from(me.get())),
            apply_schedule: args.schedule,
            cores: args.cores,
            pin: args.pin,
        };
        let node = args.engine.start(&topology, me, &options).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                " (is another node running on that port?)"
            } else {
                ""
            };
            format!(
                "cannot start node {me} on {}: {e}{hint}",
                socket.map_or("?".to_string(), |s| s.to_string())
            )
        })?;
        let handler = Arc::new(Handler::new(
            Arc::clone(&node),
            shutdown.clone(),
            topology.neighbours(me),
        ));
        // Dropping `node` on this error path stops it.
        let ctl = Server::start(&ctl_path, Arc::clone(&handler))?;
        tracing::info!(
            node = %me,
            engine = node.engine(),
            socket = %node.local_addr(),
            ctl = %ctl.path().display(),
            "node started"
        );
        let seen = Seen {
            routes: node.routes(),
            mcast: node.multicast(),
            neighbours: node.neighbours(),
        };
        Ok(Host {
            node,
            handler,
            shutdown,
            topology,
            ctl: Some(ctl),
            seen,
        })
    }

    pub fn addr(&self) -> NodeAddr {
        self.node.addr()
    }

    pub fn ctl_path(&self) -> Option<&Path> {
        self.ctl.as_ref().map(Server::path)
    }

    /// Waits up to `timeout` for a stop request, logging table changes meanwhile; true once
    /// a stop was requested.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self
                .shutdown
                .wait_timeout(left.min(Duration::from_millis(200)))
            {
                return true;
            }
            self.log_changes();
            if left.is_zero() {
                return false;
            }
        }
    }

    /// Logs routing, neighbour and tree changes since the last call (info: a summary; debug:
    /// the whole table).
    pub fn log_changes(&mut self) {
        let routes = self.node.routes();
        if !Arc::ptr_eq(&routes, &self.seen.routes) && *routes != *self.seen.routes {
            tracing::info!(destinations = routes.len(), "routes changed");
            tracing::debug!("\n{routes}");
        }
        self.seen.routes = routes;
        let neighbours = self.node.neighbours();
        if neighbours != self.seen.neighbours {
            let list: Vec<String> = neighbours.iter().map(|n| n.to_string()).collect();
            tracing::info!(neighbours = list.join(","), "neighbours changed");
            self.seen.neighbours = neighbours;
        }
        let mcast = self.node.multicast();
        if !Arc::ptr_eq(&mcast, &self.seen.mcast) && *mcast != *self.seen.mcast {
            tracing::info!(trees = mcast.entries().len(), "multicast trees changed");
            for e in mcast.entries() {
                tracing::debug!(
                    group = %e.group,
                    sender = %e.sender,
                    upstream = ?e.upstream.map(|u| u.get()),
                    downstream = ?e.downstream.iter().map(|d| d.get()).collect::<Vec<_>>(),
                    local = ?e.local_members,
                    "tree"
                );
            }
        }
        self.seen.mcast = mcast;
    }

    /// Stops the control socket, then the node (leaves its trees, sends terminates), and
    /// returns its last counters (`ctl stats` lines).
    pub fn stop(mut self) -> Vec<(String, u64)> {
        if let Some(ctl) = self.ctl.take() {
            ctl.stop();
        }
        let stats = self.node.stats();
        lock_clear(&self.handler);
        drop(self.handler);
        // Stops it even if a handle somewhere still holds it.
        self.node.stop();
        stats
    }
}

/// Drops the progress reporters (they may hold transfer handles that hold the node).
fn lock_clear(handler: &Handler) {
    handler
        .reporters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
}

#[cfg(test)]
mod tests {
    use super::Engine;
    use clap::ValueEnum;

    #[test]
    fn the_cli_names_exactly_the_dataplane_engines() {
        let cli: Vec<String> = Engine::value_variants().iter().map(|e| e.name()).collect();
        let dataplane: Vec<String> = dataplane::host::Engine::ALL
            .iter()
            .map(|e| e.name().to_string())
            .collect();
        assert_eq!(cli, dataplane);
    }
}
