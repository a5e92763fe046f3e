//! Integrity: corruption that defeats the DNP checksum never reaches a sink; the file sink
//! shows the final name only after a verified hash.

mod common;

use common::*;
use control::wire::DEFAULT_MTU;
use control::wire::dnp::Packet;
use control::{Instant, NodeAddr};
use dataplane::rmtp::{
    FileSink, Finished, MemSource, ReceiverConfig, ReceiverEvent, RmtpReceiver, RmtpSender,
    SenderConfig, Sink, SinkError,
};
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn resealed_corruption_is_caught_by_crc_and_the_file_still_completes() {
    const EDGES: &[(u16, u16)] = &[(1, 2), (2, 3), (2, 4)];
    const MEMBERS: &[(u16, u16)] = &[(3, 1), (4, 1)];
    let data = content(1 << 20, 9);
    let mut spec = Spec::new(EDGES, MEMBERS, data.clone());
    spec.seed = 77;
    let mut net = Net::new(spec);
    net.loss = 0.02;
    net.corrupt = 0.05;
    net.run(Duration::from_secs(60), |_| {});
    let crc_failures: u64 = net
        .receivers()
        .map(|(_, _, r)| r.stats().crc_failures)
        .sum();
    let relays = net.relay_totals();
    println!(
        "{} packets corrupted and resealed on links; receivers caught {crc_failures} by CRC-32C; \
         relays refused to serve {} corrupted cached copies",
        net.links.corrupted, relays.cache_corrupt
    );
    assert!(net.links.corrupted > 50);
    assert!(crc_failures > 0);
    for (id, m, r) in net.receivers() {
        assert!(r.is_complete(), "{id}/{m}");
        assert_eq!(
            r.sink().data,
            data,
            "corrupt bytes reached the sink of {id}/{m}"
        );
        assert_eq!(r.sink().verified, Some(true));
    }
}

/// A directory under the system temp dir, unique to this test and process, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("burghers-rmtp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn file_sink_renames_only_after_a_verified_hash() {
    let dir = TempDir::new("sink");
    // More than two of the sink's 256 KiB blocks, in segment-sized pieces and one large one.
    let data = content(600_000, 1);
    let hash = *blake3::hash(&data).as_bytes();

    let mut ok = FileSink::create(&dir.0, "good.bin").unwrap();
    ok.write_at(0, &data[..4000]).unwrap();
    assert_eq!(dir.names(), ["good.bin.partial"]);
    let mut offset = 4000;
    for piece in data[4000..400_000].chunks(1400) {
        ok.write_at(offset, piece).unwrap();
        offset += piece.len() as u64;
    }
    ok.write_at(offset, &data[400_000..]).unwrap();
    assert!(matches!(
        ok.write_at(5, b"x"),
        Err(SinkError::OutOfOrder {
            expected: 600_000,
            got: 5
        })
    ));
    // The sync to disk and the rename go on off this thread: the sink says when they are done.
    assert_eq!(ok.finish(&hash).unwrap(), Finished::Pending);
    outcome(&mut ok).unwrap();
    assert!(ok.poll_finished().is_none(), "the outcome is told once");
    assert_eq!(dir.names(), ["good.bin"]);
    assert_eq!(std::fs::read(dir.0.join("good.bin")).unwrap(), data);

    // The hash is checked by the sink's writer thread too: its outcome says it did not match.
    let mut bad = FileSink::create(&dir.0, "bad.bin").unwrap();
    bad.write_at(0, &data).unwrap();
    assert_eq!(bad.finish(&[0; 32]).unwrap(), Finished::Pending);
    let err = outcome(&mut bad).unwrap_err();
    assert!(matches!(err, SinkError::HashMismatch { .. }));
    assert!(err.to_string().contains("hash mismatch"));

    let mut aborted = FileSink::create(&dir.0, "aborted.bin").unwrap();
    aborted.write_at(0, &data[..100]).unwrap();
    aborted.abort();
    assert_eq!(
        dir.names(),
        ["aborted.bin.partial", "bad.bin.partial", "good.bin"]
    );
    assert_eq!(
        std::fs::read(dir.0.join("aborted.bin.partial")).unwrap(),
        &data[..100]
    );
    for name in ["../x", "a/b", "", ".."] {
        assert!(FileSink::create(&dir.0, name).is_err(), "{name:?}");
    }
}

/// A file sink's outcome, once its writer thread has one.
fn outcome(sink: &mut FileSink) -> Result<(), SinkError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(outcome) = sink.poll_finished() {
            return outcome;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Sender and one receiver wired directly (no relay), with loss, into a FileSink.
fn direct_transfer(dir: &TempDir, name: &str, data: &[u8], lie_about_hash: bool) -> ReceiverEvent {
    let me = NodeAddr::new(2).unwrap();
    let mut sc = SenderConfig::new(n(1), g(), DEFAULT_MTU);
    sc.initial_window = 32 * 1024;
    let mut sender = RmtpSender::new(sc, MemSource::new(data.to_vec()), Instant::ZERO);
    let rc = ReceiverConfig::new(me, g(), n(1), DEFAULT_MTU);
    let sink = FileSink::create(&dir.0, name).unwrap();
    let mut rx = RmtpReceiver::new(rc, sink, Instant::ZERO);
    let mut rng = control::rng::Rng::new(3);
    let mut buf = vec![0u8; DEFAULT_MTU];
    let mut now = Instant::ZERO;
    for _ in 0..100_000 {
        now += Duration::from_micros(500);
        while let Some(len) = sender.poll_transmit(now, &mut buf) {
            let len = if lie_about_hash && buf[7] == 0x15 {
                // A sender announcing the wrong hash (CRC trailer made valid again): only the
                // final BLAKE3 check can tell.
                let mut spm = control::wire::rmtp::SpmFields::parse(&buf[10..len]).unwrap();
                spm.hash[0] ^= 0xFF;
                control::wire::rmtp::build_spm(&mut buf, g(), n(1), &spm).unwrap()
            } else {
                len
            };
            if !rng.chance(0.1) {
                let _ = rx.handle_packet(now, &Packet::parse(&buf[..len], DEFAULT_MTU).unwrap());
            }
        }
        while let Some(len) = rx.poll_transmit(now, &mut buf) {
            if !rng.chance(0.1) {
                let _ =
                    sender.handle_packet(now, &Packet::parse(&buf[..len], DEFAULT_MTU).unwrap());
            }
        }
        if rx.poll_timeout().is_some_and(|t| t <= now) {
            rx.handle_timeout(now);
        }
        if let Some(e) = rx.poll_event() {
            return e;
        }
    }
    // The file sink syncs a verified file on a thread of its own: its end is real time.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        now += Duration::from_millis(5);
        rx.handle_timeout(now);
        if let Some(e) = rx.poll_event() {
            return e;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("transfer did not end");
}

#[test]
fn file_transfer_appears_under_its_name_only_when_verified() {
    let dir = TempDir::new("transfer");
    let data = content(300_000, 2);
    let e = direct_transfer(&dir, "good.bin", &data, false);
    assert!(matches!(e, ReceiverEvent::Complete { bytes: 300_000, .. }));
    assert_eq!(std::fs::read(dir.0.join("good.bin")).unwrap(), data);

    let e = direct_transfer(&dir, "lied.bin", &data, true);
    assert!(matches!(e, ReceiverEvent::Failed(_)), "{e:?}");
    assert_eq!(dir.names(), ["good.bin", "lied.bin.partial"]);
}
