//! A node on the io_uring engine: how it starts, what other threads may ask of it while it
//! runs (each request a command the engine thread runs with the node in hand), and how it
//! stops. The surface follows `ThreadedNode`'s, so a caller can hold either.

use super::control::ControlThread;
use super::engine::{Engine, EngineConfig};
use super::shared::{Command, Peer, Shared};
use super::stats::{EngineStats, UringStats};
use super::steer;
use crate::garbler::schedule::link_changes;
use crate::garbler::{DelayLine, LinkGarbler, link_rng};
use crate::host::{
    RapRequestError, ReceiveHandle, ReceiveOptions, RunningNode, SendHandle, SendOptions,
    UnknownPeer,
};
use crate::node::{
    ControlPlane, DataPlane, RAP_SERVER_SID, RmtpOptions, StartError, service_entry,
};
use crate::rmtp::{Sink, Source};
use crate::sync::lock;
use crate::threaded::{Clock, SendError};
use control::drp::RoutingTable;
use control::gmp::{GmpError, MulticastTable};
use control::rap::ServiceEntry;
use control::topology::{Faults, Topology, build};
use control::{GroupAddr, NodeAddr};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most dataplane workers of one node.
pub const MAX_WORKERS: u16 = 64;

/// How an io_uring node runs, beyond what the topology file says.
#[derive(Clone, Debug)]
pub struct UringOptions {
    /// Seed of the garbler's per-link random streams.
    pub seed: u64,
    /// Dataplane workers, each a thread with its ring and its socket on the node's port.
    pub workers: usize,
    /// With several workers: the kernel spreads datagrams by its hash and a worker hands a
    /// datagram of another worker's tree over to it (`uring.hand_off`), instead of the
    /// steering program delivering each to its tree's worker.
    pub hand_off: bool,
    /// Pin worker `i` to core `core + i` (`core_affinity`); `None`: the scheduler decides.
    /// The control thread is never pinned.
    pub core: Option<usize>,
    /// Never sleep in the kernel: submit and look for completions in a loop (yielding the core
    /// after a turn that found nothing). For benchmarks on dedicated cores only; the default
    /// sleeps until a completion or a deadline.
    pub busy_poll: bool,
    /// Without `busy_poll`: after a turn that found completions, look for more this long
    /// before sleeping in the kernel (adaptive waiting; zero sleeps at once).
    pub spin_before_sleep: Duration,
    /// Let the kernel coalesce receives (`UDP_GRO`); a coalesced receive is split in place.
    pub gro: bool,
    /// Send runs of equal-size packets to one neighbour as one segmented send (`UDP_SEGMENT`).
    pub gso: bool,
    /// Receive buffers in the provided-buffer ring (a power of two). Each holds one receive:
    /// 64 KiB plus headers with GRO on, one MTU plus headers without. A buffer whose datagrams
    /// are passed on stays out of the ring until their sends completed; at most half of them
    /// do (beyond, datagrams are copied: `engine.rx_buffers_held_copies`).
    pub recv_buffers: u16,
    /// Submission queue entries of the ring.
    pub ring_entries: u32,
    /// Sends in flight at once (each may carry a segmented batch).
    pub send_slots: usize,
    /// Outgoing buffers of one MTU the node's local cores build their packets in (each shared
    /// by the sends to every next hop), allocated at start and free again after the last of
    /// those sends (more are allocated, and counted as `engine.send_buffers_allocated`, while
    /// every one is in flight). A relay holds a whole receiver window's burst in them (the
    /// default window, 2 MiB, is about 2,000 packets).
    pub send_buffers: usize,
    /// Kernel receive and send buffer asked for the socket, bytes (as the threaded engine).
    pub socket_buffer_bytes: usize,
    /// The RMTP tunables of the node (window, rate, caches): for every transfer of the node,
    /// as the sans-IO node takes them when it is built.
    pub rmtp: RmtpOptions,
    /// Apply the topology's schedule of `link_down`/`link_up` events for this node's links, at
    /// their times since the node started (as `ThreadedOptions::apply_schedule`).
    pub apply_schedule: bool,
}

impl Default for UringOptions {
    fn default() -> Self {
        use control::settings::uring as s;
        UringOptions {
            seed: 0,
            workers: s::WORKERS,
            hand_off: s::HAND_OFF,
            core: None,
            busy_poll: false,
            spin_before_sleep: s::SPIN_BEFORE_SLEEP,
            gro: s::GRO,
            gso: s::GSO,
            recv_buffers: s::RECV_BUFFERS,
            ring_entries: s::RING_ENTRIES,
            send_slots: s::SEND_SLOTS,
            send_buffers: s::SEND_BUFFERS,
            socket_buffer_bytes: control::settings::host::SOCKET_BUFFER,
            rmtp: RmtpOptions::default(),
            apply_schedule: false,
        }
    }
}

impl UringOptions {
    /// A bad option says what was expected.
    fn check(&self) -> io::Result<()> {
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > 32768 {
            return Err(invalid(format!(
                "recv_buffers must be a power of two from 1 to 32768, not {}",
                self.recv_buffers
            )));
        }
        if self.send_slots == 0 || self.ring_entries == 0 {
            return Err(invalid(format!(
                "send_slots and ring_entries must be at least 1, not {} and {}",
                self.send_slots, self.ring_entries
            )));
        }
        Ok(())
    }
}

/// A Burghers node on the io_uring engine (see the module documentation).
pub struct UringNode {
    shared: Arc<Shared>,
    /// The network's MTU, for the announcement a send builds on the caller's thread.
    mtu: usize,
    /// Taken by the first stop; behind a lock so that a node shared in an `Arc` can stop.
    threads: Mutex<Option<Threads>>,
}

struct Threads {
    control: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

/// Starts worker `worker` on `socket`; its ring and buffers are built on its own thread, and
/// any failure there is the one line the node's `start` returns.
fn spawn_worker(
    shared: &Arc<Shared>,
    worker: usize,
    rmtp: RmtpOptions,
    socket: UdpSocket,
    by_socket: HashMap<SocketAddr, NodeAddr>,
    config: EngineConfig,
) -> io::Result<JoinHandle<()>> {
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    let shared = Arc::clone(shared);
    // Every worker carries the node's name: the allocation test counts by it.
    let thread = std::thread::Builder::new()
        .name(format!("n{}-uring", shared.me))
        .spawn(move || {
            // Built here: a transfer's source and sink stay on the thread that runs them.
            let data = DataPlane::new(shared.me, config.mtu, shared.tables.clone(), rmtp);
            match Engine::new(
                data,
                Arc::clone(&shared),
                worker,
                socket,
                by_socket,
                &config,
            ) {
                Ok(engine) => {
                    let _ = ready_tx.send(Ok(()));
                    engine.run();
                }
                Err(e) => {
                    shared.workers[worker].close();
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(io::Error::other("an io_uring worker thread ended at start"))
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// How long a bind waits for the kernel to release the port of a killed io_uring process: its
/// ring is torn down after the process exits, holding the socket a moment longer (about a
/// quarter second here), so a node restarted at once would otherwise find its port in use.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(2);

fn bind_after_teardown(addr: SocketAddr) -> io::Result<UdpSocket> {
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match UdpSocket::bind(addr) {
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

fn stopping() -> StartError {
    StartError::Unavailable("the node is stopping".into())
}

impl UringNode {
    /// Binds the node's UDP socket at its address in the topology file and starts its engine
    /// thread. The file's link faults toward each neighbour are applied from the start. Fails
    /// with one line naming the cause and the fix where the kernel refuses io_uring.
    pub fn start(
        topology: &Topology,
        me: NodeAddr,
        options: UringOptions,
    ) -> io::Result<UringNode> {
        let spec = topology
            .node(me)
            .ok_or_else(|| invalid(format!("node {me} is not in the topology")))?;
        let socket = bind_after_teardown(spec.socket)?;
        Self::start_with_socket(topology, me, socket, options)
    }

    /// Whether the io_uring engine can run here: a node alone on a loopback socket is started
    /// and stopped at once. The error is the one line [`Self::start`] would give (the cause and
    /// the fix), for a caller that falls back to the threaded engine.
    pub fn probe() -> io::Result<()> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // The file's port is replaced by the socket's own.
        let mut alone = build::line(1, build::DEFAULT_BASE_PORT);
        let me = alone.nodes[0].addr;
        alone.nodes[0].socket = socket.local_addr()?;
        UringNode::start_with_socket(&alone, me, socket, UringOptions::default())?.stop();
        Ok(())
    }

    /// Starts the node on a socket the caller bound (tests bind every socket first, on port 0,
    /// and write the addresses into the topology, so no port is ever raced for).
    pub fn start_with_socket(
        topology: &Topology,
        me: NodeAddr,
        socket: UdpSocket,
        options: UringOptions,
    ) -> io::Result<UringNode> {
        if topology.node(me).is_none() {
            return Err(invalid(format!("node {me} is not in the topology")));
        }
        options.check()?;
        let mtu = topology.network.mtu;
        let mut peers = BTreeMap::new();
        let mut by_socket = HashMap::new();
        for spec in topology.nodes.iter().filter(|n| n.addr != me) {
            let faults = topology
                .link(me, spec.addr)
                .map(|l| l.faults)
                .unwrap_or_default();
            let link = LinkGarbler::new(faults, link_rng(options.seed, me, spec.addr), mtu);
            peers.insert(
                spec.addr,
                Peer {
                    socket: spec.socket,
                    link,
                },
            );
            by_socket.insert(spec.socket, spec.addr);
        }
        let delay = {
            let tx = socket.try_clone()?;
            DelayLine::spawn(
                format!("n{me}-garbler"),
                move |dest: &SocketAddr, packet| tx.send_to(packet, dest).is_ok(),
            )?
        };
        let workers = u16::try_from(options.workers)
            .ok()
            .filter(|w| (1..=MAX_WORKERS).contains(w))
            .ok_or_else(|| {
                invalid(format!(
                    "workers must be from 1 to {MAX_WORKERS}, not {}",
                    options.workers
                ))
            })?;
        let hand_off = options.hand_off && workers > 1;
        let sockets = steer::add_workers(socket, workers, !hand_off)?;
        let clock = Clock::start();
        let control_plane = ControlPlane::new(me, topology, clock.now());
        let tables = control_plane.shared_tables().clone();
        let shared = Arc::new(Shared::new(
            me,
            sockets[0].local_addr()?,
            clock,
            peers,
            delay,
            tables.clone(),
            sockets.len(),
            control::settings::uring::CONTROL_INBOX,
            hand_off.then_some(control::settings::uring::HAND_OFF_QUEUE),
            mtu,
        )?);
        let control_socket = sockets[0].try_clone()?;
        let control_shared = Arc::clone(&shared);
        let control = std::thread::Builder::new()
            .name(format!("n{me}-control"))
            .spawn(move || {
                ControlThread::new(control_plane, control_shared, control_socket, mtu).run()
            })?;
        let node = UringNode {
            shared: Arc::clone(&shared),
            mtu,
            threads: Mutex::new(Some(Threads {
                control,
                workers: Vec::new(),
            })),
        };
        let schedule = if options.apply_schedule {
            link_changes(me, &topology.schedule)
        } else {
            Vec::new()
        };
        for (worker, socket) in sockets.into_iter().enumerate() {
            let config = EngineConfig {
                ring_entries: options.ring_entries.max(8),
                recv_buffers: options.recv_buffers,
                gro: options.gro,
                gso: options.gso,
                busy_poll: options.busy_poll,
                spin_before_sleep: options.spin_before_sleep,
                send_slots: options.send_slots,
                send_buffers: options.send_buffers,
                socket_buffer_bytes: options.socket_buffer_bytes,
                core: options.core.map(|c| c + worker),
                mtu,
                // The garbler's directions are the node's, not a worker's: one worker applies
                // the schedule to them.
                schedule: if worker == 0 {
                    schedule.clone()
                } else {
                    Vec::new()
                },
            };
            let rmtp = options.rmtp.clone();
            let started = spawn_worker(&shared, worker, rmtp, socket, by_socket.clone(), config);
            match started {
                Ok(thread) => {
                    if let Some(t) = lock(&node.threads).as_mut() {
                        t.workers.push(thread);
                    }
                }
                Err(e) => {
                    node.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(node)
    }

    /// Runs `f` on worker `worker`'s thread and waits for its answer; `None` once it ended.
    fn call_worker<T: Send + 'static>(
        &self,
        worker: usize,
        f: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let sent = self
            .shared
            .workers
            .get(worker)?
            .command(Command::Call(Box::new(move |engine| {
                let _ = tx.send(f(engine));
            })));
        if !sent {
            return None;
        }
        rx.recv().ok()
    }

    /// Runs `f` on every worker's thread, in order; the answers of those still running.
    fn call_workers<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Engine) -> T + Send + Sync + Clone + 'static,
    ) -> Vec<T> {
        (0..self.shared.workers.len())
            .filter_map(|w| self.call_worker(w, f.clone()))
            .collect()
    }

    /// Runs `f` on the control thread and waits for its answer; `None` once it ended.
    fn call_control<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ControlThread) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let sent = self
            .shared
            .control
            .command(Command::Call(Box::new(move |control| {
                let _ = tx.send(f(control));
            })));
        if !sent {
            return None;
        }
        rx.recv().ok()
    }

    /// The worker that handles every packet of `group`'s trees (and so its local ends).
    fn worker_for(&self, group: GroupAddr) -> usize {
        let workers = u16::try_from(self.shared.workers.len()).unwrap_or(MAX_WORKERS);
        usize::from(control::wire::steer::worker_of_group(group, workers))
    }

    pub fn addr(&self) -> NodeAddr {
        self.shared.me
    }

    /// The socket address the node is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    pub fn clock(&self) -> Clock {
        self.shared.clock
    }

    // ---- inspection ----

    /// The routing table the control plane last published.
    pub fn routes(&self) -> Arc<RoutingTable> {
        Arc::clone(&self.shared.tables.load().routes)
    }

    pub fn next_hop(&self, dst: NodeAddr) -> Option<NodeAddr> {
        self.routes().next_hop(dst)
    }

    pub fn multicast(&self) -> Arc<MulticastTable> {
        Arc::clone(&self.shared.tables.load().multicast)
    }

    /// Live DRP neighbours, ascending.
    pub fn neighbours(&self) -> Vec<NodeAddr> {
        self.call_control(|c| c.control.drp().neighbours())
            .unwrap_or_default()
    }

    /// Every node in DRP's link-state database, this one included.
    pub fn known_nodes(&self) -> Vec<NodeAddr> {
        self.call_control(|c| c.control.drp().known_nodes())
            .unwrap_or_default()
    }

    // ---- the garbler ----

    /// Replaces the faults this node applies to what it sends to `neighbour`. A link's two
    /// directions are garbled by its two ends: set both to take a link down.
    pub fn set_faults(&self, neighbour: NodeAddr, faults: Faults) -> Result<(), SendError> {
        let peer = self
            .shared
            .peers
            .get(&neighbour)
            .ok_or(SendError::UnknownNeighbour(neighbour))?;
        peer.link.set_faults(faults);
        Ok(())
    }

    pub fn faults(&self, neighbour: NodeAddr) -> Option<Faults> {
        self.shared.peers.get(&neighbour).map(|p| p.link.faults())
    }

    // ---- GMP ----

    /// A local client (service id `sid`) joins the tree of (`group`, `sender`).
    pub fn subscribe(&self, group: GroupAddr, sender: NodeAddr, sid: u16) -> Result<(), GmpError> {
        self.call_control(move |c| {
            let now = c.now();
            let result = c.control.subscribe(now, group, sender, sid);
            c.sync(now);
            result
        })
        .unwrap_or(Err(GmpError::NotMember))
    }

    pub fn unsubscribe(
        &self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
    ) -> Result<(), GmpError> {
        self.call_control(move |c| {
            let now = c.now();
            let result = c.control.unsubscribe(now, group, sender, sid);
            c.sync(now);
            result
        })
        .unwrap_or(Err(GmpError::NotMember))
    }

    // ---- RAP ----

    /// Asks node `server`'s RAP server for its list, waiting at most `timeout`. This engine's
    /// node asks service id [`RAP_SERVER_SID`] (every node's server) only; another id times out.
    pub fn request_services(
        &self,
        server: NodeAddr,
        server_sid: u16,
        timeout: Duration,
    ) -> Result<Vec<ServiceEntry>, RapRequestError> {
        if server_sid != RAP_SERVER_SID {
            return Err(RapRequestError::TimedOut);
        }
        let (tx, rx) = mpsc::channel();
        let asked = self.call_control(move |c| {
            c.wait_for_services(server, tx);
            let now = c.now();
            c.control.request_services(now, server);
            c.sync(now);
        });
        if asked.is_none() {
            return Err(RapRequestError::Stopped);
        }
        rx.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => RapRequestError::TimedOut,
            mpsc::RecvTimeoutError::Disconnected => RapRequestError::Stopped,
        })
    }

    /// Replaces what the node's RAP server announces (to announce a transfer before its first
    /// byte). This engine's node runs one RAP server, service id [`RAP_SERVER_SID`].
    pub fn set_rap_services(&self, sid: u16, services: Vec<ServiceEntry>) -> io::Result<()> {
        if sid != RAP_SERVER_SID {
            return Err(invalid(format!(
                "no RAP server with service id {sid} (this engine runs only {RAP_SERVER_SID})"
            )));
        }
        self.call_control(move |c| c.control.set_services(services))
            .ok_or_else(|| io::Error::other("the node is stopping"))?
            .map_err(|e| invalid(e.to_string()))
    }

    // ---- RMTP transfers ----

    /// Multicasts `source` to `group` from this node and announces it as `name` on the node's
    /// RAP server. The transfer ends when the sender's core has ended (everyone has
    /// everything and its linger passed, or it failed), and its announcement goes with it; the
    /// group may then be sent to again. The source is read for its hash here, on the caller's
    /// thread, so that the engine never stalls on it. The sender runs on the worker that
    /// handles the group's trees; the control thread announces it.
    pub fn send(
        &self,
        group: GroupAddr,
        name: &str,
        source: Box<dyn Source + Send>,
        options: SendOptions,
    ) -> Result<SendHandle, StartError> {
        let entry = service_entry(
            self.shared.me,
            self.mtu,
            group,
            name,
            source.as_ref(),
            options.content_hash,
        );
        let worker = self.worker_for(group);
        let start = entry.clone();
        let handle = self
            .call_worker(worker, move |e| e.start_send(start, source, options))
            .unwrap_or_else(|| Err(stopping()))?;
        let announced = self
            .call_control(move |c| {
                // An earlier entry of the same tree (a pre-announcement, an ended transfer)
                // gives way to this one, as on the threaded engine.
                let mut services: Vec<ServiceEntry> = c
                    .control
                    .rap_server()
                    .services()
                    .iter()
                    .filter(|e| (e.group, e.sender) != (entry.group, entry.sender))
                    .cloned()
                    .collect();
                services.push(entry);
                c.control
                    .set_services(services)
                    .map_err(|e| StartError::Announce(format!("{e:?}")))
            })
            .unwrap_or_else(|| Err(stopping()));
        if let Err(e) = announced {
            self.call_worker(worker, move |e| e.cancel_send(group));
            return Err(e);
        }
        Ok(handle)
    }

    /// Joins (`group`, `sender`) as local client `sid` and writes the transfer to `sink`. The
    /// client leaves the group a moment after it completes, when it fails, is aborted, or the
    /// node stops.
    pub fn receive(
        &self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
        sink: Box<dyn Sink + Send>,
        options: ReceiveOptions,
    ) -> Result<ReceiveHandle, StartError> {
        let worker = self.worker_for(group);
        let handle = self
            .call_worker(worker, move |e| {
                e.start_receive(group, sender, sid, sink, options)
            })
            .unwrap_or_else(|| Err(stopping()))?;
        let joined = self
            .call_control(move |c| {
                let now = c.now();
                let joined = c.control.subscribe(now, group, sender, sid);
                c.sync(now);
                joined.map_err(StartError::Membership)
            })
            .unwrap_or_else(|| Err(stopping()));
        if let Err(e) = joined {
            self.call_worker(worker, move |e| e.cancel_receive(sid));
            return Err(e);
        }
        Ok(handle)
    }

    // ---- counters ----

    /// The workers' own counters as they last published them (once per loop turn), summed:
    /// read from atomics, without a call into a worker, so reading them costs the workers
    /// nothing (the allocation test watches a stream with them).
    pub fn engine_counters(&self) -> EngineStats {
        let mut all = EngineStats::default();
        for (i, w) in self.shared.workers.iter().enumerate() {
            all.add_worker(i, &w.counters.snapshot());
        }
        all.control_inbox_full = self.shared.control.inbox_full.load(Ordering::Relaxed);
        all
    }

    /// Each worker's own counters as it last published them, by worker index.
    pub fn worker_counters(&self) -> Vec<EngineStats> {
        self.shared
            .workers
            .iter()
            .map(|w| w.counters.snapshot())
            .collect()
    }

    /// Every counter of the node (`UringStats::lines` gives `name value` pairs): the control
    /// thread's and every worker's, summed.
    pub fn stats(&self) -> UringStats {
        let me = self.shared.me;
        let uptime = self.shared.clock.uptime();
        let garbler = self
            .shared
            .peers
            .iter()
            .map(|(&n, p)| (n, p.link.stats()))
            .filter(|(_, s)| *s != Default::default())
            .collect();
        let delay_line = self.shared.delay.stats();
        let control = self
            .call_control(|c| {
                (
                    c.stats,
                    c.control.drp().stats().clone(),
                    *c.control.gmp().stats(),
                    *c.control.rap_server().stats(),
                    *c.control.rap_client().stats(),
                    c.send_errors,
                )
            })
            .unwrap_or_default();
        let (mut node, drp, gmp, rap_server, rap_client, control_send_errors) = control;
        let mut relay = crate::rmtp::RelayStats::default();
        let (mut senders, mut receivers) = (Vec::new(), Vec::new());
        let workers = self.call_workers(|e| {
            (
                *e.data.stats(),
                e.data.transfers().relay_stats().clone(),
                e.handles.progress(),
            )
        });
        for (n, r, (s, rc)) in workers {
            node.add(&n);
            relay.add(&r);
            senders.extend(s);
            receivers.extend(rc);
        }
        let mut engine = self.engine_counters();
        engine.send_errors += control_send_errors;
        UringStats {
            addr: me,
            uptime,
            threads: self.shared.workers.len() + 1,
            engine,
            node,
            relay,
            drp,
            gmp,
            rap_server,
            rap_client,
            garbler,
            delay_line,
            senders,
            receivers,
        }
    }

    // ---- shutdown ----

    /// Stops the node: local transfers end (an incomplete receive stays partial), the node
    /// leaves every tree and sends DRP terminates to its neighbours, the engine thread is
    /// joined and the garbler's held-back copies are flushed.
    pub fn stop(self) {
        self.shutdown();
    }

    /// The workers first (their transfers end, their receivers' leaves go to the control
    /// thread), then the control thread (it leaves every tree and terminates its links).
    fn shutdown(&self) {
        let Some(threads) = lock(&self.threads).take() else {
            return;
        };
        for w in &self.shared.workers {
            w.command(Command::Stop);
        }
        // A thread that panicked has reported it; the rest still stops.
        for t in threads.workers {
            let _ = t.join();
        }
        self.shared.control.command(Command::Stop);
        let _ = threads.control.join();
        self.shared.delay.shutdown();
    }
}

impl RunningNode for UringNode {
    fn engine(&self) -> &'static str {
        "uring"
    }

    fn addr(&self) -> NodeAddr {
        UringNode::addr(self)
    }

    fn local_addr(&self) -> SocketAddr {
        UringNode::local_addr(self)
    }

    fn routes(&self) -> Arc<RoutingTable> {
        UringNode::routes(self)
    }

    fn multicast(&self) -> Arc<MulticastTable> {
        UringNode::multicast(self)
    }

    fn neighbours(&self) -> Vec<NodeAddr> {
        UringNode::neighbours(self)
    }

    fn subscribe(&self, group: GroupAddr, sender: NodeAddr, sid: u16) -> Result<(), GmpError> {
        UringNode::subscribe(self, group, sender, sid)
    }

    fn unsubscribe(&self, group: GroupAddr, sender: NodeAddr, sid: u16) -> Result<(), GmpError> {
        UringNode::unsubscribe(self, group, sender, sid)
    }

    fn send(
        &self,
        group: GroupAddr,
        name: &str,
        source: Box<dyn Source + Send>,
        options: SendOptions,
    ) -> Result<SendHandle, StartError> {
        UringNode::send(self, group, name, source, options)
    }

    fn receive(
        &self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
        sink: Box<dyn Sink + Send>,
        options: ReceiveOptions,
    ) -> Result<ReceiveHandle, StartError> {
        UringNode::receive(self, group, sender, sid, sink, options)
    }

    fn set_rap_services(&self, sid: u16, services: Vec<ServiceEntry>) -> io::Result<()> {
        UringNode::set_rap_services(self, sid, services)
    }

    fn request_services(
        &self,
        server: NodeAddr,
        server_sid: u16,
        timeout: Duration,
    ) -> Result<Vec<ServiceEntry>, RapRequestError> {
        UringNode::request_services(self, server, server_sid, timeout)
    }

    fn faults(&self, neighbour: NodeAddr) -> Option<Faults> {
        UringNode::faults(self, neighbour)
    }

    fn set_faults(&self, neighbour: NodeAddr, faults: Faults) -> Result<(), UnknownPeer> {
        UringNode::set_faults(self, neighbour, faults).map_err(|_| UnknownPeer(neighbour))
    }

    fn stats(&self) -> Vec<(String, u64)> {
        UringNode::stats(self).lines()
    }

    fn stop(&self) {
        self.shutdown();
    }
}

impl Drop for UringNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for UringNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringNode")
            .field("addr", &self.shared.me)
            .field("local_addr", &self.shared.local_addr)
            .finish()
    }
}
