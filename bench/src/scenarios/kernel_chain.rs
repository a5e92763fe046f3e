//! A chain of bare forwarders as a [`System`]: the kernel limit row of a throughput
//! comparison. A fresh chain for every measurement (it starts in microseconds).

use crate::forwarders::{Chain, Kind};
use crate::runner::{Sample, Stop, System};
use crate::traffic::{self, Rate};
use crate::udp;
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
        chain.stop()?;
        Ok(traffic::throughput_sample(
            self.rate,
            &offered,
            delivered,
            &drops,
            self.packet.len(),
        ))
    }
}
