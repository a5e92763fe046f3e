//! What a relay believes of one tree's sequence and byte space, taken only from what it has
//! forwarded and never further than one step per packet: the yardstick against which NACKs and
//! MABs from below are judged. Every field it is fed passed the DNP checksum and the CRC-32C,
//! so every field may be forged.

use control::wire::rmtp::{SpmFields, TOTAL_UNKNOWN};

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Edges {
    /// One past the highest sequence forwarded as DATA or RETRANSMIT.
    data_leading: u64,
    /// One past the highest sequence known to exist: `data_leading`, or an SPM's leading edge.
    leading: u64,
    /// One past the highest byte known to exist (DATA end, or what an SPM's leading edge implies).
    leading_byte: u64,
    /// The largest DATA payload seen: the segment size, or more (a forger's), which only makes
    /// the trailing edge below more cautious.
    segment: u64,
    /// The `received` this relay last reported upstream (bytes every receiver below holds).
    /// The last, not the highest: a forged MAB can raise one report, and the next real one
    /// must bring it back down.
    reported_received: u64,
    /// The oldest sequence the sender still repairs, as far as this relay can know: the sender
    /// moves it only as far as every receiver reported holding, and this relay's receivers
    /// last reported no more than `reported_received`. It follows the last SPM rather than
    /// ratcheting up: one forged SPM or MAB must not make the relay refuse, for good, the NACKs
    /// of a receiver that is behind.
    trailing: u64,
    /// The least total size an SPM announced (`None` before any announced one). The least: a
    /// forged SPM can lower it, which only makes more reports count as completion claims (each
    /// then counts from the peer's second in a row), never fewer.
    least_total: Option<u64>,
}

/// Moves `edge` toward `to`, never back and never by more than `step` at once.
fn advance(edge: &mut u64, to: u64, step: u64) {
    *edge = (*edge).max(to.min(edge.saturating_add(step)));
}

impl Edges {
    /// A DATA or RETRANSMIT `seq` whose `len` payload bytes end at byte `end`; the caller
    /// checked that neither `seq + 1` nor `end` overflows.
    pub(crate) fn on_data(&mut self, seq: u64, len: u64, end: u64, step: u64) {
        self.segment = self.segment.max(len);
        let next = seq.saturating_add(1);
        advance(&mut self.data_leading, next, step);
        advance(&mut self.leading, next, step);
        advance(&mut self.leading_byte, end, step);
    }

    /// An SPM the caller checked to have `trailing <= leading`.
    pub(crate) fn on_spm(&mut self, spm: &SpmFields, step: u64) {
        advance(&mut self.leading, spm.leading, step);
        // Every segment but the last is full, so the leading edge times the segment size
        // bounds what was sent; the total bounds it once known (`TOTAL_UNKNOWN` is u64::MAX).
        let sent = spm
            .leading
            .saturating_mul(spm.segment_size.into())
            .min(spm.total);
        advance(&mut self.leading_byte, sent, step);
        if spm.total != TOTAL_UNKNOWN {
            self.least_total = Some(self.least_total.map_or(spm.total, |t| t.min(spm.total)));
        }
        let held = self
            .reported_received
            .checked_div(self.segment)
            .unwrap_or(0)
            .min(self.data_leading);
        self.trailing = spm.trailing.min(held);
    }

    /// This relay reported upstream that every receiver below holds the bytes below
    /// `received`.
    pub(crate) fn on_report_sent(&mut self, received: u64) {
        self.reported_received = received;
    }

    pub(crate) fn leading(&self) -> u64 {
        self.leading
    }

    /// Whether a report of `received` claims every byte of the transfer: all this relay
    /// forwarded, or the total the sender's SPMs announced. Only a receiver that verified the
    /// whole transfer reports either (the others report one byte less); the total holds even
    /// when a forged SPM or DATA raised what the relay believes was forwarded.
    pub(crate) fn claims_everything(&self, received: u64) -> bool {
        received >= self.leading_byte || self.least_total.is_some_and(|t| received >= t)
    }

    /// One past the highest byte known to exist here.
    pub(crate) fn leading_byte(&self) -> u64 {
        self.leading_byte
    }

    pub(crate) fn trailing(&self) -> u64 {
        self.trailing
    }

    /// A MAB `(mab, received)` (with `received <= mab`) as it may count here: `received` cut
    /// to the bytes forwarded here, `mab` to one `step` beyond them. Still `received <= mab`.
    pub(crate) fn bound_report(&self, mab: u64, received: u64, step: u64) -> (u64, u64) {
        (
            mab.min(self.leading_byte.saturating_add(step)),
            received.min(self.leading_byte),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::wire::rmtp::TOTAL_UNKNOWN;

    fn spm(trailing: u64, leading: u64) -> SpmFields {
        SpmFields {
            spm_sequence: 0,
            trailing,
            leading,
            segment_size: 100,
            total: TOTAL_UNKNOWN,
            finished: false,
            hash: [0; 32],
        }
    }

    #[test]
    fn edges_advance_at_most_one_step_per_packet() {
        let mut e = Edges::default();
        e.on_data(9, 100, 1000, 50);
        assert_eq!((e.leading(), e.leading_byte), (10, 50));
        e.on_spm(&spm(u64::MAX, u64::MAX), 50);
        assert_eq!(e.leading(), 60);
        assert_eq!(e.trailing(), 0, "nobody below reported holding anything");
        e.on_report_sent(750);
        e.on_spm(&spm(u64::MAX, u64::MAX), 50);
        assert_eq!(e.trailing(), 7, "what receivers below reported holding");
        e.on_data(3, 100, 400, 50);
        assert_eq!(e.leading(), 110, "never back");
    }

    #[test]
    fn reports_are_bounded_by_the_data_forwarded() {
        let mut e = Edges::default();
        e.on_data(9, 100, 1000, 1 << 20);
        assert_eq!(e.bound_report(5000, 900, 4096), (5000, 900));
        assert_eq!(
            e.bound_report(u64::MAX, u64::MAX, 4096),
            (1000 + 4096, 1000)
        );
    }
}
