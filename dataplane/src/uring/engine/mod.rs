//! A dataplane worker thread: one io_uring, one socket, one [`DataPlane`]. Each turn of its
//! loop reaps the ring's completions (a multishot receive into the provided buffers, sends,
//! the command eventfd), feeds the data plane (control-plane packets go on to the control
//! thread), runs its timers, sends what it produced, and sleeps in `io_uring_enter` until the
//! next completion or its next deadline.
//!
//! Nothing here decides anything about a protocol: bytes in, bytes out, time.

use super::bufring::BufRing;
use super::holds::ReceiveHolds;
use super::send::{Holder, MAX_SEGMENTS, Outgoing, SendSlots};
use super::shared::{Command, Shared, WorkerLink};
use super::socket::{self, RECV_CONTROL_LEN};
use super::stats::EngineStats;
use super::transfers::Handles;
use super::writes::FileWrites;
use crate::garbler::GarbledCopy;
use crate::garbler::schedule::LinkChange;
use crate::host::{ReceiveHandle, ReceiveOptions, SendHandle, SendOptions};
use crate::node::{DataPlane, Payload, Received, Span, StartError};
use crate::rmtp::{Sink, Source};
use control::rap::ServiceEntry;
use control::wire::steer;
use control::{GroupAddr, Instant, NodeAddr};
use io_uring::types::{Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::mem::zeroed;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

mod ring;
mod sending;
mod waiting;

/// Completion tags: the top three bits say what finished; a send or a file write carries its
/// slot below them.
const TAG_SHIFT: u32 = 61;
const TAG_RECV: u64 = 1 << TAG_SHIFT;
const TAG_EVENT: u64 = 2 << TAG_SHIFT;
const TAG_SEND: u64 = 3 << TAG_SHIFT;
const TAG_FILE: u64 = 4 << TAG_SHIFT;
const SLOT_MASK: u64 = (1 << TAG_SHIFT) - 1;
/// Cancellations: their own completions need nothing.
const TAG_CANCEL: u64 = 0;

/// The completion tag of file op `slot` (`writes.rs`).
fn file_tag(slot: usize) -> u64 {
    TAG_FILE | slot as u64
}

/// The provided buffer group of the receive.
const RECV_GROUP: u16 = 0;
/// Room in a receive buffer besides the payload: io_uring's header, the address, the control
/// messages.
const RECV_OVERHEAD: usize = 16 + size_of::<libc::sockaddr_storage>() + RECV_CONTROL_LEN;
/// The largest coalesced receive (one UDP payload of up to 64 KiB).
const GRO_PAYLOAD: usize = 65_535;
/// How long stopping waits for the last packets to leave.
const FINAL_FLUSH: Duration = Duration::from_secs(1);
// STREAMING: more than a lone packet's receive and the send of its forward, so a packet at a
// time never waits for company. BATCH_WAIT_LIMIT: far below a transfer's feedback loop.
use control::settings::uring::{BATCH_WAIT_LIMIT, STREAMING, WAIT_BATCH};

/// A ring for one thread: single issuer, with completion work deferred to the moments the
/// engine asks for completions (Linux 6.1), the flag telling when such work waits (so a
/// non-waiting submit still collects it); each feature dropped where the kernel lacks it.
fn new_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .build(entries)
        .or_else(|_| IoUring::builder().setup_single_issuer().build(entries))
        .or_else(|_| IoUring::new(entries))
        .map_err(|e| socket::unavailable("creating a ring", &e))
}

/// The node's name for a datagram at `offset` in receive buffer `bid`.
fn input_token(bid: u16, offset: usize) -> u64 {
    (u64::from(bid) << 32) | (offset as u64 & u64::from(u32::MAX))
}

fn split_input_token(token: u64) -> (u16, usize) {
    ((token >> 32) as u16, (token & u64::from(u32::MAX)) as usize)
}

/// The receive buffer and the bytes of `span` of the datagram the node named `token`; `None`
/// beyond the buffer.
fn input_bytes(bufs: &BufRing, token: u64, span: Span) -> Option<(u16, &[u8])> {
    let (bid, offset) = split_input_token(token);
    let bytes = bufs.bytes_at(bid, offset + span.range().start, span.range().len())?;
    Some((bid, bytes))
}

/// How the engine runs (from the node's options).
pub(crate) struct EngineConfig {
    pub ring_entries: u32,
    pub recv_buffers: u16,
    pub gro: bool,
    pub gso: bool,
    pub busy_poll: bool,
    pub spin_before_sleep: Duration,
    pub send_slots: usize,
    pub send_buffers: usize,
    pub socket_buffer_bytes: usize,
    pub core: Option<usize>,
    /// The topology's MTU: the largest datagram a receive buffer must hold without GRO.
    pub mtu: usize,
    /// This node's link changes from the topology's schedule, in time order (empty: none).
    pub schedule: Vec<LinkChange>,
}

pub(crate) struct Engine {
    /// Declared first, so dropped first: it must let go of the buffers and messages below.
    ring: IoUring,
    bufs: BufRing,
    /// References to each receive buffer from the sends that pass its datagrams on.
    holds: ReceiveHolds,
    /// Buffers held after the last early send (`Engine::send_early`).
    held_at_early_send: usize,
    pub data: DataPlane,
    pub shared: Arc<Shared>,
    /// This worker's index in `shared.workers`, and how many there are.
    worker: usize,
    workers: u16,
    /// `uring.hand_off`: the kernel hashes, and another worker's tree is handed over to it.
    hand_off: bool,
    /// Workers this turn handed datagrams to (bit `i`: worker `i`), each woken at the first.
    to_wake: u64,
    socket: UdpSocket,
    by_socket: HashMap<SocketAddr, NodeAddr>,
    /// The last source `by_socket` named: a stream's receives come from one neighbour, which
    /// then costs a comparison rather than a hash of the address per receive.
    last_source: Option<(SocketAddr, NodeAddr)>,
    /// The receive's message header: only its name and control lengths matter to the kernel.
    recv_msg: Box<libc::msghdr>,
    recv_armed: bool,
    event_buf: Box<u64>,
    event_armed: bool,
    slots: SendSlots,
    /// Packets ready to leave (garbled), waiting for a send slot.
    pending: VecDeque<Outgoing>,
    copies: Vec<GarbledCopy>,
    cqes: Vec<(u64, i32, u32)>,
    /// Completions the last turn reaped: whether traffic is streaming.
    last_completions: usize,
    /// Whether the last turn reaped a receive: whether packets are coming in (adaptive waiting
    /// looks for the next one before sleeping; the completion of a lone forward's send does
    /// not count, so a lone packet costs no spin).
    last_received: bool,
    commands: VecDeque<Command<super::shared::Call>>,
    pub stats: EngineStats,
    pub handles: Handles,
    /// Local receivers' files, written through the ring.
    writes: FileWrites,
    busy_poll: bool,
    spin_before_sleep: Duration,
    /// Link changes still to apply, the next first.
    schedule: VecDeque<LinkChange>,
    stopping: bool,
}

impl Engine {
    /// Builds the ring, its buffers and the socket options; any failure is the one line the
    /// node's `start` returns.
    pub fn new(
        mut data: DataPlane,
        shared: Arc<Shared>,
        worker: usize,
        socket: UdpSocket,
        by_socket: HashMap<SocketAddr, NodeAddr>,
        config: &EngineConfig,
    ) -> io::Result<Engine> {
        let mut stats = EngineStats::default();
        if let Some(core) = config.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot pin the engine thread to core {core}"),
                ));
            }
            stats.pinned_core = core as u64 + 1;
        }
        let ring = new_ring(config.ring_entries)?;
        let setup = socket::configure(&socket, config.socket_buffer_bytes, config.gro)?;
        stats.socket_rcvbuf = setup.rcvbuf as u64;
        stats.socket_sndbuf = setup.sndbuf as u64;
        stats.gro = u64::from(setup.gro);
        let payload = if setup.gro { GRO_PAYLOAD } else { config.mtu };
        let bufs = BufRing::register(
            &ring.submitter(),
            config.recv_buffers,
            payload + RECV_OVERHEAD,
            RECV_GROUP,
        )
        .map_err(|e| socket::unavailable("registering receive buffers", &e))?;
        // SAFETY: all-zero is a valid msghdr.
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
        recv_msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        recv_msg.msg_controllen = RECV_CONTROL_LEN as _;
        data.reserve_send_buffers(config.send_buffers);
        let workers = u16::try_from(shared.workers.len()).unwrap_or(u16::MAX);
        let hand_off = shared.workers[worker].hand_off.is_some();
        let mut engine = Engine {
            ring,
            bufs,
            holds: ReceiveHolds::new(config.recv_buffers),
            held_at_early_send: 0,
            data,
            shared,
            worker,
            workers,
            hand_off,
            to_wake: 0,
            socket,
            by_socket,
            last_source: None,
            recv_msg,
            recv_armed: false,
            event_buf: Box::new(0),
            event_armed: false,
            slots: SendSlots::new(config.send_slots, config.gso),
            // Every send slot's worth: queueing a full batch of sends allocates nothing.
            pending: VecDeque::with_capacity(config.send_slots.saturating_mul(MAX_SEGMENTS)),
            copies: Vec::with_capacity(2),
            // A turn's completions, and those an early send finds (`send_early`).
            cqes: Vec::with_capacity(1024),
            last_completions: 0,
            last_received: false,
            commands: VecDeque::new(),
            stats,
            handles: Handles::default(),
            writes: FileWrites::default(),
            busy_poll: config.busy_poll,
            spin_before_sleep: config.spin_before_sleep,
            schedule: config.schedule.iter().copied().collect(),
            stopping: false,
        };
        engine.arm_recv();
        engine.probe_receive()?;
        engine.arm_event();
        Ok(engine)
    }

    /// A kernel without multishot `recvmsg` (before 6.0) refuses it at once: say so now rather
    /// than re-arming a receive that can never work.
    fn probe_receive(&mut self) -> io::Result<()> {
        self.ring
            .submit()
            .map_err(|e| socket::unavailable("submitting the receive", &e))?;
        // Kept for the first `reap`: a datagram may already be in a buffer.
        self.cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let refused = self
            .cqes
            .iter()
            .find(|&&(tag, result, _)| tag == TAG_RECV && result < 0 && -result != libc::ENOBUFS);
        match refused {
            Some(&(_, result, _)) => Err(socket::unavailable(
                "a multishot receive",
                &io::Error::from_raw_os_error(-result),
            )),
            None => Ok(()),
        }
    }

    /// Runs until a stop command, then says goodbye to the network.
    pub fn run(mut self) {
        let mut clock = DutyClock::start();
        while !self.stopping {
            self.reap();
            self.take_handed_over();
            self.run_commands();
            self.stats.time_reap_nanos += clock.lap();
            let now = self.shared.clock.now();
            self.apply_schedule(now);
            if self.data.poll_timeout().is_some_and(|t| t <= now) {
                self.data.handle_timeout(now);
            }
            self.after_input();
            self.stats.time_transfers_nanos += clock.lap();
            self.flush();
            self.submit_file_writes();
            self.stats.time_route_nanos += clock.lap();
            // Submitted on its own (not with the wait) so that its time is told apart.
            if !self.ring.submission().is_empty() {
                let _ = self.ring.submit();
            }
            self.stats.time_submit_nanos += clock.lap();
            self.stats.wakeups += 1;
            self.count_buffers();
            self.shared.workers[self.worker].counters.store(&self.stats);
            if !self.stopping {
                self.wait();
            }
            self.stats.time_wait_nanos += clock.lap();
        }
        if !self.shutdown() {
            // The kernel may still write into the receive buffers or read a send slot: leak
            // them rather than free memory it uses.
            let Engine {
                ring,
                bufs,
                slots,
                recv_msg,
                event_buf,
                writes,
                ..
            } = self;
            drop(ring);
            std::mem::forget((bufs, slots, recv_msg, event_buf, writes));
        }
    }

    /// The node's buffer counts, and the buffers held now, into the engine's counters.
    fn count_buffers(&mut self) {
        self.stats.payload_copies = self.data.payload_copies();
        self.stats.packets_built = self.data.packets_built();
        self.stats.send_buffers_allocated = self.data.send_buffers_allocated();
        self.stats.send_buffers_in_use = self.data.send_buffers_in_use() as u64;
        self.stats.rx_buffers_held = self.holds.held() as u64;
        let files = self.writes.counts;
        self.stats.file_writes = files.writes;
        self.stats.file_write_bytes = files.bytes;
        self.stats.file_writes_short = files.short;
        self.stats.file_write_errors = files.errors;
        self.stats.file_write_hints = files.hints;
    }

    /// This worker as the other threads reach it.
    pub fn link(&self) -> &WorkerLink {
        &self.shared.workers[self.worker]
    }

    /// What the data plane produced besides packets: events for the transfer handles.
    pub fn after_input(&mut self) {
        while let Some(event) = self.data.poll_event() {
            self.handles.on_event(&mut self.data, &self.shared, event);
        }
        self.handles
            .tick(&mut self.data, &self.shared, StdInstant::now());
    }

    // ---- transfers ----

    /// Starts the local sender of the transfer `entry` announces (built, hash included, by the
    /// caller's thread); the caller has the control thread announce it next.
    pub fn start_send(
        &mut self,
        entry: ServiceEntry,
        source: Box<dyn Source + Send>,
        options: SendOptions,
    ) -> Result<SendHandle, StartError> {
        crate::node::check_entry(self.data.me(), &entry, source.as_ref())?;
        let now = self.shared.clock.now();
        if !crate::node::add_sender(&mut self.data, now, &entry, source, |c| options.apply(c)) {
            return Err(StartError::Busy);
        }
        Ok(self.handles.add_sender(entry))
    }

    /// Takes back a local sender whose announcement the control plane refused.
    pub fn cancel_send(&mut self, group: GroupAddr) {
        self.data.transfers_mut().remove_sender(group);
        self.handles.forget_sender(group);
    }

    /// Starts local receiver `sid`; the caller has the control thread subscribe it next.
    pub fn start_receive(
        &mut self,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
        mut sink: Box<dyn Sink + Send>,
        options: ReceiveOptions,
    ) -> Result<ReceiveHandle, StartError> {
        if self.handles.is_receiving(sid) {
            return Err(StartError::Busy);
        }
        // The worker writes a file sink's blocks through its ring (a sink it does not take
        // stays with its own writer).
        let file = sink.take_block_writes();
        let now = self.shared.clock.now();
        // The kernel's receive buffer is what holds a burst beyond the window's last MAB.
        let max_window = self.stats.socket_rcvbuf;
        let added =
            self.data
                .transfers_mut()
                .add_receiver_with(now, sid, group, sender, sink, |c| {
                    options.apply(c, max_window)
                });
        if !added {
            return Err(StartError::Busy);
        }
        if let Some(file) = file {
            self.writes.add(file);
        }
        let shared = Arc::clone(&self.shared);
        let worker = self.worker;
        let kick = Box::new(move || shared.workers[worker].wake());
        Ok(self.handles.add_receiver(sid, group, sender, kick))
    }

    /// Takes back a local receiver the control plane could not subscribe.
    pub fn cancel_receive(&mut self, sid: u16) {
        self.data.transfers_mut().remove_receiver(sid);
        self.handles.forget_receiver(sid);
    }

    // ---- the topology's schedule ----

    /// Applies the link changes whose time has come to the garbler of that direction.
    fn apply_schedule(&mut self, now: Instant) {
        while let Some(c) = self.schedule.front().copied() {
            if Instant::ZERO + c.at > now {
                break;
            }
            self.schedule.pop_front();
            // Changes name this node's peers only (`link_changes`).
            if let Some(peer) = self.shared.peers.get(&c.peer) {
                peer.link.set_faults(c.applied_to(peer.link.faults()));
            }
        }
    }

    // ---- commands ----

    /// Runs the commands queued for this worker. Every command is queued before its eventfd
    /// write, so the queue (behind a lock) is looked at only in a turn whose eventfd read
    /// completed: a turn of packets alone takes no lock.
    fn run_commands(&mut self) {
        if self.event_armed {
            return;
        }
        let mut word = 0u64;
        // SAFETY: reads at most 8 bytes into a live u64 from our non-blocking eventfd.
        unsafe { libc::read(self.link().eventfd(), (&raw mut word).cast(), 8) };
        self.arm_event();
        self.shared.workers[self.worker].take_commands(&mut self.commands);
        while let Some(c) = self.commands.pop_front() {
            self.stats.commands += 1;
            match c {
                Command::Call(f) => f(self),
                Command::Stop => self.stopping = true,
            }
        }
    }

    // ---- stopping ----

    /// Ends the local transfers (their receivers' leaves go to the control thread, which sends
    /// them when the node stops) and waits (briefly) for what is queued to leave.
    /// True once nothing is left in flight on the ring (the engine's memory may be freed).
    fn shutdown(&mut self) -> bool {
        self.handles.stop_all(&mut self.data, &self.shared);
        let deadline = StdInstant::now() + FINAL_FLUSH;
        loop {
            self.flush();
            // The receivers stopped hand over their last blocks: written before the end.
            self.submit_file_writes();
            let idle = self.pending.is_empty() && self.slots.idle() && self.writes.idle();
            if idle || StdInstant::now() >= deadline {
                break;
            }
            self.wait_briefly();
        }
        // The receive and the eventfd read end with a cancellation; their buffers go with them.
        for tag in [TAG_RECV, TAG_EVENT] {
            self.push(&opcode::AsyncCancel::new(tag).build().user_data(TAG_CANCEL));
        }
        let deadline = StdInstant::now() + FINAL_FLUSH;
        let quiet = loop {
            // What the last receives passed on leaves too, releasing their buffers.
            self.flush();
            let quiet = !self.recv_armed
                && !self.event_armed
                && self.pending.is_empty()
                && self.slots.idle()
                && self.writes.idle();
            if quiet || StdInstant::now() >= deadline {
                break quiet;
            }
            self.wait_briefly();
        };
        self.count_buffers();
        self.shared.workers[self.worker].counters.store(&self.stats);
        self.shared.workers[self.worker].close();
        quiet
    }

    /// Submits, waits at most 10 ms for a completion, and handles what completed.
    fn wait_briefly(&mut self) {
        let ts = Timespec::new().nsec(10_000_000);
        let args = SubmitArgs::new().timespec(&ts);
        let _ = self.ring.submitter().submit_with_args(1, &args);
        self.reap();
    }
}

/// Queues `entry`, handing the queue to the kernel first if it is full.
fn push_to(ring: &mut IoUring, entry: &squeue::Entry) {
    loop {
        // SAFETY: every entry points at memory the engine owns and keeps until its completion
        // (the receive's header and buffers, the eventfd word, the send slots, the file
        // writes' blocks).
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return;
        }
        let _ = ring.submit();
    }
}

/// Laps of the engine loop's phases, for the `time_*` counters (a vDSO clock read each).
struct DutyClock(StdInstant);

impl DutyClock {
    fn start() -> Self {
        DutyClock(StdInstant::now())
    }

    /// Nanoseconds since the last lap (or the start).
    fn lap(&mut self) -> u64 {
        let now = StdInstant::now();
        let nanos = now.duration_since(self.0).as_nanos();
        self.0 = now;
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }
}
