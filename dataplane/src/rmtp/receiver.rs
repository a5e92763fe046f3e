//! The RMTP receiver (seed §6.2): one member's side of one transfer. It accepts data up to its
//! MAB (a sliding window of `window` bytes past what it delivered), hands contiguous data to a
//! [`Sink`], detects gaps (from later data, and from the SPM's leading edge for tail loss),
//! NACKs them with back-off (several gaps per NACK), holds back after an NCF, and reports its
//! MAB periodically and as it advances.
//!
//! NACK and MAB leave as sealed packets (DNP dst = sender, src = this node), built into a
//! caller buffer; the node hands them to its relay as coming from this local member.

use super::sink::{Sink, SinkError};
use super::{MAX_RANGES, RangeBuf, RmtpError};
use control::wire::dnp::{Flag, Packet};
use control::wire::rmtp::{self, Data, Mab, Ncf, SeqRange, SpmFields, TOTAL_UNKNOWN};
use control::{GroupAddr, Instant, NodeAddr};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// This node (the NACK/MAB source address).
    pub me: NodeAddr,
    pub group: GroupAddr,
    pub sender: NodeAddr,
    pub mtu: usize,
    /// Bytes accepted beyond what was delivered: MAB = delivered + window.
    pub window: u64,
    /// Wait this long after noticing a gap before the first NACK (reordering).
    pub nack_delay: Duration,
    /// First NACK retry; doubles per retry up to `nack_retry_max`.
    pub nack_retry: Duration,
    pub nack_retry_max: Duration,
    /// After an NCF for a sequence, do not NACK it again for this long.
    pub ncf_holdoff: Duration,
    pub mab_interval: Duration,
    /// Report the MAB at once when it advanced this many bytes (0: a quarter window).
    pub mab_step: u64,
    /// Most missing sequences tracked at once (bounds memory on hostile input).
    pub max_missing: usize,
}

impl ReceiverConfig {
    pub fn new(me: NodeAddr, group: GroupAddr, sender: NodeAddr, mtu: usize) -> Self {
        ReceiverConfig {
            me,
            group,
            sender,
            mtu,
            window: 256 * 1024,
            nack_delay: Duration::from_millis(1),
            nack_retry: Duration::from_millis(10),
            nack_retry_max: Duration::from_millis(200),
            ncf_holdoff: Duration::from_millis(15),
            mab_interval: Duration::from_millis(50),
            mab_step: 0,
            max_missing: 1 << 16,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub delivered_bytes: u64,
    pub data_received: u64,
    pub duplicates: u64,
    pub crc_failures: u64,
    pub nacks_sent: u64,
    /// Sequences named in NACKs, retries included.
    pub sequences_nacked: u64,
    pub ncfs_received: u64,
    pub repairs_received: u64,
    pub beyond_window: u64,
    pub malformed: u64,
    pub spms_received: u64,
    pub mabs_sent: u64,
}

/// Why a transfer failed; the sink's result stays partial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The sender's trailing edge passed a sequence this receiver never got.
    Unrecoverable {
        sequence: u64,
        trailing: u64,
    },
    HashMismatch,
    /// The sink could not write (the message says why).
    Sink(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// Every byte delivered and the content hash verified by the sink.
    Complete {
        bytes: u64,
        hash: [u8; 32],
    },
    Failed(FailReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Receiving,
    Complete,
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct Miss {
    next_nack: Instant,
    tries: u32,
}

#[derive(Clone, Copy, Debug)]
struct SpmState {
    sequence: u64,
    trailing: u64,
    leading: u64,
    total: u64,
    finished: bool,
    hash: [u8; 32],
}

pub struct RmtpReceiver<K: Sink> {
    config: ReceiverConfig,
    sink: K,
    state: State,
    /// Next sequence to deliver; `delivered` bytes are in the sink.
    next_seq: u64,
    delivered: u64,
    segment: Option<u64>,
    /// Out-of-order segments waiting for the gap before them.
    buffered: BTreeMap<u64, Vec<u8>>,
    /// Spare buffers, so steady state does not allocate per packet.
    pool: Vec<Vec<u8>>,
    /// Every sequence below is delivered, buffered or in `missing`.
    tracked_end: u64,
    missing: BTreeMap<u64, Miss>,
    spm: Option<SpmState>,
    mab_reported: u64,
    mab_due: bool,
    next_mab_at: Instant,
    events: VecDeque<ReceiverEvent>,
    stats: ReceiverStats,
}

impl<K: Sink> RmtpReceiver<K> {
    pub fn new(config: ReceiverConfig, sink: K, now: Instant) -> Self {
        RmtpReceiver {
            config,
            sink,
            state: State::Receiving,
            next_seq: 0,
            delivered: 0,
            segment: None,
            buffered: BTreeMap::new(),
            pool: Vec::new(),
            tracked_end: 0,
            missing: BTreeMap::new(),
            spm: None,
            mab_reported: 0,
            mab_due: true,
            next_mab_at: now,
            events: VecDeque::new(),
            stats: ReceiverStats::default(),
        }
    }

    pub fn stats(&self) -> &ReceiverStats {
        &self.stats
    }

    pub fn sink(&self) -> &K {
        &self.sink
    }

    pub fn into_sink(self) -> K {
        self.sink
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The maximum acceptable byte: data ending above it is refused.
    pub fn mab(&self) -> u64 {
        self.delivered.saturating_add(self.config.window)
    }

    pub fn is_complete(&self) -> bool {
        self.state == State::Complete
    }

    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Sequences currently known missing.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.events.pop_front()
    }

    /// Gives up: the sink keeps a partial result, and this receiver no longer holds the
    /// sender back.
    pub fn abort(&mut self) {
        if self.state == State::Receiving {
            self.sink.abort();
            self.state = State::Failed;
            self.missing.clear();
            self.mab_due = true;
        }
    }

    /// DATA, RETRANSMIT, SPM or NCF of this receiver's tree.
    pub fn handle_packet(&mut self, now: Instant, packet: &Packet<'_>) -> Result<(), RmtpError> {
        let res = self.dispatch(now, packet);
        if res.is_err() {
            self.stats.malformed += 1;
        }
        res
    }

    fn dispatch(&mut self, now: Instant, packet: &Packet<'_>) -> Result<(), RmtpError> {
        let ours = packet.dst().raw() == self.config.group.get()
            && packet.src_raw() == self.config.sender.get();
        match packet.flag() {
            Flag::RmtpData | Flag::RmtpRetransmit if ours => {
                let data = Data::parse(packet.body())?;
                self.handle_data(now, &data, packet.flag() == Flag::RmtpRetransmit);
                Ok(())
            }
            Flag::RmtpSpm if ours => {
                let spm = SpmFields::parse(packet.body())?;
                self.handle_spm(now, &spm);
                Ok(())
            }
            Flag::RmtpNcf => {
                let ncf = Ncf::parse(packet.body())?;
                if ncf.group != self.config.group.get() || ncf.sender != self.config.sender.get() {
                    return Err(RmtpError::OtherTree);
                }
                self.handle_ncf(now, ncf.ranges.iter());
                Ok(())
            }
            Flag::RmtpData | Flag::RmtpRetransmit | Flag::RmtpSpm => Err(RmtpError::OtherTree),
            other => Err(RmtpError::UnexpectedFlag(other as u16)),
        }
    }

    fn limit_seq(&self) -> u64 {
        match self.segment {
            Some(seg) => self.mab().div_ceil(seg),
            None => self.tracked_end,
        }
    }

    /// Marks every untracked sequence below `up_to` (and inside the window) missing.
    fn extend_tracking(&mut self, now: Instant, up_to: u64) {
        let up_to = up_to.min(self.limit_seq());
        let mut seq = self.tracked_end.max(self.next_seq);
        while seq < up_to {
            if self.missing.len() >= self.config.max_missing {
                break;
            }
            if !self.buffered.contains_key(&seq) {
                self.missing.insert(
                    seq,
                    Miss {
                        next_nack: now + self.config.nack_delay,
                        tries: 0,
                    },
                );
            }
            seq += 1;
        }
        self.tracked_end = self.tracked_end.max(seq);
    }

    /// Checks a segment against the segment size (learnt from SPM or from data).
    fn consistent(&mut self, seq: u64, offset: u64, len: u64) -> bool {
        let seg = match self.segment {
            Some(seg) => seg,
            None if seq == 0 => return offset == 0,
            None => {
                if !offset.is_multiple_of(seq) || offset / seq < len.max(1) {
                    return false;
                }
                self.segment = Some(offset / seq);
                offset / seq
            }
        };
        let total_ok = match self.spm {
            Some(s) if s.total != TOTAL_UNKNOWN => offset.saturating_add(len) <= s.total,
            _ => true,
        };
        seq.checked_mul(seg) == Some(offset) && len <= seg && total_ok
    }

    fn handle_data(&mut self, now: Instant, data: &Data<'_>, retransmit: bool) {
        self.stats.data_received += 1;
        if self.state != State::Receiving {
            self.stats.duplicates += 1;
            return;
        }
        // The CRC covers the header too, so nothing in a failing packet is trusted: the gap
        // it leaves is found and NACKed like a loss.
        if !data.crc_ok() {
            self.stats.crc_failures += 1;
            return;
        }
        let (seq, offset, payload) = (data.sequence(), data.offset(), data.payload());
        if !self.consistent(seq, offset, payload.len() as u64) {
            self.stats.malformed += 1;
            return;
        }
        if seq < self.next_seq || self.buffered.contains_key(&seq) {
            self.stats.duplicates += 1;
            return;
        }
        if offset + payload.len() as u64 > self.mab() {
            self.stats.beyond_window += 1;
            return;
        }
        if retransmit {
            self.stats.repairs_received += 1;
        }
        self.missing.remove(&seq);
        self.extend_tracking(now, seq);
        self.tracked_end = self.tracked_end.max(seq + 1);
        if seq == self.next_seq {
            if !self.deliver(offset, payload) {
                return;
            }
            self.drain();
        } else {
            let mut buf = self.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(payload);
            self.buffered.insert(seq, buf);
        }
        self.progressed(now);
    }

    fn deliver(&mut self, offset: u64, payload: &[u8]) -> bool {
        if let Err(e) = self.sink.write_at(offset, payload) {
            self.fail(sink_reason(&e));
            return false;
        }
        self.delivered += payload.len() as u64;
        self.stats.delivered_bytes = self.delivered;
        self.next_seq += 1;
        true
    }

    fn drain(&mut self) {
        while let Some(entry) = self.buffered.first_entry() {
            if *entry.key() != self.next_seq {
                break;
            }
            let buf = entry.remove();
            let ok = self.deliver(self.delivered, &buf);
            self.pool.push(buf);
            if !ok {
                return;
            }
        }
    }

    fn progressed(&mut self, now: Instant) {
        if self.state != State::Receiving {
            return;
        }
        let step = if self.config.mab_step == 0 {
            (self.config.window / 4).max(1)
        } else {
            self.config.mab_step
        };
        if self.mab() >= self.mab_reported.saturating_add(step) {
            self.mab_due = true;
        }
        if let Some(lead) = self.spm.map(|s| s.leading) {
            self.extend_tracking(now, lead);
        }
        self.check_complete();
    }

    fn check_complete(&mut self) {
        let Some(spm) = self.spm else { return };
        if self.state != State::Receiving
            || !spm.finished
            || spm.total == TOTAL_UNKNOWN
            || self.delivered < spm.total
        {
            return;
        }
        match self.sink.finish(&spm.hash) {
            Ok(()) => {
                self.state = State::Complete;
                self.missing.clear();
                self.mab_due = true;
                self.events.push_back(ReceiverEvent::Complete {
                    bytes: self.delivered,
                    hash: spm.hash,
                });
            }
            Err(e) => self.fail(sink_reason(&e)),
        }
    }

    fn fail(&mut self, reason: FailReason) {
        if self.state == State::Receiving {
            self.sink.abort();
        }
        self.state = State::Failed;
        self.missing.clear();
        self.mab_due = true;
        self.events.push_back(ReceiverEvent::Failed(reason));
    }

    fn handle_spm(&mut self, now: Instant, spm: &SpmFields) {
        self.stats.spms_received += 1;
        if self.state != State::Receiving {
            return;
        }
        if self.spm.is_some_and(|s| spm.spm_sequence <= s.sequence) {
            return; // an older SPM, late
        }
        let seg = u64::from(spm.segment_size);
        if seg == 0 || self.segment.is_some_and(|s| s != seg) {
            self.stats.malformed += 1;
            return;
        }
        self.segment = Some(seg);
        self.spm = Some(SpmState {
            sequence: spm.spm_sequence,
            trailing: spm.trailing,
            leading: spm.leading,
            total: spm.total,
            finished: spm.finished,
            hash: spm.hash,
        });
        if spm.trailing > self.next_seq && self.delivered < spm.total {
            self.fail(FailReason::Unrecoverable {
                sequence: self.next_seq,
                trailing: spm.trailing,
            });
            return;
        }
        self.extend_tracking(now, spm.leading);
        self.check_complete();
    }

    /// The relay has these sequences on order: hold back their NACKs.
    pub fn handle_ncf(&mut self, now: Instant, ranges: impl IntoIterator<Item = SeqRange>) {
        self.stats.ncfs_received += 1;
        let until = now + self.config.ncf_holdoff;
        for r in ranges {
            for (_, miss) in self.missing.range_mut(r.first..r.end()) {
                miss.next_nack = miss.next_nack.max(until);
            }
        }
    }

    fn trailing(&self) -> u64 {
        self.spm.map_or(0, |s| s.trailing)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mab = if self.mab_due {
            Instant::ZERO
        } else {
            self.next_mab_at
        };
        let trailing = self.trailing();
        let nack = self
            .missing
            .range(trailing..)
            .map(|(_, m)| m.next_nack)
            .min();
        Some(nack.map_or(mab, |n| n.min(mab)))
    }

    /// Timers are checked in `poll_transmit`; nothing else to do.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// The next NACK or MAB, sealed into `buf` (at least `mtu` bytes); its length.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some(len) = self.build_nack(now, buf) {
            return Some(len);
        }
        if self.mab_due || now >= self.next_mab_at {
            // A receiver that has failed or finished no longer holds the window back.
            let (mab, received) = match self.state {
                State::Failed => (u64::MAX, u64::MAX),
                _ => (self.mab(), self.delivered),
            };
            self.mab_reported = mab;
            self.mab_due = false;
            self.next_mab_at = now + self.config.mab_interval;
            self.stats.mabs_sent += 1;
            let m = Mab {
                group: self.config.group.get(),
                mab,
                received,
            };
            return rmtp::build_mab(buf, self.config.sender, self.config.me, &m).ok();
        }
        None
    }

    fn build_nack(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.state != State::Receiving {
            return None;
        }
        let limit = rmtp::max_nack_ranges(self.config.mtu).min(MAX_RANGES);
        let mut ranges = RangeBuf::<MAX_RANGES>::default();
        let trailing = self.trailing();
        let (retry, max) = (self.config.nack_retry, self.config.nack_retry_max);
        for (&seq, miss) in self.missing.range_mut(trailing..) {
            if miss.next_nack > now {
                continue;
            }
            if !ranges.push(seq, limit) {
                break;
            }
            let backoff = retry.saturating_mul(1u32 << miss.tries.min(16)).min(max);
            miss.tries += 1;
            miss.next_nack = now + backoff;
            self.stats.sequences_nacked += 1;
        }
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

fn sink_reason(e: &SinkError) -> FailReason {
    match e {
        SinkError::HashMismatch { .. } => FailReason::HashMismatch,
        other => FailReason::Sink(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rmtp::sink::MemSink;
    use control::wire::DEFAULT_MTU;
    use control::wire::rmtp::{Nack, data_packet};

    const G: u16 = 0xF000;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    fn rx() -> RmtpReceiver<MemSink> {
        let mut c = ReceiverConfig::new(n(5), GroupAddr::new(G).unwrap(), n(1), DEFAULT_MTU);
        c.window = 1000;
        c.nack_delay = Duration::from_millis(2);
        c.nack_retry = Duration::from_millis(20);
        c.nack_retry_max = Duration::from_millis(500);
        c.ncf_holdoff = Duration::from_millis(60);
        RmtpReceiver::new(c, MemSink::new(), Instant::ZERO)
    }

    fn data(seq: u64, payload: &[u8]) -> Vec<u8> {
        data_packet(
            GroupAddr::new(G).unwrap(),
            n(1),
            Flag::RmtpData,
            seq,
            seq * 100,
            payload,
        )
    }

    fn spm(seq: u64, lead: u64, total: u64, hash: Option<[u8; 32]>) -> Vec<u8> {
        let mut buf = vec![0u8; 200];
        let s = SpmFields {
            spm_sequence: seq,
            trailing: 0,
            leading: lead,
            segment_size: 100,
            total,
            finished: hash.is_some(),
            hash: hash.unwrap_or([0; 32]),
        };
        let len = rmtp::build_spm(&mut buf, GroupAddr::new(G).unwrap(), n(1), &s).unwrap();
        buf.truncate(len);
        buf
    }

    fn feed(r: &mut RmtpReceiver<MemSink>, now: Instant, p: &[u8]) {
        r.handle_packet(now, &Packet::parse(p, DEFAULT_MTU).unwrap())
            .unwrap();
    }

    fn nacked(r: &mut RmtpReceiver<MemSink>, now: Instant) -> Vec<SeqRange> {
        let mut buf = [0u8; DEFAULT_MTU];
        let mut out = Vec::new();
        while let Some(len) = r.poll_transmit(now, &mut buf) {
            let p = Packet::parse(&buf[..len], DEFAULT_MTU).unwrap();
            assert_eq!(p.dst().raw(), 1);
            assert_eq!(p.src_raw(), 5);
            if p.flag() == Flag::RmtpNack {
                out.extend(Nack::parse(p.body()).unwrap().ranges.iter());
            }
        }
        out
    }

    #[test]
    fn gaps_are_nacked_with_backoff_and_ncf_holds_back() {
        let content: Vec<u8> = (0..450u32).map(|i| (i * 7) as u8).collect();
        let mut r = rx();
        let t0 = Instant::ZERO;
        feed(&mut r, t0, &data(0, &content[..100]));
        feed(&mut r, t0, &data(2, &content[200..300]));
        assert_eq!(r.delivered(), 100);
        // The first NACK waits for nack_delay.
        assert!(nacked(&mut r, t0).is_empty());
        let t1 = Instant::from_millis(2);
        assert_eq!(nacked(&mut r, t1), [SeqRange::single(1)]);
        assert!(nacked(&mut r, t1).is_empty());
        // Tail loss: the SPM says 5 sequences exist.
        feed(&mut r, t1, &spm(0, 5, 450, None));
        let t2 = Instant::from_millis(4);
        assert_eq!(nacked(&mut r, t2), [SeqRange { first: 3, len: 2 }]);
        // Retry of seq 1 after 20 ms, together with nothing else; an NCF holds 3..5 back.
        r.handle_ncf(t2, [SeqRange { first: 3, len: 2 }]);
        let t3 = Instant::from_millis(22);
        assert_eq!(nacked(&mut r, t3), [SeqRange::single(1)]);
        assert!(nacked(&mut r, Instant::from_millis(30)).is_empty());
        assert_eq!(
            nacked(&mut r, Instant::from_millis(64)),
            [SeqRange::single(1), SeqRange { first: 3, len: 2 }]
        );
        // Repairs arrive, a duplicate and a corrupt packet are counted, completion needs the
        // finishing SPM.
        feed(&mut r, t3, &data(1, &content[100..200]));
        feed(&mut r, t3, &data(1, &content[100..200]));
        let mut bad = data(3, &content[300..400]);
        bad[40] ^= 1;
        let body_fixed = control::wire::dnp::frame(
            control::Addr::from_raw(G),
            control::Addr::from_raw(1),
            Flag::RmtpData,
            &bad[10..],
        );
        feed(&mut r, t3, &body_fixed);
        feed(&mut r, t3, &data(3, &content[300..400]));
        feed(&mut r, t3, &data(4, &content[400..]));
        assert_eq!(r.delivered(), 450);
        assert!(!r.is_complete());
        feed(
            &mut r,
            t3,
            &spm(1, 5, 450, Some(*blake3::hash(&content).as_bytes())),
        );
        assert!(r.is_complete());
        assert_eq!(r.sink().data, content);
        assert_eq!(r.sink().verified, Some(true));
        let s = r.stats();
        assert_eq!((s.duplicates, s.crc_failures, s.ncfs_received), (1, 1, 1));
        assert!(matches!(
            r.poll_event(),
            Some(ReceiverEvent::Complete { bytes: 450, .. })
        ));
    }

    #[test]
    fn window_bounds_acceptance_and_mab_reports_it() {
        let mut r = rx();
        let t = Instant::ZERO;
        let mut buf = [0u8; DEFAULT_MTU];
        let len = r.poll_transmit(t, &mut buf).unwrap();
        let m = Mab::parse(Packet::parse(&buf[..len], DEFAULT_MTU).unwrap().body()).unwrap();
        assert_eq!((m.mab, m.received), (1000, 0));
        // Sequence 10 (bytes 1000..1100) is beyond the 1000-byte window.
        feed(&mut r, t, &data(10, &[0; 100]));
        assert_eq!(r.stats().beyond_window, 1);
        for s in 0..3 {
            feed(&mut r, t, &data(s, &[1; 100]));
        }
        // 300 bytes delivered: the MAB moved a quarter window and is reported at once.
        let len = r.poll_transmit(t, &mut buf).unwrap();
        let m = Mab::parse(Packet::parse(&buf[..len], DEFAULT_MTU).unwrap().body()).unwrap();
        assert_eq!((m.mab, m.received), (1300, 300));
        assert!(r.poll_transmit(t, &mut buf).is_none());
    }

    #[test]
    fn trailing_edge_past_a_gap_is_unrecoverable() {
        let mut r = rx();
        feed(&mut r, Instant::ZERO, &data(1, &[0; 100]));
        let mut buf = vec![0u8; 200];
        let s = SpmFields {
            spm_sequence: 3,
            trailing: 1,
            leading: 4,
            segment_size: 100,
            total: 400,
            finished: true,
            hash: [0; 32],
        };
        let len = rmtp::build_spm(&mut buf, GroupAddr::new(G).unwrap(), n(1), &s).unwrap();
        feed(&mut r, Instant::ZERO, &buf[..len]);
        assert!(r.is_failed());
        assert_eq!(
            r.poll_event(),
            Some(ReceiverEvent::Failed(FailReason::Unrecoverable {
                sequence: 0,
                trailing: 1
            }))
        );
        assert_eq!(r.sink().verified, Some(false));
    }
}
