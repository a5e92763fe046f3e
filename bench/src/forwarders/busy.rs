//! One `recvfrom(MSG_DONTWAIT)` spun on until a datagram is there, and one `sendto` per
//! datagram: the blocking forwarder's system calls without its wake-up. Between empty polls the
//! thread yields, so that on a machine with fewer cores than spinners the others still run.

use crate::udp::{self, RawAddr};
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

pub fn run(socket: &UdpSocket, to: RawAddr, forwarded: &AtomicU64) -> io::Result<()> {
    let mut buf = [0u8; 2048];
    loop {
        let len = match crate::pingpong::recv_dontwait(socket, &mut buf) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::yield_now();
                continue;
            }
            Err(e) => return Err(e),
        };
        if udp::is_stop(&buf[..len]) {
            return Ok(());
        }
        // SAFETY: the buffer holds `len` received bytes; `to` is a valid sockaddr_in.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                buf.as_ptr().cast(),
                len,
                0,
                to.as_ptr(),
                RawAddr::len(),
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        forwarded.fetch_add(1, Ordering::Relaxed);
    }
}
