//! A delay line: packets held until their due time, then handed to a sink by one timer thread.
//! The garbler uses it for delayed, jittered and reordered copies; the send path only pushes.

use crate::sync::{lock, wait_until};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

control::counters! {
    /// Counters of a delay line.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct DelayStats {
        pub scheduled: u64,
        /// Handed to the sink at (or after) their due time, and the sink reported them sent.
        pub sent: u64,
        /// The sink reported a failure (e.g. `sendto` failed).
        pub send_failed: u64,
        /// Sent before their due time because the line was shut down (so that, e.g., a node's
        /// last words still leave).
        pub flushed: u64,
        /// Refused because the line was already shut down.
        pub refused: u64,
        /// Held right now.
        pub pending: u64,
    }
}

impl fmt::Display for DelayStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.fields() {
            writeln!(f, "{name} {value}")?;
        }
        Ok(())
    }
}

struct Entry<D> {
    due: Instant,
    /// Scheduling order: equal due times leave first in, first out.
    seq: u64,
    dest: D,
    packet: Vec<u8>,
}

impl<D> Entry<D> {
    fn key(&self) -> (Instant, u64) {
        (self.due, self.seq)
    }
}

impl<D> PartialEq for Entry<D> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<D> Eq for Entry<D> {}

impl<D> PartialOrd for Entry<D> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<D> Ord for Entry<D> {
    /// Reversed, so that the max-heap pops the earliest entry.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

struct Queue<D> {
    heap: BinaryHeap<Entry<D>>,
    next_seq: u64,
    stopping: bool,
    stats: DelayStats,
}

struct Shared<D> {
    queue: Mutex<Queue<D>>,
    wake: Condvar,
}

/// Holds packets for destinations of type `D` (a socket address, a neighbour) until they are
/// due, then calls the sink with each, in (due time, scheduling order).
pub struct DelayLine<D: Send + 'static> {
    shared: Arc<Shared<D>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<D: Send + 'static> DelayLine<D> {
    /// Starts the timer thread. `sink` sends one packet and says whether it went out.
    pub fn spawn(
        name: String,
        sink: impl FnMut(&D, &[u8]) -> bool + Send + 'static,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                heap: BinaryHeap::new(),
                next_seq: 0,
                stopping: false,
                stats: DelayStats::default(),
            }),
            wake: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&worker, sink))?;
        Ok(DelayLine {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Holds `packet` for `dest` until `due`. False (and counted) once the line is shut down.
    pub fn schedule(&self, due: Instant, dest: D, packet: Vec<u8>) -> bool {
        let mut q = lock(&self.shared.queue);
        if q.stopping {
            q.stats.refused += 1;
            return false;
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        q.stats.scheduled += 1;
        // Only an entry that becomes the earliest changes what the thread waits for.
        let earliest = q.heap.peek().is_none_or(|top| (due, seq) < top.key());
        q.heap.push(Entry {
            due,
            seq,
            dest,
            packet,
        });
        drop(q);
        if earliest {
            self.shared.wake.notify_one();
        }
        true
    }

    pub fn stats(&self) -> DelayStats {
        let q = lock(&self.shared.queue);
        DelayStats {
            pending: q.heap.len() as u64,
            ..q.stats
        }
    }

    /// Sends whatever is still held at once, stops the thread and waits for it. Idempotent.
    pub fn shutdown(&self) {
        lock(&self.shared.queue).stopping = true;
        self.shared.wake.notify_one();
        if let Some(t) = lock(&self.thread).take() {
            // A panicking sink already reported itself; nothing more to do with it here.
            let _ = t.join();
        }
    }
}

impl<D: Send + 'static> Drop for DelayLine<D> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run<D>(shared: &Shared<D>, mut sink: impl FnMut(&D, &[u8]) -> bool) {
    let mut q = lock(&shared.queue);
    loop {
        let due = match q.heap.peek() {
            None if q.stopping => return,
            None => None,
            Some(top) => Some(top.due),
        };
        let now = Instant::now();
        if q.stopping || due.is_some_and(|d| d <= now) {
            let Some(entry) = q.heap.pop() else {
                continue;
            };
            let early = entry.due > now;
            drop(q);
            let ok = sink(&entry.dest, &entry.packet);
            q = lock(&shared.queue);
            match (ok, early) {
                (false, _) => q.stats.send_failed += 1,
                (true, true) => q.stats.flushed += 1,
                (true, false) => q.stats.sent += 1,
            }
            continue;
        }
        q = wait_until(&shared.wake, q, due);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn releases_in_due_order_and_fifo_on_ties() {
        let (tx, rx) = mpsc::channel();
        let line = DelayLine::spawn("delay-test".into(), move |d: &u32, p: &[u8]| {
            tx.send((*d, p.to_vec())).is_ok()
        })
        .unwrap();
        let t0 = Instant::now() + Duration::from_millis(30);
        line.schedule(t0 + Duration::from_millis(20), 3, vec![3]);
        line.schedule(t0, 1, vec![1]);
        line.schedule(t0, 2, vec![2]);
        let got: Vec<u32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap().0)
            .collect();
        assert_eq!(got, [1, 2, 3]);
        assert!(Instant::now() >= t0 + Duration::from_millis(20));
        // The thread counts a packet after the sink returns: join it before reading.
        line.shutdown();
        let s = line.stats();
        assert_eq!((s.scheduled, s.sent, s.pending), (3, 3, 0));
    }

    #[test]
    fn shutdown_flushes_what_is_held_and_refuses_more() {
        let (tx, rx) = mpsc::channel();
        let line = DelayLine::spawn("delay-test".into(), move |_: &(), p: &[u8]| {
            tx.send(p.to_vec()).is_ok()
        })
        .unwrap();
        line.schedule(Instant::now() + Duration::from_secs(3600), (), vec![9]);
        line.shutdown();
        assert_eq!(rx.try_recv().unwrap(), vec![9]);
        assert!(!line.schedule(Instant::now(), (), vec![1]));
        let s = line.stats();
        assert_eq!((s.flushed, s.refused, s.pending), (1, 1, 0));
    }
}
