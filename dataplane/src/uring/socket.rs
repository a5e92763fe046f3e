//! The node's UDP socket as the io_uring engine sets it up (the threaded engine's buffer sizes
//! and drop count, plus `UDP_GRO`), and the socket-level pieces of a message: the source
//! address, the control messages of a receive, the destination and `UDP_SEGMENT` of a send.

use crate::threaded::sockopt;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};

/// `UDP_SEGMENT` and `UDP_GRO` (linux/udp.h), which the libc crate names on some targets only.
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// What the socket was granted.
pub(crate) struct SocketSetup {
    pub rcvbuf: usize,
    pub sndbuf: usize,
    pub gro: bool,
}

/// The threaded engine's options (buffers sized, kernel drops counted), non-blocking, and
/// `UDP_GRO` when asked for and the kernel has it.
pub(crate) fn configure(
    socket: &UdpSocket,
    buffer_bytes: usize,
    gro: bool,
) -> io::Result<SocketSetup> {
    let (rcvbuf, sndbuf) = sockopt::size_buffers(socket, buffer_bytes)?;
    sockopt::count_overflows(socket)?;
    socket.set_nonblocking(true)?;
    let gro = gro && sockopt::set_int_at(socket, libc::SOL_UDP, UDP_GRO, 1).is_ok();
    Ok(SocketSetup {
        rcvbuf,
        sndbuf,
        gro,
    })
}

/// Room for the control messages of one receive: the GRO segment size and the drop count.
pub(crate) const RECV_CONTROL_LEN: usize = 64;

/// What a receive's control messages say.
#[derive(Default)]
pub(crate) struct RecvControl {
    /// The size of each coalesced datagram (the last may be shorter); `None`: one datagram.
    pub segment: Option<usize>,
    /// The socket's running count of datagrams the kernel dropped (`SO_RXQ_OVFL`).
    pub overflows: Option<u32>,
}

/// Walks the control messages the kernel wrote (a `msg_control` area, bounded by its length).
pub(crate) fn parse_control(control: &[u8]) -> RecvControl {
    let mut out = RecvControl::default();
    let header = size_of::<libc::cmsghdr>();
    let mut at = 0usize;
    while at + header <= control.len() {
        // SAFETY: `header` bytes are in bounds; read unaligned, as the buffer is bytes.
        let cmsg: libc::cmsghdr =
            unsafe { std::ptr::read_unaligned(control.as_ptr().add(at).cast()) };
        let len = cmsg.cmsg_len as usize;
        if len < header || at + len > control.len() {
            break;
        }
        // SAFETY: CMSG_LEN(0) is the aligned header size, a constant computation.
        let data_at = at + unsafe { libc::CMSG_LEN(0) } as usize;
        let int = control
            .get(data_at..data_at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        match (cmsg.cmsg_level, cmsg.cmsg_type) {
            (libc::SOL_UDP, UDP_GRO) => {
                out.segment = int.map(|v| v as usize).filter(|&v| v > 0);
            }
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => out.overflows = int,
            _ => {}
        }
        // The next header starts at the length rounded up to the platform's alignment.
        at += (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1);
    }
    out
}

/// The source address of a receive (the raw `sockaddr` bytes the kernel wrote).
pub(crate) fn source(name: &[u8]) -> Option<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let n = name.len().min(size_of::<libc::sockaddr_storage>());
    // SAFETY: copies at most the storage's size into it.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), (&raw mut storage).cast::<u8>(), n);
    }
    sockopt::to_socket_addr(&storage)
}

/// A destination as a `sockaddr` for `sendmsg`, and its length.
pub(crate) fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: a sockaddr_in fits in a sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: a sockaddr_in6 fits in a sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Room for one `UDP_SEGMENT` control message, 8-byte aligned.
pub(crate) type SegmentControl = [u64; 4];

/// Writes a `UDP_SEGMENT` control message asking the kernel to cut the payload into datagrams
/// of `segment` bytes; returns its length for `msg_controllen`.
pub(crate) fn write_segment(control: &mut SegmentControl, segment: u16) -> usize {
    // SAFETY: CMSG_SPACE/CMSG_LEN are constant computations; the header and its u16 of data fit
    // in the 32-byte area, which is aligned for a cmsghdr.
    unsafe {
        let space = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
        let base = control.as_mut_ptr().cast::<u8>();
        std::ptr::write_bytes(base, 0, space);
        let cmsg = base.cast::<libc::cmsghdr>();
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        space
    }
}

/// The one line `start` fails with when the kernel refuses io_uring: the cause and the fix.
pub(crate) fn unavailable(what: &str, e: &io::Error) -> io::Error {
    let cause = match e.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no io_uring (too old, or built without it)",
        Some(libc::EPERM) => {
            "io_uring is not permitted here (sysctl kernel.io_uring_disabled, or a seccomp profile)"
        }
        Some(libc::EINVAL) => {
            "the kernel lacks an io_uring feature this engine needs (Linux 6.0 or later)"
        }
        _ => "io_uring failed",
    };
    io::Error::new(
        e.kind(),
        format!("io_uring engine unavailable: {cause} ({what}: {e}); run with --engine threaded"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_io_uring_names_the_cause_and_the_fix() {
        for (errno, cause) in [
            (libc::EPERM, "kernel.io_uring_disabled"),
            (libc::ENOSYS, "no io_uring"),
        ] {
            let e = unavailable("creating a ring", &io::Error::from_raw_os_error(errno));
            let line = e.to_string();
            assert!(line.contains(cause), "{line}");
            assert!(line.ends_with("run with --engine threaded"), "{line}");
            assert!(!line.contains('\n'), "one line: {line}");
        }
    }

    /// A control area as the kernel writes it: a GRO segment size, then the drop count.
    #[test]
    fn receive_control_messages_are_read() {
        let mut area = [0u64; 8];
        let base = area.as_mut_ptr().cast::<u8>();
        // SAFETY: two headers with an int each fit in 64 bytes, aligned for cmsghdr.
        let len = unsafe {
            let space = libc::CMSG_SPACE(4) as usize;
            for (i, (level, kind, value)) in [
                (libc::SOL_UDP, UDP_GRO, 1200u32),
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 7u32),
            ]
            .into_iter()
            .enumerate()
            {
                let c = base.add(i * space).cast::<libc::cmsghdr>();
                (*c).cmsg_level = level;
                (*c).cmsg_type = kind;
                (*c).cmsg_len = libc::CMSG_LEN(4) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u32>(), value);
            }
            2 * space
        };
        // SAFETY: `len` bytes of the area were written above.
        let bytes = unsafe { std::slice::from_raw_parts(base, len) };
        let c = parse_control(bytes);
        assert_eq!((c.segment, c.overflows), (Some(1200), Some(7)));
        // A cut-off area yields what is whole and never reads beyond it: here the second
        // message's data is cut after two of its four bytes.
        let cut = len / 2 + size_of::<libc::cmsghdr>() + 2;
        let c = parse_control(&bytes[..cut]);
        assert_eq!((c.segment, c.overflows), (Some(1200), None));
        assert!(parse_control(&[]).segment.is_none());
    }
}
