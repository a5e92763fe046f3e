//! The event queue: a min-heap ordered by (time, insertion sequence), so events at one instant
//! run in the order they were scheduled and a run never depends on heap internals.

use control::Instant;
use control::topology::Action;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Something that happens at an instant.
#[derive(Debug)]
pub(super) enum Event {
    /// A copy of a packet reaches the far end of a directed link.
    Arrival(Arrival),
    /// A node's timer, valid only while `generation` is the node's current one.
    Timer { node: u32, generation: u32 },
    /// A link/node action from the topology's schedule.
    Scheduled(Action),
}

/// A packet copy on the wire, stamped with what must still hold when it lands.
#[derive(Debug)]
pub(super) struct Arrival {
    pub link: u32,
    /// The link's down-epoch at send time; a link that went down since discards it.
    pub link_epoch: u32,
    /// Incarnations of the two ends at send time; a reboot of either discards it.
    pub from_incarnation: u32,
    pub to_incarnation: u32,
    pub packet: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed: `BinaryHeap` is a max-heap and we want the earliest (time, seq) on top.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug, Default)]
pub(super) struct EventQueue {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
    /// Events looked at and left queued by [`EventQueue::take_arrivals_at`] (kept for reuse).
    passed: Vec<Entry>,
}

/// What [`EventQueue::take_arrivals_at`] does with an arrival.
pub(super) enum Gather {
    Take,
    /// Leave it queued and look further.
    Pass,
    /// Leave it queued and look no further.
    Stop,
}

impl EventQueue {
    pub(super) fn push(&mut self, at: Instant, event: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { at, seq, event });
    }

    pub(super) fn peek_time(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// The next event if it is due at or before `t`.
    pub(super) fn pop_due(&mut self, t: Instant) -> Option<(Instant, Event)> {
        if self.heap.peek()?.at > t {
            return None;
        }
        self.heap.pop().map(|e| (e.at, e.event))
    }

    /// The next event if it is an arrival due at exactly `at` that `joins`: one more datagram
    /// for the batch being handed in.
    pub(super) fn pop_arrival_at(
        &mut self,
        at: Instant,
        joins: impl FnOnce(&Arrival) -> bool,
    ) -> Option<Arrival> {
        let next = self.heap.peek()?;
        match &next.event {
            Event::Arrival(a) if next.at == at && joins(a) => {}
            _ => return None,
        }
        match self.heap.pop()?.event {
            Event::Arrival(a) => Some(a),
            _ => None,
        }
    }

    /// Moves the arrivals due at exactly `at` that `gather` takes into `out`, in their order,
    /// whatever other events at that instant come between them; everything else stays queued
    /// at its place (same time, same sequence number), so the order of the rest is unchanged.
    pub(super) fn take_arrivals_at(
        &mut self,
        at: Instant,
        out: &mut Vec<Arrival>,
        mut gather: impl FnMut(&Arrival) -> Gather,
    ) -> usize {
        let mut passed = std::mem::take(&mut self.passed);
        let mut taken = 0;
        while self.heap.peek().is_some_and(|e| e.at == at) {
            let Some(entry) = self.heap.pop() else { break };
            let verdict = match &entry.event {
                Event::Arrival(a) => gather(a),
                _ => Gather::Pass,
            };
            match (verdict, entry.event) {
                (Gather::Take, Event::Arrival(a)) => {
                    out.push(a);
                    taken += 1;
                }
                (verdict, event) => {
                    passed.push(Entry { event, ..entry });
                    if matches!(verdict, Gather::Stop) {
                        break;
                    }
                }
            }
        }
        self.heap.extend(passed.drain(..));
        self.passed = passed;
        taken
    }

    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(node: u32) -> Event {
        Event::Timer {
            node,
            generation: 0,
        }
    }

    #[test]
    fn time_first_then_insertion_order() {
        let mut q = EventQueue::default();
        q.push(Instant::from_nanos(20), timer(0));
        q.push(Instant::from_nanos(10), timer(1));
        q.push(Instant::from_nanos(20), timer(2));
        q.push(Instant::from_nanos(10), timer(3));
        let mut order = Vec::new();
        while let Some((at, Event::Timer { node, .. })) = q.pop_due(Instant::from_nanos(u64::MAX)) {
            order.push((at.as_nanos(), node));
        }
        assert_eq!(order, [(10, 1), (10, 3), (20, 0), (20, 2)]);
    }

    #[test]
    fn pop_due_stops_at_the_horizon() {
        let mut q = EventQueue::default();
        q.push(Instant::from_nanos(5), timer(0));
        q.push(Instant::from_nanos(7), timer(1));
        assert!(q.pop_due(Instant::from_nanos(4)).is_none());
        assert!(q.pop_due(Instant::from_nanos(5)).is_some());
        assert!(q.pop_due(Instant::from_nanos(6)).is_none());
        assert_eq!(q.peek_time(), Some(Instant::from_nanos(7)));
        assert_eq!(q.len(), 1);
    }

    fn arrival(link: u32, byte: u8) -> Event {
        Event::Arrival(Arrival {
            link,
            link_epoch: 0,
            from_incarnation: 0,
            to_incarnation: 0,
            packet: vec![byte],
        })
    }

    /// One link's arrivals at an instant are gathered past another link's and a timer; what
    /// is passed over, and what a stop leaves, keeps its place.
    #[test]
    fn arrivals_of_one_link_are_gathered_past_other_events() {
        let mut q = EventQueue::default();
        let t = Instant::from_nanos(10);
        q.push(t, arrival(0, 1));
        q.push(t, timer(7));
        q.push(t, arrival(1, 2));
        q.push(t, arrival(0, 3));
        q.push(t, arrival(0, 4));
        q.push(Instant::from_nanos(11), arrival(0, 5));
        let mut out = Vec::new();
        // Link 0's, the third one stopping the gathering.
        let taken = q.take_arrivals_at(t, &mut out, |a| match (a.link, a.packet[0]) {
            (0, 4) => Gather::Stop,
            (0, _) => Gather::Take,
            _ => Gather::Pass,
        });
        assert_eq!(taken, 2);
        let got: Vec<u8> = out.iter().map(|a| a.packet[0]).collect();
        assert_eq!(got, [1, 3]);
        let mut rest = Vec::new();
        while let Some((at, event)) = q.pop_due(Instant::from_nanos(u64::MAX)) {
            rest.push(match event {
                Event::Timer { node, .. } => (at.as_nanos(), 100 + node as u8),
                Event::Arrival(a) => (at.as_nanos(), a.packet[0]),
                Event::Scheduled(_) => (at.as_nanos(), 0),
            });
        }
        assert_eq!(rest, [(10, 107), (10, 2), (10, 4), (11, 5)]);
    }
}
