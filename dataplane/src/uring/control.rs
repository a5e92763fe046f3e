//! The control-plane thread: DRP, GMP and RAP ([`ControlPlane`]) on a thread of their own. The
//! workers hand it the control-plane packets they receive over a lock-free queue; it runs the
//! protocols' timers, sends its own packets (few: hellos, link states, joins, announcements)
//! from the node's socket, and publishes the routing and multicast tables with an atomic swap
//! that the workers load once per datagram without a lock. It sleeps (parked) until a packet,
//! a command or its next deadline.

use super::shared::{Command, ControlCall, Copied, Shared};
use crate::garbler::GarbledCopy;
use crate::node::{ControlEvent, ControlPlane, NodeStats, Outbox};
use control::wire::dnp::Packet;
use control::wire::gmp::GmpMessage;
use control::wire::rap::ServiceEntry;
use control::{Instant, NodeAddr, Transmit};
use std::collections::VecDeque;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

/// The longest the thread sleeps with nothing due (a command or a packet wakes it sooner).
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Most callers waiting for one RAP answer at once.
const MAX_SERVICE_WAITERS: usize = 64;

pub(crate) struct ControlThread {
    pub control: ControlPlane,
    /// What the control plane counts of DNP (the packets it re-parses) and RAP.
    pub stats: NodeStats,
    pub shared: Arc<Shared>,
    out: Outbox,
    mtu: usize,
    /// A handle on the node's socket (worker 0's): control packets leave from the node's port.
    socket: UdpSocket,
    services: Vec<(NodeAddr, Sender<Vec<ServiceEntry>>)>,
    copies: Vec<GarbledCopy>,
    commands: VecDeque<Command<ControlCall>>,
    /// Control packets whose send failed.
    pub send_errors: u64,
    stopping: bool,
}

impl ControlThread {
    pub fn new(
        control: ControlPlane,
        shared: Arc<Shared>,
        socket: UdpSocket,
        mtu: usize,
    ) -> ControlThread {
        ControlThread {
            control,
            stats: NodeStats::default(),
            shared,
            out: Outbox::new(mtu),
            mtu,
            socket,
            services: Vec::new(),
            copies: Vec::new(),
            commands: VecDeque::new(),
            send_errors: 0,
            stopping: false,
        }
    }

    pub fn now(&self) -> Instant {
        self.shared.clock.now()
    }

    /// Runs until a stop command, then leaves every tree and says goodbye to the neighbours.
    pub fn run(mut self) {
        self.shared.control.register();
        while !self.stopping {
            self.run_commands();
            let now = self.now();
            while let Some(Copied { from, bytes }) = self.shared.control.take_packet() {
                // The worker validated it; parsed again here, where it is read.
                if let Ok(packet) = Packet::parse(&bytes, self.mtu) {
                    self.control
                        .handle_packet(now, from, &packet, &mut self.stats);
                }
                self.shared.control.give_back(bytes);
            }
            if self.control.poll_timeout().is_some_and(|t| t <= now) {
                self.control
                    .handle_timeout(now, &mut self.out, &mut self.stats);
            }
            self.sync(now);
            if !self.stopping {
                let wait = self
                    .control
                    .poll_timeout()
                    .map(|t| t.saturating_since(self.now()))
                    .map_or(IDLE_WAIT, |d| d.min(IDLE_WAIT));
                std::thread::park_timeout(wait);
            }
        }
        self.leave_all();
        self.shared.control.close();
    }

    /// Moves what the control plane produced: its packets to the network, the tables to
    /// their published snapshot (the control plane swaps them in itself), RAP answers to the
    /// callers waiting for them.
    pub fn sync(&mut self, now: Instant) {
        self.control.sync(now, &mut self.out, &mut self.stats);
        while let Some(ControlEvent::Services { server, list }) = self.control.poll_event() {
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.services)
                .into_iter()
                .partition(|(s, _)| *s == server);
            self.services = waiting;
            for (_, reply) in ready {
                // A caller that gave up has dropped its receiver.
                let _ = reply.send(list.clone());
            }
        }
        while let Some(t) = self.out.pop_transmit() {
            self.send(t);
        }
    }

    pub fn wait_for_services(&mut self, server: NodeAddr, reply: Sender<Vec<ServiceEntry>>) {
        if self.services.len() >= MAX_SERVICE_WAITERS {
            self.services.remove(0);
        }
        self.services.push((server, reply));
    }

    /// One packet to a neighbour, through the garbler of that direction.
    fn send(&mut self, t: Transmit) {
        let Some(peer) = self.shared.peers.get(&t.to) else {
            return;
        };
        let dest = peer.socket;
        if peer.link.is_clean() || peer.link.apply(&t.packet, &mut self.copies) {
            if self.socket.send_to(&t.packet, dest).is_err() {
                self.send_errors += 1;
            }
            return;
        }
        let now = std::time::Instant::now();
        for copy in self.copies.drain(..) {
            if copy.delay.is_zero() {
                if self.socket.send_to(&copy.packet, dest).is_err() {
                    self.send_errors += 1;
                }
            } else {
                self.shared
                    .delay
                    .schedule(now + copy.delay, dest, copy.packet);
            }
        }
    }

    fn run_commands(&mut self) {
        self.shared.control.take_commands(&mut self.commands);
        while let Some(c) = self.commands.pop_front() {
            match c {
                Command::Call(f) => f(self),
                Command::Stop => self.stopping = true,
            }
        }
        let now = self.now();
        self.sync(now);
    }

    /// The node is stopping (its workers have ended their transfers): a leave to the upstream
    /// of every tree, DRP terminates to the live neighbours.
    fn leave_all(&mut self) {
        let me = self.control.me();
        let leaves: Vec<Transmit> = self
            .control
            .multicast()
            .entries()
            .iter()
            .filter_map(|e| {
                e.upstream.map(|up| Transmit {
                    to: up,
                    packet: GmpMessage::leave(e.group, e.sender).packet(up, me),
                })
            })
            .collect();
        for t in leaves {
            self.send(t);
        }
        let now = self.now();
        self.control.terminate(now);
        self.sync(now);
    }
}
