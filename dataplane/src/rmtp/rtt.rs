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
//!
//! Samples come from answers to requests (a repair to a NACK): [`Asked`] keeps when a request
//! went and [`RttEstimate::time_answer`] says what its answer measures.

use control::Instant;
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

/// When a request was sent (a NACK, which its repair answers): how often and the latest time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Asked {
    times: u32,
    last: Instant,
}

impl Asked {
    /// The request went (again) at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last = now;
        self.times = self.times.saturating_add(1);
    }

    /// Times it went.
    pub fn times(&self) -> u32 {
        self.times
    }
}

/// What an answer says of the round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerTiming {
    /// The request went once: its round trip.
    Measured(Duration),
    /// It went again, but the answer came sooner after the latest send than any answer ever
    /// came, so it answers an earlier one and the retry was needless (Eifel's test, RFC 3522,
    /// with the smallest round trip for a timestamp). Counted, not sampled: timed from the
    /// send before, such answers lengthen the retry timers to the repairs' queueing delay,
    /// which cut duplicate repairs on loopback (2% loss, one receiver: 27% fewer) but slowed
    /// recovery where a third of NACK/repair pairs lose a packet (the simulator's deep-queue
    /// star, 3 receivers at 10% loss: 0.20-0.33 s became 0.33-0.66 s over seeds 1-4). Karn's
    /// short timer is a hedge that pays for itself there.
    SpuriousRetry,
    /// It went again and the answer may be to the latest send: no sample (Karn).
    Ambiguous,
    /// It never went.
    Unasked,
}

impl RttEstimate {
    /// What an answer arriving at `now` to the request `asked` measures.
    pub fn time_answer(&self, asked: &Asked, now: Instant) -> AnswerTiming {
        let since = now.saturating_since(asked.last);
        match asked.times {
            0 => AnswerTiming::Unasked,
            1 => AnswerTiming::Measured(since),
            _ if self.min.is_some_and(|min| since < min) => AnswerTiming::SpuriousRetry,
            _ => AnswerTiming::Ambiguous,
        }
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

    #[test]
    fn a_retried_request_is_spurious_when_its_answer_beats_the_quickest_round_trip() {
        let at = |v: u64| Instant::from_nanos(v * 1_000);
        let mut r = RttEstimate::default();
        let mut asked = Asked::default();
        assert_eq!(r.time_answer(&asked, at(5)), AnswerTiming::Unasked);
        asked.sent(at(100));
        assert_eq!(
            r.time_answer(&asked, at(400)),
            AnswerTiming::Measured(us(300))
        );
        asked.sent(at(700));
        // Nothing measured yet: no quickest round trip to compare with.
        assert_eq!(r.time_answer(&asked, at(750)), AnswerTiming::Ambiguous);
        r.sample(us(300));
        // 50 µs after the retry, quicker than any repair: an answer to the first NACK.
        assert_eq!(r.time_answer(&asked, at(750)), AnswerTiming::SpuriousRetry);
        // 300 µs after the retry could be its own answer.
        assert_eq!(r.time_answer(&asked, at(1_000)), AnswerTiming::Ambiguous);
        assert_eq!(asked.times(), 2);
    }
}
