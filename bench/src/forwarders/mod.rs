//! Bare one-hop UDP forwarders with no protocol at all: each receives datagrams on its socket
//! and sends them unchanged to the next address, with one kernel interface per kind. A chain of
//! them from a source to a [`Sink`] is the kernel's own limit that the engines are measured
//! against.

mod blocking;
mod busy;
mod gso;
mod mmsg;
mod uring;

use crate::traffic::{Sink, stop_thread};
use crate::udp::{self, RawAddr};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;

/// How a forwarder talks to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One blocking `recvfrom` and one `sendto` per datagram (the threaded engine's calls).
    Blocking,
    /// `recvmmsg` / `sendmmsg` batches of up to 64 datagrams.
    Mmsg,
    /// io_uring: a multishot receive into a provided buffer ring, one send per datagram.
    Uring,
    /// UDP_GRO receive (the kernel hands over runs of datagrams as one buffer) and UDP_SEGMENT
    /// (GSO) send of each run.
    GroGso,
    /// The blocking forwarder's calls, spinning on `recvfrom(MSG_DONTWAIT)` instead of
    /// sleeping in it (the `latency` scenario's busy-poll rows; not one of the `limit` rows).
    BusyPoll,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Blocking, Kind::Mmsg, Kind::Uring, Kind::GroGso];

    /// The name of the row in results.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Blocking => "kernel-recvfrom-sendto",
            Kind::Mmsg => "kernel-recvmmsg-sendmmsg",
            Kind::Uring => "kernel-io_uring-multishot",
            Kind::GroGso => "kernel-gro-gso",
            Kind::BusyPoll => "kernel-recvfrom-sendto-busy-poll",
        }
    }

    fn run(self, socket: UdpSocket, to: RawAddr, forwarded: &AtomicU64) -> io::Result<()> {
        match self {
            Kind::Blocking => blocking::run(&socket, to, forwarded),
            Kind::Mmsg => mmsg::run(&socket, to, forwarded),
            Kind::Uring => uring::run(&socket, to, forwarded),
            Kind::GroGso => gso::run(&socket, to, forwarded),
            Kind::BusyPoll => busy::run(&socket, to, forwarded),
        }
    }
}

struct Forwarder {
    addr: SocketAddr,
    thread: JoinHandle<io::Result<()>>,
}

/// `hops` forwarders of one kind in a row, each on its own thread, ending in a sink.
pub struct Chain {
    line: Line,
    sink: Sink,
}

/// `hops` forwarders of one kind in a row ending at a socket of the caller's (the `latency`
/// scenario's measuring end).
pub struct Line {
    forwarders: Vec<Forwarder>,
    end: SocketAddr,
}

impl Line {
    pub fn start(kind: Kind, hops: usize, end: SocketAddr) -> io::Result<Line> {
        start_forwarders(kind, hops, end).map(|forwarders| Line { forwarders, end })
    }

    /// Where a source sends.
    pub fn entry(&self) -> SocketAddr {
        self.forwarders.first().map_or(self.end, |f| f.addr)
    }

    /// Stops every thread in path order; the first error any of them hit.
    pub fn stop(self) -> io::Result<()> {
        let mut result = Ok(());
        for f in self.forwarders {
            result = result.and(stop_thread(f.addr, f.thread));
        }
        result
    }
}

/// Starts `hops` forwarders, the last sending to `end`; returns them in path order.
fn start_forwarders(kind: Kind, hops: usize, end: SocketAddr) -> io::Result<Vec<Forwarder>> {
    let mut next = end;
    let mut forwarders = Vec::with_capacity(hops);
    for hop in (1..=hops).rev() {
        let socket = udp::bind_loopback()?;
        let addr = socket.local_addr()?;
        let to = RawAddr::new(next)?;
        let forwarded = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name(format!("bench-fwd-{hop}"))
            .spawn(move || kind.run(socket, to, &forwarded))?;
        forwarders.push(Forwarder { addr, thread });
        next = addr;
    }
    forwarders.reverse();
    Ok(forwarders)
}

impl Chain {
    pub fn start(kind: Kind, hops: usize) -> io::Result<Chain> {
        let sink = Sink::start()?;
        let line = Line::start(kind, hops, sink.addr())?;
        Ok(Chain { line, sink })
    }

    /// Where a source sends.
    pub fn entry(&self) -> SocketAddr {
        self.line.entry()
    }

    /// Datagrams the sink has counted.
    pub fn delivered(&self) -> u64 {
        self.sink.received()
    }

    /// Each receiving socket in path order with the datagrams the kernel dropped there.
    pub fn drops(&self) -> Vec<(String, u64)> {
        let hops = self
            .line
            .forwarders
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("forwarder {}", i + 1), f.addr));
        hops.chain([("sink".to_string(), self.sink.addr())])
            .map(|(name, addr)| (name, udp::socket_drops(addr).unwrap_or(0)))
            .collect()
    }

    /// Stops every thread in path order; the first error any of them hit.
    pub fn stop(self) -> io::Result<()> {
        self.line.stop().and(self.sink.stop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Polls until `done` holds, at most `limit` (a bound on a wait, never a timing assertion).
    fn wait_until(limit: Duration, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// 30 datagrams as one GSO send and 10 one by one: fewer than a default receive buffer
    /// holds, so none may be dropped even if a thread is descheduled.
    #[test]
    fn every_kind_forwards_every_datagram_through_two_hops() {
        let packet = vec![0x42u8; 1024];
        for kind in Kind::ALL {
            let chain = Chain::start(kind, 2).expect("start a chain");
            let source = udp::bind_loopback().unwrap();
            let entry = RawAddr::new(chain.entry()).unwrap();
            udp::send_segments(&source, &packet.repeat(30), 1024, &entry).unwrap();
            for _ in 0..10 {
                source.send_to(&packet, chain.entry()).unwrap();
            }
            wait_until(Duration::from_secs(30), || chain.delivered() >= 40);
            assert_eq!(chain.delivered(), 40, "{}", kind.name());
            assert!(chain.drops().iter().all(|(_, d)| *d == 0));
            chain.stop().expect("stop the chain");
        }
    }

    /// The busy-polling forwarder, in a line ending at the test's own socket.
    #[test]
    fn a_busy_polling_line_forwards_to_its_end() {
        let end = udp::bind_loopback().unwrap();
        end.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let line = Line::start(Kind::BusyPoll, 2, end.local_addr().unwrap()).unwrap();
        let source = udp::bind_loopback().unwrap();
        let mut buf = [0u8; 64];
        for i in 0..10u8 {
            source.send_to(&[i; 32], line.entry()).unwrap();
            let n = end.recv(&mut buf).expect("the datagram comes through");
            assert_eq!(&buf[..n], &[i; 32]);
        }
        line.stop().expect("stop the line");
    }
}
