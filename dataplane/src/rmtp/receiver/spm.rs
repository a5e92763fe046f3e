//! What the receiver makes of its sender's SPMs: whether one is plausible, the agreement rule
//! for the trailing edge and the content hash, and a contrary shape that refused SPMs keep
//! claiming.

use super::*;

impl<K: Sink> RmtpReceiver<K> {
    /// Whether an SPM could have come from this transfer's sender: a non-zero segment size and
    /// a total that agree with what is known, a trailing edge not past the leading edge, a
    /// leading edge within the transfer, and a finished SPM that has sent everything (with
    /// the announced hash, if announced).
    fn spm_plausible(&self, spm: &SpmFields, segment: Option<u64>, known: Option<u64>) -> bool {
        let seg = u64::from(spm.segment_size);
        if seg == 0 || segment.is_some_and(|s| s != seg) {
            return false;
        }
        let total = (spm.total != TOTAL_UNKNOWN).then_some(spm.total);
        if known.is_some() && total != known {
            return false;
        }
        if spm.trailing > spm.leading {
            return false;
        }
        let edges_ok = match total.map(|t| t.div_ceil(seg)) {
            Some(segments) => spm.leading <= segments && (!spm.finished || spm.leading == segments),
            None => !spm.finished,
        };
        let announced = self.config.announced.map(|a| a.hash);
        edges_ok && (!spm.finished || announced.is_none_or(|h| h == spm.hash))
    }

    /// Each field by its own rule, not by SPM sequence (a forged sequence of 2^64 − 1 would
    /// make every later SPM look old): the shape is adopted once, the leading edge only
    /// grows, the trailing edge and the hash are believed when `spm_agreement` SPMs in a row
    /// agree on them.
    pub(super) fn handle_spm(&mut self, now: Instant, spm: &SpmFields) {
        self.stats.spms_received += 1;
        if self.state == State::Failed {
            return;
        }
        if !self.spm_plausible(spm, self.segment, self.total) {
            self.stats.spms_refused += 1;
            if self.state == State::Receiving {
                self.weigh_contrary_shape(now, spm);
            }
            return;
        }
        self.contrary_shape = None;
        self.accept_spm(now, spm);
    }

    /// A shape learnt from an SPM may have come from a forged one: `spm_agreement` SPMs in a
    /// row that agree on another plausible shape replace it, as long as what was delivered is
    /// whole segments of the new shape (always so before the first byte). An announced shape
    /// is never replaced.
    fn weigh_contrary_shape(&mut self, now: Instant, spm: &SpmFields) {
        if self.config.announced.is_some() || !self.spm_plausible(spm, None, None) {
            return;
        }
        let seg = u64::from(spm.segment_size);
        let shape = (seg, spm.total);
        let count = match self.contrary_shape {
            Some((s, n)) if s == shape => n + 1,
            _ => 1,
        };
        self.contrary_shape = Some((shape, count));
        let whole = self.next_seq.checked_mul(seg) == Some(self.delivered)
            && (spm.total == TOTAL_UNKNOWN || self.delivered <= spm.total);
        if count < self.config.spm_agreement.max(1) || !whole {
            return;
        }
        self.stats.shapes_replaced += 1;
        self.segment = None;
        self.total = None;
        self.hash = None;
        self.leading = 0;
        self.trailing = 0;
        self.recent_spms.clear();
        self.contrary_shape = None;
        self.missing.clear();
        self.tracked_end = self.next_seq;
        self.buffered.clear();
        self.accept_spm(now, spm);
    }

    /// Takes in a plausible SPM (also once complete: its trailing edge ends the linger). It is
    /// answered with a MAB: a sender whose window stayed closed probes with SPMs, in case the
    /// MAB that would open it was lost.
    fn accept_spm(&mut self, now: Instant, spm: &SpmFields) {
        self.heard(now);
        self.mab_due = true;
        self.segment = Some(u64::from(spm.segment_size));
        if self.total.is_none() && spm.total != TOTAL_UNKNOWN {
            self.adopt_total(spm.total);
        }
        self.leading = self.leading.max(spm.leading);
        let agreement = self.config.spm_agreement.max(1);
        if self.recent_spms.len() == agreement {
            self.recent_spms.pop_front();
        }
        self.recent_spms.push_back(SpmClaim {
            trailing: spm.trailing,
            hash: spm.finished.then_some(spm.hash),
        });
        if self.recent_spms.len() == agreement {
            let agreed = self.recent_spms.iter().map(|c| c.trailing).min();
            self.trailing = self.trailing.max(agreed.unwrap_or(0));
            let first = self.recent_spms[0].hash;
            if self.hash.is_none() && self.recent_spms.iter().all(|c| c.hash == first) {
                self.hash = first;
            }
        }
        if self.trailing > self.next_seq && self.total.is_none_or(|t| self.delivered < t) {
            self.fail(FailReason::Unrecoverable {
                sequence: self.next_seq,
                trailing: self.trailing,
            });
            return;
        }
        self.extend_tracking(now, self.leading);
        self.check_complete(now);
        self.check_linger(now);
    }

    /// The total is known from now on: nothing beyond it is held or waited for.
    fn adopt_total(&mut self, total: u64) {
        self.total = Some(total);
        if let Some(segments) = self.segments() {
            self.buffered.drop_from(segments);
            self.missing.truncate_from(segments);
        }
    }
}
