//! Open-loop latency probes. The send times are fixed in advance by a schedule (probe i is due
//! at t0 + i/rate), each probe carries its run, its sequence number and its due time, and its
//! latency is measured from that due time, not from when it was actually sent: a stall anywhere
//! (a forwarder, the sender itself) delays every probe due during it, and all of them show,
//! instead of the one probe a closed loop would have waited on (coordinated omission). A probe
//! that never arrives counts as lost and goes into the histogram at the time it was waited for
//! (a lower bound on its latency), so that the percentiles are over every probe sent.

use crate::pingpong::{Wait, recv_dontwait};
use crate::runner::Stop;
use control::Addr;
use control::wire::{DNP_HEADER_LEN, Flag, dnp};
use hdrhistogram::Histogram;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the measuring end waits for stragglers after the last probe was sent.
pub const LOST_AFTER: Duration = Duration::from_millis(500);

/// The sender sleeps until this long before a probe is due, then spins: a wake-up is late by
/// tens of microseconds on a busy machine, and that lateness would be counted as latency.
const SPIN_BEFORE_DUE: Duration = Duration::from_micros(30);

/// The longest latency the histograms hold (longer ones count as this).
const HIGHEST_NS: u64 = 60_000_000_000;

/// Every run gets its own id, so that a straggler of an earlier run is never taken for one of
/// this run's probes.
static RUN_IDS: AtomicU64 = AtomicU64::new(1);

/// What a probe carries at the start of its DNP body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub run: u64,
    pub seq: u64,
    /// When it was due, in nanoseconds after the run's t0.
    pub due_ns: u64,
}

impl Probe {
    pub const LEN: usize = 24;

    pub fn write(&self, body: &mut [u8]) {
        body[..8].copy_from_slice(&self.run.to_be_bytes());
        body[8..16].copy_from_slice(&self.seq.to_be_bytes());
        body[16..24].copy_from_slice(&self.due_ns.to_be_bytes());
    }

    pub fn read(body: &[u8]) -> Option<Probe> {
        let field = |i: usize| Some(u64::from_be_bytes(body.get(i..i + 8)?.try_into().ok()?));
        Some(Probe {
            run: field(0)?,
            seq: field(8)?,
            due_ns: field(16)?,
        })
    }

    /// The probe in a whole DNP datagram (header included).
    pub fn in_datagram(datagram: &[u8]) -> Option<Probe> {
        Probe::read(datagram.get(DNP_HEADER_LEN..)?)
    }
}

/// A DNP packet whose body starts with a probe, resealed for each send (no allocation).
pub struct ProbePacket {
    bytes: Vec<u8>,
    dst: Addr,
    src: Addr,
    flag: Flag,
}

impl ProbePacket {
    /// `len` bytes in all, header included (at least the header and a probe).
    pub fn new(dst: Addr, src: Addr, flag: Flag, len: usize) -> ProbePacket {
        ProbePacket {
            bytes: vec![0x5A; len.max(DNP_HEADER_LEN + Probe::LEN)],
            dst,
            src,
            flag,
        }
    }

    fn stamp(&mut self, probe: Probe) -> io::Result<&[u8]> {
        probe.write(&mut self.bytes[DNP_HEADER_LEN..]);
        dnp::seal(&mut self.bytes, self.dst, self.src, self.flag)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(&self.bytes)
    }
}

/// Where the probes of a path arrive.
pub trait ProbeEnd {
    /// The next probe to arrive, waiting the given way until `deadline`; None if none came.
    fn next(&mut self, wait: Wait, deadline: Instant) -> io::Result<Option<Probe>>;
}

/// A socket at the end of a path of bare forwarders.
pub struct SocketEnd {
    socket: UdpSocket,
    buf: Vec<u8>,
}

/// How long one blocking receive sleeps before the loop looks at the deadline again.
const RECEIVE_SLICE: Duration = Duration::from_millis(10);

impl SocketEnd {
    pub fn new(socket: UdpSocket) -> io::Result<SocketEnd> {
        socket.set_read_timeout(Some(RECEIVE_SLICE))?;
        Ok(SocketEnd {
            socket,
            buf: vec![0; 2048],
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl ProbeEnd for SocketEnd {
    fn next(&mut self, wait: Wait, deadline: Instant) -> io::Result<Option<Probe>> {
        loop {
            let got = match wait {
                Wait::Sleep => self.socket.recv(&mut self.buf),
                Wait::BusyPoll => recv_dontwait(&self.socket, &mut self.buf),
            };
            match got {
                Ok(n) => {
                    if let Some(p) = Probe::in_datagram(&self.buf[..n]) {
                        return Ok(Some(p));
                    }
                }
                Err(e) if is_timeout(&e) => {
                    if wait == Wait::BusyPoll {
                        std::thread::yield_now();
                    }
                }
                // A signal (Ctrl-C) cuts short a receive that has a timeout: not an error.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Probe i is due at t0 + i/rate, for `duration`.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub rate: f64,
    pub duration: Duration,
}

impl Schedule {
    pub fn probes(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).ceil().max(1.0) as u64
    }

    pub fn due_ns(&self, seq: u64) -> u64 {
        (seq as f64 * 1e9 / self.rate) as u64
    }
}

/// What one open-loop run measured.
pub struct Measured {
    /// Latency from the due time, in nanoseconds, of every probe sent (lost ones at the time
    /// they were waited for).
    pub latency: Histogram<u64>,
    /// How late the sender was on the schedule, in nanoseconds (the instrument's own share of
    /// the latency).
    pub send_lag: Histogram<u64>,
    pub sent: u64,
    pub lost: u64,
    pub duplicates: u64,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("valid histogram bounds")
}

/// Sends the schedule's probes from `source` to `entry` on a thread of its own, and takes them
/// at `end` with the wait given, until every probe sent has arrived or [`LOST_AFTER`] has passed
/// since the last was sent. A stop request ends the schedule early (what was sent is measured).
pub fn measure(
    source: &UdpSocket,
    entry: SocketAddr,
    packet: &mut ProbePacket,
    schedule: Schedule,
    wait: Wait,
    end: &mut dyn ProbeEnd,
    stop: &Stop,
) -> io::Result<Measured> {
    let run = RUN_IDS.fetch_add(1, Ordering::Relaxed);
    let probes = schedule.probes();
    let sent = AtomicU64::new(0);
    let sender_done = AtomicBool::new(false);
    let mut latency = histogram();
    let mut arrived = vec![false; probes as usize];
    let mut duplicates = 0u64;
    let t0 = Instant::now();
    let (send_lag, waited_until_ns) = std::thread::scope(|scope| -> io::Result<_> {
        let sender = std::thread::Builder::new()
            .name("bench-probe-tx".into())
            .spawn_scoped(scope, || {
                let result = send_schedule(source, entry, packet, schedule, run, t0, &sent, stop);
                sender_done.store(true, Ordering::Release);
                result
            })?;
        let mut unique = 0u64;
        let mut done_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if done_at.is_none() && sender_done.load(Ordering::Acquire) {
                done_at = Some(now);
            }
            if let Some(done) = done_at
                && (unique >= sent.load(Ordering::Acquire) || now >= done + LOST_AFTER)
            {
                break;
            }
            let Some(probe) = end.next(wait, now + RECEIVE_SLICE)? else {
                continue;
            };
            let at_ns = t0.elapsed().as_nanos() as u64;
            if probe.run != run || probe.seq >= probes {
                continue;
            }
            let seen = &mut arrived[probe.seq as usize];
            if *seen {
                duplicates += 1;
                continue;
            }
            *seen = true;
            unique += 1;
            latency.saturating_record(at_ns.saturating_sub(probe.due_ns).max(1));
        }
        let waited_until_ns = t0.elapsed().as_nanos() as u64;
        let send_lag = sender
            .join()
            .map_err(|_| io::Error::other("the probe sender panicked"))??;
        Ok((send_lag, waited_until_ns))
    })?;
    let sent = sent.load(Ordering::Acquire);
    let mut lost = 0;
    for seq in (0..sent).filter(|&s| !arrived[s as usize]) {
        lost += 1;
        latency.saturating_record(waited_until_ns.saturating_sub(schedule.due_ns(seq)).max(1));
    }
    Ok(Measured {
        latency,
        send_lag,
        sent,
        lost,
        duplicates,
    })
}

/// The sender's side: each probe at its due time (sleeping, then spinning the last
/// [`SPIN_BEFORE_DUE`]); a sender that fell behind sends what is due at once. Returns how late
/// each send was.
#[allow(clippy::too_many_arguments)]
fn send_schedule(
    source: &UdpSocket,
    entry: SocketAddr,
    packet: &mut ProbePacket,
    schedule: Schedule,
    run: u64,
    t0: Instant,
    sent: &AtomicU64,
    stop: &Stop,
) -> io::Result<Histogram<u64>> {
    precise_sleeps();
    let mut lag = histogram();
    for seq in 0..schedule.probes() {
        if stop.requested() {
            break;
        }
        let due_ns = schedule.due_ns(seq);
        let due = t0 + Duration::from_nanos(due_ns);
        let early = due.saturating_duration_since(Instant::now());
        if early > SPIN_BEFORE_DUE {
            std::thread::sleep(early - SPIN_BEFORE_DUE);
        }
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        lag.saturating_record(Instant::now().saturating_duration_since(due).as_nanos() as u64);
        source.send_to(packet.stamp(Probe { run, seq, due_ns })?, entry)?;
        sent.fetch_add(1, Ordering::Release);
    }
    Ok(lag)
}

/// Asks the kernel to wake this thread's sleeps on time rather than up to 50 µs late (the
/// default timer slack). Best effort: a refusal leaves the default.
fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Microseconds, from the histograms' nanoseconds.
pub fn us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

/// The quantiles of the CDF points the JSON carries (for charts).
pub const CDF_QUANTILES: [f64; 13] = [
    0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
];

/// `[{"quantile": q, "us": latency at q}, …]` for [`CDF_QUANTILES`].
pub fn cdf(h: &Histogram<u64>) -> serde_json::Value {
    CDF_QUANTILES
        .iter()
        .map(|&q| serde_json::json!({ "quantile": q, "us": us(h.value_at_quantile(q)) }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp;
    use control::NodeAddr;

    #[test]
    fn a_probe_reads_back_from_its_datagram() {
        let node = |n| Addr::Node(NodeAddr::new(n).unwrap());
        let mut packet = ProbePacket::new(node(2), node(1), Flag::RmtpData, 64);
        let probe = Probe {
            run: 7,
            seq: 42,
            due_ns: 123_456,
        };
        let bytes = packet.stamp(probe).unwrap().to_vec();
        assert_eq!(bytes.len(), 64);
        control::wire::Packet::parse(&bytes, 1024).expect("a sealed DNP packet");
        assert_eq!(Probe::in_datagram(&bytes), Some(probe));
        assert_eq!(Probe::in_datagram(&bytes[..20]), None);
    }

    #[test]
    fn the_schedule_is_fixed_by_the_rate() {
        let s = Schedule {
            rate: 1000.0,
            duration: Duration::from_millis(100),
        };
        assert_eq!(s.probes(), 100);
        assert_eq!(s.due_ns(3), 3_000_000);
    }

    /// An end that never sees anything: every probe is lost, and each is still in the
    /// histogram, at no less than the time it was waited for.
    struct Nothing;

    impl ProbeEnd for Nothing {
        fn next(&mut self, _: Wait, deadline: Instant) -> io::Result<Option<Probe>> {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            Ok(None)
        }
    }

    #[test]
    fn lost_probes_are_counted_and_kept_in_the_histogram() {
        let node = |n| Addr::Node(NodeAddr::new(n).unwrap());
        let source = udp::bind_loopback().unwrap();
        let nowhere = udp::bind_loopback().unwrap();
        let schedule = Schedule {
            rate: 1000.0,
            duration: Duration::from_millis(20),
        };
        let mut packet = ProbePacket::new(node(2), node(1), Flag::RmtpData, 64);
        let m = measure(
            &source,
            nowhere.local_addr().unwrap(),
            &mut packet,
            schedule,
            Wait::Sleep,
            &mut Nothing,
            &Stop::default(),
        )
        .unwrap();
        assert_eq!((m.sent, m.lost), (20, 20));
        assert_eq!(m.latency.len(), 20);
        assert!(m.latency.min() >= LOST_AFTER.as_nanos() as u64 * 9 / 10);
    }

    #[test]
    fn every_probe_through_a_direct_path_arrives_once() {
        let node = |n| Addr::Node(NodeAddr::new(n).unwrap());
        let source = udp::bind_loopback().unwrap();
        for wait in [Wait::Sleep, Wait::BusyPoll] {
            let mut end = SocketEnd::new(udp::bind_loopback().unwrap()).unwrap();
            let schedule = Schedule {
                rate: 2000.0,
                duration: Duration::from_millis(50),
            };
            let mut packet = ProbePacket::new(node(2), node(1), Flag::RmtpData, 128);
            let to = end.local_addr().unwrap();
            let m = measure(
                &source,
                to,
                &mut packet,
                schedule,
                wait,
                &mut end,
                &Stop::default(),
            )
            .unwrap();
            assert_eq!((m.sent, m.lost, m.duplicates), (100, 0, 0), "{wait:?}");
            assert_eq!(m.latency.len(), 100);
            assert_eq!(m.send_lag.len(), 100);
        }
    }
}
