//! The kernel's limit for a transfer: one thread sends the file's bytes as 1024-byte datagrams
//! with GSO (64 per system call) to each of N bare UDP sinks on 127.0.0.1 in turn, with no
//! protocol, no loss of its own, no repair and no disk, and goes on sending the file again
//! until [`MIN_TIME`] has passed. Its goodput is the slowest sink's datagrams over the time
//! until the last of them arrived.

use super::{Figures, Transfer};
use crate::machine::own_cpu;
use crate::runner::{Sample, Stop, System};
use crate::traffic::Sink;
use crate::udp::{self, RawAddr};
use std::io;
use std::time::{Duration, Instant};

pub const NAME: &str = "kernel-udp-fanout";
/// The datagram size: the DNP MTU the engines use.
pub const DATAGRAM: usize = super::super::PACKET_LEN;

/// The shortest measurement: one 256 MiB file took 50-70 ms, few enough scheduler slices on a
/// shared 2-core VM that one run's figure moved between 2.3 and 5.6 GB/s.
const MIN_TIME: Duration = Duration::from_millis(500);

/// How long the sinks may be silent before what has not arrived counts as lost.
const QUIET: Duration = Duration::from_millis(50);

pub struct Run<'a> {
    pub transfer: &'a Transfer,
    pub stop: Stop,
}

impl System for Run<'_> {
    fn name(&self) -> String {
        NAME.to_string()
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let t = self.transfer;
        let sinks = (0..t.receivers)
            .map(|_| Sink::start())
            .collect::<io::Result<Vec<_>>>()?;
        let cpu_before = own_cpu();
        let outcome = self.send_to(&sinks);
        let cpu = own_cpu().saturating_sub(cpu_before);
        for sink in sinks {
            sink.stop()?;
        }
        let (elapsed, slowest, sent) = outcome?;
        let delivered_bytes = slowest.saturating_mul(DATAGRAM as u64);
        let mut figures = Figures {
            slowest_receiver: elapsed,
            last_copy: elapsed,
            cpu,
            ..Figures::default()
        };
        figures
            .counters
            .push(("loss", 1.0 - slowest as f64 / sent.max(1) as f64));
        let mut sample = figures.sample(t);
        // What the slowest sink got, not the file's size: the kernel drops when it must.
        sample.value = delivered_bytes as f64 / elapsed.as_secs_f64().max(1e-9);
        sample.details.remove("copies_verified");
        // The file's time at that rate (the measurement itself lasts MIN_TIME or more).
        sample.details.insert(
            "time_to_last_copy_s".into(),
            t.size as f64 / sample.value.max(1e-9),
        );
        // Per gigabyte sent (the file's size more than once, for MIN_TIME).
        let sent_gigabytes = (sent * DATAGRAM as u64 * t.receivers as u64) as f64 / 1e9;
        sample.details.insert(
            "cpu_s_per_gb".into(),
            cpu.as_secs_f64() / sent_gigabytes.max(1e-9),
        );
        Ok(sample)
    }
}

impl Run<'_> {
    /// Sends every sink the file's worth of datagrams, and again until [`MIN_TIME`] has
    /// passed; returns the time until the last one arrived, the slowest sink's count, and the
    /// count sent to each.
    fn send_to(&self, sinks: &[Sink]) -> io::Result<(Duration, u64, u64)> {
        let per_file = self.transfer.size.div_ceil(DATAGRAM as u64);
        let per_send = udp::segments_per_send(DATAGRAM);
        let payload = vec![0xA5; per_send * DATAGRAM];
        let targets = sinks
            .iter()
            .map(|s| RawAddr::new(s.addr()))
            .collect::<io::Result<Vec<_>>>()?;
        let socket = udp::bind_loopback()?;
        let start = Instant::now();
        let mut sent = 0u64;
        let mut per_sink = per_file;
        while sent < per_sink && !self.stop.requested() {
            if sent + per_send as u64 >= per_sink && start.elapsed() < MIN_TIME {
                per_sink += per_file;
            }
            let n = (per_sink - sent).min(per_send as u64) as usize;
            for to in &targets {
                // A full local queue refuses the send: try again until it takes it.
                loop {
                    match udp::send_segments(&socket, &payload[..n * DATAGRAM], DATAGRAM as u16, to)
                    {
                        Ok(_) => break,
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            std::thread::yield_now()
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            sent += n as u64;
        }
        let slowest = || sinks.iter().map(Sink::received).min().unwrap_or(0);
        let mut last = slowest();
        let mut last_change = Instant::now();
        while last < sent && last_change.elapsed() < QUIET {
            std::thread::sleep(Duration::from_micros(200));
            let now = slowest();
            if now != last {
                last = now;
                last_change = Instant::now();
            }
        }
        Ok((last_change - start, last, sent))
    }
}
