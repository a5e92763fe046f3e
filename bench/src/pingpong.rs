//! Round-trip latency of a bare UDP ping-pong on 127.0.0.1: a client sends one datagram, an echo
//! thread sends it back, one in flight at a time; each round trip goes into an HDR histogram.
//! Both ends wait the same way: asleep in a blocking `recv`, or spinning on `recv` with
//! MSG_DONTWAIT (busy polling: no wake-up latency, a core burnt on each side).

use crate::runner::{Sample, Stop, System};
use crate::udp;
use hdrhistogram::Histogram;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long a round trip may take before it counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Sleep,
    BusyPoll,
}

impl Wait {
    pub fn name(self) -> &'static str {
        match self {
            Wait::Sleep => "kernel-rtt-blocking-recv",
            Wait::BusyPoll => "kernel-rtt-busy-poll",
        }
    }

    /// Receives one datagram, waiting this way; None if none came within [`LOST_AFTER`].
    fn recv(self, socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self {
            Wait::Sleep => match socket.recv(buf) {
                Ok(n) => Ok(Some(n)),
                Err(e) if is_timeout(&e) => Ok(None),
                Err(e) => Err(e),
            },
            Wait::BusyPoll => {
                let start = Instant::now();
                loop {
                    match recv_dontwait(socket, buf) {
                        Ok(n) => return Ok(Some(n)),
                        Err(e) if is_timeout(&e) => {
                            if start.elapsed() > LOST_AFTER {
                                return Ok(None);
                            }
                            std::hint::spin_loop();
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

/// One `recv` with MSG_DONTWAIT: a datagram, or WouldBlock at once.
pub fn recv_dontwait(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for `buf.len()` bytes.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The ping-pong as a [`System`] of the `limit` scenario.
pub struct PingPong {
    pub wait: Wait,
    pub packet_len: usize,
    pub duration: Duration,
    pub stop: Stop,
}

impl System for PingPong {
    fn name(&self) -> String {
        self.wait.name().to_string()
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let wait = self.wait;
        let echo = udp::bind_loopback()?;
        let echo_addr = echo.local_addr()?;
        let client = udp::bind_loopback()?;
        client.connect(echo_addr)?;
        echo.connect(client.local_addr()?)?;
        // A blocking wait gives up after LOST_AFTER; a busy one times itself.
        echo.set_read_timeout(Some(LOST_AFTER))?;
        client.set_read_timeout(Some(LOST_AFTER))?;
        let echo_thread = std::thread::Builder::new()
            .name("bench-echo".into())
            .spawn(move || -> io::Result<()> {
                let mut buf = vec![0u8; 2048];
                loop {
                    let Some(n) = wait.recv(&echo, &mut buf)? else {
                        continue;
                    };
                    if udp::is_stop(&buf[..n]) {
                        return Ok(());
                    }
                    echo.send(&buf[..n])?;
                }
            })?;
        // 1 ns to 10 s at 3 significant digits; longer round trips count as the top value.
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).map_err(io::Error::other)?;
        let packet = vec![0x5a; self.packet_len];
        let mut buf = vec![0u8; 2048];
        let mut lost = 0u64;
        let start = Instant::now();
        while start.elapsed() < self.duration && !self.stop.requested() {
            let sent_at = Instant::now();
            client.send(&packet)?;
            match wait.recv(&client, &mut buf)? {
                Some(_) => histogram.saturating_record(sent_at.elapsed().as_nanos() as u64),
                None => lost += 1,
            }
        }
        // The echo is connected to the client: only the client's socket can stop it.
        stop_echo(&client, echo_thread)?;
        let us = |ns: u64| ns as f64 / 1_000.0;
        Ok(Sample {
            value: us(histogram.value_at_quantile(0.5)),
            details: [
                ("p99_us", us(histogram.value_at_quantile(0.99))),
                ("p99.9_us", us(histogram.value_at_quantile(0.999))),
                ("max_us", us(histogram.max())),
                ("round_trips", histogram.len() as f64),
                ("lost", lost as f64),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            limited_by: None,
        })
    }
}

/// Sends [`udp::STOP`] from the client's own socket (the echo is connected to it) until the
/// echo thread is gone.
fn stop_echo(client: &UdpSocket, echo: std::thread::JoinHandle<io::Result<()>>) -> io::Result<()> {
    while !echo.is_finished() {
        client.send(&udp::STOP)?;
        std::thread::sleep(Duration::from_millis(2));
    }
    echo.join()
        .map_err(|_| io::Error::other("the echo thread panicked"))?
}
