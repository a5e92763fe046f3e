//! Loopback UDP sockets and the batching system calls the kernel offers for them: `recvmmsg` and
//! `sendmmsg`, UDP_GRO receive and UDP_SEGMENT (GSO) send, and the per-socket drop counter.
//!
//! Every address here is 127.0.0.1: the benchmarks never send anywhere else.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

/// The largest UDP payload one GSO send or one GRO receive carries.
pub const SUPER_PACKET: usize = 65_535;
/// Most segments one GSO send may carry (the kernel's UDP_MAX_SEGMENTS on older kernels).
const MAX_SEGMENTS: usize = 64;

/// A datagram this short (no DNP packet is) tells a forwarder or sink to pass it on and stop.
pub const STOP: [u8; 1] = [0];

pub fn is_stop(datagram: &[u8]) -> bool {
    datagram.len() < 2
}

/// A new socket on 127.0.0.1 with a port the kernel picks.
pub fn bind_loopback() -> io::Result<UdpSocket> {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
}

/// How many segments of `segment` bytes fit in one GSO send.
pub fn segments_per_send(segment: usize) -> usize {
    (SUPER_PACKET - 100)
        .div_euclid(segment.max(1))
        .clamp(1, MAX_SEGMENTS)
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Turns on UDP_GRO: the kernel may hand over several datagrams of one flow as one buffer.
pub fn enable_gro(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a pointer to a c_int of the length given.
    check(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&raw const on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Asks for a receive buffer of `bytes` (the kernel doubles it for its bookkeeping and caps it
/// at net.core.rmem_max).
pub fn set_receive_buffer(socket: &UdpSocket, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket and a pointer to a c_int of the length given.
    check(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// The receive buffer the kernel granted a socket, bytes (twice what was asked, capped).
pub fn receive_buffer(socket: &UdpSocket) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket and a pointer to a c_int with its length.
    check(unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut value).cast(),
            &raw mut len,
        )
    })?;
    Ok(usize::try_from(value).unwrap_or(0))
}

/// A loopback IPv4 address in the form the system calls take.
#[derive(Clone, Copy)]
pub struct RawAddr(libc::sockaddr_in);

impl RawAddr {
    pub fn new(addr: SocketAddr) -> io::Result<RawAddr> {
        let SocketAddr::V4(v4) = addr else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the benchmarks use IPv4 loopback only",
            ));
        };
        Ok(RawAddr(sockaddr_in(v4)))
    }

    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&raw const self.0).cast()
    }

    pub fn len() -> libc::socklen_t {
        mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
    }
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Room for one UDP_GRO / UDP_SEGMENT control message (a u16), 8-aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct ControlBuf([u8; 32]);

fn cmsg_space_u16() -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as usize }
}

/// Sends `payload` as datagrams of `segment` bytes each (the last may be shorter) in one
/// `sendmsg` with UDP_SEGMENT: one system call, one trip down the stack.
pub fn send_segments(
    socket: &UdpSocket,
    payload: &[u8],
    segment: u16,
    to: &RawAddr,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut control = ControlBuf([0; 32]);
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = to.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = RawAddr::len();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg_space_u16() as _;
    // SAFETY: the control buffer has room for one u16 message (cmsg_space_u16).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
    }
    // SAFETY: msg is fully initialised above.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &raw const msg, 0) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Buffers and headers for `recvmmsg` (and for sending what was received with `sendmmsg`),
/// set up once: the pointers stay valid because the vectors never grow.
pub struct Batch {
    buffers: Vec<Vec<u8>>,
    iovecs: Vec<libc::iovec>,
    controls: Vec<ControlBuf>,
    headers: Vec<libc::mmsghdr>,
    gro: bool,
}

// SAFETY: the raw pointers inside point into the batch's own heap allocations.
unsafe impl Send for Batch {}

impl Batch {
    /// `count` buffers of `len` bytes; `gro` reads the UDP_GRO segment size of each message.
    pub fn new(count: usize, len: usize, gro: bool) -> Batch {
        let mut buffers: Vec<Vec<u8>> = (0..count).map(|_| vec![0u8; len]).collect();
        let iovecs: Vec<libc::iovec> = buffers
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let controls = vec![ControlBuf([0; 32]); count];
        // SAFETY: mmsghdr is plain data; zero is a valid empty header.
        let headers = vec![unsafe { mem::zeroed::<libc::mmsghdr>() }; count];
        let mut batch = Batch {
            buffers,
            iovecs,
            controls,
            headers,
            gro,
        };
        for i in 0..count {
            let iov = &raw mut batch.iovecs[i];
            let control = batch.controls[i].0.as_mut_ptr();
            let h = &mut batch.headers[i].msg_hdr;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            if gro {
                h.msg_control = control.cast();
            }
        }
        batch
    }

    /// Receives up to the batch's size in one `recvmmsg`, blocking for the first.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let control_len = if self.gro { cmsg_space_u16() } else { 0 };
        for ((h, iov), b) in self
            .headers
            .iter_mut()
            .zip(&mut self.iovecs)
            .zip(&self.buffers)
        {
            h.msg_len = 0;
            h.msg_hdr.msg_controllen = control_len as _;
            h.msg_hdr.msg_name = std::ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
            iov.iov_len = b.len();
        }
        // SAFETY: every header points at this batch's own buffers, sized as declared.
        let n = check(unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        })?;
        Ok(n as usize)
    }

    /// The `i`-th datagram of the last receive.
    pub fn datagram(&self, i: usize) -> &[u8] {
        &self.buffers[i][..self.headers[i].msg_len as usize]
    }

    /// The segment size UDP_GRO reported for message `i` (None: one plain datagram).
    pub fn segment_size(&self, i: usize) -> Option<u16> {
        if !self.gro {
            return None;
        }
        let h = &self.headers[i].msg_hdr;
        // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG macros walk it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(h);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                    let size =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                    return u16::try_from(size).ok();
                }
                cmsg = libc::CMSG_NXTHDR(h, cmsg);
            }
        }
        None
    }

    /// How many datagrams message `i` holds (several when GRO joined them).
    pub fn datagrams_in(&self, i: usize) -> u64 {
        let len = self.headers[i].msg_len as usize;
        match self.segment_size(i) {
            Some(seg) if seg > 0 => len.div_ceil(usize::from(seg)) as u64,
            _ => 1,
        }
    }

    /// Sends the first `n` received datagrams to `to` with `sendmmsg`, retrying the rest of a
    /// partial send. Returns how many went.
    pub fn send_received(
        &mut self,
        socket: &UdpSocket,
        n: usize,
        to: &RawAddr,
    ) -> io::Result<usize> {
        for i in 0..n {
            let len = self.headers[i].msg_len as usize;
            self.iovecs[i].iov_len = len;
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = to.as_ptr() as *mut libc::c_void;
            h.msg_namelen = RawAddr::len();
            h.msg_controllen = 0;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: headers[sent..n] point at this batch's buffers with their lengths set.
            let r = check(unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers[sent..].as_mut_ptr(),
                    (n - sent) as libc::c_uint,
                    0,
                )
            })?;
            sent += r as usize;
        }
        Ok(sent)
    }
}

/// The kernel's count of datagrams dropped at a loopback socket (its receive buffer was full),
/// from /proc/net/udp; None if the socket is not listed.
pub fn socket_drops(local: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    drops_in_table(&table, local)
}

fn drops_in_table(table: &str, local: SocketAddr) -> Option<u64> {
    let SocketAddr::V4(v4) = local else {
        return None;
    };
    // /proc/net/udp prints the address as the in-memory u32 in hex, then the port.
    let wanted = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&wanted.as_str()))
            .then(|| fields.last()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_read_from_the_socket_line() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            1: 0100007F:1F41 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 123 2 0000000000000000 17\n";
        let addr: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(drops_in_table(table, addr), Some(17));
        }
        let other: SocketAddr = "127.0.0.1:8002".parse().unwrap();
        assert_eq!(drops_in_table(table, other), None);
    }

    #[test]
    fn a_gso_send_fits_in_one_udp_payload() {
        let n = segments_per_send(1024);
        assert!(n * 1024 <= SUPER_PACKET - 28);
        assert_eq!(segments_per_send(100_000), 1);
    }
}
