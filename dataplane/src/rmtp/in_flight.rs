//! How far past the highest byte it received a receiver lets its sender go: what the path
//! needs, not its whole window.
//!
//! A receiver's window bounds what it buffers past the oldest gap. Granted in full to an
//! unpaced sender, it all sits in the path's FIFO queue (a socket buffer on loopback), and
//! every repair and NCF waits behind it: repairs take the queue's time while the retry timers,
//! learnt from the quickest repairs, fire before they arrive. So the receiver also caps its
//! MAB at the highest byte it received plus `headroom + gain × delivery rate × round trip`:
//! the bytes the path holds (its bandwidth-delay product, `gain` times over so that the rate
//! can still grow) and a fixed margin for the bursts of real engines. The sender then never
//! has more than that in flight toward this receiver, and the queue stays that shallow.
//!
//! Both figures are measured by the receiver itself, on the time passed in:
//!
//! - the round trip of its window: a MAB that raised the most it ever granted to the first
//!   DATA ending past the old grant. No such DATA can leave the sender before the sender
//!   heard of the raise, so every sample is at least the round trip; the smallest one is
//!   kept (a queue only adds to it).
//! - the delivery rate: bytes of accepted DATA per `rate_interval`, the largest of the last
//!   [`RATE_SAMPLES`] intervals (a window pinned at a lost segment slows arrivals for a
//!   while; that is not the path's rate).
//!
//! Before both are measured the cap is the headroom alone. Forged DATA can lower the round
//! trip (the cap falls to the headroom) or raise the rate (the cap rises to the window, as
//! without it): neither takes the receiver outside what it was configured to allow.

use control::Instant;
use std::time::Duration;

/// Delivery-rate intervals the largest is taken from.
pub const RATE_SAMPLES: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct InFlightEstimate {
    /// The most the receiver ever granted (its largest MAB sent).
    granted: u64,
    /// The grant before the MAB being timed, and when that MAB left.
    probe: Option<(u64, Instant)>,
    /// The smallest window round trip.
    rtt_min: Option<Duration>,
    /// The current rate interval: when it started and the bytes accepted since.
    interval: Option<(Instant, u64)>,
    /// Bytes per second of the last intervals (0: none yet).
    rates: [u64; RATE_SAMPLES],
    next_rate: usize,
    /// The bandwidth-delay product, bytes: [`Self::rate`] × [`Self::rtt_min`], kept as they
    /// change (a receiver asks for it with every DATA; a 128-bit division each time showed).
    bdp: u64,
}

impl InFlightEstimate {
    /// A MAB granting bytes below `mab` left now.
    pub fn on_report(&mut self, now: Instant, mab: u64) {
        if mab <= self.granted {
            return;
        }
        // The first grant is not timed: a sender may start on its initial window before
        // hearing any MAB.
        if self.granted > 0 && self.probe.is_none() {
            self.probe = Some((self.granted, now));
        }
        self.granted = mab;
    }

    /// DATA (new or repair) of `len` bytes ending at byte `end` was accepted now.
    pub fn on_data(&mut self, now: Instant, end: u64, len: u64, rate_interval: Duration) {
        if let Some((before, at)) = self.probe
            && end > before
        {
            let sample = now.saturating_since(at);
            self.rtt_min = Some(self.rtt_min.map_or(sample, |m| m.min(sample)));
            self.probe = None;
            self.bdp = self.product();
        }
        let Some((start, bytes)) = self.interval else {
            // The first arrival opens the first interval: what came before it is unknown.
            self.interval = Some((now, 0));
            return;
        };
        let bytes = bytes.saturating_add(len);
        let elapsed = now.saturating_since(start);
        if elapsed < rate_interval.max(Duration::from_nanos(1)) {
            self.interval = Some((start, bytes));
            return;
        }
        let per_second = u128::from(bytes) * 1_000_000_000 / elapsed.as_nanos().max(1);
        self.rates[self.next_rate] = u64::try_from(per_second).unwrap_or(u64::MAX);
        self.next_rate = (self.next_rate + 1) % RATE_SAMPLES;
        self.interval = Some((now, 0));
        self.bdp = self.product();
    }

    /// The smallest window round trip measured.
    pub fn rtt_min(&self) -> Option<Duration> {
        self.rtt_min
    }

    /// The largest delivery rate of the last intervals, bytes per second.
    pub fn rate(&self) -> Option<u64> {
        self.rates.iter().copied().max().filter(|&r| r > 0)
    }

    /// Bytes the sender may have in flight past the highest byte received: `headroom` plus
    /// `gain` bandwidth-delay products once both are measured.
    pub fn allowance(&self, headroom: u64, gain: u64) -> u64 {
        headroom.saturating_add(self.bdp.saturating_mul(gain))
    }

    /// Rate × smallest round trip, bytes (0 until both are measured).
    fn product(&self) -> u64 {
        match (self.rate(), self.rtt_min) {
            (Some(rate), Some(rtt)) => {
                let bytes = u128::from(rate) * rtt.as_nanos() / 1_000_000_000;
                u64::try_from(bytes).unwrap_or(u64::MAX)
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: u64) -> Instant {
        Instant::from_nanos(v * 1000)
    }

    const INTERVAL: Duration = Duration::from_millis(1);

    #[test]
    fn the_round_trip_runs_from_a_raised_grant_to_the_first_data_past_the_old_one() {
        let mut e = InFlightEstimate::default();
        // The first grant is not timed (the initial window needs no MAB).
        e.on_report(us(0), 10_000);
        e.on_data(us(5), 20_000, 1000, INTERVAL);
        assert_eq!(e.rtt_min(), None);
        e.on_report(us(10), 30_000);
        // Data up to the old grant says nothing; the first past it ends the sample.
        e.on_data(us(40), 10_000, 1000, INTERVAL);
        assert_eq!(e.rtt_min(), None);
        e.on_data(us(110), 11_000, 1000, INTERVAL);
        assert_eq!(e.rtt_min(), Some(Duration::from_micros(100)));
        // A slower sample (a queue) does not raise it; a quicker one lowers it.
        e.on_report(us(200), 40_000);
        e.on_data(us(600), 31_000, 1000, INTERVAL);
        assert_eq!(e.rtt_min(), Some(Duration::from_micros(100)));
        e.on_report(us(700), 50_000);
        e.on_data(us(760), 41_000, 1000, INTERVAL);
        assert_eq!(e.rtt_min(), Some(Duration::from_micros(60)));
        // A MAB that grants nothing new times nothing.
        e.on_report(us(800), 50_000);
        e.on_data(us(900), 51_000, 1000, INTERVAL);
        assert_eq!(e.rtt_min(), Some(Duration::from_micros(60)));
    }

    #[test]
    fn the_rate_is_the_largest_of_the_last_intervals() {
        let mut e = InFlightEstimate::default();
        assert_eq!(e.rate(), None);
        // 1000 bytes every 10 µs: 100 MB/s.
        for i in 0..=100 {
            e.on_data(us(i * 10), i * 1000, 1000, INTERVAL);
        }
        assert_eq!(e.rate(), Some(100_000_000));
        // A slower interval does not lower it while the fast one is among the last.
        for i in 1..=10 {
            e.on_data(us(1000 + i * 100), 200_000 + i * 1000, 1000, INTERVAL);
        }
        assert_eq!(e.rate(), Some(100_000_000));
        // Once every remembered interval is slow, the rate is theirs.
        for i in 11..=10 * (RATE_SAMPLES as u64 + 1) {
            e.on_data(us(1000 + i * 100), 200_000 + i * 1000, 1000, INTERVAL);
        }
        assert_eq!(e.rate(), Some(10_000_000));
    }

    #[test]
    fn the_allowance_is_the_headroom_until_measured_then_adds_gain_products() {
        let mut e = InFlightEstimate::default();
        assert_eq!(e.allowance(64_000, 2), 64_000);
        e.on_report(us(0), 10_000);
        e.on_report(us(0), 20_000);
        // 100 MB/s, and a 100 µs round trip: 10 kB in the path.
        for i in 0..=100 {
            e.on_data(us(100 + i * 10), 20_000 + i * 1000, 1000, INTERVAL);
        }
        assert_eq!(e.rtt_min(), Some(Duration::from_micros(100)));
        assert_eq!(e.allowance(64_000, 2), 64_000 + 2 * 10_000);
        assert_eq!(e.allowance(u64::MAX, 2), u64::MAX, "saturates");
    }
}
