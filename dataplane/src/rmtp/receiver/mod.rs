//! The RMTP receiver (seed §6.2): one member's side of one transfer. It accepts data up to its
//! MAB (a sliding window of `window` bytes past what it delivered), hands contiguous data to a
//! [`Sink`], detects gaps (from later data, and from the SPM's leading edge for tail loss),
//! NACKs them with back-off (several gaps per NACK), holds back after an NCF, and reports its
//! MAB periodically and as it advances.
//!
//! NACK and MAB leave as sealed packets (DNP dst = sender, src = this node), built into a
//! caller buffer; the node hands them to its relay as coming from this local member.
//!
//! Everything that passes the checksum and CRC may still be forged, so nothing a packet claims
//! is adopted unless it fits what the receiver already knows: the transfer's shape (segment
//! size, total, hash) comes from the RAP announcement or the SPMs, never from DATA; a DATA that
//! disagrees with it is refused; SPM edges only move within what the shape allows, and the
//! trailing edge and the hash are believed only when `spm_agreement` SPMs in a row agree (see
//! `docs/PROTOCOL.md`, "Receivers and forged SPMs"). Every refusal is counted and moves no
//! state; the tables the network can grow (missing sequences, out-of-order segments) have a
//! capacity.
//!
//! It watches its sender on the time passed in: no DATA or SPM of the transfer accepted for
//! `sender_timeout` and the transfer fails ([`FailReason::SenderSilent`]); a refused packet
//! (bad CRC, outside the shape, an implausible SPM) does not count, so forgeries cannot keep a
//! dead transfer alive; no route to the sender for `sender_timeout`, as the engine reports
//! routing ([`RmtpReceiver::sender_route`]), fails it too ([`FailReason::SenderUnreachable`]),
//! even if forgeries that pass for the sender's keep arriving. Once complete it lingers, still answering with MABs, until the sender's
//! agreed SPMs show that every receiver has everything, or the sender falls silent for
//! `linger_silence` after the receiver's first report of its completion (at most
//! `sender_timeout` in all); then [`ReceiverEvent::MayLeave`] says its
//! member may leave the group without cutting off the MAB that completes the sender.

use super::in_flight::InFlightEstimate;
use super::missing::{MAX_DUE_PER_NACK, MissingTable};
use super::reorder::Reorder;
use super::rtt::{AnswerTiming, Asked, RttEstimate};
use super::sink::{Finished, Sink, SinkError};
use super::{MAX_RANGES, RangeBuf, RmtpError};
use control::wire::dnp::{Flag, Packet};
use control::wire::rmtp::{self, Data, Mab, Ncf, SeqRange, SpmFields, TOTAL_UNKNOWN};
use control::{GroupAddr, Instant, NodeAddr};
use std::collections::VecDeque;
use std::time::Duration;

/// Completion reports a receiver sends before its linger's silence may count: a relay takes a
/// claim of the whole transfer from a peer's second report in a row (one forged MAB must not
/// complete the sender), so a receiver that left after one would never complete its sender.
const COMPLETION_REPORTS: u32 = 2;

#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// This node (the NACK/MAB source address).
    pub me: NodeAddr,
    pub group: GroupAddr,
    pub sender: NodeAddr,
    pub mtu: usize,
    /// Bytes accepted beyond what was delivered: MAB = delivered + window.
    pub window: u64,
    /// Wait this long after noticing a gap before the first NACK (reordering). Once a repair
    /// round trip is measured, a quarter of the quickest one (at least `timer_floor`) when
    /// shorter.
    pub nack_delay: Duration,
    /// First NACK retry; doubles per retry up to `nack_retry_max`. Once a repair round trip is
    /// measured, `srtt + 4 rttvar` of it (at least `timer_floor`) when shorter.
    pub nack_retry: Duration,
    pub nack_retry_max: Duration,
    /// Retries at the `nack_retry` period, after the first, before the period starts
    /// doubling. A NACK or its repair lost on a lossy path is common (a third of them at 10%
    /// loss over two hops), and each doubling holds the window at that gap for longer; the
    /// doubling is for a sender or path that stays unable to answer.
    pub nack_retries_undoubled: u32,
    /// After an NCF for a sequence, do not NACK it again for this long. Once a repair round
    /// trip is measured, the retry timer derived from it when shorter.
    pub ncf_holdoff: Duration,
    /// The shortest timer derived from a measured round trip.
    pub timer_floor: Duration,
    pub mab_interval: Duration,
    /// Report the MAB at once when it advanced this many bytes (0: an eighth of the window,
    /// or a quarter of the in-flight allowance when that is less). The sender never runs more
    /// than this short of the window a receiver could grant, so an eighth keeps it sending
    /// while a loss at the head of the window is repaired, for one MAB per eighth of a window
    /// of data.
    pub mab_step: u64,
    /// The MAB also stays within this many bytes past the highest byte received, plus
    /// `in_flight_gain` times the measured delivery rate × window round trip (see
    /// `rmtp::in_flight`): the sender's data in flight toward this receiver, so the queue in
    /// front of it, stays what the path needs. 0: no cap, the MAB is delivered + window.
    pub in_flight_headroom: u64,
    /// Bandwidth-delay products allowed in flight besides the headroom.
    pub in_flight_gain: u64,
    /// Period over which the delivery rate is measured.
    pub rate_interval: Duration,
    /// Most missing sequences tracked at once; the rest are tracked as these are repaired.
    pub max_missing: usize,
    /// Most out-of-order segments held at once; a segment refused here is NACKed later.
    pub max_buffered: usize,
    /// How many SPMs in a row must agree before a trailing edge that fails the transfer, or a
    /// content hash, is believed (so that one forged SPM cannot do either).
    pub spm_agreement: usize,
    /// The transfer's shape as the sender's RAP announcement gave it, if known: SPMs that
    /// disagree are refused. `None`: learnt from the first plausible SPM.
    pub announced: Option<TransferShape>,
    /// No DATA or SPM of the transfer accepted for this long (from the start, or the last
    /// one): the sender has gone, and the transfer fails. Default
    /// `settings::receiver::SENDER_TIMEOUT`.
    pub sender_timeout: Duration,
    /// After completion, a sender silent this long (counted from the first MAB that reported
    /// the completion at the earliest) has ended (it sends an SPM every 100 ms): the receiver
    /// stops lingering.
    pub linger_silence: Duration,
    /// How often a sink that makes the result final off the engine's thread is asked whether
    /// it has ([`Finished::Pending`]).
    pub finish_poll: Duration,
}

/// What a sender announces about a transfer before sending it (its RAP service entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferShape {
    pub segment_size: u16,
    pub total: u64,
    pub hash: [u8; 32],
}

impl ReceiverConfig {
    pub fn new(me: NodeAddr, group: GroupAddr, sender: NodeAddr, mtu: usize) -> Self {
        use control::settings::{receiver as s, rmtp};
        ReceiverConfig {
            me,
            group,
            sender,
            mtu,
            window: s::WINDOW,
            nack_delay: s::NACK_DELAY,
            nack_retry: s::NACK_RETRY,
            nack_retry_max: s::NACK_RETRY_MAX,
            nack_retries_undoubled: s::NACK_RETRIES_UNDOUBLED,
            ncf_holdoff: s::NCF_HOLDOFF,
            timer_floor: rmtp::TIMER_FLOOR,
            mab_interval: rmtp::MAB_INTERVAL,
            mab_step: s::MAB_STEP,
            in_flight_headroom: s::IN_FLIGHT_HEADROOM,
            in_flight_gain: s::IN_FLIGHT_GAIN,
            rate_interval: s::RATE_INTERVAL,
            max_missing: s::MAX_MISSING,
            max_buffered: s::MAX_BUFFERED,
            spm_agreement: s::SPM_AGREEMENT,
            announced: None,
            sender_timeout: s::SENDER_TIMEOUT,
            linger_silence: s::LINGER_SILENCE,
            finish_poll: s::FINISH_POLL,
        }
    }
}

control::counters! {
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct ReceiverStats {
        pub delivered_bytes: u64,
        pub data_received: u64,
        pub duplicates: u64,
        pub crc_failures: u64,
        pub nacks_sent: u64,
        /// Sequences named in NACKs, retries included.
        pub sequences_nacked: u64,
        /// Repair round trips measured (a sequence NACKed once to its RETRANSMIT).
        pub repair_rtt_samples: u64,
        /// Repairs that came sooner after a NACK retry than any repair ever came: answers to
        /// an earlier NACK, so the retry was needless (and its repair will be a duplicate).
        pub nack_retries_spurious: u64,
        /// The smoothed repair round trip, nanoseconds (0 until measured).
        pub repair_srtt_nanos: u64,
        pub ncfs_received: u64,
        pub repairs_received: u64,
        pub beyond_window: u64,
        pub malformed: u64,
        pub spms_received: u64,
        pub mabs_sent: u64,
        /// DATA before the segment size was known (no announcement, no SPM yet).
        pub data_before_shape: u64,
        /// DATA whose sequence, offset or length disagree with the transfer's shape.
        pub data_implausible: u64,
        /// Out-of-order DATA refused because `max_buffered` segments are held.
        pub buffer_full: u64,
        /// Times gap tracking stopped because `max_missing` sequences are tracked.
        pub missing_full: u64,
        /// SPMs refused: inconsistent with the shape, or edges the sender cannot have sent.
        pub spms_refused: u64,
        /// Times a shape learnt from an SPM was replaced by one that `spm_agreement` SPMs in a
        /// row agreed on (the first SPM was forged).
        pub shapes_replaced: u64,
        /// Times delivering waited for the sink (its writer every staged block behind; on
        /// the uring engine the receiving worker then writes the block itself).
        pub sink_waits: u64,
    }
}

/// Entries and approximate bytes (keys, values and held payloads, without the B-tree's own
/// node overhead) of a receiver's network-grown tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableUsage {
    pub missing: usize,
    pub missing_bytes: usize,
    pub buffered: usize,
    pub buffered_bytes: usize,
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
    /// No DATA or SPM of the transfer was accepted for this long.
    SenderSilent {
        silent_for: Duration,
    },
    /// Routing had no way to the sender for this long ([`RmtpReceiver::sender_route`]).
    SenderUnreachable {
        unreachable_for: Duration,
    },
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailReason::Unrecoverable { sequence, trailing } => write!(
                f,
                "sequence {sequence} is lost for good (the sender no longer repairs below {trailing})"
            ),
            FailReason::HashMismatch => write!(f, "the content hash does not match the sender's"),
            FailReason::Sink(e) => write!(f, "cannot write: {e}"),
            FailReason::SenderSilent { silent_for } => {
                write!(f, "sender silent (no data or SPM for {silent_for:?})")
            }
            FailReason::SenderUnreachable { unreachable_for } => {
                write!(f, "sender unreachable (no route for {unreachable_for:?})")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// Every byte delivered and the content hash verified by the sink.
    Complete {
        bytes: u64,
        hash: [u8; 32],
    },
    Failed(FailReason),
    /// Complete, and the sender needs nothing more from this receiver (its SPMs show every
    /// receiver has everything, or it fell silent): the member may leave the group.
    MayLeave,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Receiving,
    Complete,
    Failed,
}

/// What one accepted SPM claimed, kept for the agreement rule.
#[derive(Clone, Copy, Debug)]
struct SpmClaim {
    trailing: u64,
    /// The content hash, if the SPM said finished.
    hash: Option<[u8; 32]>,
}

pub struct RmtpReceiver<K: Sink> {
    config: ReceiverConfig,
    sink: K,
    state: State,
    /// Next sequence to deliver; `delivered` bytes are in the sink.
    next_seq: u64,
    delivered: u64,
    /// The transfer's shape: from the announcement, else the first plausible SPM.
    segment: Option<u64>,
    total: Option<u64>,
    hash: Option<[u8; 32]>,
    /// Highest plausible leading edge an SPM claimed.
    leading: u64,
    /// Trailing edge agreed by `spm_agreement` SPMs in a row; never goes back.
    trailing: u64,
    /// The last `spm_agreement` accepted SPMs.
    recent_spms: VecDeque<SpmClaim>,
    /// A shape (segment, total as sent) that refused SPMs agree on, and how many in a row.
    contrary_shape: Option<((u64, u64), usize)>,
    /// Out-of-order segments waiting for the gap before them.
    buffered: Reorder,
    /// Every sequence below is delivered, buffered or in `missing`.
    tracked_end: u64,
    missing: MissingTable,
    /// Scratch for the sequences one NACK names (sized once).
    due: Vec<u64>,
    /// The repair round trip: a NACK to the RETRANSMIT it brought, for sequences NACKed once
    /// (Karn's rule: a repair after a retry could answer either NACK; [`AnswerTiming`]).
    repair_rtt: RttEstimate,
    mab_reported: u64,
    /// One past the highest byte of accepted DATA, in order or not.
    highest_end: u64,
    /// The path's round trip and delivery rate, for the in-flight cap.
    in_flight: InFlightEstimate,
    mab_due: bool,
    next_mab_at: Instant,
    /// When DATA or an SPM of the transfer was last accepted (the start, before any).
    last_heard: Instant,
    /// Since when routing has had no way to the sender, as the engine last told.
    unreachable_since: Option<Instant>,
    /// Every byte verified and the sink still making the result final ([`Finished::Pending`]):
    /// the content hash, and when to ask the sink next. The receiver reports as receiving
    /// meanwhile (one byte short), so the sender waits for the file to be final.
    finishing: Option<([u8; 32], Instant)>,
    /// When the transfer completed.
    completed_at: Option<Instant>,
    /// When the [`COMPLETION_REPORTS`]th MAB that reports the completion left: the linger's
    /// silence counts from then at the earliest (see `watch_deadline`).
    completion_reported_at: Option<Instant>,
    /// MABs sent that report the completion.
    completion_reports: u32,
    /// `MayLeave` was emitted.
    released: bool,
    events: VecDeque<ReceiverEvent>,
    stats: ReceiverStats,
}

impl<K: Sink> RmtpReceiver<K> {
    pub fn new(config: ReceiverConfig, sink: K, now: Instant) -> Self {
        let shape = config.announced;
        let agreement = config.spm_agreement.max(1);
        RmtpReceiver {
            config,
            sink,
            state: State::Receiving,
            next_seq: 0,
            delivered: 0,
            segment: shape.map(|s| u64::from(s.segment_size)).filter(|&s| s > 0),
            total: shape.map(|s| s.total),
            hash: shape.map(|s| s.hash),
            leading: 0,
            trailing: 0,
            recent_spms: VecDeque::with_capacity(agreement),
            contrary_shape: None,
            buffered: Reorder::new(),
            tracked_end: 0,
            missing: MissingTable::default(),
            due: Vec::with_capacity(MAX_DUE_PER_NACK),
            repair_rtt: RttEstimate::default(),
            mab_reported: 0,
            highest_end: 0,
            in_flight: InFlightEstimate::default(),
            mab_due: true,
            next_mab_at: now,
            last_heard: now,
            unreachable_since: None,
            finishing: None,
            completed_at: None,
            completion_reported_at: None,
            completion_reports: 0,
            released: false,
            events: VecDeque::new(),
            stats: ReceiverStats::default(),
        }
    }

    pub fn config(&self) -> &ReceiverConfig {
        &self.config
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

    /// The MAB reported while receiving: [`Self::mab`], within the in-flight allowance past the
    /// highest byte received, and never below a grant already made (the sender may have used
    /// it; the data it sent is accepted).
    pub fn mab_to_report(&self) -> u64 {
        let c = &self.config;
        if c.in_flight_headroom == 0 {
            return self.mab();
        }
        let allowance = self
            .in_flight
            .allowance(c.in_flight_headroom, c.in_flight_gain);
        self.mab()
            .min(self.highest_end.saturating_add(allowance))
            .max(self.mab_reported)
    }

    /// The measured round trip and delivery rate the in-flight cap follows.
    pub fn in_flight(&self) -> &InFlightEstimate {
        &self.in_flight
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

    /// Out-of-order segments currently held.
    pub fn buffered(&self) -> usize {
        self.buffered.len()
    }

    /// Entries and approximate bytes of the tables the network can grow.
    pub fn table_usage(&self) -> TableUsage {
        TableUsage {
            missing: self.missing.len(),
            missing_bytes: self.missing.len() * MissingTable::ENTRY_BYTES,
            buffered: self.buffered.len(),
            buffered_bytes: self.buffered.bytes(),
        }
    }

    /// The transfer's size, once the announcement or an SPM told it.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The sender's agreed trailing edge says every receiver holds the whole transfer.
    pub fn everyone_has_everything(&self) -> bool {
        match (self.segment, self.total) {
            (Some(seg), Some(total)) => {
                self.hash.is_some() && self.trailing.saturating_mul(seg) >= total
            }
            _ => false,
        }
    }

    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.events.pop_front()
    }

    /// Gives up: the sink keeps a partial result, and this receiver no longer holds the
    /// sender back.
    pub fn abort(&mut self) {
        if self.state == State::Receiving {
            self.end_failed();
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

    /// Sequences in the transfer, once its total is known.
    fn segments(&self) -> Option<u64> {
        Some(self.total?.div_ceil(self.segment?))
    }

    /// One past the last sequence this receiver could accept now (its window, the total).
    fn limit_seq(&self) -> u64 {
        let Some(seg) = self.segment else { return 0 };
        let window = self.mab().div_ceil(seg);
        self.segments().map_or(window, |n| n.min(window))
    }

    /// Marks every untracked sequence below `up_to` (and inside the window) missing, as far as
    /// `max_missing` allows; the rest is tracked once repairs make room.
    fn extend_tracking(&mut self, now: Instant, up_to: u64) {
        let up_to = up_to.min(self.limit_seq());
        let mut seq = self.tracked_end.max(self.next_seq);
        while seq < up_to {
            if !self.buffered.contains(seq) {
                if self.missing.len() >= self.config.max_missing {
                    self.stats.missing_full += 1;
                    break;
                }
                self.missing.insert(seq, now + self.nack_delay());
            }
            seq += 1;
        }
        self.tracked_end = self.tracked_end.max(seq);
    }

    /// A segment fits the transfer's shape: its offset is `seq × segment`, it is a whole
    /// segment, or the last one ending exactly at the total. Checked arithmetic throughout:
    /// every number here came from the network.
    fn fits_shape(&self, seg: u64, seq: u64, offset: u64, len: u64) -> bool {
        if seq.checked_mul(seg) != Some(offset) || len == 0 || len > seg {
            return false;
        }
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        match self.total {
            Some(total) => end <= total && (len == seg || end == total),
            // A short segment is the last one: without a total it cannot be placed.
            None => len == seg,
        }
    }

    fn handle_data(&mut self, now: Instant, data: &Data<'_>, retransmit: bool) {
        self.stats.data_received += 1;
        if self.state == State::Failed {
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
        let len = payload.len() as u64;
        // The shape comes from the announcement or an SPM, never from DATA: a refused or
        // forged segment must not teach the receiver anything.
        let Some(seg) = self.segment else {
            self.stats.data_before_shape += 1;
            return;
        };
        if !self.fits_shape(seg, seq, offset, len) {
            self.stats.data_implausible += 1;
            return;
        }
        // The sender's, as far as anything can tell: it is alive (and, once complete, still
        // sending, so the linger goes on).
        self.heard(now);
        if self.state == State::Complete {
            self.stats.duplicates += 1;
            return;
        }
        if seq < self.next_seq || self.buffered.contains(seq) {
            self.stats.duplicates += 1;
            return;
        }
        if offset.saturating_add(len) > self.mab() {
            self.stats.beyond_window += 1;
            return;
        }
        // Nothing past the window is accepted: the sequences held span its segments. Made at
        // the first DATA, so that the first loss in steady state allocates nothing.
        let span = self
            .config
            .window
            .div_ceil(seg)
            .saturating_add(2)
            .min(self.config.max_buffered as u64);
        self.buffered.reserve(
            usize::try_from(span).unwrap_or(usize::MAX),
            usize::try_from(seg).unwrap_or(0),
        );
        if seq != self.next_seq
            && (self.buffered.len() >= self.config.max_buffered || !self.buffered.has_room(seq))
        {
            self.stats.buffer_full += 1;
            return;
        }
        if retransmit {
            self.stats.repairs_received += 1;
        }
        // `offset + len` fits: `fits_shape` checked it.
        let end = offset + len;
        self.highest_end = self.highest_end.max(end);
        self.in_flight
            .on_data(now, end, len, self.config.rate_interval);
        let repaired = self.missing.remove(seq);
        if let Some(nacked) = repaired
            && retransmit
        {
            self.time_repair(now, &nacked);
        }
        self.extend_tracking(now, seq);
        // Only when tracking reached it: an untracked gap below stays to be found later.
        if self.tracked_end == seq {
            self.tracked_end = seq + 1;
        }
        if seq == self.next_seq {
            if !self.deliver(payload) {
                return;
            }
            self.drain();
        } else {
            // Room was checked above.
            self.buffered.insert(seq, payload);
        }
        self.progressed(now);
    }

    /// Writes the segment `next_seq`; every segment before it was whole, so it starts at
    /// `delivered`.
    fn deliver(&mut self, payload: &[u8]) -> bool {
        if let Err(e) = self.sink.write_at(self.delivered, payload) {
            self.fail(sink_reason(&e));
            return false;
        }
        self.delivered += payload.len() as u64;
        self.stats.delivered_bytes = self.delivered;
        self.stats.sink_waits = self.sink.waits();
        self.next_seq += 1;
        true
    }

    fn drain(&mut self) {
        while let Some(buf) = self.buffered.take(self.next_seq) {
            let ok = self.deliver(&buf);
            self.buffered.recycle(buf);
            if !ok {
                return;
            }
        }
    }

    fn progressed(&mut self, now: Instant) {
        if self.state != State::Receiving {
            return;
        }
        let c = &self.config;
        let step = if c.mab_step != 0 {
            c.mab_step
        } else if c.in_flight_headroom != 0 {
            let allowance = self
                .in_flight
                .allowance(c.in_flight_headroom, c.in_flight_gain);
            (c.window / 8).min(allowance / 4).max(1)
        } else {
            (c.window / 8).max(1)
        };
        if self.mab_to_report() >= self.mab_reported.saturating_add(step) {
            self.mab_due = true;
        }
        self.extend_tracking(now, self.leading);
        self.check_complete(now);
    }

    fn check_complete(&mut self, now: Instant) {
        let (Some(total), Some(hash)) = (self.total, self.hash) else {
            return;
        };
        if self.state != State::Receiving || self.delivered < total || self.finishing.is_some() {
            return;
        }
        match self.sink.finish(&hash) {
            Ok(Finished::Done) => self.complete(now, hash),
            Ok(Finished::Pending) => {
                self.missing.clear();
                self.finishing = Some((hash, now + self.config.finish_poll));
            }
            Err(e) => self.fail(sink_reason(&e)),
        }
    }

    /// Asks a sink that is making the result final whether it has, when it is time to.
    fn poll_finishing(&mut self, now: Instant) {
        let Some((hash, at)) = self.finishing else {
            return;
        };
        if now < at || self.state != State::Receiving {
            return;
        }
        match self.sink.poll_finished() {
            None => self.finishing = Some((hash, now + self.config.finish_poll)),
            Some(outcome) => {
                self.finishing = None;
                match outcome {
                    Ok(()) => self.complete(now, hash),
                    Err(e) => self.fail(sink_reason(&e)),
                }
            }
        }
    }

    fn complete(&mut self, now: Instant, hash: [u8; 32]) {
        self.state = State::Complete;
        self.completed_at = Some(now);
        self.missing.clear();
        self.mab_due = true;
        self.events.push_back(ReceiverEvent::Complete {
            bytes: self.delivered,
            hash,
        });
    }

    fn fail(&mut self, reason: FailReason) {
        self.end_failed();
        self.events.push_back(ReceiverEvent::Failed(reason));
    }

    /// Ends in `Failed`: a sink still receiving keeps its partial result, nothing is tracked
    /// any more, and the next MAB tells the tree.
    fn end_failed(&mut self) {
        if self.state == State::Receiving {
            self.sink.abort();
        }
        self.state = State::Failed;
        self.finishing = None;
        self.missing.clear();
        self.mab_due = true;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mab = if self.mab_due {
            Instant::ZERO
        } else {
            self.next_mab_at
        };
        let nack = self.missing.next_due();
        let watch = self.watch_deadline();
        let finishing = self.finishing.map(|(_, at)| at);
        [Some(mab), nack, watch, finishing]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the sender watch next decides something: the silence limit while receiving; the
    /// end of the linger once complete.
    fn watch_deadline(&self) -> Option<Instant> {
        match self.state {
            // A sink making the result final waits for nobody (`handle_timeout`).
            State::Receiving if self.finishing.is_none() => {
                let silent = self.last_heard + self.config.sender_timeout;
                let unreachable = self
                    .unreachable_since
                    .map(|u| u + self.config.sender_timeout);
                Some(unreachable.map_or(silent, |u| u.min(silent)))
            }
            State::Complete if !self.released => {
                // The sender completes only on our reports, and the engine may pass the time
                // in long after the packet that completed us (its thread blocked finishing the
                // sink, the sender's SPMs queued behind): a sender is silent only for a linger
                // after we started reporting, and never before.
                let longest = self.completed_at? + self.config.sender_timeout;
                let silent = self
                    .completion_reported_at
                    .map(|at| at.max(self.last_heard) + self.config.linger_silence);
                Some(silent.map_or(longest, |s| s.min(longest)))
            }
            _ => None,
        }
    }

    /// The sender watch (NACK and MAB timers are checked in `poll_transmit`).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.poll_finishing(now);
        // Once every byte is verified, only the sink's own failure can fail the transfer.
        let watching = self.state == State::Receiving && self.finishing.is_none();
        if watching && now >= self.last_heard + self.config.sender_timeout {
            self.fail(FailReason::SenderSilent {
                silent_for: self.config.sender_timeout,
            });
        }
        let timeout = self.config.sender_timeout;
        if watching
            && self.state == State::Receiving
            && self.unreachable_since.is_some_and(|u| now >= u + timeout)
        {
            self.fail(FailReason::SenderUnreachable {
                unreachable_for: timeout,
            });
        }
        self.check_linger(now);
    }

    /// What routing says of the sender at `now` (an engine tells whenever it looks at its
    /// routes): while receiving, a sender unreachable for `sender_timeout` fails the transfer,
    /// even if packets that pass for its own keep arriving.
    pub fn sender_route(&mut self, now: Instant, reachable: bool) {
        if self.state != State::Receiving {
            return;
        }
        self.unreachable_since = match (reachable, self.unreachable_since) {
            (true, _) => None,
            (false, since) => Some(since.unwrap_or(now)),
        };
    }

    fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// Ends the linger after completion once the sender needs nothing more from us.
    fn check_linger(&mut self, now: Instant) {
        if self.state != State::Complete || self.released {
            return;
        }
        if self.everyone_has_everything() || self.watch_deadline().is_some_and(|d| now >= d) {
            self.released = true;
            self.events.push_back(ReceiverEvent::MayLeave);
        }
    }

    /// The next NACK or MAB, sealed into `buf` (at least `mtu` bytes); its length.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some(len) = self.build_nack(now, buf) {
            return Some(len);
        }
        if self.mab_due || now >= self.next_mab_at {
            // A failed receiver no longer holds the window back. Until it has verified the
            // hash a receiver reports one byte less than it holds: the sender completes only
            // on every receiver's proof of the whole transfer, not on bytes alone.
            let (mab, received) = match self.state {
                State::Failed => (u64::MAX, u64::MAX),
                State::Complete => {
                    // A relay believes a completion from the second report in a row: the
                    // linger counts from that one, sent at a time the engine passed after
                    // the first (which may be stale: a thread long busy finishing its sink).
                    self.completion_reports = self.completion_reports.saturating_add(1);
                    if self.completion_reports >= COMPLETION_REPORTS {
                        self.completion_reported_at.get_or_insert(now);
                    }
                    (self.mab(), self.delivered)
                }
                State::Receiving => {
                    let mab = self.mab_to_report();
                    self.in_flight.on_report(now, mab);
                    (mab, self.delivered.saturating_sub(1))
                }
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
}

fn sink_reason(e: &SinkError) -> FailReason {
    match e {
        SinkError::HashMismatch { .. } => FailReason::HashMismatch,
        other => FailReason::Sink(other.to_string()),
    }
}

mod nacks;
mod spm;

#[cfg(test)]
mod tests;
