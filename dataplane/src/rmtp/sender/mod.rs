//! The RMTP sender (seed §6.3): sends a [`Source`] to a group in equal-size segments, never past
//! the minimum MAB its tree reports, answers NACKs with RETRANSMITs, and announces its window and
//! the end of the transfer in SPMs (from PGM).
//!
//! Packets are built into a buffer the caller provides ([`RmtpSender::poll_transmit`]); the
//! payload is read from the source straight into that buffer. Sealed packets have DNP dst =
//! group, src = the sender node; the node hands them to its relay as locally originated.
//!
//! NACKs and MABs may be forged: repairs are bounded per hold-off whatever the NACKs name, a
//! MAB whose values no tree could report is refused, and what completes or fails the transfer
//! (every receiver's proof of the whole transfer, every receiver failed) is believed only when
//! `mab_agreement` MABs in a row say so. A sender whose receivers all fell silent fails. A complete
//! sender keeps sending SPMs for `linger`, then has ended ([`RmtpSender::has_ended`]): an engine
//! may drop it then.

use super::RmtpError;
use super::rtt::RttEstimate;
use super::source::Source;
use control::wire::dnp::{DNP_HEADER_LEN, Flag, Packet};
use control::wire::rmtp::{self, DATA_HEADER_LEN, Mab, Nack, SeqRange, SpmFields, TOTAL_UNKNOWN};
use control::{GroupAddr, Instant, NodeAddr};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Finishing SPMs sent back to back when the last segment leaves: what a receiver's default
/// `spm_agreement` needs to believe the hash.
const FINISHING_SPMS: u64 = 2;

/// Packets [`RmtpSender::poll_batch`] wrote end to end: `count` of `size` bytes each, the last
/// possibly shorter, `len` bytes in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentBatch {
    pub count: usize,
    pub size: usize,
    pub len: usize,
}

#[derive(Clone, Debug)]
pub struct SenderConfig {
    pub me: NodeAddr,
    pub group: GroupAddr,
    /// Largest DNP packet; the segment size defaults to what fits in it.
    pub mtu: usize,
    /// Payload bytes per DATA packet; `None` for the most the MTU allows.
    pub segment_size: Option<u16>,
    /// How far (bytes) the sender may go before any MAB arrives.
    pub initial_window: u64,
    /// Pacing of DATA and RETRANSMIT in bytes per second (payload + headers); `None`: unpaced.
    pub rate: Option<u64>,
    /// Bytes a paced sender may send at once ahead of its pace: packets leave in bursts of
    /// about this much (one wake-up and one segmented send each), the rate kept on average;
    /// 0: one packet at a time.
    pub pace_quantum: u64,
    /// SPM period while sending.
    pub spm_interval: Duration,
    /// SPM period once every segment was sent and until every receiver has everything: faster,
    /// so that tail loss is noticed quickly; also while the flow window stays closed (a window
    /// probe: receivers and relays answer an SPM with their MAB). Once a round trip is
    /// measured, twice the smallest one (at least `timer_floor`) when shorter.
    pub spm_interval_end: Duration,
    /// The period of `max_repairs_per_holdoff`. A sequence is repaired again only
    /// `timer_floor` after its last repair (the same NACK twice in one burst): the relay on
    /// this node sends one NACK per sequence upstream per round trip and a repair only toward
    /// the branches that asked, so any later NACK is a branch that still misses it.
    pub repair_holdoff: Duration,
    /// The shortest timer derived from a measured round trip, and the repair hold-off.
    pub timer_floor: Duration,
    /// Most sequences queued for repair per `repair_holdoff` (plus one per DATA sent for the
    /// first time in it), and queued at once, however many NACKs name however many sequences:
    /// what forged NACKs can make the sender send (at most as many repairs as new data, and
    /// this many more per `repair_holdoff`). The credit per DATA keeps the budget from
    /// starving the repairs of a fast transfer.
    pub max_repairs_per_holdoff: usize,
    /// How many aggregated MABs in a row must agree before the sender believes that every
    /// receiver holds the whole transfer, or that every receiver failed.
    pub mab_agreement: usize,
    /// This long without a MAB (since the last one, or since the first DATA if none came)
    /// means no receiver is left: the transfer fails.
    pub feedback_timeout: Duration,
    /// Keep every sent sequence repairable (trailing edge 0). The source is random access, so
    /// this costs no memory, and a receiver whose branch vanished for a while (a link cut, a
    /// re-formed tree) can still be repaired when it comes back. Off: the trailing edge follows
    /// what every receiver reported holding, as in PGM.
    pub retain_all: bool,
    /// How long a complete sender keeps sending SPMs (so that every receiver sees the final
    /// trailing edge and may leave the group) before the transfer has ended
    /// ([`RmtpSender::has_ended`]): an engine may then drop it. The core itself goes on
    /// answering (SPM heartbeats, repairs) for as long as it is driven.
    pub linger: Duration,
    /// The source's BLAKE3 hash when the caller already has it (the RAP announcement's, hashed
    /// off the engine's thread): the sender then sends it instead of hashing every payload it
    /// sends (small pieces hash several times slower than one large run). `None`: hashed as
    /// sent.
    pub content_hash: Option<[u8; 32]>,
}

impl SenderConfig {
    pub fn new(me: NodeAddr, group: GroupAddr, mtu: usize) -> Self {
        use control::settings::{rmtp, sender as s};
        SenderConfig {
            me,
            group,
            mtu,
            segment_size: None,
            initial_window: s::INITIAL_WINDOW,
            rate: None,
            pace_quantum: s::PACE_QUANTUM,
            spm_interval: s::SPM_INTERVAL,
            spm_interval_end: s::SPM_INTERVAL_END,
            repair_holdoff: rmtp::REPAIR_HOLDOFF,
            timer_floor: rmtp::TIMER_FLOOR,
            max_repairs_per_holdoff: s::MAX_REPAIRS_PER_HOLDOFF,
            mab_agreement: s::MAB_AGREEMENT,
            feedback_timeout: s::FEEDBACK_TIMEOUT,
            retain_all: s::RETAIN_ALL,
            linger: s::LINGER,
            content_hash: None,
        }
    }
}

/// Where the content hash the last SPMs carry comes from.
#[derive(Debug)]
enum Hashing {
    /// [`SenderConfig::content_hash`].
    Given([u8; 32]),
    /// Hashed as sent, in order (boxed: the hasher's state is about 2 KiB).
    AsSent(Box<blake3::Hasher>),
}

impl Hashing {
    fn new(given: Option<[u8; 32]>) -> Hashing {
        given.map_or_else(
            || Hashing::AsSent(Box::new(blake3::Hasher::new())),
            Hashing::Given,
        )
    }

    fn finish(&self) -> [u8; 32] {
        match self {
            Hashing::Given(hash) => *hash,
            Hashing::AsSent(hasher) => *hasher.finalize().as_bytes(),
        }
    }
}

control::counters! {
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct SenderStats {
        pub data_sent: u64,
        pub data_bytes_sent: u64,
        pub retransmissions: u64,
        pub spms_sent: u64,
        pub nacks_received: u64,
        /// Sequences asked again within the hold-off (not repaired twice).
        pub repairs_suppressed: u64,
        /// Ranges reaching outside the window [trailing, leading) (clipped to it).
        pub nacks_out_of_window: u64,
        /// NACKs cut short by `max_repairs_per_holdoff` (sequences looked at, queued in this
        /// hold-off, or queued at once); the rest is not repaired, receivers ask again.
        pub repairs_over_budget: u64,
        /// MABs no tree could report (`received` beyond what was sent, or above `mab`).
        pub mabs_refused: u64,
        /// Times the sender had data ready but the flow window was closed.
        pub window_stalls: u64,
        /// SPMs sent because the window stayed closed for a round trip (each asks the tree for
        /// its MAB again).
        pub window_probes: u64,
        pub mabs_received: u64,
        /// Round trips measured (DATA sent to the first MAB that covers it).
        pub rtt_samples: u64,
        /// The smoothed round trip, nanoseconds (0 until measured).
        pub srtt_nanos: u64,
        /// Bytes every receiver holds (the highest aggregated `received`).
        pub bytes_acked: u64,
        pub malformed: u64,
    }
}

/// Why a transfer ended without every receiver holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendFailure {
    /// Every receiver in the tree reported that it failed.
    ReceiversFailed,
    /// No MAB for `feedback_timeout`: every receiver left or is unreachable.
    ReceiversGone { silent_for: Duration },
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendFailure::ReceiversFailed => write!(f, "every receiver failed"),
            SendFailure::ReceiversGone { silent_for } => {
                write!(
                    f,
                    "no receiver left (no acknowledgement for {silent_for:?})"
                )
            }
        }
    }
}

pub struct RmtpSender<S: Source> {
    config: SenderConfig,
    source: S,
    segment: u64,
    total: u64,
    segments: u64,
    /// Leading edge: the next sequence sent for the first time.
    next_seq: u64,
    hashing: Hashing,
    hash: Option<[u8; 32]>,
    /// Latest aggregated MAB from the tree; `None` until one arrives.
    mab: Option<u64>,
    /// Highest aggregated `received` agreed by `mab_agreement` MABs in a row (never goes
    /// back: the trailing edge only advances).
    received: u64,
    /// The last `mab_agreement` plausible aggregated `received` values.
    recent_received: VecDeque<u64>,
    /// The last MAB, or the first DATA while no MAB came; `None` before sending anything.
    last_feedback: Option<Instant>,
    failure: Option<SendFailure>,
    /// When the sender first saw every receiver holding everything.
    completed_at: Option<Instant>,
    /// The linger after completion is over: the transfer has ended.
    lingered: bool,
    /// Repairs queued since `budget_since` (see `max_repairs_per_holdoff`).
    budget_used: usize,
    budget_since: Instant,
    stalled: bool,
    repairs: BTreeSet<u64>,
    last_repair: BTreeMap<u64, Instant>,
    pace_at: Instant,
    /// The pace slots up to this leave in the burst under way (see `may_send`).
    burst_until: Instant,
    next_spm_at: Instant,
    spm_sequence: u64,
    /// SPMs sent that said finished.
    finished_spms: u64,
    /// The round trip, from DATA to the MAB that covers it.
    rtt: RttEstimate,
    /// The one DATA being timed: (its end offset, when it was sent).
    rtt_probe: Option<(u64, Instant)>,
    stats: SenderStats,
}

impl<S: Source> RmtpSender<S> {
    pub fn new(config: SenderConfig, source: S, now: Instant) -> Self {
        let max = rmtp::max_payload(config.mtu).min(usize::from(u16::MAX)) as u16;
        let segment = u64::from(config.segment_size.unwrap_or(max).clamp(1, max.max(1)));
        let total = source.len();
        let segments = total.div_ceil(segment);
        let hashing = Hashing::new(config.content_hash);
        let mut s = RmtpSender {
            config,
            source,
            segment,
            total,
            segments,
            next_seq: 0,
            hashing,
            hash: None,
            mab: None,
            received: 0,
            recent_received: VecDeque::new(),
            last_feedback: None,
            failure: None,
            completed_at: None,
            lingered: false,
            budget_used: 0,
            budget_since: now,
            stalled: false,
            repairs: BTreeSet::new(),
            last_repair: BTreeMap::new(),
            pace_at: now,
            burst_until: now,
            next_spm_at: now,
            spm_sequence: 0,
            finished_spms: 0,
            rtt: RttEstimate::default(),
            rtt_probe: None,
            stats: SenderStats::default(),
        };
        if segments == 0 {
            s.hash = Some(s.hashing.finish());
        }
        s.note_completion(now);
        s
    }

    /// Starts the linger when every receiver has just been seen holding everything.
    fn note_completion(&mut self, now: Instant) {
        if self.completed_at.is_none() && self.is_complete() {
            self.completed_at = Some(now);
        }
    }

    /// The transfer is over: failed, or complete and lingered for `linger` (seen by
    /// `handle_timeout`, which `poll_timeout` asks for at the end of the linger). An engine may
    /// drop the sender and withdraw its announcement.
    pub fn has_ended(&self) -> bool {
        self.failure.is_some() || self.lingered
    }

    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }

    pub fn segment_size(&self) -> u64 {
        self.segment
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Leading edge: every sequence below was sent at least once.
    pub fn leading_edge(&self) -> u64 {
        self.next_seq
    }

    /// Bytes sent for the first time (the leading edge as an offset).
    pub fn sent_offset(&self) -> u64 {
        (self.next_seq * self.segment).min(self.total)
    }

    /// Oldest sequence still repaired: 0 with `retain_all`, else every receiver holds
    /// everything below.
    pub fn trailing_edge(&self) -> u64 {
        if self.config.retain_all {
            0
        } else {
            self.acked_edge()
        }
    }

    /// Every receiver reported holding every sequence below this one.
    fn acked_edge(&self) -> u64 {
        self.received / self.segment
    }

    /// The flow window's end (bytes) the sender obeys now.
    pub fn window_end(&self) -> u64 {
        self.mab.unwrap_or(self.config.initial_window)
    }

    /// Every segment sent once (the hash is known).
    pub fn is_finished(&self) -> bool {
        self.hash.is_some()
    }

    /// Every receiver in the tree verified the whole transfer.
    pub fn is_complete(&self) -> bool {
        self.failure.is_none() && self.is_finished() && self.received >= self.total
    }

    /// Sequences queued for repair, and sequences held off after a repair: the tables NACKs
    /// grow (both bounded by `max_repairs_per_holdoff` per hold-off).
    pub fn repair_tables(&self) -> (usize, usize) {
        (self.repairs.len(), self.last_repair.len())
    }

    /// Why the transfer ended without completing, if it did.
    pub fn failure(&self) -> Option<&SendFailure> {
        self.failure.as_ref()
    }

    pub fn hash(&self) -> Option<[u8; 32]> {
        self.hash
    }

    /// A NACK or MAB addressed to this sender (handed over by the node's relay).
    pub fn handle_packet(&mut self, now: Instant, packet: &Packet<'_>) -> Result<(), RmtpError> {
        let res = self.dispatch(now, packet);
        if res.is_err() {
            self.stats.malformed += 1;
        }
        self.note_completion(now);
        res
    }

    fn dispatch(&mut self, now: Instant, packet: &Packet<'_>) -> Result<(), RmtpError> {
        if packet.dst().raw() != self.config.me.get() {
            return Err(RmtpError::OtherTree);
        }
        match packet.flag() {
            Flag::RmtpNack => {
                let nack = Nack::parse(packet.body())?;
                if nack.group != self.config.group.get() {
                    return Err(RmtpError::OtherTree);
                }
                self.handle_nack(now, nack.ranges.iter());
                Ok(())
            }
            Flag::RmtpMab => {
                let mab = Mab::parse(packet.body())?;
                if mab.group != self.config.group.get() {
                    return Err(RmtpError::OtherTree);
                }
                self.handle_mab(now, mab.mab, mab.received);
                Ok(())
            }
            other => Err(RmtpError::UnexpectedFlag(other as u16)),
        }
    }

    /// Queues repairs for the sequences asked, clipped to [trailing, leading), not repaired in
    /// the last hold-off (`timer_floor`), and within `max_repairs_per_holdoff`.
    pub fn handle_nack(&mut self, now: Instant, ranges: impl IntoIterator<Item = SeqRange>) {
        self.stats.nacks_received += 1;
        let (trail, lead) = (self.trailing_edge(), self.next_seq);
        let holdoff = self.repair_holdoff();
        // The budget's period is the configured hold-off, not the measured one: a fixed bound
        // on what forged NACKs can draw, however short the round trip.
        if now.saturating_since(self.budget_since) >= self.config.repair_holdoff {
            self.budget_since = now;
            self.budget_used = 0;
        }
        let cap = self.config.max_repairs_per_holdoff;
        let mut examined = 0;
        for r in ranges {
            if r.first < trail || r.end() > lead {
                self.stats.nacks_out_of_window += 1;
            }
            for seq in r.first.max(trail)..r.end().min(lead) {
                // However wide its ranges, one NACK costs at most `cap` look-ups; the repair
                // queue never holds more than one hold-off's budget (a paced sender drains it
                // slower than the budget refills).
                if examined >= cap || self.budget_used >= cap || self.repairs.len() >= cap {
                    self.stats.repairs_over_budget += 1;
                    return;
                }
                examined += 1;
                if self
                    .last_repair
                    .get(&seq)
                    .is_some_and(|&at| now.saturating_since(at) < holdoff)
                {
                    self.stats.repairs_suppressed += 1;
                    continue;
                }
                if self.repairs.insert(seq) {
                    self.budget_used += 1;
                }
            }
        }
    }

    /// The tree's aggregated window: `mab` bounds what may be sent, `received` what everyone
    /// holds.
    pub fn handle_mab(&mut self, now: Instant, mab: u64, received: u64) {
        self.stats.mabs_received += 1;
        // Failed receivers report (2^64 - 1, 2^64 - 1); anything else cannot claim bytes that
        // were never sent, nor a window ending below what it holds.
        let all_failed = mab == u64::MAX && received == u64::MAX;
        if !all_failed && (received > self.sent_offset() || mab < received) {
            self.stats.mabs_refused += 1;
            return;
        }
        self.last_feedback = Some(now);
        self.mab = Some(mab);
        // `received` is one byte short until a receiver verified the whole transfer.
        if let Some((end, sent_at)) = self.rtt_probe
            && !all_failed
            && received.saturating_add(1) >= end
        {
            self.rtt.sample(now.saturating_since(sent_at));
            self.rtt_probe = None;
            self.stats.rtt_samples = self.rtt.samples();
            self.stats.srtt_nanos = self.rtt.srtt().map_or(0, |d| d.as_nanos() as u64);
        }
        let agreement = self.config.mab_agreement.max(1);
        if self.recent_received.len() == agreement {
            self.recent_received.pop_front();
        }
        self.recent_received.push_back(received);
        if self.recent_received.len() < agreement {
            return;
        }
        let agreed = self.recent_received.iter().copied().min().unwrap_or(0);
        if agreed == u64::MAX {
            if !self.is_complete() {
                self.failure.get_or_insert(SendFailure::ReceiversFailed);
            }
            return;
        }
        self.received = self.received.max(agreed.min(self.total));
        self.stats.bytes_acked = self.received;
        // Repairs below the trailing edge are refused; hold-off memory for what everyone
        // reported holding is no longer needed.
        let trail = self.trailing_edge();
        while self.repairs.first().is_some_and(|&s| s < trail) {
            self.repairs.pop_first();
        }
        let acked = self.acked_edge();
        while self
            .last_repair
            .first_key_value()
            .is_some_and(|(&s, _)| s < acked)
        {
            self.last_repair.pop_first();
        }
    }

    fn next_new_fits(&self) -> bool {
        self.next_seq < self.segments && {
            let offset = self.next_seq * self.segment;
            let len = self.segment.min(self.total - offset);
            offset + len <= self.window_end()
        }
    }

    fn spm_due(&self, now: Instant) -> bool {
        now >= self.next_spm_at
    }

    /// When the receivers count as gone, if they stay silent.
    fn feedback_deadline(&self) -> Option<Instant> {
        if self.failure.is_some() || self.is_complete() {
            return None;
        }
        Some(self.last_feedback? + self.config.feedback_timeout)
    }

    /// When the sender next has something to do (an SPM, a paced packet, the receivers'
    /// silence); `None` once it failed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failure.is_some() {
            return None;
        }
        let data = (!self.repairs.is_empty() || self.next_new_fits()).then_some(self.pace_at);
        let at = data.map_or(self.next_spm_at, |d| d.min(self.next_spm_at));
        let at = match self.linger_end() {
            Some(end) if !self.lingered => end.min(at),
            _ => at,
        };
        Some(self.feedback_deadline().map_or(at, |f| f.min(at)))
    }

    fn linger_end(&self) -> Option<Instant> {
        Some(self.completed_at? + self.config.linger)
    }

    /// Drops old repair hold-offs; fails the transfer when every receiver fell silent.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.note_completion(now);
        if self.linger_end().is_some_and(|end| now >= end) {
            self.lingered = true;
        }
        let holdoff = self.repair_holdoff();
        self.last_repair
            .retain(|_, at| now.saturating_since(*at) < holdoff);
        if self.feedback_deadline().is_some_and(|d| now >= d) {
            self.failure = Some(SendFailure::ReceiversGone {
                silent_for: self.config.feedback_timeout,
            });
        }
    }

    /// The next packet to send, written into `buf` (at least `mtu` bytes); its length.
    /// Order: a due SPM, then repairs, then new data within the window, all paced.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.failure.is_some() {
            return None;
        }
        self.note_completion(now);
        if self.spm_due(now) {
            return self.build_spm(now, buf);
        }
        if !self.may_send(now) {
            return None;
        }
        let trail = self.trailing_edge();
        while let Some(seq) = self.repairs.pop_first() {
            if seq < trail || seq >= self.next_seq {
                continue;
            }
            let len = self.build_data(buf, seq, Flag::RmtpRetransmit);
            self.last_repair.insert(seq, now);
            self.stats.retransmissions += 1;
            self.pace(now, len);
            return Some(len);
        }
        if self.next_seq >= self.segments {
            return None;
        }
        if !self.next_new_fits() {
            if !self.stalled {
                self.stalled = true;
                self.stats.window_stalls += 1;
                // A window probe: if the MAB that would open the window was lost, the SPM
                // makes every receiver and relay report again (see `build_spm`).
                self.next_spm_at = self.next_spm_at.min(now + self.spm_interval_end());
            }
            return None;
        }
        self.stalled = false;
        let seq = self.next_seq;
        let len = self.build_data(buf, seq, Flag::RmtpData);
        let payload = &buf[DNP_HEADER_LEN + DATA_HEADER_LEN..len];
        if let Hashing::AsSent(hasher) = &mut self.hashing {
            hasher.update(payload);
        }
        self.stats.data_sent += 1;
        self.budget_used = self.budget_used.saturating_sub(1);
        // Receivers are expected to answer from the first DATA on.
        self.last_feedback.get_or_insert(now);
        self.stats.data_bytes_sent += payload.len() as u64;
        let end = seq * self.segment + payload.len() as u64;
        self.rtt_probe.get_or_insert((end, now));
        self.next_seq += 1;
        if self.next_seq == self.segments {
            self.hash = Some(self.hashing.finish());
            // Announce the end at once: receivers learn the total, the hash and any tail loss.
            self.next_spm_at = now;
        }
        self.pace(now, len);
        Some(len)
    }

    /// Up to `max` packets written into `buf` end to end, as [`Self::poll_transmit`] would
    /// send them one by one: new DATA of one size continues a batch (the last may be shorter:
    /// the file's end), anything else (an SPM, a repair) leaves alone, and the batch ends where
    /// the window, the pace or `buf` does. Every packet takes `size` bytes at most (one MTU at
    /// the first), so the batch can leave as one segmented send.
    pub fn poll_batch(&mut self, now: Instant, buf: &mut [u8], max: usize) -> Option<SentBatch> {
        let first_room = buf.len().min(self.config.mtu);
        let data_before = self.stats.data_sent;
        let size = self.poll_transmit(now, &mut buf[..first_room])?;
        let mut batch = SentBatch {
            count: 1,
            size,
            len: size,
        };
        if self.stats.data_sent == data_before {
            return Some(batch);
        }
        while batch.count < max && batch.len == batch.count * size {
            let Some(next) = self.next_new_len(now) else {
                break;
            };
            if next > size || batch.len + next > buf.len() {
                break;
            }
            let Some(len) = self.poll_transmit(now, &mut buf[batch.len..batch.len + next]) else {
                break;
            };
            batch.count += 1;
            batch.len += len;
        }
        Some(batch)
    }

    /// The length of the next packet if it is new DATA that may leave now (no SPM or repair
    /// first, the window open, its pace slot within the burst).
    fn next_new_len(&self, now: Instant) -> Option<usize> {
        let paced = self.pace_at <= now || self.pace_at <= self.burst_until;
        if self.failure.is_some()
            || self.spm_due(now)
            || !self.repairs.is_empty()
            || !paced
            || !self.next_new_fits()
        {
            return None;
        }
        let offset = self.next_seq * self.segment;
        let payload = self.segment.min(self.total - offset) as usize;
        Some(DNP_HEADER_LEN + DATA_HEADER_LEN + payload)
    }

    /// The measured round trip, if any.
    pub fn rtt(&self) -> &RttEstimate {
        &self.rtt
    }

    /// SPM period at the end and while the window stays closed: twice the smallest round trip
    /// once measured, `spm_interval_end` at most. Not `srtt`: at loss a MAB waits for the
    /// repairs before it, and `srtt` grows with them, while a lost MAB or finishing SPM is to
    /// be replaced within a round trip or two; each costs one SPM and one MAB per node.
    fn spm_interval_end(&self) -> Duration {
        let c = &self.config;
        self.rtt
            .min()
            .map_or(c.spm_interval_end, |m| m * 2)
            .clamp(c.timer_floor, c.spm_interval_end.max(c.timer_floor))
    }

    /// Repair hold-off: `timer_floor`, the same NACK twice in one burst. Not a round trip:
    /// the relay on this node sends a repair only toward the branches that asked (and sends a
    /// NACK of one sequence upstream once per its round trip), so a NACK from another branch,
    /// even just after a repair, needs a repair of its own; a longer hold-off ignored it and
    /// that branch's retry too (measured: `multicast_sim`, 2.2 NACK mentions per lost
    /// sequence at the sender with half the smallest round trip, 1.7 with this).
    fn repair_holdoff(&self) -> Duration {
        let c = &self.config;
        c.timer_floor.min(c.repair_holdoff)
    }

    /// Whether a paced packet may leave now: once its pace slot has come a burst begins, and
    /// the packets whose slots lie within one quantum of its start leave with it.
    fn may_send(&mut self, now: Instant) -> bool {
        if self.pace_at <= now {
            let quantum = match self.config.rate.filter(|r| *r > 0) {
                Some(rate) => {
                    let nanos =
                        u128::from(self.config.pace_quantum) * 1_000_000_000 / u128::from(rate);
                    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
                }
                None => Duration::ZERO,
            };
            self.burst_until = now + quantum;
            return true;
        }
        self.pace_at <= self.burst_until
    }

    fn pace(&mut self, now: Instant, len: usize) {
        if let Some(rate) = self.config.rate.filter(|r| *r > 0) {
            let nanos = (len as u128 * 1_000_000_000 / u128::from(rate)) as u64;
            self.pace_at = self.pace_at.max(now) + Duration::from_nanos(nanos);
        }
    }

    fn build_data(&mut self, buf: &mut [u8], seq: u64, flag: Flag) -> usize {
        let offset = seq * self.segment;
        let want = self.segment.min(self.total - offset) as usize;
        let start = DNP_HEADER_LEN + DATA_HEADER_LEN;
        let got = self.source.read_at(offset, &mut buf[start..start + want]);
        // A source that shrank under us sends what it has; the hash tells receivers.
        let len = start + got;
        // `buf[..len]` holds both headers and at most an MTU: sealing cannot be refused.
        let _ = rmtp::seal_data(
            &mut buf[..len],
            self.config.group,
            self.config.me,
            flag,
            seq,
            offset,
        );
        len
    }

    fn build_spm(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let finished = self.is_finished();
        let spm = SpmFields {
            spm_sequence: self.spm_sequence,
            trailing: self.trailing_edge(),
            leading: self.next_seq,
            segment_size: self.segment as u16,
            total: if self.total == u64::MAX {
                TOTAL_UNKNOWN
            } else {
                self.total
            },
            finished,
            hash: self.hash.unwrap_or([0; 32]),
        };
        self.spm_sequence += 1;
        self.stats.spms_sent += 1;
        // Fast at the end (tail loss, hash) and while the window stays closed (an SPM makes
        // every receiver and relay report its MAB: one that was lost is replaced within a
        // round trip, not a MAB period), a slow heartbeat once everyone has everything: a
        // receiver that lost every finishing SPM still completes.
        let probing = self.stalled && !finished;
        if probing {
            self.stats.window_probes += 1;
        }
        self.finished_spms += u64::from(finished);
        // A receiver believes the hash when two SPMs in a row agree (its default
        // `spm_agreement`): the first two finishing SPMs go back to back, not a period apart.
        self.next_spm_at = now
            + if finished && self.finished_spms < FINISHING_SPMS {
                Duration::ZERO
            } else if probing || (finished && !self.is_complete()) {
                self.spm_interval_end()
            } else {
                self.config.spm_interval
            };
        rmtp::build_spm(buf, self.config.group, self.config.me, &spm).ok()
    }
}

#[cfg(test)]
mod tests;
