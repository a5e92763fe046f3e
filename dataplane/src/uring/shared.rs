//! What the node's threads share: the peers and their garblers, the published tables, the
//! counters, each worker's command queue with the eventfd that wakes its ring, and the control
//! thread's inbox (control-plane packets from the workers, lock-free) and command queue, and,
//! in hand-off mode, each worker's queue of datagrams of its trees that another worker received.

use super::control::ControlThread;
use super::engine::Engine;
use super::stats::Counters;
use crate::garbler::{DelayLine, LinkGarbler};
use crate::node::SharedTables;
use crate::sync::lock;
use crate::threaded::Clock;
use control::NodeAddr;
use crossbeam_queue::ArrayQueue;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;

/// Work for a worker thread, run there with its engine in hand.
pub(crate) type Call = Box<dyn FnOnce(&mut Engine) + Send>;
/// Work for the control thread, run there with the control plane in hand.
pub(crate) type ControlCall = Box<dyn FnOnce(&mut ControlThread) + Send>;

pub(crate) enum Command<T> {
    Call(T),
    Stop,
}

/// A node of the topology file this one can send to, and the faults of the direction to it.
pub(crate) struct Peer {
    pub socket: SocketAddr,
    pub link: LinkGarbler,
}

/// The topology's other nodes, found by address with two indexed loads (every packet sent
/// looks its destination up here; a tree search per packet was one of the forwarding path's
/// costs).
pub(crate) struct Peers {
    /// Ascending by address.
    list: Vec<(NodeAddr, Peer)>,
    /// Indexed by address: the position in `list` plus one, 0 for no peer. As long as the
    /// largest address of the topology (below the group range; made once).
    position: Box<[u32]>,
}

impl Peers {
    pub fn new(peers: BTreeMap<NodeAddr, Peer>) -> Peers {
        let len = peers.keys().last().map_or(0, |a| usize::from(a.get()) + 1);
        let mut position = vec![0u32; len].into_boxed_slice();
        let list: Vec<(NodeAddr, Peer)> = peers.into_iter().collect();
        for (i, (addr, _)) in list.iter().enumerate() {
            position[usize::from(addr.get())] = u32::try_from(i + 1).unwrap_or(0);
        }
        Peers { list, position }
    }

    #[inline]
    pub fn get(&self, addr: &NodeAddr) -> Option<&Peer> {
        let at = *self.position.get(usize::from(addr.get()))?;
        let index = usize::try_from(at).ok()?.checked_sub(1)?;
        self.list.get(index).map(|(_, p)| p)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeAddr, &Peer)> {
        self.list.iter().map(|(a, p)| (a, p))
    }
}

/// Commands for one thread, refused once it has ended.
struct Queue<T> {
    commands: VecDeque<Command<T>>,
    closed: bool,
}

impl<T> Queue<T> {
    fn new() -> Mutex<Self> {
        Mutex::new(Queue {
            commands: VecDeque::new(),
            closed: false,
        })
    }
}

fn push<T>(queue: &Mutex<Queue<T>>, command: Command<T>) -> bool {
    let mut q = lock(queue);
    if q.closed {
        return false;
    }
    q.commands.push_back(command);
    true
}

fn close<T>(queue: &Mutex<Queue<T>>) {
    let dropped = {
        let mut q = lock(queue);
        q.closed = true;
        std::mem::take(&mut q.commands)
    };
    // Their callers see the reply channel close.
    drop(dropped);
}

/// A copy of a datagram a worker received, for another thread: one of another worker's tree
/// (`uring.hand_off`), or a control-plane packet for the control thread.
pub(crate) struct Copied {
    pub from: NodeAddr,
    pub bytes: Vec<u8>,
}

/// A bounded lock-free queue of datagram copies, with as many MTU buffers made at start as it
/// holds, which go back to `spare` once handled, so a stream through it allocates nothing.
pub(crate) struct DatagramQueue {
    queue: ArrayQueue<Copied>,
    spare: ArrayQueue<Vec<u8>>,
}

impl DatagramQueue {
    fn new(datagrams: usize, mtu: usize) -> DatagramQueue {
        let spare = ArrayQueue::new(datagrams.max(1));
        while spare.push(Vec::with_capacity(mtu)).is_ok() {}
        DatagramQueue {
            queue: ArrayQueue::new(datagrams.max(1)),
            spare,
        }
    }

    /// Copies `datagram` into a spare buffer and queues it; false (nothing queued) when no
    /// buffer is spare (the queue full, or its taker still holding buffers), or the datagram
    /// is longer than a buffer (DNP refuses it anyway, as longer than the MTU).
    pub fn push(&self, from: NodeAddr, datagram: &[u8]) -> bool {
        let Some(mut bytes) = self.spare.pop() else {
            return false;
        };
        if datagram.len() > bytes.capacity() {
            let _ = self.spare.push(bytes);
            return false;
        }
        bytes.clear();
        bytes.extend_from_slice(datagram);
        match self.queue.push(Copied { from, bytes }) {
            Ok(()) => true,
            Err(refused) => {
                let _ = self.spare.push(refused.bytes);
                false
            }
        }
    }

    pub fn pop(&self) -> Option<Copied> {
        self.queue.pop()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// A handled datagram's buffer, for the next one.
    pub fn give_back(&self, bytes: Vec<u8>) {
        let _ = self.spare.push(bytes);
    }
}

/// One dataplane worker as the other threads reach it.
pub(crate) struct WorkerLink {
    queue: Mutex<Queue<Call>>,
    /// Set with each command queued: a wake-up for handed-over datagrams alone takes no lock.
    commands_waiting: AtomicBool,
    /// Datagrams of this worker's trees from the others (`uring.hand_off`), or `None`.
    pub hand_off: Option<DatagramQueue>,
    /// Written once per command; the worker's ring has a read on it outstanding.
    eventfd: OwnedFd,
    /// The worker's counters, published once per loop turn.
    pub counters: Counters,
}

impl WorkerLink {
    fn new(hand_off: Option<DatagramQueue>) -> io::Result<WorkerLink> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(WorkerLink {
            queue: Queue::new(),
            commands_waiting: AtomicBool::new(false),
            hand_off,
            // SAFETY: `fd` was just created and is owned by nothing else.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            counters: Counters::default(),
        })
    }

    pub fn eventfd(&self) -> i32 {
        self.eventfd.as_raw_fd()
    }

    /// Queues a command and wakes the worker; false (the command dropped) once it has ended.
    pub fn command(&self, command: Command<Call>) -> bool {
        let queued = push(&self.queue, command);
        if queued {
            self.commands_waiting.store(true, Ordering::Release);
            self.wake();
        }
        queued
    }

    /// Makes the worker run its loop once (its ring has a read on the eventfd outstanding).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN) still
        // leaves the eventfd readable, which is all the wake needs.
        unsafe { libc::write(self.eventfd(), (&raw const one).cast(), size_of::<u64>()) };
    }

    /// The commands waiting, oldest first.
    pub fn take_commands(&self, into: &mut VecDeque<Command<Call>>) {
        if self.commands_waiting.swap(false, Ordering::Acquire) {
            into.append(&mut lock(&self.queue).commands);
        }
    }

    /// Refuses every later command and drops those still queued.
    pub fn close(&self) {
        close(&self.queue);
    }
}

/// The control thread as the other threads reach it.
pub(crate) struct ControlLink {
    /// The workers' copies of control-plane packets.
    inbox: DatagramQueue,
    queue: Mutex<Queue<ControlCall>>,
    thread: OnceLock<Thread>,
    /// Control packets dropped because the inbox was full.
    pub inbox_full: AtomicU64,
}

impl ControlLink {
    /// An inbox of `inbox` packets, with as many buffers of `mtu` bytes made now.
    fn new(inbox: usize, mtu: usize) -> ControlLink {
        ControlLink {
            inbox: DatagramQueue::new(inbox, mtu),
            queue: Queue::new(),
            thread: OnceLock::new(),
            inbox_full: AtomicU64::new(0),
        }
    }

    /// The control thread names itself, to be woken.
    pub fn register(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Hands a copy of a control-plane packet to the control thread (dropped and counted when
    /// its inbox has no room or no spare buffer, rather than a buffer allocated: DRP, GMP and
    /// RAP repeat what matters).
    pub fn deliver(&self, from: NodeAddr, packet: &[u8]) {
        if self.inbox.push(from, packet) {
            self.wake();
        } else {
            self.inbox_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn take_packet(&self) -> Option<Copied> {
        self.inbox.pop()
    }

    /// A packet's buffer, handled: kept for a later packet.
    pub fn give_back(&self, bytes: Vec<u8>) {
        self.inbox.give_back(bytes);
    }

    /// Queues a command and wakes the control thread; false once it has ended.
    pub fn command(&self, command: Command<ControlCall>) -> bool {
        let queued = push(&self.queue, command);
        if queued {
            self.wake();
        }
        queued
    }

    pub fn take_commands(&self, into: &mut VecDeque<Command<ControlCall>>) {
        into.append(&mut lock(&self.queue).commands);
    }

    pub fn close(&self) {
        close(&self.queue);
    }
}

pub(crate) struct Shared {
    pub me: NodeAddr,
    pub local_addr: SocketAddr,
    pub clock: Clock,
    pub peers: Peers,
    /// Delayed, jittered and reordered copies the garbler holds back.
    pub delay: DelayLine<SocketAddr>,
    /// What the control plane publishes.
    pub tables: SharedTables,
    pub workers: Vec<WorkerLink>,
    pub control: ControlLink,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: NodeAddr,
        local_addr: SocketAddr,
        clock: Clock,
        peers: BTreeMap<NodeAddr, Peer>,
        delay: DelayLine<SocketAddr>,
        tables: SharedTables,
        workers: usize,
        control_inbox: usize,
        hand_off_queue: Option<usize>,
        mtu: usize,
    ) -> io::Result<Shared> {
        Ok(Shared {
            me,
            local_addr,
            clock,
            peers: Peers::new(peers),
            delay,
            tables,
            workers: (0..workers.max(1))
                .map(|_| WorkerLink::new(hand_off_queue.map(|q| DatagramQueue::new(q, mtu))))
                .collect::<io::Result<_>>()?,
            control: ControlLink::new(control_inbox, mtu),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::garbler::LinkGarbler;
    use control::topology::Faults;

    fn peer(port: u16) -> Peer {
        Peer {
            socket: SocketAddr::from(([127, 0, 0, 1], port)),
            link: LinkGarbler::new(Faults::default(), control::rng::Rng::new(1), 1024),
        }
    }

    /// While the control thread holds a packet it took, the inbox is one short of full but no
    /// buffer is spare: the next packet is dropped and counted, not given a new buffer.
    #[test]
    fn the_control_inbox_never_makes_a_buffer() {
        let from = NodeAddr::new(2).unwrap();
        let link = ControlLink::new(2, 16);
        link.deliver(from, &[1; 8]);
        link.deliver(from, &[2; 8]);
        let held = link.take_packet().unwrap();
        link.deliver(from, &[3; 8]);
        assert_eq!(link.inbox_full.load(Ordering::Relaxed), 1);
        assert_eq!(link.take_packet().unwrap().bytes, vec![2; 8]);
        assert!(link.take_packet().is_none());
        link.give_back(held.bytes);
        link.deliver(from, &[4; 8]);
        assert_eq!(link.take_packet().unwrap().bytes, vec![4; 8]);
    }

    /// A hand-off queue takes what it has buffers for, refuses the rest (full, or longer than a
    /// buffer) and reuses the buffers it gave out: its capacity never grows.
    #[test]
    fn a_hand_off_queue_is_bounded_and_reuses_its_buffers() {
        let from = NodeAddr::new(3).unwrap();
        let queue = DatagramQueue::new(2, 16);
        assert!(queue.push(from, &[1; 10]));
        assert!(queue.push(from, &[2; 16]));
        assert!(!queue.push(from, &[3; 4]), "full");
        let first = queue.pop().unwrap();
        assert_eq!((first.from, first.bytes.as_slice()), (from, &[1u8; 10][..]));
        let buffer = first.bytes.as_ptr();
        queue.give_back(first.bytes);
        assert!(!queue.push(from, &[4; 17]), "longer than a buffer");
        assert!(queue.push(from, &[5; 16]));
        assert_eq!(queue.pop().unwrap().bytes, vec![2; 16]);
        let last = queue.pop().unwrap();
        assert_eq!(last.bytes, vec![5; 16]);
        assert_eq!(last.bytes.as_ptr(), buffer, "the buffer given back");
        assert!(queue.pop().is_none());
    }

    /// Each peer is found by its address and no other address finds one, the largest address
    /// and those beyond it included.
    #[test]
    fn peers_are_found_by_their_address_only() {
        const LARGEST: u16 = control::addr::GROUP_BASE - 1;
        let addr = |a: u16| NodeAddr::new(a).expect("an address");
        let peers = Peers::new(BTreeMap::from([
            (addr(2), peer(2)),
            (addr(7), peer(7)),
            (addr(LARGEST), peer(9)),
        ]));
        assert_eq!(peers.get(&addr(7)).map(|p| p.socket.port()), Some(7));
        assert_eq!(peers.get(&addr(2)).map(|p| p.socket.port()), Some(2));
        assert_eq!(peers.get(&addr(LARGEST)).map(|p| p.socket.port()), Some(9));
        for missing in [1, 3, 6, 8, LARGEST - 1] {
            assert!(peers.get(&addr(missing)).is_none(), "{missing}");
        }
        let few = Peers::new(BTreeMap::from([(addr(3), peer(3))]));
        assert!(few.get(&addr(4)).is_none() && few.get(&addr(1000)).is_none());
        assert_eq!(few.iter().count(), 1);
        assert!(Peers::new(BTreeMap::new()).get(&addr(1)).is_none());
    }
}
