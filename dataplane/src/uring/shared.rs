//! What the engine thread shares with the node's handle and any other thread: the peers and
//! their garblers, the published tables, the counters, and the command queue with the eventfd
//! that wakes the ring.

use super::engine::Engine;
use super::stats::Counters;
use crate::garbler::{DelayLine, LinkGarbler};
use crate::sync::lock;
use crate::threaded::Clock;
use control::NodeAddr;
use control::drp::RoutingTable;
use control::gmp::MulticastTable;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// Work for the engine thread, run there with the node in hand.
pub(crate) type Call = Box<dyn FnOnce(&mut Engine) + Send>;

pub(crate) enum Command {
    Call(Call),
    Stop,
}

/// A node of the topology file this one can send to, and the faults of the direction to it.
pub(crate) struct Peer {
    pub socket: SocketAddr,
    pub link: LinkGarbler,
}

/// The snapshots the engine publishes when they change, read by other threads without a call.
pub(crate) struct Tables {
    pub routes: Arc<RoutingTable>,
    pub multicast: Arc<MulticastTable>,
}

struct Queue {
    commands: VecDeque<Command>,
    /// The engine has ended: nothing more is taken.
    closed: bool,
}

pub(crate) struct Shared {
    pub me: NodeAddr,
    pub local_addr: SocketAddr,
    pub clock: Clock,
    pub peers: BTreeMap<NodeAddr, Peer>,
    pub counters: Counters,
    /// Delayed, jittered and reordered copies the garbler holds back.
    pub delay: DelayLine<SocketAddr>,
    pub tables: Mutex<Tables>,
    queue: Mutex<Queue>,
    /// Written once per command; the ring has a read on it outstanding.
    eventfd: OwnedFd,
}

impl Shared {
    pub fn new(
        me: NodeAddr,
        local_addr: SocketAddr,
        clock: Clock,
        peers: BTreeMap<NodeAddr, Peer>,
        delay: DelayLine<SocketAddr>,
    ) -> io::Result<Shared> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Shared {
            me,
            local_addr,
            clock,
            peers,
            counters: Counters::default(),
            delay,
            tables: Mutex::new(Tables {
                routes: Arc::new(RoutingTable::empty(me)),
                multicast: Arc::new(MulticastTable::default()),
            }),
            queue: Mutex::new(Queue {
                commands: VecDeque::new(),
                closed: false,
            }),
            eventfd,
        })
    }

    pub fn eventfd(&self) -> i32 {
        self.eventfd.as_raw_fd()
    }

    /// Queues a command and wakes the engine; false (the command dropped) once it has ended.
    pub fn command(&self, command: Command) -> bool {
        {
            let mut q = lock(&self.queue);
            if q.closed {
                return false;
            }
            q.commands.push_back(command);
        }
        self.wake();
        true
    }

    /// Makes the engine run its loop once (its ring has a read on the eventfd outstanding).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN) still
        // leaves the eventfd readable, which is all the wake needs.
        unsafe { libc::write(self.eventfd(), (&raw const one).cast(), size_of::<u64>()) };
    }

    /// The commands waiting, oldest first.
    pub fn take_commands(&self, into: &mut VecDeque<Command>) {
        into.append(&mut lock(&self.queue).commands);
    }

    /// Refuses every later command and drops those still queued (their callers see the reply
    /// channel close).
    pub fn close(&self) {
        let dropped = {
            let mut q = lock(&self.queue);
            q.closed = true;
            std::mem::take(&mut q.commands)
        };
        drop(dropped);
    }

    pub fn publish_tables(&self, routes: &Arc<RoutingTable>, multicast: &Arc<MulticastTable>) {
        let mut t = lock(&self.tables);
        if !Arc::ptr_eq(&t.routes, routes) {
            t.routes = Arc::clone(routes);
        }
        if !Arc::ptr_eq(&t.multicast, multicast) {
            t.multicast = Arc::clone(multicast);
        }
    }
}
