use super::*;
use crate::rmtp::source::MemSource;
use control::wire::DEFAULT_MTU;
use control::wire::rmtp::RmtpMessage;

fn cfg() -> SenderConfig {
    let mut c = SenderConfig::new(
        NodeAddr::new(1).unwrap(),
        GroupAddr::new(0xF000).unwrap(),
        DEFAULT_MTU,
    );
    c.segment_size = Some(100);
    c.initial_window = 1000;
    c
}

fn drain(s: &mut RmtpSender<MemSource>, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; DEFAULT_MTU];
    while let Some(n) = s.poll_transmit(now, &mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

type Parsed = (Flag, Option<(u64, Vec<u8>)>, Option<SpmFields>);

fn parse(p: &[u8]) -> Parsed {
    let pk = Packet::parse(p, DEFAULT_MTU).unwrap();
    match RmtpMessage::parse(pk.flag(), pk.body()).unwrap() {
        RmtpMessage::Data(d) | RmtpMessage::Retransmit(d) => {
            assert!(d.crc_ok());
            (pk.flag(), Some((d.sequence(), d.payload().to_vec())), None)
        }
        RmtpMessage::Spm(s) => (pk.flag(), None, Some(s)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sends_within_the_window_then_repairs_once() {
    let data: Vec<u8> = (0..2050u32).map(|i| i as u8).collect();
    // PGM's trailing edge: repairs stop below what every receiver reported holding.
    let mut c = cfg();
    c.retain_all = false;
    let mut s = RmtpSender::new(c, MemSource::new(data.clone()), Instant::ZERO);
    let out = drain(&mut s, Instant::ZERO);
    // One SPM then ten 100-byte segments fill the initial 1000-byte window.
    assert_eq!(out.len(), 11);
    assert_eq!(parse(&out[0]).0, Flag::RmtpSpm);
    assert_eq!(s.sent_offset(), 1000);
    assert_eq!(s.stats().window_stalls, 1);
    for (i, p) in out[1..].iter().enumerate() {
        let (flag, d, _) = parse(p);
        let (seq, payload) = d.unwrap();
        assert_eq!(flag, Flag::RmtpData);
        assert_eq!(seq, i as u64);
        assert_eq!(payload, &data[i * 100..i * 100 + 100]);
    }
    // The same NACK three times: one repair.
    let t = Instant::from_millis(1);
    for _ in 0..3 {
        s.handle_nack(t, [SeqRange { first: 3, len: 2 }]);
        let _ = drain(&mut s, t);
    }
    assert_eq!(s.stats().retransmissions, 2);
    assert_eq!(s.stats().repairs_suppressed, 4);
    // A NACK beyond the leading edge repairs nothing.
    s.handle_nack(t, [SeqRange::single(50)]);
    assert!(drain(&mut s, t).is_empty());
    // The window opens; the rest goes, the last segment is short, an SPM says finished.
    // Two MABs agreeing, as `mab_agreement` wants.
    s.handle_mab(t, 1_000_000, 500);
    s.handle_mab(t, 1_000_000, 500);
    let out = drain(&mut s, t);
    let (_, last, _) = parse(&out[out.len() - 3]);
    assert_eq!(last.unwrap(), (20, data[2000..].to_vec()));
    // Two finishing SPMs back to back: what a receiver needs to believe the hash.
    let (_, _, first) = parse(&out[out.len() - 2]);
    assert!(first.unwrap().finished);
    let (_, _, spm) = parse(out.last().unwrap());
    let spm = spm.unwrap();
    assert!(spm.finished);
    assert_eq!((spm.total, spm.leading, spm.trailing), (2050, 21, 5));
    let mut keep = RmtpSender::new(cfg(), MemSource::new(data.clone()), Instant::ZERO);
    keep.handle_mab(t, 1_000_000, 500);
    keep.handle_mab(t, 1_000_000, 500);
    assert_eq!(
        keep.trailing_edge(),
        0,
        "retain_all keeps every sequence repairable"
    );
    assert_eq!(spm.hash, *blake3::hash(&data).as_bytes());
    // Repairs below the trailing edge are refused.
    s.handle_nack(t + Duration::from_secs(1), [SeqRange::single(2)]);
    let out = drain(&mut s, t + Duration::from_secs(1));
    assert!(out.iter().all(|p| parse(p).0 == Flag::RmtpSpm));
    assert!(!s.is_complete());
    s.handle_mab(t, 1_000_000, 2050);
    assert!(!s.is_complete(), "one MAB is not enough");
    s.handle_mab(t, 1_000_000, 2050);
    assert!(s.is_complete());
    // Complete: SPMs slow down to the heartbeat period.
    let later = t + Duration::from_secs(2);
    assert_eq!(drain(&mut s, later).len(), 1);
    assert_eq!(s.poll_timeout(), Some(later + Duration::from_millis(100)));
}

#[test]
fn the_end_follows_the_measured_round_trip_and_repairs_are_not_held_off() {
    let mut c = cfg();
    c.initial_window = 100_000;
    let mut s = RmtpSender::new(c, MemSource::new(vec![5; 1000]), Instant::ZERO);
    // Every segment leaves at 0 (an SPM, 10 DATA, two finishing SPMs); the MAB covering
    // the first comes back 200 µs later.
    assert_eq!(drain(&mut s, Instant::ZERO).len(), 13);
    assert!(s.is_finished());
    let back = Instant::from_nanos(200_000);
    s.handle_mab(back, 100_000, 99);
    assert_eq!(s.rtt().srtt(), Some(Duration::from_micros(200)));
    assert_eq!(s.stats().rtt_samples, 1);
    // The next finishing SPM comes two round trips later (2 × 200 µs), not 20 ms.
    let out = drain(&mut s, Instant::from_millis(20));
    assert_eq!(out.len(), 1);
    assert_eq!(
        s.poll_timeout(),
        Some(Instant::from_millis(20) + Duration::from_micros(400))
    );
    // A repair may be repeated after the hold-off (`timer_floor`, 50 µs), not 10 ms: another
    // branch may ask just after (the relay sends each repair only toward who asked).
    let t = Instant::from_millis(30);
    s.handle_nack(t, [SeqRange::single(3)]);
    let _ = drain(&mut s, t);
    assert_eq!(s.stats().retransmissions, 1);
    let t2 = t + Duration::from_micros(100);
    s.handle_nack(t2, [SeqRange::single(3)]);
    let _ = drain(&mut s, t2);
    assert_eq!(
        s.stats().retransmissions,
        2,
        "repaired again after the hold-off"
    );
    assert_eq!(s.stats().repairs_suppressed, 0);
}

/// A closed window is probed with SPMs (receivers and relays answer with their MAB): after
/// `spm_interval_end` while no round trip is measured, then after twice the smallest one.
#[test]
fn a_closed_window_is_probed_with_spms() {
    let mut s = RmtpSender::new(cfg(), MemSource::new(vec![1; 2050]), Instant::ZERO);
    assert_eq!(drain(&mut s, Instant::ZERO).len(), 11);
    assert_eq!(s.stats().window_stalls, 1);
    assert_eq!(s.poll_timeout(), Some(Instant::from_millis(20)));
    // A MAB that covers the first DATA but does not open the window: 200 µs round trip.
    s.handle_mab(Instant::from_nanos(200_000), 1000, 99);
    let t = Instant::from_millis(20);
    let out = drain(&mut s, t);
    assert_eq!(out.len(), 1);
    assert!(!parse(&out[0]).2.unwrap().finished);
    assert_eq!(s.stats().window_probes, 1);
    assert_eq!(s.poll_timeout(), Some(t + Duration::from_micros(400)));
}

/// The repair budget gains one repair per DATA sent for the first time: a hold-off whose
/// budget ran out still repairs a transfer that keeps sending.
#[test]
fn new_data_earns_repair_budget() {
    let mut c = cfg();
    c.max_repairs_per_holdoff = 2;
    let mut s = RmtpSender::new(c, MemSource::new(vec![1; 2050]), Instant::ZERO);
    assert_eq!(drain(&mut s, Instant::ZERO).len(), 11);
    let t = Instant::from_millis(1);
    s.handle_nack(t, [SeqRange { first: 0, len: 5 }]);
    let _ = drain(&mut s, t);
    assert_eq!(s.stats().retransmissions, 2);
    assert_eq!(s.stats().repairs_over_budget, 1);
    // The window opens: 11 more segments, 11 repairs of credit (2 fit at once).
    s.handle_mab(t, 1_000_000, 500);
    s.handle_mab(t, 1_000_000, 500);
    let _ = drain(&mut s, t);
    assert_eq!(s.stats().data_sent, 21);
    s.handle_nack(t, [SeqRange { first: 2, len: 3 }]);
    let _ = drain(&mut s, t);
    assert_eq!(s.stats().retransmissions, 4, "within the same hold-off");
}

#[test]
fn pacing_spreads_packets() {
    let mut c = cfg();
    c.rate = Some(130_000); // one 130-byte packet per millisecond
    c.pace_quantum = 0;
    let mut s = RmtpSender::new(c, MemSource::new(vec![0; 1000]), Instant::ZERO);
    let mut buf = [0u8; DEFAULT_MTU];
    let mut sent = 0;
    for ms in 0..5 {
        let now = Instant::from_millis(ms);
        while let Some(n) = s.poll_transmit(now, &mut buf) {
            if n == 130 {
                sent += 1;
            }
        }
    }
    assert_eq!(sent, 5);
    assert_eq!(s.poll_timeout(), Some(Instant::from_millis(5)));
}

/// A batch is what `poll_transmit` sends one by one, byte for byte, end to end: the SPM
/// alone, then new DATA of one size up to the window (or `max`), the file's short last
/// segment closing its batch, and the finishing SPMs alone again.
#[test]
fn a_batch_is_the_packets_one_call_each_would_make() {
    let data: Vec<u8> = (0..2050u32).map(|i| (i * 7) as u8).collect();
    let mut c = cfg();
    c.initial_window = 1 << 20;
    let now = Instant::ZERO;
    let mut one = RmtpSender::new(c.clone(), MemSource::new(data.clone()), now);
    let mut batched = RmtpSender::new(c, MemSource::new(data), now);
    let singles = drain(&mut one, now);
    let mut buf = vec![0u8; 8 * DEFAULT_MTU];
    let mut batches = Vec::new();
    let mut bytes = Vec::new();
    while let Some(b) = batched.poll_batch(now, &mut buf, 8) {
        batches.push((b.count, b.size, b.len));
        bytes.extend(buf[..b.len].chunks(b.size).map(<[u8]>::to_vec));
    }
    assert_eq!(bytes, singles);
    let data_len = DNP_HEADER_LEN + DATA_HEADER_LEN + 100;
    let tail = DNP_HEADER_LEN + DATA_HEADER_LEN + 50;
    let spm = singles[0].len();
    assert_eq!(
        batches,
        [
            (1, spm, spm),
            (8, data_len, 8 * data_len),
            (8, data_len, 8 * data_len),
            (5, data_len, 4 * data_len + tail),
            (1, spm, spm),
            (1, spm, spm),
        ]
    );
}

/// With a quantum, a paced sender sends a burst of about a quantum at once, then one
/// quantum's worth per quantum's time: the same rate on average.
#[test]
fn pacing_releases_bursts_of_a_quantum() {
    let mut c = cfg();
    c.rate = Some(130_000); // one 130-byte packet per millisecond
    c.pace_quantum = 4 * 130;
    c.initial_window = 1 << 20;
    let mut s = RmtpSender::new(c, MemSource::new(vec![0; 10_000]), Instant::ZERO);
    let mut buf = [0u8; DEFAULT_MTU];
    let mut data = |s: &mut RmtpSender<MemSource>, ms: u64| {
        let now = Instant::from_millis(ms);
        std::iter::from_fn(|| s.poll_transmit(now, &mut buf))
            .filter(|&n| n == 130)
            .count()
    };
    for burst in 0..3 {
        let start = burst * 5;
        assert_eq!(
            data(&mut s, start),
            5,
            "one packet and a quantum of four more"
        );
        assert_eq!(s.poll_timeout(), Some(Instant::from_millis(start + 5)));
        for ms in start + 1..start + 5 {
            assert_eq!(data(&mut s, ms), 0, "the burst is paid back first");
        }
    }
}

#[test]
fn empty_transfer_finishes_at_once() {
    let mut s = RmtpSender::new(cfg(), MemSource::new(Vec::new()), Instant::ZERO);
    let out = drain(&mut s, Instant::ZERO);
    assert_eq!(out.len(), 2, "two finishing SPMs");
    let spm = parse(&out[1]).2.unwrap();
    assert!(spm.finished);
    assert_eq!(spm.total, 0);
    assert_eq!(spm.hash, *blake3::hash(b"").as_bytes());
}

#[test]
fn a_given_content_hash_is_the_one_the_finishing_spm_carries() {
    let mut c = cfg();
    c.content_hash = Some([7; 32]);
    let mut s = RmtpSender::new(c, MemSource::new(vec![1; 2050]), Instant::ZERO);
    let t = Instant::from_millis(1);
    s.handle_mab(t, 1_000_000, 0);
    s.handle_mab(t, 1_000_000, 0);
    let out = drain(&mut s, t);
    let spm = parse(out.last().expect("packets")).2.expect("an SPM last");
    assert!(spm.finished);
    assert_eq!(spm.hash, [7; 32], "the given hash, not the data's");
}
