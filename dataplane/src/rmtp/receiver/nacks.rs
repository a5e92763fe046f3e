//! How the receiver asks for repairs: NACKs built from the missing table, their timers derived
//! from the measured repair round trip, and the hold-off an NCF asks for.

use super::*;

impl<K: Sink> RmtpReceiver<K> {
    /// The relay has these sequences on order: hold back their NACKs.
    pub fn handle_ncf(&mut self, now: Instant, ranges: impl IntoIterator<Item = SeqRange>) {
        self.stats.ncfs_received += 1;
        let until = now + self.ncf_holdoff();
        let mut budget = MAX_DUE_PER_NACK;
        for r in ranges {
            budget -= self.missing.hold_back(r.first..r.end(), until, budget);
        }
    }

    /// The measured repair round trip, if any.
    pub fn repair_rtt(&self) -> &RttEstimate {
        &self.repair_rtt
    }

    /// Takes the round trip a repair of a sequence NACKed as `nacked` measures, if any.
    pub(super) fn time_repair(&mut self, now: Instant, nacked: &Asked) {
        let rtt = match self.repair_rtt.time_answer(nacked, now) {
            AnswerTiming::Measured(rtt) => rtt,
            AnswerTiming::SpuriousRetry => {
                self.stats.nack_retries_spurious += 1;
                return;
            }
            AnswerTiming::Ambiguous | AnswerTiming::Unasked => return,
        };
        self.repair_rtt.sample(rtt);
        if self.repair_rtt.samples() == 1 {
            // NACKs and hold-backs timed so far used the unmeasured defaults.
            self.missing.due_by(now + self.nack_retry());
        }
        self.stats.repair_rtt_samples = self.repair_rtt.samples();
        self.stats.repair_srtt_nanos = self
            .repair_rtt
            .srtt()
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The wait before a gap's first NACK: a quarter of the quickest repair round trip once
    /// measured, `nack_delay` at most. It allows for reordering, which is the path's, not
    /// the queue's: a repair that waited behind a burst raises `srtt`, and a FIFO queue
    /// reorders nothing. The repair itself takes a round trip; waiting longer only holds the
    /// window.
    pub(super) fn nack_delay(&self) -> Duration {
        let c = &self.config;
        match self.repair_rtt.min() {
            Some(min) => (min / 4).clamp(c.timer_floor, c.nack_delay.max(c.timer_floor)),
            None => c.nack_delay,
        }
    }

    /// The first NACK retry: the repair round trip's `srtt + 4 rttvar` once measured,
    /// `nack_retry` at most.
    fn nack_retry(&self) -> Duration {
        let c = &self.config;
        self.repair_rtt
            .timeout(c.nack_retry, c.timer_floor, c.nack_retry)
    }

    /// How long an NCF holds a NACK back: the retry timer once a repair round trip is
    /// measured (the relay has the sequence on order; its repair is due within it),
    /// `ncf_holdoff` at most.
    fn ncf_holdoff(&self) -> Duration {
        let c = &self.config;
        self.repair_rtt
            .timeout(c.ncf_holdoff, c.timer_floor, c.ncf_holdoff)
    }

    pub(super) fn build_nack(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        // Asked after every packet: nothing due is the common case, answered before the
        // range buffer is even set up.
        if self.state != State::Receiving || self.missing.next_due().is_none_or(|at| at > now) {
            return None;
        }
        let limit = rmtp::max_nack_ranges(self.config.mtu).min(MAX_RANGES);
        let mut ranges = RangeBuf::<MAX_RANGES>::default();
        let (retry, max) = (self.nack_retry(), self.config.nack_retry_max);
        let undoubled = self.config.nack_retries_undoubled;
        let mut due = std::mem::take(&mut self.due);
        self.missing.due(now, &mut due);
        for &seq in &due {
            if seq < self.trailing {
                // The sender no longer repairs it (the receiver fails on such an edge).
                self.missing.remove(seq);
                continue;
            }
            if !ranges.push(seq, limit) {
                break;
            }
            self.missing.nacked(seq, now, retry, max, undoubled);
            self.stats.sequences_nacked += 1;
        }
        self.due = due;
        if ranges.is_empty() {
            return None;
        }
        self.stats.nacks_sent += 1;
        rmtp::build_nack(
            buf,
            self.config.sender,
            self.config.me,
            self.config.group,
            ranges.as_slice(),
        )
        .ok()
    }
}
