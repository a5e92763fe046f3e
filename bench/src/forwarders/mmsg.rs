//! `recvmmsg` a batch of up to 64 datagrams, `sendmmsg` them on.

use crate::udp::{self, Batch, RawAddr};
use std::io;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};

const BATCH: usize = 64;

pub fn run(socket: &UdpSocket, to: RawAddr, forwarded: &AtomicU64) -> io::Result<()> {
    let mut batch = Batch::new(BATCH, 2048, false);
    loop {
        let n = batch.recv(socket)?;
        let stop_at = (0..n).find(|&i| udp::is_stop(batch.datagram(i)));
        let sent = batch.send_received(socket, stop_at.unwrap_or(n), &to)?;
        forwarded.fetch_add(sent as u64, Ordering::Relaxed);
        if stop_at.is_some() {
            return Ok(());
        }
    }
}
