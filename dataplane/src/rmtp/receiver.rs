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
            self.sink.abort();
            self.state = State::Failed;
            self.finishing = None;
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
        if self.state == State::Receiving {
            self.sink.abort();
        }
        self.state = State::Failed;
        self.finishing = None;
        self.missing.clear();
        self.mab_due = true;
        self.events.push_back(ReceiverEvent::Failed(reason));
    }

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
    fn handle_spm(&mut self, now: Instant, spm: &SpmFields) {
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

    /// The relay has these sequences on order: hold back their NACKs.
    pub fn handle_ncf(&mut self, now: Instant, ranges: impl IntoIterator<Item = SeqRange>) {
        self.stats.ncfs_received += 1;
        let until = now + self.ncf_holdoff();
        let mut budget = MAX_DUE_PER_NACK;
        for r in ranges {
            budget -= self.missing.hold_back(r.first..r.end(), until, budget);
        }
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

    /// The measured repair round trip, if any.
    pub fn repair_rtt(&self) -> &RttEstimate {
        &self.repair_rtt
    }

    /// Takes the round trip a repair of a sequence NACKed as `nacked` measures, if any.
    fn time_repair(&mut self, now: Instant, nacked: &Asked) {
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
    fn nack_delay(&self) -> Duration {
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

    fn build_nack(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
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
    use control::settings::receiver::SENDER_TIMEOUT;
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
        feed(&mut r, t0, &spm(0, 0, 450, None));
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
        // The hash is believed when two SPMs in a row announce it.
        let hash = Some(*blake3::hash(&content).as_bytes());
        feed(&mut r, t3, &spm(1, 5, 450, hash));
        assert!(!r.is_complete());
        feed(&mut r, t3, &spm(2, 5, 450, hash));
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
        feed(&mut r, t, &spm(0, 0, 2000, None));
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
        // 300 bytes delivered: the MAB moved over an eighth of a window and is reported at once; the
        // last byte is reported only once the transfer is verified.
        let len = r.poll_transmit(t, &mut buf).unwrap();
        let m = Mab::parse(Packet::parse(&buf[..len], DEFAULT_MTU).unwrap().body()).unwrap();
        assert_eq!((m.mab, m.received), (1300, 299));
        assert!(r.poll_transmit(t, &mut buf).is_none());
    }

    /// The MAB grants the in-flight allowance past the highest byte received, not the whole
    /// window: before the path is measured the headroom alone, then the headroom and twice the
    /// measured bandwidth-delay product; it never goes back on a grant; the window still
    /// bounds what is accepted.
    #[test]
    fn the_mab_grants_what_the_path_needs_past_the_highest_byte() {
        let mut c = ReceiverConfig::new(n(5), GroupAddr::new(G).unwrap(), n(1), DEFAULT_MTU);
        c.window = 100_000;
        c.in_flight_headroom = 400;
        c.in_flight_gain = 2;
        c.rate_interval = Duration::from_millis(1);
        let mut r = RmtpReceiver::new(c, MemSink::new(), Instant::ZERO);
        let mut buf = [0u8; DEFAULT_MTU];
        let mut report = |r: &mut RmtpReceiver<MemSink>, now: Instant| {
            let mut last = None;
            while let Some(len) = r.poll_transmit(now, &mut buf) {
                let p = Packet::parse(&buf[..len], DEFAULT_MTU).unwrap();
                if p.flag() == Flag::RmtpMab {
                    last = Some(Mab::parse(p.body()).unwrap().mab);
                }
            }
            last
        };
        let t = Instant::ZERO;
        feed(&mut r, t, &spm(0, 0, 1_000_000, None));
        assert_eq!(report(&mut r, t), Some(400), "the headroom, not 100 000");
        // Sequence 1 arrives, 0 is lost: the grant runs from the highest byte (200).
        feed(&mut r, t, &data(1, &[1; 100]));
        assert_eq!(r.mab_to_report(), 600);
        assert_eq!(
            report(&mut r, t),
            Some(600),
            "a quarter of the allowance moved"
        );
        // One segment every 10 µs (10 MB/s); the first past the old grant (400, sequence 4)
        // comes 30 µs after the MAB that raised it: a 30 µs round trip.
        for seq in 2..=101 {
            let at = Instant::from_nanos((seq - 1) * 10_000);
            feed(&mut r, at, &data(seq, &[1; 100]));
        }
        let rtt = r.in_flight().rtt_min();
        assert_eq!(rtt, Some(Duration::from_micros(30)));
        assert_eq!(r.in_flight().rate(), Some(10_000_000));
        // 10 MB/s × 30 µs = 300 bytes in the path, twice, and the headroom.
        assert_eq!(r.mab_to_report(), 10_200 + 400 + 2 * 300);
        // Data up to the window is still accepted: a sender may act on an older grant.
        feed(&mut r, Instant::from_millis(2), &data(500, &[1; 100]));
        assert_eq!(r.stats().beyond_window, 0);
        assert_eq!(r.mab_to_report(), 50_100 + 400 + 2 * 300);
        let granted = report(&mut r, Instant::from_millis(2)).unwrap();
        // With no cap the MAB is delivered + window (sequence 0 is still missing).
        r.config.in_flight_headroom = 0;
        assert_eq!(r.mab_to_report(), 100_000);
        // The rate falls away, the grant does not.
        r.config.in_flight_headroom = 1;
        assert_eq!(r.mab_to_report(), granted);
    }

    #[test]
    fn trailing_edge_past_a_gap_is_unrecoverable() {
        let mut r = rx();
        feed(&mut r, Instant::ZERO, &spm(0, 2, 400, None));
        feed(&mut r, Instant::ZERO, &data(1, &[0; 100]));
        let mut buf = vec![0u8; 200];
        let mut s = SpmFields {
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
        // One SPM is not enough to give up (it may be forged); the next one agreeing is.
        assert!(!r.is_failed());
        s.spm_sequence = 4;
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

    /// Runs the receiver's timers as an engine would, up to `until`.
    fn run_until(r: &mut RmtpReceiver<MemSink>, until: Instant) {
        let mut buf = [0u8; DEFAULT_MTU];
        while let Some(t) = r.poll_timeout().filter(|&t| t <= until) {
            r.handle_timeout(t);
            while r.poll_transmit(t, &mut buf).is_some() {}
            if r.poll_timeout() == Some(t) {
                break;
            }
        }
    }

    /// A receiver that took a whole 200-byte transfer at time zero (two agreeing finished
    /// SPMs, two DATA), and the transfer's hash as its SPMs carry it.
    fn completed() -> (RmtpReceiver<MemSink>, Option<[u8; 32]>) {
        let content = [3u8; 200];
        let hash = Some(*blake3::hash(&content).as_bytes());
        let mut r = rx();
        let t0 = Instant::ZERO;
        feed(&mut r, t0, &spm(0, 2, 200, hash));
        feed(&mut r, t0, &spm(1, 2, 200, hash));
        feed(&mut r, t0, &data(0, &content[..100]));
        feed(&mut r, t0, &data(1, &content[100..]));
        (r, hash)
    }

    fn events(r: &mut RmtpReceiver<MemSink>) -> Vec<ReceiverEvent> {
        std::iter::from_fn(|| r.poll_event()).collect()
    }

    fn silent_for_10s() -> Vec<ReceiverEvent> {
        vec![ReceiverEvent::Failed(FailReason::SenderSilent {
            silent_for: SENDER_TIMEOUT,
        })]
    }

    #[test]
    fn a_silent_sender_fails_the_transfer_after_the_timeout() {
        let mut r = rx();
        let heard = Instant::from_millis(500);
        feed(&mut r, Instant::ZERO, &spm(0, 0, 450, None));
        feed(&mut r, heard, &data(0, &[7; 100]));
        let deadline = heard + SENDER_TIMEOUT;
        assert!(r.poll_timeout().is_some_and(|t| t <= deadline));
        run_until(&mut r, deadline - Duration::from_millis(1));
        assert!(!r.is_failed());
        assert!(events(&mut r).is_empty());
        run_until(&mut r, deadline);
        assert!(r.is_failed());
        assert_eq!(events(&mut r), silent_for_10s());
        assert_eq!(r.sink().verified, Some(false), "the sink is aborted");
        assert_eq!(
            FailReason::SenderSilent {
                silent_for: SENDER_TIMEOUT
            }
            .to_string(),
            "sender silent (no data or SPM for 10s)"
        );
    }

    /// Only DATA and SPMs the receiver accepted move the watch: a packet with a bad CRC, DATA
    /// outside the transfer's shape, an implausible SPM, an NCF, or another tree's DATA keeps
    /// no dead sender alive.
    #[test]
    fn refused_packets_do_not_keep_a_silent_sender_alive() {
        let mut r = rx();
        feed(&mut r, Instant::ZERO, &spm(0, 0, 450, None));
        let deadline = Instant::ZERO + SENDER_TIMEOUT;
        let late = deadline - Duration::from_millis(100);
        let mut bad_crc = data(1, &[1; 100]);
        bad_crc[40] ^= 1;
        let bad_crc = control::wire::dnp::frame(
            control::Addr::from_raw(G),
            control::Addr::from_raw(1),
            Flag::RmtpData,
            &bad_crc[10..],
        );
        let misplaced = data_packet(
            GroupAddr::new(G).unwrap(),
            n(1),
            Flag::RmtpData,
            1,
            150,
            &[1; 100],
        );
        let foreign = data_packet(
            GroupAddr::new(G).unwrap(),
            n(2),
            Flag::RmtpData,
            1,
            100,
            &[1; 100],
        );
        let other_total = spm(1, 1, 4500, None);
        let mut ncf = [0u8; 64];
        let ncf_len = rmtp::build_ncf(
            &mut ncf,
            n(5),
            n(3),
            GroupAddr::new(G).unwrap(),
            n(1),
            &[SeqRange::single(1)],
        )
        .unwrap();
        for p in [&bad_crc, &misplaced, &other_total] {
            feed(&mut r, late, p);
        }
        let _ = r.handle_packet(late, &Packet::parse(&foreign, DEFAULT_MTU).unwrap());
        feed(&mut r, late, &ncf[..ncf_len]);
        let s = r.stats();
        assert_eq!(
            (s.crc_failures, s.data_implausible, s.spms_refused),
            (1, 1, 1)
        );
        run_until(&mut r, deadline);
        assert_eq!(events(&mut r), silent_for_10s());
    }

    #[test]
    fn a_complete_receiver_lingers_while_the_sender_is_heard() {
        let (mut r, hash) = completed();
        let t0 = Instant::ZERO;
        assert!(r.is_complete());
        assert!(matches!(
            events(&mut r)[..],
            [ReceiverEvent::Complete { bytes: 200, .. }]
        ));
        // The sender goes on (its SPMs): the receiver stays.
        let linger = r.config().linger_silence;
        let heard = t0 + linger - Duration::from_millis(1);
        feed(&mut r, heard, &spm(2, 2, 200, hash));
        run_until(&mut r, heard + linger - Duration::from_millis(1));
        assert!(events(&mut r).is_empty());
        // Silent for the linger: it may leave.
        run_until(&mut r, heard + linger);
        assert_eq!(events(&mut r), [ReceiverEvent::MayLeave]);
        // Once.
        run_until(&mut r, heard + SENDER_TIMEOUT * 2);
        assert!(events(&mut r).is_empty());
    }

    /// The engine may first look at the clock again long after the packet that completed the
    /// transfer (its thread blocked in `Sink::finish`, which syncs a large file, with the
    /// sender's SPMs queued behind): the receiver has not reported its completion yet, and the
    /// sender only completes on such reports, so that wait is no silence of the sender's.
    /// (Before the fix it left at once, its completion reported once or never: bench
    /// multicast, 256 MiB to 7 receivers on the threaded engine, "no receiver left".)
    #[test]
    fn a_receiver_stalled_at_completion_reports_it_for_the_linger_before_leaving() {
        let (mut r, _) = completed();
        let t0 = Instant::ZERO;
        assert!(r.is_complete());
        let _ = events(&mut r);
        let linger = r.config().linger_silence;
        let woke = t0 + linger * 3;
        r.handle_timeout(woke);
        assert!(
            events(&mut r).is_empty(),
            "left before reporting completion"
        );
        let mut buf = [0u8; DEFAULT_MTU];
        let len = r.poll_transmit(woke, &mut buf).expect("the completion MAB");
        let p = Packet::parse(&buf[..len], DEFAULT_MTU).unwrap();
        assert_eq!(Mab::parse(p.body()).unwrap().received, 200);
        // Still silent: it goes on reporting for the linger from its second report (the one
        // a relay believes), then leaves.
        let second = woke + r.config().mab_interval;
        run_until(&mut r, second + linger - Duration::from_millis(1));
        assert!(events(&mut r).is_empty());
        assert!(r.stats().mabs_sent >= 2, "{:?}", r.stats());
        run_until(&mut r, second + linger);
        assert_eq!(events(&mut r), [ReceiverEvent::MayLeave]);
    }

    /// An engine may send the first completion MAB at an instant it took before a long busy
    /// spell (its thread finishing the sink), so that MAB looks a linger old at the next
    /// look at the clock. A relay believes a completion from the second report in a row:
    /// the receiver stays to send it, and lingers from then. Before the fix it left at that
    /// next look after one report (seen on the uring engine, bench multicast to 7
    /// receivers: the sender, its relays holding every first claim, failed "no receiver
    /// left").
    #[test]
    fn a_receiver_reports_its_completion_twice_before_its_linger_counts() {
        let (mut r, _) = completed();
        let t0 = Instant::ZERO;
        let _ = events(&mut r);
        let mut buf = [0u8; DEFAULT_MTU];
        let received = |r: &mut RmtpReceiver<MemSink>, at: Instant, buf: &mut [u8]| {
            let len = r.poll_transmit(at, buf).expect("a MAB");
            let p = Packet::parse(&buf[..len], DEFAULT_MTU).unwrap();
            Mab::parse(p.body()).unwrap().received
        };
        assert_eq!(received(&mut r, t0, &mut buf), 200, "the first report");
        let linger = r.config().linger_silence;
        let woke = t0 + linger * 3;
        r.handle_timeout(woke);
        assert!(events(&mut r).is_empty(), "left after one report");
        assert_eq!(received(&mut r, woke, &mut buf), 200, "the second report");
        run_until(&mut r, woke + linger - Duration::from_millis(1));
        assert!(events(&mut r).is_empty());
        run_until(&mut r, woke + linger);
        assert_eq!(events(&mut r), [ReceiverEvent::MayLeave]);
    }

    #[test]
    fn a_complete_receiver_leaves_once_the_sender_says_everyone_has_everything() {
        let content = [3u8; 200];
        let hash = *blake3::hash(&content).as_bytes();
        let mut r = rx();
        let t0 = Instant::ZERO;
        feed(&mut r, t0, &spm(0, 2, 200, Some(hash)));
        feed(&mut r, t0, &spm(1, 2, 200, Some(hash)));
        feed(&mut r, t0, &data(0, &content[..100]));
        feed(&mut r, t0, &data(1, &content[100..]));
        let _ = events(&mut r);
        let mut buf = vec![0u8; 200];
        let mut s = SpmFields {
            spm_sequence: 3,
            trailing: 2,
            leading: 2,
            segment_size: 100,
            total: 200,
            finished: true,
            hash,
        };
        let t1 = Instant::from_millis(100);
        for seq in [3, 4] {
            s.spm_sequence = seq;
            let len = rmtp::build_spm(&mut buf, GroupAddr::new(G).unwrap(), n(1), &s).unwrap();
            feed(&mut r, t1, &buf[..len]);
        }
        assert!(r.everyone_has_everything());
        assert_eq!(events(&mut r), [ReceiverEvent::MayLeave]);
    }

    fn repair(seq: u64, payload: &[u8]) -> Vec<u8> {
        data_packet(
            GroupAddr::new(G).unwrap(),
            n(1),
            Flag::RmtpRetransmit,
            seq,
            seq * 100,
            payload,
        )
    }

    /// The first NACKs use the configured timers (2 ms delay, 20 ms retry); the first repair
    /// measures the round trip (200 µs) and from then on NACKs follow it: the pending retry
    /// is pulled in, a new gap is NACKed after a quarter round trip. A repair of a sequence
    /// NACKed twice is no sample (Karn).
    #[test]
    fn nack_timers_follow_the_measured_repair_round_trip() {
        let mut r = rx();
        let us = |v: u64| Instant::from_nanos(v * 1000);
        feed(&mut r, us(0), &spm(0, 0, 900, None));
        for seq in [0, 2, 4] {
            feed(&mut r, us(0), &data(seq, &[1; 100]));
        }
        assert!(nacked(&mut r, us(1_999)).is_empty());
        assert_eq!(
            nacked(&mut r, us(2_000)),
            [SeqRange::single(1), SeqRange::single(3)]
        );
        // Seq 1's repair, 200 µs after its NACK: srtt 200, rttvar 100, retry 600 µs.
        feed(&mut r, us(2_200), &repair(1, &[1; 100]));
        assert_eq!(r.repair_rtt().srtt(), Some(Duration::from_micros(200)));
        assert_eq!(r.stats().repair_rtt_samples, 1);
        // Seq 3 was to be retried at 22 ms (20 ms retry); now 600 µs after the sample.
        assert!(nacked(&mut r, us(2_799)).is_empty());
        assert_eq!(nacked(&mut r, us(2_800)), [SeqRange::single(3)]);
        // A new gap (5) is NACKed a quarter round trip after it is seen, not 2 ms.
        feed(&mut r, us(3_000), &data(6, &[1; 100]));
        assert!(nacked(&mut r, us(3_049)).is_empty());
        assert_eq!(nacked(&mut r, us(3_050)), [SeqRange::single(5)]);
        // Seq 3 went twice: its repair could answer either NACK, so it is no sample.
        feed(&mut r, us(3_100), &repair(3, &[1; 100]));
        assert_eq!(r.stats().repair_rtt_samples, 1);
        assert_eq!(r.stats().repairs_received, 2);
    }

    /// A repair that comes sooner after a NACK's retry than any repair ever came answers the
    /// first NACK: the retry was needless, and it is counted (not sampled: see
    /// [`AnswerTiming::SpuriousRetry`]).
    #[test]
    fn a_repair_quicker_than_any_after_a_retry_counts_a_spurious_retry() {
        let mut r = rx();
        let us = |v: u64| Instant::from_nanos(v * 1000);
        feed(&mut r, us(0), &spm(0, 0, 900, None));
        for seq in [0, 2, 4, 6] {
            feed(&mut r, us(0), &data(seq, &[1; 100]));
        }
        assert_eq!(nacked(&mut r, us(2_000)), [1, 3, 5].map(SeqRange::single));
        // Seq 1's repair after 200 µs: retry 600 µs; seqs 3 and 5 are slower than that.
        feed(&mut r, us(2_200), &repair(1, &[1; 100]));
        assert_eq!(nacked(&mut r, us(2_800)), [3, 5].map(SeqRange::single));
        // 50 µs after the retry: the answer to the first NACK.
        feed(&mut r, us(2_850), &repair(3, &[1; 100]));
        // 250 µs after: it may answer the retry.
        feed(&mut r, us(3_050), &repair(5, &[1; 100]));
        assert_eq!(r.stats().nack_retries_spurious, 1);
        assert_eq!(r.stats().repair_rtt_samples, 1);
        assert_eq!(r.repair_rtt().srtt(), Some(Duration::from_micros(200)));
    }

    /// A gap waits for reordering a quarter of the quickest repair round trip, not of the
    /// smoothed one: a repair that queued behind the sender's burst (a FIFO socket buffer on
    /// loopback, the window's worth of data ahead of it) raises `srtt`, but a FIFO path
    /// reorders nothing, and every gap waiting longer holds the window longer. (Before: a
    /// quarter of `srtt`, up to `nack_delay`; behind a 2 MiB window on the simulator's
    /// uring-like links, 1 ms more per repair.)
    #[test]
    fn the_nack_delay_follows_the_quickest_repair_not_the_queued_ones() {
        let mut r = rx();
        let us = |v: u64| Instant::from_nanos(v * 1000);
        feed(&mut r, us(0), &spm(0, 0, 900, None));
        for seq in [0, 2, 4] {
            feed(&mut r, us(0), &data(seq, &[1; 100]));
        }
        assert_eq!(
            nacked(&mut r, us(2_000)),
            [SeqRange::single(1), SeqRange::single(3)]
        );
        // One quick repair (200 µs), one that waited 2.4 ms behind a queue.
        feed(&mut r, us(2_200), &repair(1, &[1; 100]));
        feed(&mut r, us(4_400), &repair(3, &[1; 100]));
        let rtt = r.repair_rtt();
        assert_eq!(rtt.min(), Some(Duration::from_micros(200)));
        assert!(rtt.srtt().is_some_and(|s| s > Duration::from_micros(400)));
        // A new gap (5) waits a quarter of 200 µs, not of the smoothed round trip.
        feed(&mut r, us(5_000), &data(6, &[1; 100]));
        assert!(nacked(&mut r, us(5_049)).is_empty());
        assert_eq!(nacked(&mut r, us(5_050)), [SeqRange::single(5)]);
    }

    /// An accepted SPM is answered with a MAB (a sender whose window stays closed probes
    /// with SPMs in case the MAB that would open it was lost).
    #[test]
    fn an_spm_is_answered_with_a_mab() {
        let mut r = rx();
        let mut buf = [0u8; DEFAULT_MTU];
        feed(&mut r, Instant::ZERO, &spm(0, 0, 900, None));
        feed(&mut r, Instant::ZERO, &data(0, &[1; 100]));
        while r.poll_transmit(Instant::ZERO, &mut buf).is_some() {}
        let sent = r.stats().mabs_sent;
        let t = Instant::from_millis(1);
        assert!(
            r.poll_transmit(t, &mut buf).is_none(),
            "no MAB due by itself"
        );
        feed(&mut r, t, &spm(1, 1, 900, None));
        let len = r.poll_transmit(t, &mut buf).expect("a MAB");
        let m = Mab::parse(Packet::parse(&buf[..len], DEFAULT_MTU).unwrap().body()).unwrap();
        assert_eq!((m.mab, m.received), (1100, 99));
        assert_eq!(r.stats().mabs_sent, sent + 1);
    }

    /// A sink that makes its result final off the caller's thread, as `FileSink` syncs a
    /// file: done after `polls` more looks, or failing then.
    struct Deferred {
        inner: MemSink,
        polls: u32,
        fails: bool,
    }

    impl Sink for Deferred {
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
            self.inner.write_at(offset, data)
        }
        fn finish(&mut self, hash: &[u8; 32]) -> Result<Finished, SinkError> {
            self.inner.finish(hash).map(|_| Finished::Pending)
        }
        fn poll_finished(&mut self) -> Option<Result<(), SinkError>> {
            if self.polls > 0 {
                self.polls -= 1;
                return None;
            }
            Some(match self.fails {
                true => Err(SinkError::Io(std::io::Error::other("disk full"))),
                false => Ok(()),
            })
        }
        fn abort(&mut self) {
            self.inner.abort()
        }
    }

    /// Every byte delivered and verified to a sink still syncing: the receiver reports one
    /// byte short (the sender waits for the file to be final), wakes to ask the sink rather
    /// than spinning, does not fail for a sender silent meanwhile, and completes (or fails
    /// with the sink's reason) when the sink says. Before, `finish` had to block the engine's
    /// thread for the whole sync: on the uring engine that froze a node (seconds for 256 MiB),
    /// its neighbours declared it dead, and with 7 receivers doing it at once the sender
    /// failed "no receiver left" (bench multicast, 7 receivers).
    #[test]
    fn a_sink_syncing_off_the_thread_completes_the_transfer_when_it_is_done() {
        for fails in [false, true] {
            let content = [3u8; 200];
            let hash = Some(*blake3::hash(&content).as_bytes());
            let mut c = ReceiverConfig::new(n(5), GroupAddr::new(G).unwrap(), n(1), DEFAULT_MTU);
            c.window = 1000;
            let sink = Deferred {
                inner: MemSink::new(),
                polls: 3,
                fails,
            };
            let mut r = RmtpReceiver::new(c, sink, Instant::ZERO);
            let t0 = Instant::ZERO;
            for p in [
                spm(0, 2, 200, hash),
                spm(1, 2, 200, hash),
                data(0, &content[..100]),
                data(1, &content[100..]),
            ] {
                r.handle_packet(t0, &Packet::parse(&p, DEFAULT_MTU).unwrap())
                    .unwrap();
            }
            assert!(!r.is_complete() && !r.is_failed());
            assert!(r.poll_event().is_none());
            let mut buf = [0u8; DEFAULT_MTU];
            let len = r.poll_transmit(t0, &mut buf).expect("a MAB");
            let m = Mab::parse(Packet::parse(&buf[..len], DEFAULT_MTU).unwrap().body()).unwrap();
            assert_eq!(m.received, 199, "one byte short until the sink is done");
            // Three looks, each a finish poll later: no spinning at one instant.
            let poll = r.config().finish_poll;
            let mut now = t0;
            for _ in 0..3 {
                let next = r.poll_timeout().expect("a look at the sink is due");
                assert!(next > now && next <= now + poll, "{next:?} after {now:?}");
                now = next;
                r.handle_timeout(now);
                while r.poll_transmit(now, &mut buf).is_some() {}
                assert!(r.poll_event().is_none(), "not done yet");
            }
            // The sender has been silent far longer than its timeout: no matter now.
            now += SENDER_TIMEOUT * 2;
            r.handle_timeout(now);
            let got: Vec<ReceiverEvent> = std::iter::from_fn(|| r.poll_event()).collect();
            if fails {
                assert!(r.is_failed());
                assert!(
                    matches!(&got[..], [ReceiverEvent::Failed(FailReason::Sink(why))] if why.contains("disk full")),
                    "{got:?}"
                );
            } else {
                assert!(r.is_complete());
                assert!(
                    matches!(got[..], [ReceiverEvent::Complete { bytes: 200, .. }]),
                    "{got:?}"
                );
                let len = r.poll_transmit(now, &mut buf).expect("the completion MAB");
                let m =
                    Mab::parse(Packet::parse(&buf[..len], DEFAULT_MTU).unwrap().body()).unwrap();
                assert_eq!(m.received, 200);
            }
        }
    }
}
