//! RMTP on the threaded engine (seed §6): the middle-layer thread every node runs (§6.1), a
//! thread per local RMTP server (§6.3) and per local RMTP client (§6.2), and the buffers between
//! them. The protocol is the sans-IO cores of [`crate::rmtp`], wired as
//! `crate::node::Transfers` wires them for the simulator, split over threads:
//!
//! ```text
//!   DNP receiver ──► [rmtp] ──► middle-layer thread: RmtpRelay (Mutex) ─► sendto per neighbour
//!                                  ▲  │ same Arc packet to each local client of the tree
//!   client threads ─► [rmtp.local] ┘  ├──► [rmtp.client.<sid>] ──► client thread ──► Sink
//!   (NACK, MAB)                       └──► [rmtp.server.<group>] ──► server thread (NACK, MAB)
//!   server thread ── DATA/SPM/RETRANSMIT: relay.handle_local under the mutex ─► sendto
//! ```

mod client;
mod handle;
mod middle;
mod server;

pub use handle::{
    ReceiveHandle, ReceiveOptions, ReceiveProgress, ReceiveState, SendHandle, SendOptions,
    SendProgress,
};
pub use middle::MiddleStats;
pub(crate) use middle::thread as middle_thread;

use super::buffer::{BufferHandle, ImpatientBuffer};
use super::gmp;
use super::node::Node;
use super::packet::{PacketBuf, Received};
use crate::node::{StartError, service_entry};
use crate::rmtp::{
    ReceiverConfig, ReceiverStats, RelayConfig, RelayStats, RmtpReceiver, RmtpRelay, RmtpSender,
    SenderConfig, SenderStats, Sink, Source,
};
use crate::sync::{lock, read, write};
use control::{GroupAddr, NodeAddr};
pub(crate) use handle::{ReceiveShared, SendShared};
use middle::MiddleCounters;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// A NACK or MAB a local client built, on its way to the middle layer.
pub(crate) struct Upward {
    pub sid: u16,
    pub packet: PacketBuf,
}

/// One local RMTP server (a transfer this node multicasts).
pub(crate) struct ServerSlot {
    pub group: GroupAddr,
    /// NACKs and MABs from the middle layer.
    pub inbox: Arc<ImpatientBuffer<Received>>,
    pub shared: Arc<SendShared>,
}

/// One local RMTP client.
pub(crate) struct ClientSlot {
    pub sid: u16,
    pub group: GroupAddr,
    pub sender: NodeAddr,
    /// Data, SPMs, repairs and NCFs of its tree, from the middle layer (or the local server).
    pub inbox: Arc<ImpatientBuffer<Received>>,
    pub shared: Arc<ReceiveShared>,
}

/// The RMTP state a node's threads share.
pub(crate) struct Layer {
    /// DNP's RMTP buffer: every RMTP packet from the network, consumed by the middle layer.
    pub inbox: Arc<ImpatientBuffer<Received>>,
    /// NACKs and MABs from local clients; pushing one kicks `inbox`.
    pub local: Arc<ImpatientBuffer<Upward>>,
    /// The relay (the middle layer's state): the middle-layer thread and the server threads
    /// (for their own packets) take it per packet.
    pub relay: Mutex<RmtpRelay>,
    pub servers: RwLock<BTreeMap<GroupAddr, Arc<ServerSlot>>>,
    pub clients: RwLock<BTreeMap<u16, Arc<ClientSlot>>>,
    pub counters: MiddleCounters,
}

impl Layer {
    pub fn new(relay: RelayConfig, inbox: Arc<ImpatientBuffer<Received>>, cap: usize) -> Self {
        Layer {
            inbox,
            local: Arc::new(ImpatientBuffer::new("rmtp.local", cap)),
            relay: Mutex::new(RmtpRelay::new(relay)),
            servers: RwLock::new(BTreeMap::new()),
            clients: RwLock::new(BTreeMap::new()),
            counters: MiddleCounters::default(),
        }
    }

    /// The buffers of the RMTP threads (DNP's `rmtp` buffer is reported by the node).
    pub fn buffers(&self) -> Vec<Arc<dyn BufferHandle>> {
        let mut all: Vec<Arc<dyn BufferHandle>> = vec![Arc::clone(&self.local) as _];
        for s in read(&self.servers).values() {
            all.push(Arc::clone(&s.inbox) as _);
        }
        for c in read(&self.clients).values() {
            all.push(Arc::clone(&c.inbox) as _);
        }
        all
    }

    /// One lock at a time: the maps are copied out before each thread's status is read.
    pub fn stats(&self) -> RmtpStats {
        let servers: Vec<Arc<ServerSlot>> = read(&self.servers).values().cloned().collect();
        let servers = servers
            .iter()
            .map(|s| {
                let st = lock(&s.shared.status);
                (s.group, st.progress.clone(), st.stats.clone())
            })
            .collect();
        let clients: Vec<Arc<ClientSlot>> = read(&self.clients).values().cloned().collect();
        let clients = clients
            .iter()
            .map(|c| {
                let st = lock(&c.shared.status);
                (c.sid, st.progress.clone(), st.stats.clone())
            })
            .collect();
        let relay = lock(&self.relay).stats().clone();
        RmtpStats {
            middle: self.counters.snapshot(),
            relay,
            servers,
            clients,
        }
    }
}

/// Counters of a node's RMTP threads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RmtpStats {
    pub middle: MiddleStats,
    pub relay: RelayStats,
    /// Every local server this node ran (the last one per group), with its core's counters.
    pub servers: Vec<(GroupAddr, SendProgress, SenderStats)>,
    /// Every local client (the last one per id).
    pub clients: Vec<(u16, ReceiveProgress, ReceiverStats)>,
}

fn unavailable(node: &Node) -> StartError {
    if node.is_stopping() {
        StartError::Unavailable("the node is stopping".into())
    } else {
        StartError::Unavailable("the node runs no RMTP middle layer".into())
    }
}

/// Starts a server thread multicasting `source` to `group`, announced as `name` on the node's
/// RAP server `crate::node::RAP_SERVER_SID` (created if need be).
pub(crate) fn send(
    node: &Arc<Node>,
    group: GroupAddr,
    name: &str,
    source: Box<dyn Source + Send>,
    options: SendOptions,
) -> Result<SendHandle, StartError> {
    let Some(layer) = node.rmtp.as_ref().filter(|_| !node.is_stopping()) else {
        return Err(unavailable(node));
    };
    if read(&layer.servers)
        .get(&group)
        .is_some_and(|s| s.shared.is_running())
    {
        return Err(StartError::Busy);
    }
    let mtu = node.dnp.mtu();
    // Read the whole source for its hash before taking any lock: RAP announces it up front.
    let entry = service_entry(
        node.me,
        mtu,
        group,
        name,
        source.as_ref(),
        options.content_hash,
    );
    let mut config = SenderConfig::new(node.me, group, mtu);
    config.content_hash = Some(entry.hash);
    options.apply(&mut config);
    let core = RmtpSender::new(config, source, node.clock.now());

    let mut servers = write(&layer.servers);
    if node.is_stopping() {
        return Err(unavailable(node));
    }
    if servers.get(&group).is_some_and(|s| s.shared.is_running()) {
        return Err(StartError::Busy);
    }
    node.announce(entry.clone())
        .map_err(|e| StartError::Announce(e.to_string()))?;
    let slot = Arc::new(ServerSlot {
        group,
        inbox: Arc::new(ImpatientBuffer::new(
            format!("rmtp.server.{group}"),
            node.capacity(),
        )),
        shared: SendShared::new(entry.clone()),
    });
    servers.insert(group, Arc::clone(&slot));
    let thread_slot = Arc::clone(&slot);
    let spawned = node.spawn(&format!("rmtp-server-{group}"), move |node| {
        server::thread(node, &thread_slot, core)
    });
    if let Err(e) = spawned {
        servers.remove(&group);
        node.withdraw(&entry);
        return Err(StartError::Unavailable(format!(
            "cannot start a thread: {e}"
        )));
    }
    Ok(SendHandle {
        shared: Arc::clone(&slot.shared),
    })
}

/// The most a receiver's window may be here: a sender bursts whatever the window opens, and
/// every packet of a burst waits in this node's impatient buffers (`capacity` packets each,
/// the oldest dropped when full) before its client takes it. A window of more segments than a
/// buffer holds loses the excess at once and waits for repairs: larger was slower. The seed's
/// buffers of 100 and a thread hop per packet stay; the window is fitted to them.
pub(crate) fn window_the_buffers_hold(mtu: usize, capacity: usize) -> u64 {
    let segment = control::wire::rmtp::max_payload(mtu).max(1) as u64;
    segment.saturating_mul(capacity.max(1) as u64)
}

/// Joins (`group`, `sender`) as local client `sid` and starts its client thread.
pub(crate) fn receive(
    node: &Arc<Node>,
    group: GroupAddr,
    sender: NodeAddr,
    sid: u16,
    sink: Box<dyn Sink + Send>,
    options: ReceiveOptions,
) -> Result<ReceiveHandle, StartError> {
    let Some(layer) = node.rmtp.as_ref() else {
        return Err(unavailable(node));
    };
    let mtu = node.dnp.mtu();
    let mut config = ReceiverConfig::new(node.me, group, sender, mtu);
    options.apply(&mut config, window_the_buffers_hold(mtu, node.capacity()));
    crate::rmtp::fit_receiver_to_relay(&mut config, lock(&layer.relay).config());
    let inbox = Arc::new(ImpatientBuffer::new(
        format!("rmtp.client.{sid}"),
        node.capacity(),
    ));
    let slot = Arc::new(ClientSlot {
        sid,
        group,
        sender,
        shared: ReceiveShared::new(kick_on_abort(&inbox)),
        inbox,
    });
    // In the map before the join goes out, so that the first packets find their client. The
    // join is a `sendto`, made after the map's lock is released: the middle layer reads the
    // map for every packet it hands to a client.
    let previous = {
        let mut clients = write(&layer.clients);
        if node.is_stopping() {
            return Err(unavailable(node));
        }
        if clients.get(&sid).is_some_and(|c| c.shared.is_running()) {
            return Err(StartError::Busy);
        }
        clients.insert(sid, Arc::clone(&slot))
    };
    if let Err(e) = gmp::subscribe(node, group, sender, sid, true) {
        restore(&mut write(&layer.clients), sid, previous);
        return Err(StartError::Membership(e));
    }
    let core = RmtpReceiver::new(config, sink, node.clock.now());
    let thread_slot = Arc::clone(&slot);
    // The map's write lock orders the thread's start against shutdown, which sets `stopping`,
    // then reads the map (to close the buffers), then joins the threads: a thread started here
    // is among those joined.
    let mut clients = write(&layer.clients);
    let spawned = if node.is_stopping() {
        Err(unavailable(node))
    } else {
        node.spawn(&format!("rmtp-client-{sid}"), move |node| {
            client::thread(node, &thread_slot, core, options)
        })
        .map_err(|e| StartError::Unavailable(format!("cannot start a thread: {e}")))
    };
    if let Err(e) = spawned {
        restore(&mut clients, sid, previous);
        drop(clients);
        let _ = gmp::subscribe(node, group, sender, sid, false);
        return Err(e);
    }
    Ok(ReceiveHandle {
        shared: Arc::clone(&slot.shared),
    })
}

/// An abort wakes the client thread through its inbox (it looks at the flag after every pop).
fn kick_on_abort(inbox: &Arc<ImpatientBuffer<Received>>) -> crate::host::Kick {
    let inbox = Arc::clone(inbox);
    Box::new(move || inbox.kick())
}

fn restore(
    clients: &mut BTreeMap<u16, Arc<ClientSlot>>,
    sid: u16,
    previous: Option<Arc<ClientSlot>>,
) {
    match previous {
        Some(p) => clients.insert(sid, p),
        None => clients.remove(&sid),
    };
}
