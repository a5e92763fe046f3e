//! A chain of bare forwarders as a [`System`]: the kernel limit row of a throughput
//! comparison. A fresh chain for every measurement (it starts in microseconds).

use crate::forwarders::{Chain, Kind};
use crate::runner::{Sample, Stop, System};
use crate::threads;
use crate::traffic::{self, Rate};
use crate::udp;

/// The first forwarder's thread (`forwarders::start_forwarders` names them by hop).
const FIRST_FORWARDER: &str = "bench-fwd-1";
use std::io;
use std::time::Duration;

pub struct KernelChain {
    pub kind: Kind,
    pub hops: usize,
    pub packet: Vec<u8>,
    pub rate: Rate,
    pub duration: Duration,
    pub stop: Stop,
}

impl System for KernelChain {
    fn name(&self) -> String {
        self.kind.name().to_string()
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let chain = Chain::start(self.kind, self.hops)?;
        let source = udp::bind_loopback()?;
        let cpu_before = (
            threads::cpu_ns(FIRST_FORWARDER),
            threads::cpu_ns(traffic::SINK_THREAD),
        );
        let offered = traffic::offer(
            &source,
            chain.entry(),
            &self.packet,
            self.rate,
            self.duration,
            &self.stop,
        )?;
        traffic::settle(|| chain.delivered());
        let delivered = chain.delivered();
        let drops = chain.drops();
        let cpu = (
            threads::cpu_ns(FIRST_FORWARDER).saturating_sub(cpu_before.0),
            threads::cpu_ns(traffic::SINK_THREAD).saturating_sub(cpu_before.1),
        );
        chain.stop()?;
        let mut sample =
            traffic::throughput_sample(self.rate, &offered, delivered, &drops, self.packet.len());
        sample
            .details
            .extend(traffic::cpu_per_datagram(cpu, delivered));
        Ok(sample)
    }
}
