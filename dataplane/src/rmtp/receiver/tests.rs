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
            let m = Mab::parse(Packet::parse(&buf[..len], DEFAULT_MTU).unwrap().body()).unwrap();
            assert_eq!(m.received, 200);
        }
    }
}

/// A receiver told the transfer's shape by the sender's RAP announcement checks the bytes it
/// is given against the announced hash, whatever the finishing SPMs say (they are refused when
/// they disagree with it): `burghers recv` relies on it and does not read the file back.
#[test]
fn the_bytes_are_checked_against_the_announced_hash() {
    let content: Vec<u8> = (0..300u32).map(|i| (i * 13) as u8).collect();
    let mut other = content.clone();
    other[150] ^= 1;
    let announced_rx = || {
        let mut c = ReceiverConfig::new(n(5), GroupAddr::new(G).unwrap(), n(1), DEFAULT_MTU);
        c.announced = Some(TransferShape {
            segment_size: 100,
            total: 300,
            hash: *blake3::hash(&content).as_bytes(),
        });
        RmtpReceiver::new(c, MemSink::new(), Instant::ZERO)
    };
    let t = Instant::ZERO;
    // The announced bytes: complete with no finishing SPM needed.
    let mut r = announced_rx();
    for seq in 0..3 {
        feed(&mut r, t, &data(seq, &content[seq as usize * 100..][..100]));
    }
    assert!(r.is_complete());
    assert_eq!(r.sink().verified, Some(true));
    // Other bytes, with finishing SPMs carrying their own hash: the SPMs are refused and the
    // bytes fail the announced hash.
    let mut r = announced_rx();
    let theirs = Some(*blake3::hash(&other).as_bytes());
    feed(&mut r, t, &spm(0, 3, 300, theirs));
    feed(&mut r, t, &spm(1, 3, 300, theirs));
    for seq in 0..3 {
        feed(&mut r, t, &data(seq, &other[seq as usize * 100..][..100]));
    }
    assert!(r.is_failed());
    assert_eq!(r.sink().verified, Some(false));
    assert_eq!(r.stats().spms_refused, 2);
}
