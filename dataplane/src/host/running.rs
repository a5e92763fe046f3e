//! [`RunningNode`]: a node some engine runs in this process, as the `burghers` command and its
//! control socket use it.

use super::{RapRequestError, ReceiveHandle, ReceiveOptions, SendHandle, SendOptions, UnknownPeer};
use crate::node::StartError;
use crate::rmtp::{Sink, Source};
use control::drp::RoutingTable;
use control::gmp::{GmpError, MulticastTable};
use control::rap::ServiceEntry;
use control::topology::Faults;
use control::{GroupAddr, NodeAddr};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What a running node offers its host, whatever engine runs it: its tables, membership,
/// transfers, RAP, the garbler's faults, its counters, and its stop. Object safe, so that a
/// host holds an `Arc<dyn RunningNode>` and picks the engine once, where it starts the node.
pub trait RunningNode: Send + Sync {
    /// The engine's name, as `--engine` takes it (`threaded`).
    fn engine(&self) -> &'static str;

    fn addr(&self) -> NodeAddr;

    /// The socket address the node is bound to.
    fn local_addr(&self) -> SocketAddr;

    /// The routing table DRP last published.
    fn routes(&self) -> Arc<RoutingTable>;

    /// The multicast table GMP last published.
    fn multicast(&self) -> Arc<MulticastTable>;

    /// Live DRP neighbours, ascending.
    fn neighbours(&self) -> Vec<NodeAddr>;

    /// A local client (service id `sid`) joins the tree of (`group`, `sender`).
    fn subscribe(&self, group: GroupAddr, sender: NodeAddr, sid: u16) -> Result<(), GmpError>;

    fn unsubscribe(&self, group: GroupAddr, sender: NodeAddr, sid: u16) -> Result<(), GmpError>;

    /// Multicasts `source` to `group` and announces it as `name` on RAP server
    /// [`RAP_SERVER_SID`](crate::node::RAP_SERVER_SID); see [`SendHandle`].
    fn send(
        &self,
        group: GroupAddr,
        name: &str,
        source: Box<dyn Source + Send>,
        options: SendOptions,
    ) -> Result<SendHandle, StartError>;

    /// Joins (`group`, `sender`) as local client `sid` and writes the transfer to `sink`; see
    /// [`ReceiveHandle`].
    fn receive(
        &self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
        sink: Box<dyn Sink + Send>,
        options: ReceiveOptions,
    ) -> Result<ReceiveHandle, StartError>;

    /// Replaces the list RAP server `sid` of this node announces.
    fn set_rap_services(&self, sid: u16, services: Vec<ServiceEntry>) -> io::Result<()>;

    /// Asks RAP server `server_sid` on node `server` for its list, waiting at most `timeout`.
    fn request_services(
        &self,
        server: NodeAddr,
        server_sid: u16,
        timeout: Duration,
    ) -> Result<Vec<ServiceEntry>, RapRequestError>;

    /// The faults this node applies to what it sends to `neighbour` (`None`: no such peer).
    fn faults(&self, neighbour: NodeAddr) -> Option<Faults>;

    /// Replaces them, at once.
    fn set_faults(&self, neighbour: NodeAddr, faults: Faults) -> Result<(), UnknownPeer>;

    /// Every counter as `(name, value)`, in the engine's fixed order (`node.uptime_ms` first
    /// after `node.addr`; names as in docs/CLI.md, `ctl stats`). [`counter`] looks one up.
    fn stats(&self) -> Vec<(String, u64)>;

    /// Stops the node cleanly (leaves its trees, says goodbye to its neighbours) and waits
    /// for its threads. Idempotent; through an `Arc`, the node stops even while others hold it.
    fn stop(&self);
}

/// The counter `name` among `stats` lines.
pub fn counter(stats: &[(String, u64)], name: &str) -> Option<u64> {
    stats.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
}
