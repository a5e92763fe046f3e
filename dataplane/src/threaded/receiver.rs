//! The DNP receiver thread (seed §2): allocate a buffer, block in `recvfrom`, check, dispatch,
//! repeat. One heap buffer per datagram: the accepted packet travels on in it, by reference.
//! (`recvmsg` in fact, for the kernel's running count of receive-queue drops.)

use super::counters::DnpCounters;
use super::dnp::Dnp;
use super::packet::PacketBuf;
use super::sockopt;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) fn run(dnp: &Dnp, stopping: &AtomicBool) {
    // One byte more than the MTU, so that an oversized datagram shows as too long rather than
    // being silently cut to a plausible size.
    let capacity = dnp.mtu() + 1;
    let mut buf = PacketBuf::alloc(capacity);
    loop {
        // The buffer is ours alone until it is handed on, after which a new one is allocated.
        let Some(space) = Arc::get_mut(&mut buf) else {
            buf = PacketBuf::alloc(capacity);
            continue;
        };
        match sockopt::recv(dnp.socket(), space) {
            Ok(d) => {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                if let Some(n) = d.overflows {
                    dnp.counters()
                        .rx_queue_overflows
                        .store(u64::from(n), Ordering::Relaxed);
                }
                let full = std::mem::replace(&mut buf, PacketBuf::alloc(capacity));
                dnp.accept(d.source, PacketBuf::filled(full, d.len));
            }
            // The read timeout: a chance to notice shutdown if the wake-up datagram was lost.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                DnpCounters::bump(&dnp.counters().rx_socket_errors);
            }
        }
    }
}
