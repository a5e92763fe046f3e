//! A smoothed round-trip time, as RFC 6298 keeps it for TCP: the first sample sets the mean and
//! half of it as the variation; later ones move the mean by 1/8 and the variation by 1/4. The
//! timers derived from it (`timeout`) are clamped between a floor and a ceiling, so that one
//! odd (or forged) sample can neither make a timer fire at once nor park it for long.

use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttEstimate {
    srtt: Option<Duration>,
    rttvar: Duration,
    samples: u64,
}

impl RttEstimate {
    /// Takes one measured round trip.
    pub fn sample(&mut self, rtt: Duration) {
        self.samples += 1;
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

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// How long to wait for an answer before asking again: `srtt + 4 × rttvar` within
    /// `[floor, ceiling]`; `unmeasured` (also clamped) before the first sample.
    pub fn timeout(&self, unmeasured: Duration, floor: Duration, ceiling: Duration) -> Duration {
        let t = self.srtt.map_or(unmeasured, |s| s + self.rttvar * 4);
        t.clamp(floor, ceiling.max(floor))
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
        assert_eq!(r.timeout(us(10_000), floor, ceiling), floor);
        r.sample(Duration::from_secs(100));
        assert_eq!(r.timeout(us(10_000), floor, ceiling), ceiling);
        assert_eq!(r.samples(), 103);
    }
}
