//! A receiver's missing sequences, indexed twice: by sequence (repairs, NCFs, the total cutting
//! the tail) and by when each is next NACKed. A hostile sender of DATA or SPMs can fill it to its
//! capacity, so nothing here scans the whole table: the next deadline is the first entry of the
//! time index, and a NACK looks at most [`MAX_DUE_PER_NACK`] due entries.

use super::rtt::Asked;
use control::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// Due entries one NACK looks at, at most (they are then sorted into ranges).
pub(crate) const MAX_DUE_PER_NACK: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct Miss {
    next_nack: Instant,
    nacked: Asked,
}

#[derive(Default)]
pub(crate) struct MissingTable {
    by_seq: BTreeMap<u64, Miss>,
    /// (next NACK, sequence) of every entry of `by_seq`.
    by_time: BTreeSet<(Instant, u64)>,
}

impl MissingTable {
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Approximate bytes per entry (both indexes), for memory figures.
    pub const ENTRY_BYTES: usize =
        std::mem::size_of::<(u64, Miss)>() + std::mem::size_of::<(Instant, u64)>();

    /// Starts tracking `seq`, first NACKed at `at`; an entry already there is kept as it is.
    pub fn insert(&mut self, seq: u64, at: Instant) {
        if self.by_seq.contains_key(&seq) {
            return;
        }
        self.by_seq.insert(
            seq,
            Miss {
                next_nack: at,
                nacked: Asked::default(),
            },
        );
        self.by_time.insert((at, seq));
    }

    /// Stops tracking `seq`; when it was NACKed, if it was tracked.
    pub fn remove(&mut self, seq: u64) -> Option<Asked> {
        let m = self.by_seq.remove(&seq)?;
        self.by_time.remove(&(m.next_nack, seq));
        Some(m.nacked)
    }

    pub fn clear(&mut self) {
        self.by_seq.clear();
        self.by_time.clear();
    }

    /// Forgets every sequence from `seq` on (beyond the transfer's end).
    pub fn truncate_from(&mut self, seq: u64) {
        for (s, m) in self.by_seq.split_off(&seq) {
            self.by_time.remove(&(m.next_nack, s));
        }
    }

    /// No NACK for the sequences in `range` before `until` (an NCF said they are on order), for
    /// at most `budget` entries; how many it looked at. One NCF answers one NACK, which named at
    /// most [`MAX_DUE_PER_NACK`] sequences, so a forged NCF cannot make it walk the whole table.
    pub fn hold_back(&mut self, range: Range<u64>, until: Instant, budget: usize) -> usize {
        let mut looked = 0;
        for (&seq, m) in self.by_seq.range_mut(range).take(budget) {
            looked += 1;
            if m.next_nack < until {
                self.by_time.remove(&(m.next_nack, seq));
                m.next_nack = until;
                self.by_time.insert((until, seq));
            }
        }
        looked
    }

    /// Brings every NACK due after `latest` forward to `latest`: they were timed before the
    /// round trip was known, with the long defaults. Once per transfer: it looks at each
    /// entry it moves.
    pub fn due_by(&mut self, latest: Instant) {
        while let Some(&(at, seq)) = self.by_time.last() {
            if at <= latest {
                break;
            }
            self.by_time.pop_last();
            if let Some(m) = self.by_seq.get_mut(&seq) {
                m.next_nack = latest;
            }
            self.by_time.insert((latest, seq));
        }
    }

    /// The earliest NACK due.
    pub fn next_due(&self) -> Option<Instant> {
        self.by_time.first().map(|&(at, _)| at)
    }

    /// Up to [`MAX_DUE_PER_NACK`] sequences due at `now`, the longest-waiting first, into
    /// `out` (cleared first) in ascending order, ready to be put into ranges.
    pub fn due(&self, now: Instant, out: &mut Vec<u64>) {
        out.clear();
        out.extend(
            self.by_time
                .iter()
                .take_while(|&&(at, _)| at <= now)
                .take(MAX_DUE_PER_NACK)
                .map(|&(_, seq)| seq),
        );
        out.sort_unstable();
    }

    /// `seq` was NACKed at `now`: the next NACK after `retry` for the first `undoubled` + 1
    /// tries, then after a back-off that doubles per try (at most `max`).
    pub fn nacked(
        &mut self,
        seq: u64,
        now: Instant,
        retry: std::time::Duration,
        max: std::time::Duration,
        undoubled: u32,
    ) {
        let Some(m) = self.by_seq.get_mut(&seq) else {
            return;
        };
        self.by_time.remove(&(m.next_nack, seq));
        let doublings = m.nacked.times().saturating_sub(undoubled).min(16);
        let backoff = retry.saturating_mul(1u32 << doublings).min(max);
        m.nacked.sent(now);
        m.next_nack = now + backoff;
        self.by_time.insert((m.next_nack, seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    #[test]
    fn due_entries_come_out_in_sequence_order_and_back_off() {
        let mut t = MissingTable::default();
        for seq in [9, 3, 5] {
            t.insert(seq, ms(1));
        }
        t.insert(7, ms(50));
        let mut out = Vec::new();
        t.due(ms(1), &mut out);
        assert_eq!(out, [3, 5, 9]);
        for &s in &out {
            t.nacked(
                s,
                ms(1),
                Duration::from_millis(10),
                Duration::from_millis(100),
                0,
            );
        }
        assert_eq!(t.next_due(), Some(ms(11)));
        assert_eq!(t.hold_back(0..6, ms(40), 1), 1);
        assert_eq!(t.hold_back(0..6, ms(40), 10), 2);
        t.due(ms(11), &mut out);
        assert_eq!(out, [9]);
        t.due_by(ms(30));
        assert_eq!(t.next_due(), Some(ms(11)));
        t.due(ms(30), &mut out);
        assert_eq!(
            out,
            [3, 5, 7, 9],
            "the hold-back until 40 and the NACK at 50 come by 30"
        );
        t.truncate_from(6);
        assert_eq!((t.len(), t.next_due()), (2, Some(ms(30))));
        t.remove(3);
        t.remove(5);
        assert!(t.len() == 0 && t.next_due().is_none());
    }

    /// The retry period stays at `retry` for the first `undoubled` retries after the first,
    /// then doubles up to `max`.
    #[test]
    fn the_back_off_doubles_after_the_undoubled_retries() {
        let mut t = MissingTable::default();
        t.insert(1, ms(0));
        let (retry, max) = (Duration::from_millis(10), Duration::from_millis(50));
        let mut now = ms(0);
        let mut waits = Vec::new();
        for _ in 0..6 {
            t.nacked(1, now, retry, max, 2);
            let next = t.next_due().unwrap();
            waits.push(next.saturating_since(now).as_millis());
            now = next;
        }
        assert_eq!(waits, [10, 10, 10, 20, 40, 50]);
    }

    #[test]
    fn a_full_table_costs_one_lookup_per_deadline_and_a_bounded_scan_per_nack() {
        let mut t = MissingTable::default();
        for seq in 0..100_000 {
            t.insert(seq, ms(seq % 7));
        }
        assert_eq!(t.next_due(), Some(ms(0)));
        let mut out = Vec::new();
        t.due(ms(10), &mut out);
        assert_eq!(out.len(), MAX_DUE_PER_NACK);
        assert!(out.windows(2).all(|w| w[0] < w[1]));
    }
}
