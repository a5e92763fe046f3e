//! Bare one-hop UDP forwarders with no protocol at all: each receives datagrams on its socket
//! and sends them unchanged to the next address, with one kernel interface per kind. A chain of
//! them from a source to a [`Sink`] is the kernel's own limit that the engines are measured
//! against.

mod blocking;
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
        }
    }

    fn run(self, socket: UdpSocket, to: RawAddr, forwarded: &AtomicU64) -> io::Result<()> {
        match self {
            Kind::Blocking => blocking::run(&socket, to, forwarded),
            Kind::Mmsg => mmsg::run(&socket, to, forwarded),
            Kind::Uring => uring::run(&socket, to, forwarded),
            Kind::GroGso => gso::run(&socket, to, forwarded),
        }
    }
}

struct Forwarder {
    addr: SocketAddr,
    thread: JoinHandle<io::Result<()>>,
}

/// `hops` forwarders of one kind in a row, each on its own thread, ending in a sink.
pub struct Chain {
    forwarders: Vec<Forwarder>,
    sink: Sink,
}

impl Chain {
    pub fn start(kind: Kind, hops: usize) -> io::Result<Chain> {
        let sink = Sink::start()?;
        let mut next = sink.addr();
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
        Ok(Chain { forwarders, sink })
    }

    /// Where a source sends.
    pub fn entry(&self) -> SocketAddr {
        self.forwarders.first().map_or(self.sink.addr(), |f| f.addr)
    }

    /// Datagrams the sink has counted.
    pub fn delivered(&self) -> u64 {
        self.sink.received()
    }

    /// Each receiving socket in path order with the datagrams the kernel dropped there.
    pub fn drops(&self) -> Vec<(String, u64)> {
        let hops = self
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
        let mut result = Ok(());
        for f in self.forwarders {
            result = result.and(stop_thread(f.addr, f.thread));
        }
        result.and(self.sink.stop())
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
}
