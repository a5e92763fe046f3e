//! The RMTP end points against a hostile network: every field that passes the DNP checksum and
//! the CRC-32C is attacker-controlled, so one forged (re-sealed) DATA, SPM, NACK or MAB must not
//! crash, freeze, fail or take over a receiver or a sender.

mod common;

use common::*;
use control::Instant;
use control::wire::DEFAULT_MTU;
use control::wire::dnp::{Flag, Packet};
use control::wire::rmtp::{self, Mab, SeqRange, SpmFields, TOTAL_UNKNOWN};
use dataplane::rmtp::{
    MemSink, MemSource, ReceiverConfig, RmtpReceiver, RmtpSender, SendFailure, SenderConfig,
    SenderStats, TableUsage,
};
use std::time::Duration;

const SEGMENT: u16 = 100;
const RECEIVER: u16 = 2;

/// One sender and one receiver wired directly (no relay), lossless, with a hook that sees (and
/// may drop) every packet the sender sends.
struct Pair {
    now: Instant,
    sender: RmtpSender<MemSource>,
    receiver: RmtpReceiver<MemSink>,
    data: Vec<u8>,
    buf: Vec<u8>,
}

impl Pair {
    fn new(len: usize, window: u64) -> Pair {
        Pair::with_sender(len, window, |_| {})
    }

    /// As `new`, with the sender's configuration adjusted by `adjust`.
    fn with_sender(len: usize, window: u64, adjust: impl FnOnce(&mut SenderConfig)) -> Pair {
        let data = content(len, 5);
        let mut sc = SenderConfig::new(n(SENDER), g(), DEFAULT_MTU);
        sc.segment_size = Some(SEGMENT);
        sc.initial_window = window;
        adjust(&mut sc);
        let mut rc = ReceiverConfig::new(n(RECEIVER), g(), n(SENDER), DEFAULT_MTU);
        rc.window = window;
        Pair {
            now: Instant::ZERO,
            sender: RmtpSender::new(sc, MemSource::new(data.clone()), Instant::ZERO),
            receiver: RmtpReceiver::new(rc, MemSink::new(), Instant::ZERO),
            data,
            buf: vec![0; DEFAULT_MTU],
        }
    }

    /// Hands a (forged) packet to the receiver as if it came from the sender's tree.
    fn inject_at_receiver(&mut self, bytes: &[u8]) {
        let p = Packet::parse(bytes, DEFAULT_MTU).expect("a sealed packet");
        let _ = self.receiver.handle_packet(self.now, &p);
    }

    /// Hands a (forged) packet to the sender.
    fn inject_at_sender(&mut self, bytes: &[u8]) {
        let p = Packet::parse(bytes, DEFAULT_MTU).expect("a sealed packet");
        let _ = self.sender.handle_packet(self.now, &p);
    }

    fn sender_config_budget(&self) -> usize {
        SenderConfig::new(n(SENDER), g(), DEFAULT_MTU).max_repairs_per_holdoff
    }

    /// Only the sender's first packet, its opening SPM, reaches the receiver.
    fn opening_spm(&mut self) {
        let len = self.sender.poll_transmit(self.now, &mut self.buf).unwrap();
        assert!(is_spm(&self.buf[..len]));
        let spm = self.buf[..len].to_vec();
        self.inject_at_receiver(&spm);
    }

    /// Runs `ticks` steps of 500 µs, or until the receiver completed or failed; `pass`
    /// decides which sender packets reach the receiver.
    fn run(&mut self, ticks: usize, pass: impl FnMut(&[u8]) -> bool) {
        self.exchange(ticks, true, pass);
    }

    /// Runs `ticks` steps of 500 µs (stopping early if `until_done` and the receiver
    /// completed or failed).
    fn exchange(&mut self, ticks: usize, until_done: bool, mut pass: impl FnMut(&[u8]) -> bool) {
        for _ in 0..ticks {
            self.now += TICK;
            self.sender.handle_timeout(self.now);
            while let Some(len) = self.sender.poll_transmit(self.now, &mut self.buf) {
                if pass(&self.buf[..len]) {
                    let p = Packet::parse(&self.buf[..len], DEFAULT_MTU).unwrap();
                    let _ = self.receiver.handle_packet(self.now, &p);
                }
            }
            self.receiver.handle_timeout(self.now);
            while let Some(len) = self.receiver.poll_transmit(self.now, &mut self.buf) {
                let p = Packet::parse(&self.buf[..len], DEFAULT_MTU).unwrap();
                let _ = self.sender.handle_packet(self.now, &p);
            }
            if until_done && (self.receiver.is_complete() || self.receiver.is_failed()) {
                return;
            }
        }
    }

    fn assert_received_everything(&mut self) {
        assert!(
            self.receiver.is_complete(),
            "not complete: delivered {} of {}, events {:?}",
            self.receiver.delivered(),
            self.data.len(),
            self.receiver.poll_event()
        );
        assert_eq!(self.receiver.sink().data, self.data);
        assert_eq!(self.receiver.sink().verified, Some(true));
    }
}

fn forged_data(seq: u64, offset: u64, payload: &[u8]) -> Vec<u8> {
    rmtp::data_packet(g(), n(SENDER), Flag::RmtpData, seq, offset, payload)
}

fn forged_spm(spm: &SpmFields) -> Vec<u8> {
    let mut buf = vec![0u8; DEFAULT_MTU];
    let len = rmtp::build_spm(&mut buf, g(), n(SENDER), spm).unwrap();
    buf.truncate(len);
    buf
}

fn spm_fields(sequence: u64, trailing: u64, leading: u64, total: u64) -> SpmFields {
    SpmFields {
        spm_sequence: sequence,
        trailing,
        leading,
        segment_size: SEGMENT,
        total,
        finished: false,
        hash: [0; 32],
    }
}

fn is_spm(p: &[u8]) -> bool {
    p[7] == Flag::RmtpSpm as u8
}

#[test]
fn data_whose_end_overflows_u64_is_refused_and_later_gaps_are_still_found() {
    let mut pair = Pair::new(5000, 64 * 1024);
    // A sender may not know its total yet (a stream): nothing bounds the offsets but 2^64.
    pair.inject_at_receiver(&forged_spm(&spm_fields(0, 0, 0, TOTAL_UNKNOWN)));
    let seq = u64::MAX / u64::from(SEGMENT);
    pair.inject_at_receiver(&forged_data(
        seq,
        seq * u64::from(SEGMENT),
        &[0; SEGMENT as usize],
    ));
    assert_eq!(pair.receiver.stats().data_implausible, 1);
    // Every other packet lost once: the gaps are found and repaired.
    let mut k = 0;
    pair.run(20_000, |p| {
        k += 1;
        is_spm(p) || k % 2 == 0 || k > 200
    });
    pair.assert_received_everything();
}

#[test]
fn a_refused_data_before_the_first_spm_teaches_nothing() {
    let mut pair = Pair::new(5000, 1000);
    // Before any SPM: sequence 1 at offset 5000 would mean 5000-byte segments.
    pair.inject_at_receiver(&forged_data(1, 5000, &[7; 10]));
    assert_eq!(pair.receiver.stats().data_before_shape, 1);
    pair.run(20_000, |_| true);
    pair.assert_received_everything();
}

#[test]
fn a_forged_spm_before_the_first_real_one_does_not_impose_its_shape() {
    let mut pair = Pair::new(5000, 64 * 1024);
    let mut wrong = spm_fields(0, 0, 0, 99_999);
    wrong.segment_size = 7;
    pair.inject_at_receiver(&forged_spm(&wrong));
    pair.run(20_000, |_| true);
    pair.assert_received_everything();
    assert_eq!(pair.receiver.stats().shapes_replaced, 1);
}

#[test]
fn an_spm_with_the_highest_sequence_does_not_freeze_the_receiver() {
    let mut pair = Pair::new(5000, 64 * 1024);
    pair.opening_spm();
    pair.inject_at_receiver(&forged_spm(&spm_fields(u64::MAX, 0, 1, 5000)));
    pair.run(20_000, |_| true);
    pair.assert_received_everything();
}

#[test]
fn one_spm_with_absurd_edges_does_not_fail_the_receiver() {
    let mut pair = Pair::new(5000, 64 * 1024);
    pair.opening_spm();
    pair.inject_at_receiver(&forged_spm(&spm_fields(1, 1 << 60, 1 << 60, 5000)));
    assert_eq!(pair.receiver.stats().spms_refused, 1);
    assert!(
        !pair.receiver.is_failed(),
        "{:?}",
        pair.receiver.poll_event()
    );
    // Plausible edges, but a trailing edge past sequence 0 that the sender never claimed.
    pair.inject_at_receiver(&forged_spm(&spm_fields(2, 3, 4, 5000)));
    assert!(
        !pair.receiver.is_failed(),
        "{:?}",
        pair.receiver.poll_event()
    );
    pair.run(20_000, |_| true);
    pair.assert_received_everything();
}

#[test]
fn a_short_segment_before_the_last_is_refused() {
    let mut pair = Pair::new(5000, 64 * 1024);
    pair.opening_spm();
    // CRC-valid, offset = sequence x segment, but 10 bytes where the transfer has 100.
    pair.inject_at_receiver(&forged_data(0, 0, &[9; 10]));
    pair.inject_at_receiver(&forged_data(1, 100, &[9; 10]));
    assert_eq!(pair.receiver.stats().data_implausible, 2);
    pair.run(20_000, |_| true);
    pair.assert_received_everything();
}

#[test]
fn a_sender_is_not_complete_before_its_receiver_verified_the_hash() {
    // Every SPM but the opening one lost: the receiver holds every byte but never learns the
    // hash.
    let mut pair = Pair::new(5000, 64 * 1024);
    pair.opening_spm();
    pair.run(2_000, |p| !is_spm(p));
    assert_eq!(pair.receiver.delivered(), 5000);
    assert!(!pair.receiver.is_complete());
    assert!(
        !pair.sender.is_complete(),
        "the sender reports complete for a receiver that verified nothing"
    );
    pair.run(2_000, |_| true);
    pair.assert_received_everything();
    pair.exchange(400, false, |_| true);
    assert!(pair.sender.is_complete());
}

#[test]
fn a_sender_whose_every_receiver_failed_is_not_complete() {
    let mut pair = Pair::new(5000, 64 * 1024);
    // The finishing SPMs lost (they now go back to back, and would complete the receiver at
    // once): it holds the bytes, not the hash, when it gives up.
    pair.opening_spm();
    pair.run(4, |p| !is_spm(p));
    assert!(!pair.receiver.is_complete());
    pair.receiver.abort();
    pair.exchange(400, false, |_| true);
    assert!(
        !pair.sender.is_complete(),
        "a failed receiver counted as holding everything"
    );
    assert_eq!(pair.sender.failure(), Some(&SendFailure::ReceiversFailed));
}

#[test]
fn a_sender_whose_receivers_fell_silent_fails() {
    let mut pair = Pair::new(50_000, 8 * 1024);
    pair.opening_spm();
    pair.run(20, |_| true);
    assert!(pair.sender.stats().mabs_received > 0);
    // The receiver vanishes: no more MABs. The sender says so instead of waiting for ever.
    let silent = SenderConfig::new(n(SENDER), g(), DEFAULT_MTU).feedback_timeout;
    let mut buf = vec![0u8; DEFAULT_MTU];
    let end = pair.now + silent + Duration::from_millis(1);
    while pair.now < end && pair.sender.failure().is_none() {
        pair.now += TICK;
        pair.sender.handle_timeout(pair.now);
        while pair.sender.poll_transmit(pair.now, &mut buf).is_some() {}
    }
    assert!(matches!(
        pair.sender.failure(),
        Some(SendFailure::ReceiversGone { .. })
    ));
    assert!(!pair.sender.is_complete());
    assert_eq!(pair.sender.poll_timeout(), None);
}

/// 1000 segments sent, then `nacks` forged NACKs one repair hold-off apart, each naming far
/// more than anyone could miss; the sender's retransmissions and counters afterwards.
fn forged_nack_storm(nacks: u64, budget: usize) -> (u64, SenderStats) {
    let mut pair = Pair::with_sender(100_000, 1 << 20, |c| c.max_repairs_per_holdoff = budget);
    pair.run(50, |_| false);
    assert_eq!(pair.sender.leading_edge(), 1000);
    let before = pair.sender.stats().retransmissions;
    let mut named: u64 = 0;
    let mut buf = vec![0u8; DEFAULT_MTU];
    for _ in 0..nacks {
        let ranges = [
            SeqRange {
                first: 0,
                len: u32::MAX,
            },
            SeqRange {
                first: 1 << 40,
                len: u32::MAX,
            },
        ];
        named += ranges.iter().map(|r| u64::from(r.len)).sum::<u64>();
        let len = rmtp::build_nack(&mut buf, n(SENDER), n(RECEIVER), g(), &ranges).unwrap();
        pair.inject_at_sender(&buf[..len]);
        pair.now += Duration::from_millis(10);
        while pair.sender.poll_transmit(pair.now, &mut buf).is_some() {}
    }
    let repairs = pair.sender.stats().retransmissions - before;
    println!(
        "repair budget {budget}: {nacks} forged NACKs naming {named} sequences made the sender \
         send {repairs} retransmissions: x{:.1} per NACK packet, {:.2e} per sequence named",
        repairs as f64 / nacks as f64,
        repairs as f64 / named as f64
    );
    (repairs, pair.sender.stats().clone())
}

#[test]
fn forged_nacks_are_not_amplified() {
    let nacks = 50;
    // Without a budget (as before): every sent sequence once per hold-off (the NACK right
    // after a repair falls inside its hold-off), so x500 per NACK packet.
    let (unbounded, _) = forged_nack_storm(nacks, usize::MAX);
    assert_eq!(unbounded, 500 * nacks);
    let budget = SenderConfig::new(n(SENDER), g(), DEFAULT_MTU).max_repairs_per_holdoff;
    let (repairs, stats) = forged_nack_storm(nacks, budget);
    assert!(
        repairs <= budget as u64 * nacks,
        "amplification x{} per NACK",
        repairs / nacks
    );
    assert!(stats.repairs_over_budget > 0);
    assert!(stats.nacks_out_of_window >= nacks);
}

/// A forged SPM from node 2, relayed into the tree below it, does not stop the transfer to
/// the receivers behind it.
#[test]
fn forged_spms_from_a_neighbour_do_not_stop_a_relayed_transfer() {
    const EDGES: &[(u16, u16)] = &[(1, 2), (2, 3)];
    const MEMBERS: &[(u16, u16)] = &[(3, 1)];
    let data = content(200_000, 3);
    let mut net = Net::new(Spec::new(EDGES, MEMBERS, data.clone()));
    let seg = net.sender().segment_size() as u16;
    for spm in [
        SpmFields {
            spm_sequence: u64::MAX,
            trailing: 0,
            leading: 1,
            segment_size: seg,
            total: TOTAL_UNKNOWN,
            finished: false,
            hash: [0; 32],
        },
        SpmFields {
            spm_sequence: 7,
            trailing: 1 << 40,
            leading: 1 << 41,
            segment_size: seg,
            total: 200_000,
            finished: false,
            hash: [0; 32],
        },
    ] {
        net.inject_forged_from_neighbour(2, 3, &forged_spm(&spm));
    }
    net.run(Duration::from_secs(20), |_| {});
    for (id, m, r) in net.receivers() {
        assert!(r.is_complete(), "{id}/{m} failed: {}", r.is_failed());
        assert_eq!(r.sink().data, data);
    }
}

fn print_usage(table: &str, when: &str, u: TableUsage) {
    println!(
        "{table} flood, {when}: missing {} entries ~{} bytes, out-of-order {} entries ~{} bytes",
        u.missing, u.missing_bytes, u.buffered, u.buffered_bytes
    );
}

/// 100,000 distinct sequences claimed missing (SPMs whose plausible leading edge creeps up):
/// the missing table stops at `max_missing`, the refusals are counted and the transfer still
/// completes.
#[test]
fn missing_table_flood_stays_at_capacity_and_the_transfer_completes() {
    const CLAIMED: u64 = 100_000;
    let len = (CLAIMED + 1) as usize * usize::from(SEGMENT);
    let mut pair = Pair::new(len, len as u64);
    let cap = pair.receiver.config().max_missing;
    pair.opening_spm();
    print_usage("missing", "before", pair.receiver.table_usage());
    for step in 1..=CLAIMED / 100 {
        let spm = spm_fields(step, 0, step * 100, len as u64);
        pair.inject_at_receiver(&forged_spm(&spm));
    }
    let flooded = pair.receiver.table_usage();
    print_usage("missing", "after", flooded);
    assert_eq!(flooded.missing, cap);
    assert!(pair.receiver.stats().missing_full > 0);
    pair.run(20_000, |_| true);
    pair.assert_received_everything();
}

/// 100,000 distinct out-of-order segments (a replay of the transfer, all but its first
/// segment): the buffer stops at `max_buffered`, the refusals are counted, the transfer still
/// completes.
#[test]
fn out_of_order_flood_stays_at_capacity_and_the_transfer_completes() {
    const FLOOD: u64 = 100_000;
    let seg = u64::from(SEGMENT);
    let len = (FLOOD + 1) as usize * usize::from(SEGMENT);
    let mut pair = Pair::new(len, len as u64);
    let cap = pair.receiver.config().max_buffered;
    pair.opening_spm();
    print_usage("out-of-order", "before", pair.receiver.table_usage());
    let data = pair.data.clone();
    for seq in 1..=FLOOD {
        let at = (seq * seg) as usize;
        pair.inject_at_receiver(&forged_data(
            seq,
            seq * seg,
            &data[at..at + usize::from(SEGMENT)],
        ));
    }
    let flooded = pair.receiver.table_usage();
    print_usage("out-of-order", "after", flooded);
    assert_eq!(flooded.buffered, cap);
    assert_eq!(pair.receiver.stats().buffer_full, FLOOD - cap as u64);
    pair.run(20_000, |_| true);
    pair.assert_received_everything();
    print_usage("out-of-order", "completed", pair.receiver.table_usage());
}

/// 100,000 distinct sent sequences NACKed one per forged NACK: the sender's repair tables stay
/// within one hold-off's budget, the refusals are counted, and the receiver still completes.
#[test]
fn repair_queue_flood_stays_at_capacity_and_the_transfer_completes() {
    const FLOOD: u64 = 100_000;
    let len = (FLOOD + 1) as usize * usize::from(SEGMENT);
    let mut pair = Pair::new(len, len as u64);
    let budget = pair.sender_config_budget();
    pair.opening_spm();
    // Everything is sent once; the receiver waits for the hash to be confirmed.
    pair.exchange(1, false, |_| true);
    assert_eq!(pair.sender.leading_edge(), FLOOD + 1);
    let figures = |when: &str, (queued, held): (usize, usize)| {
        println!(
            "repair flood, {when}: {queued} queued ~{} bytes, {held} held off ~{} bytes",
            queued * std::mem::size_of::<u64>(),
            held * std::mem::size_of::<(u64, Instant)>()
        );
    };
    figures("before", pair.sender.repair_tables());
    let mut buf = vec![0u8; DEFAULT_MTU];
    for seq in 0..FLOOD {
        let len = rmtp::build_nack(
            &mut buf,
            n(SENDER),
            n(RECEIVER),
            g(),
            &[SeqRange::single(seq)],
        )
        .unwrap();
        pair.inject_at_sender(&buf[..len]);
    }
    let (queued, held) = pair.sender.repair_tables();
    figures("after", (queued, held));
    assert_eq!(queued + held, budget);
    assert_eq!(
        pair.sender.stats().repairs_over_budget,
        FLOOD - budget as u64
    );
    pair.run(20_000, |_| true);
    pair.assert_received_everything();
}

/// MABs are forgeable too: one claiming bytes never sent is refused; one claiming that every
/// receiver holds everything (plausible once all was sent) is not enough to complete.
#[test]
fn one_forged_mab_neither_completes_the_sender_nor_moves_it_beyond_what_was_sent() {
    let mut pair = Pair::new(5000, 64 * 1024);
    pair.opening_spm();
    let total = pair.data.len() as u64;
    let forge = |pair: &mut Pair, received: u64| {
        let mut buf = vec![0u8; DEFAULT_MTU];
        let m = Mab {
            group: GROUP,
            mab: u64::MAX - 1,
            received,
        };
        let len = rmtp::build_mab(&mut buf, n(SENDER), n(RECEIVER), &m).unwrap();
        pair.inject_at_sender(&buf[..len]);
    };
    // Only the opening SPM went out: no receiver can hold anything.
    forge(&mut pair, total);
    assert_eq!(pair.sender.stats().mabs_refused, 1);
    assert_eq!(pair.sender.stats().bytes_acked, 0);
    // Everything sent (the receiver sees none of it), then one forged "everyone has it".
    pair.exchange(1, false, |_| false);
    forge(&mut pair, total);
    assert!(!pair.sender.is_complete());
    pair.run(20_000, |_| true);
    pair.assert_received_everything();
}
