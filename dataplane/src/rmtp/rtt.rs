//! A smoothed round-trip time, as RFC 6298 keeps it for TCP: the first sample sets the mean and
//! half of it as the variation; later ones move the mean by 1/8 and the variation by 1/4. The
//! timers derived from it (`timeout`) are clamped between a floor and a ceiling, so that one
//! odd (or forged) sample can neither make a timer fire at once nor park it for long.
//!
//! Two kinds of timer come from it: a retry waits for an answer that normally comes, so it
//! takes `srtt + 4 rttvar` ([`RttEstimate::timeout`]); a hold-off ignores a repeated request
//! while the first answer is still on its way, so it must end before the quickest retry can
//! come, and takes half the smallest round trip seen ([`RttEstimate::holdoff`]). Samples that
//! waited behind a full queue or a lost packet raise `srtt`, never that minimum.

use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttEstimate {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The smallest sample.
    min: Option<Duration>,
    samples: u64,
}

impl RttEstimate {
    /// Takes one measured round trip.
    pub fn sample(&mut self, rtt: Duration) {
        self.samples += 1;
        self.min = Some(self.min.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// The smoothed round trip, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The smallest round trip measured.
    pub fn min(&self) -> Option<Duration> {
        self.min
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// How long to wait for an answer before asking again: `srtt + max(floor, 4 × rttvar)`
    /// within `[floor, ceiling]` (RFC 6298's `G` is `floor` here: steady samples shrink
    /// `rttvar` to nothing, and a timer at `srtt` exactly would fire before half the answers);
    /// `unmeasured` (also clamped) before the first sample.
    pub fn timeout(&self, unmeasured: Duration, floor: Duration, ceiling: Duration) -> Duration {
        let t = self
            .srtt
            .map_or(unmeasured, |s| s + (self.rttvar * 4).max(floor));
        t.clamp(floor, ceiling.max(floor))
    }

    /// How long a repeated request is ignored after it was answered: half the smallest round
    /// trip within `[floor, ceiling]`; `unmeasured` (also clamped) before the first sample.
    pub fn holdoff(&self, unmeasured: Duration, floor: Duration, ceiling: Duration) -> Duration {
        self.min
            .map_or(unmeasured, |m| m / 2)
            .clamp(floor, ceiling.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    #[test]
    fn smooths_as_rfc_6298_and_clamps() {
        let mut r = RttEstimate::default();
        let (floor, ceiling) = (us(50), us(20_000));
        assert_eq!(r.timeout(us(10_000), floor, ceiling), us(10_000));
        r.sample(us(200));
        // srtt 200, rttvar 100: 200 + 400.
        assert_eq!(r.srtt(), Some(us(200)));
        assert_eq!(r.timeout(us(10_000), floor, ceiling), us(600));
        r.sample(us(200));
        // rttvar 75, srtt 200.
        assert_eq!(r.timeout(us(10_000), floor, ceiling), us(500));
        for _ in 0..100 {
            r.sample(us(1));
        }
        // srtt about 1 µs, rttvar about 0: the floor is the least margin.
        let t = r.timeout(us(10_000), floor, ceiling);
        assert!(t > floor && t < us(52), "{t:?}");
        r.sample(Duration::from_secs(100));
        assert_eq!(r.timeout(us(10_000), floor, ceiling), ceiling);
        assert_eq!(r.samples(), 103);
    }

    #[test]
    fn the_holdoff_follows_the_smallest_round_trip() {
        let mut r = RttEstimate::default();
        let (floor, ceiling) = (us(50), us(10_000));
        assert_eq!(r.holdoff(ceiling, floor, ceiling), ceiling);
        r.sample(us(300));
        assert_eq!(r.holdoff(ceiling, floor, ceiling), us(150));
        // A sample that waited behind a queue moves srtt, not the hold-off.
        r.sample(us(3_000));
        assert_eq!(r.min(), Some(us(300)));
        assert_eq!(r.holdoff(ceiling, floor, ceiling), us(150));
        r.sample(us(40));
        assert_eq!(r.holdoff(ceiling, floor, ceiling), floor);
    }
}
