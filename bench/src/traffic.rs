//! The two ends every throughput scenario shares: a source that offers datagrams open-loop at a
//! fixed rate (or as fast as it can) with GSO sends, so that one system call carries up to 64
//! datagrams and the source is rarely what limits; and a sink that counts what arrives with
//! `recvmmsg` and UDP_GRO. Plus the verdict on which side limited a run.

use crate::runner::Stop;
use crate::udp::{self, Batch, RawAddr};
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The load a source offers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// As fast as the source can send.
    Max,
    /// Open loop: this many datagrams per second, whatever happens downstream.
    PerSecond(f64),
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => write!(f, "max"),
            Rate::PerSecond(r) => write!(f, "{}", crate::report::si(*r, "pkt/s")),
        }
    }
}

/// What a source sent.
#[derive(Clone, Copy, Debug)]
pub struct Offered {
    pub datagrams: u64,
    pub elapsed: Duration,
}

impl Offered {
    pub fn per_second(&self) -> f64 {
        self.datagrams as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A sleep shorter than this is not worth asking the scheduler for.
const PACING_TICK: Duration = Duration::from_micros(100);

/// Sends copies of `packet` from `socket` to `to` for `duration` at `rate`, with GSO sends of
/// up to 64 datagrams (fewer at low rates, so that the load stays smooth).
pub fn offer(
    socket: &UdpSocket,
    to: SocketAddr,
    packet: &[u8],
    rate: Rate,
    duration: Duration,
    stop: &Stop,
) -> io::Result<Offered> {
    let to = RawAddr::new(to)?;
    let per_send = udp::segments_per_send(packet.len());
    let payload = packet.repeat(per_send);
    let segment = u16::try_from(packet.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "packet too long"))?;
    let smallest_send = match rate {
        Rate::Max => per_send,
        Rate::PerSecond(r) => ((r * PACING_TICK.as_secs_f64()) as usize).clamp(1, per_send),
    };
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration || stop.requested() {
            break;
        }
        let due = match rate {
            Rate::Max => per_send as u64,
            Rate::PerSecond(r) => ((elapsed.as_secs_f64() * r) as u64).saturating_sub(sent),
        };
        if due < smallest_send as u64 {
            if let Rate::PerSecond(r) = rate {
                let next = Duration::from_secs_f64((sent + smallest_send as u64) as f64 / r);
                std::thread::sleep(next.saturating_sub(elapsed).min(duration - elapsed));
            }
            continue;
        }
        let n = (due as usize).min(per_send);
        match udp::send_segments(socket, &payload[..n * packet.len()], segment, &to) {
            Ok(_) => sent += n as u64,
            // The local queue is full: the datagrams were not offered; try again.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Offered {
        datagrams: sent,
        elapsed: start.elapsed(),
    })
}

/// The sink's receive buffer: as large as the system allows, so that the instrument drops
/// nothing when its thread is briefly descheduled (the systems measured keep the default).
pub const SINK_RECEIVE_BUFFER: usize = 8 << 20;

/// The sink's thread name (its CPU time is read by it).
pub const SINK_THREAD: &str = "bench-sink";

/// A thread counting every datagram that reaches its socket until it gets [`udp::STOP`].
pub struct Sink {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    thread: JoinHandle<io::Result<()>>,
}

impl Sink {
    pub fn start() -> io::Result<Sink> {
        let socket = udp::bind_loopback()?;
        udp::enable_gro(&socket)?;
        udp::set_receive_buffer(&socket, SINK_RECEIVE_BUFFER)?;
        let addr = socket.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&received);
        let thread = std::thread::Builder::new()
            .name(SINK_THREAD.into())
            .spawn(move || {
                let mut batch = Batch::new(16, udp::SUPER_PACKET, true);
                loop {
                    let n = batch.recv(&socket)?;
                    let mut got = 0;
                    for i in 0..n {
                        if udp::is_stop(batch.datagram(i)) {
                            count.fetch_add(got, Ordering::Relaxed);
                            return Ok(());
                        }
                        got += batch.datagrams_in(i);
                    }
                    count.fetch_add(got, Ordering::Relaxed);
                }
            })?;
        Ok(Sink {
            addr,
            received,
            thread,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn stop(self) -> io::Result<()> {
        stop_thread(self.addr, self.thread)
    }
}

/// Stops a thread that exits on [`udp::STOP`]: sends it until the thread is gone (a datagram
/// may be dropped by a full socket) and returns the thread's own result.
pub fn stop_thread(addr: SocketAddr, thread: JoinHandle<io::Result<()>>) -> io::Result<()> {
    let socket = udp::bind_loopback()?;
    while !thread.is_finished() {
        socket.send_to(&udp::STOP, addr)?;
        std::thread::sleep(Duration::from_millis(2));
    }
    thread
        .join()
        .map_err(|_| io::Error::other("a benchmark thread panicked"))?
}

/// Waits until `count` has not moved for a few milliseconds (what was in flight has arrived),
/// at most one second.
pub fn settle(count: impl Fn() -> u64) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut last = count();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = count();
        if now == last {
            return;
        }
        last = now;
    }
}

/// Which side held a throughput run back, from what the source managed to offer and where the
/// kernel dropped datagrams (`stages`: each receiving socket, in path order, with its drops).
pub fn limited_by(rate: Rate, offered: &Offered, stages: &[(String, u64)]) -> String {
    if let Rate::PerSecond(target) = rate
        && offered.per_second() < 0.95 * target
    {
        return "source (could not offer the rate asked)".to_string();
    }
    match stages
        .iter()
        .filter(|(_, d)| *d > 0)
        .max_by_key(|(_, d)| *d)
    {
        Some((name, _)) => format!("{name} (the kernel dropped most there)"),
        None if rate == Rate::Max => "source (nothing downstream dropped)".to_string(),
        None => "none (the offered load was carried)".to_string(),
    }
}

/// The CPU time of the first forwarding stage and of the sink (ns, over a run) per datagram
/// delivered, as sample details (none when nothing was delivered).
pub fn cpu_per_datagram((hop1, sink): (u64, u64), delivered: u64) -> Vec<(String, f64)> {
    if delivered == 0 {
        return Vec::new();
    }
    vec![
        (
            "hop1_cpu_ns_per_datagram".into(),
            hop1 as f64 / delivered as f64,
        ),
        (
            "sink_cpu_ns_per_datagram".into(),
            sink as f64 / delivered as f64,
        ),
    ]
}

/// The sample of one throughput run: delivered datagrams per second of sending, with the
/// offered load, the loss, the bit rate and the verdict on what limited it.
pub fn throughput_sample(
    rate: Rate,
    offered: &Offered,
    delivered: u64,
    stages: &[(String, u64)],
    packet_len: usize,
) -> crate::runner::Sample {
    let seconds = offered.elapsed.as_secs_f64().max(1e-9);
    let per_second = delivered as f64 / seconds;
    let loss = if offered.datagrams == 0 {
        0.0
    } else {
        1.0 - (delivered as f64 / offered.datagrams as f64).min(1.0)
    };
    let mut details = std::collections::BTreeMap::new();
    details.insert("offered_pkt_per_s".into(), offered.per_second());
    details.insert(
        "delivered_gbit_per_s".into(),
        per_second * packet_len as f64 * 8.0 / 1e9,
    );
    details.insert("loss".into(), loss);
    details.insert(
        "dropped_at_sockets".into(),
        stages.iter().map(|(_, d)| *d).sum::<u64>() as f64,
    );
    // The last stage is the sink, the instrument: drops there mean it, not the path, saturated.
    if let Some((_, sink)) = stages.last() {
        details.insert("dropped_at_sink".into(), *sink as f64);
    }
    crate::runner::Sample {
        value: per_second,
        details,
        limited_by: Some(limited_by(rate, offered, stages)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(datagrams: u64) -> Offered {
        Offered {
            datagrams,
            elapsed: Duration::from_secs(1),
        }
    }

    fn stages(drops: &[u64]) -> Vec<(String, u64)> {
        drops
            .iter()
            .enumerate()
            .map(|(i, &d)| (format!("hop {}", i + 1), d))
            .collect()
    }

    #[test]
    fn the_verdict_names_the_side_that_limited() {
        let paced = Rate::PerSecond(1000.0);
        assert!(limited_by(paced, &offered(500), &stages(&[9])).starts_with("source"));
        assert!(limited_by(paced, &offered(1000), &stages(&[3, 9, 0])).starts_with("hop 2"));
        assert!(limited_by(paced, &offered(1000), &stages(&[0, 0])).starts_with("none"));
        assert!(limited_by(Rate::Max, &offered(1000), &stages(&[0])).starts_with("source"));
    }

    #[test]
    fn a_sample_has_the_rate_the_loss_and_the_bit_rate() {
        let s = throughput_sample(Rate::Max, &offered(1000), 750, &stages(&[250]), 1000);
        assert_eq!(s.value, 750.0);
        assert_eq!(s.details["loss"], 0.25);
        assert_eq!(s.details["dropped_at_sockets"], 250.0);
        assert_eq!(s.details["delivered_gbit_per_s"], 750.0 * 8000.0 / 1e9);
    }
}
