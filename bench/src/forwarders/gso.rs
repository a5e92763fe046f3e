//! UDP_GRO receive: the kernel hands over a run of same-sized datagrams of one flow as one
//! buffer (on loopback, a GSO send arrives whole); UDP_SEGMENT send of each run, in one call.

use crate::udp::{self, Batch, RawAddr};
use std::io;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};

const BATCH: usize = 8;

pub fn run(socket: &UdpSocket, to: RawAddr, forwarded: &AtomicU64) -> io::Result<()> {
    udp::enable_gro(socket)?;
    let mut batch = Batch::new(BATCH, udp::SUPER_PACKET, true);
    loop {
        let n = batch.recv(socket)?;
        for i in 0..n {
            let run = batch.datagram(i);
            if udp::is_stop(run) {
                return Ok(());
            }
            let segment = batch.segment_size(i).unwrap_or(run.len() as u16);
            udp::send_segments(socket, run, segment, &to)?;
            forwarded.fetch_add(batch.datagrams_in(i), Ordering::Relaxed);
        }
    }
}
