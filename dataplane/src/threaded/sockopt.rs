//! What std does not offer on a UDP socket: sizing its kernel buffers (`SO_RCVBUF`,
//! `SO_SNDBUF`) and counting the datagrams the kernel dropped because the receive queue was full
//! (`SO_RXQ_OVFL`: every `recvmsg` carries the socket's running drop count). Linux only; the
//! count stays unknown elsewhere.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Asks for `bytes` of receive and of send buffer (the kernel caps the request at
/// `net.core.rmem_max` / `wmem_max` and doubles it for its bookkeeping) and returns what it
/// granted: (receive, send).
pub(crate) fn size_buffers(socket: &UdpSocket, bytes: usize) -> io::Result<(usize, usize)> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int(socket, libc::SO_RCVBUF, want)?;
    set_int(socket, libc::SO_SNDBUF, want)?;
    Ok((
        get_int(socket, libc::SO_RCVBUF)?,
        get_int(socket, libc::SO_SNDBUF)?,
    ))
}

/// Makes every received datagram carry the socket's count of kernel drops.
pub(crate) fn count_overflows(socket: &UdpSocket) -> io::Result<()> {
    set_int(socket, libc::SO_RXQ_OVFL, 1)
}

fn set_int(socket: &UdpSocket, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    set_int_at(socket, libc::SOL_SOCKET, name, value)
}

/// Sets an integer option at any level (the io_uring engine's `SOL_UDP` ones: `UDP_GRO`).
pub(crate) fn set_int_at(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the value is a c_int that lives across the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_int(socket: &UdpSocket, name: libc::c_int) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(usize::try_from(value).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram: its length, its source, and the socket's running count of kernel drops when
/// the datagram was queued, if the kernel attached it (with `count_overflows` on, it does on
/// every datagram queued after the first drop).
pub(crate) struct Datagram {
    pub len: usize,
    pub source: SocketAddr,
    pub overflows: Option<u32>,
}

/// `recvmsg` into `buf`, blocking as the socket is set to (its read timeout included).
pub(crate) fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    // SAFETY: all-zero is a valid sockaddr_storage, iovec and msghdr.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one control message carrying a u32, 8-byte aligned.
    let mut control = [0u64; 8];
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the lengths it states, for the call's duration.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut overflows = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                overflows = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    let source = to_socket_addr(&addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown address family"))?;
    Ok(Datagram {
        len: n as usize,
        source,
        overflows,
    })
}

pub(crate) fn to_socket_addr(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buffers_grow_and_overflows_are_counted() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The smallest receive buffer the kernel grants, so that a burst overflows it.
        let (small, _) = size_buffers(&rx, 1).unwrap();
        count_overflows(&rx).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to = rx.local_addr().unwrap();
        let burst = 64 + small / 512;
        for _ in 0..burst {
            tx.send_to(&[7u8; 1000], to).unwrap();
        }
        // Drain what was queued, then one datagram queued after the drops carries their count.
        let mut buf = [0u8; 2000];
        let first = recv(&rx, &mut buf).unwrap();
        assert_eq!(first.len, 1000);
        assert_eq!(first.source, tx.local_addr().unwrap());
        rx.set_nonblocking(true).unwrap();
        let mut queued = 1;
        while recv(&rx, &mut buf).is_ok() {
            queued += 1;
        }
        rx.set_nonblocking(false).unwrap();
        tx.send_to(&[7u8; 1000], to).unwrap();
        let after = recv(&rx, &mut buf).unwrap();
        let dropped = after.overflows.expect("a drop count after an overflow");
        assert_eq!(
            u64::from(dropped),
            burst as u64 - queued,
            "{burst} into {small} bytes"
        );
        // A larger buffer is granted up to the system's limit.
        let (large, _) = size_buffers(&rx, 1 << 20).unwrap();
        assert!(large > small, "{large} <= {small}");
    }
}
