//! The seed's "impatient" producer-consumer buffer (§1.2): a bounded FIFO between the DNP
//! receiver and a protocol thread, in which the producer never waits. When the buffer is full,
//! the producer removes the oldest item to make room and the drop is counted: DNP must not stall
//! behind a slow protocol. Consumers block on a condition variable (with an optional deadline,
//! for their protocol timers) and take items in FIFO order.

use crate::sync::{lock, wait_until};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

control::counters! {
    /// Counters of one buffer.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct BufferStats {
        /// Items stored (including ones later dropped).
        pub pushed: u64,
        pub popped: u64,
        /// Oldest items removed to make room for a new one.
        pub dropped: u64,
        /// Items refused because the buffer was closed.
        pub refused: u64,
        /// Most items held at once.
        pub high_water: u64,
        /// Items held right now.
        pub len: u64,
    }
}

/// What [`ImpatientBuffer::push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    Stored,
    /// Stored, after removing the oldest item.
    DroppedOldest,
    /// The buffer is closed; the item was dropped.
    Closed,
}

/// What a consumer woke up with.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<T> {
    Item(T),
    /// The deadline passed with the buffer empty.
    Timeout,
    /// Someone called [`ImpatientBuffer::kick`]: re-read your deadline.
    Kicked,
    /// Closed for shutdown: stop consuming.
    Closed,
}

struct State<T> {
    queue: VecDeque<T>,
    closed: bool,
    kicked: bool,
    /// Consumers blocked in a wait: a push signals only if there is one (as glibc's
    /// `pthread_cond_signal` does for the seed; std's condvar would make a system call).
    waiting: usize,
    stats: BufferStats,
}

/// A bounded drop-oldest FIFO (Mutex + Condvar, as the seed's pthread version).
pub struct ImpatientBuffer<T> {
    name: String,
    capacity: usize,
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> ImpatientBuffer<T> {
    /// A buffer holding at most `capacity` items (at least 1).
    pub fn new(name: impl Into<String>, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ImpatientBuffer {
            name: name.into(),
            capacity,
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity),
                closed: false,
                kicked: false,
                waiting: 0,
                stats: BufferStats::default(),
            }),
            ready: Condvar::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds an item without ever waiting; a full buffer loses its oldest item.
    pub fn push(&self, item: T) -> Push {
        let mut s = lock(&self.state);
        if s.closed {
            s.stats.refused += 1;
            return Push::Closed;
        }
        let mut outcome = Push::Stored;
        // The dropped item is freed after the lock is released (it may be a packet buffer).
        let mut old = None;
        if s.queue.len() >= self.capacity {
            old = s.queue.pop_front();
            s.stats.dropped += 1;
            outcome = Push::DroppedOldest;
        }
        s.queue.push_back(item);
        s.stats.pushed += 1;
        s.stats.high_water = s.stats.high_water.max(s.queue.len() as u64);
        let wake = s.waiting > 0;
        drop(s);
        drop(old);
        if wake {
            self.ready.notify_one();
        }
        outcome
    }

    /// Blocks until an item arrives; `None` once the buffer is closed.
    pub fn pop(&self) -> Option<T> {
        loop {
            match self.pop_until(None) {
                Pop::Item(item) => return Some(item),
                Pop::Closed => return None,
                Pop::Timeout | Pop::Kicked => {}
            }
        }
    }

    /// Blocks until an item arrives, `deadline` passes (never if `None`), the buffer is kicked,
    /// or it is closed.
    pub fn pop_until(&self, deadline: Option<Instant>) -> Pop<T> {
        let mut s = lock(&self.state);
        loop {
            if s.closed {
                return Pop::Closed;
            }
            if let Some(item) = s.queue.pop_front() {
                s.stats.popped += 1;
                return Pop::Item(item);
            }
            if std::mem::take(&mut s.kicked) {
                return Pop::Kicked;
            }
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return Pop::Timeout;
            }
            s.waiting += 1;
            s = wait_until(&self.ready, s, deadline);
            s.waiting -= 1;
        }
    }

    pub fn pop_timeout(&self, timeout: Duration) -> Pop<T> {
        self.pop_until(Some(Instant::now() + timeout))
    }

    /// Takes an item if one is there, without waiting.
    pub fn try_pop(&self) -> Option<T> {
        let mut s = lock(&self.state);
        let item = s.queue.pop_front();
        if item.is_some() {
            s.stats.popped += 1;
        }
        item
    }

    /// Wakes the consumer without an item (its deadline changed). Remembered until it waits.
    pub fn kick(&self) {
        lock(&self.state).kicked = true;
        self.ready.notify_all();
    }

    /// Shuts the buffer: consumers get [`Pop::Closed`], producers' items are refused, and what
    /// is held is dropped.
    pub fn close(&self) {
        let held = {
            let mut s = lock(&self.state);
            s.closed = true;
            std::mem::take(&mut s.queue)
        };
        drop(held);
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    pub fn len(&self) -> usize {
        lock(&self.state).queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Consumers blocked in a wait right now.
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting
    }

    pub fn stats(&self) -> BufferStats {
        let s = lock(&self.state);
        BufferStats {
            len: s.queue.len() as u64,
            ..s.stats
        }
    }
}

impl<T> fmt::Debug for ImpatientBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpatientBuffer")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A buffer seen without its item type: what the node needs to close it at shutdown and to
/// report its counters. RMTP threads register their own buffers through this.
pub trait BufferHandle: Send + Sync {
    fn name(&self) -> &str;
    fn stats(&self) -> BufferStats;
    fn close(&self);
    fn kick(&self);
}

impl<T: Send> BufferHandle for ImpatientBuffer<T> {
    fn name(&self) -> &str {
        ImpatientBuffer::name(self)
    }

    fn stats(&self) -> BufferStats {
        ImpatientBuffer::stats(self)
    }

    fn close(&self) {
        ImpatientBuffer::close(self)
    }

    fn kick(&self) {
        ImpatientBuffer::kick(self)
    }
}
