//! Steering a node's datagrams to its per-core workers (issue 10): one UDP socket per worker,
//! all on the node's address (`SO_REUSEPORT`), and a classic BPF program on the socket group
//! that the kernel runs on every datagram to pick the socket: the worker
//! [`control::wire::steer::worker_of`] names. Every packet of one multicast group (all its trees:
//! DATA, RETRANSMIT and SPM down, NACK, MAB and NCF up) thus reaches one worker; DRP, GMP, RAP
//! (which carry no tree state) are spread by their DNP source, and any worker hands those for
//! this node to the control thread.
//!
//! The sockets are returned in bind order, which is the index the kernel's program returns: the
//! vector's index is the worker. They live and die together: when a socket of the group closes
//! the kernel moves the last one into its place and the indices shift.
//!
//! The first socket is bound without `SO_REUSEPORT`, so that a port-0 bind gets a port nobody
//! holds (the kernel's port-0 search skips ports held by other `SO_REUSEPORT` sockets of the same
//! user only when this socket does not ask to share); `SO_REUSEPORT` is set on it after its bind
//! (Linux forms the group when the second socket binds beside it), then the others bind to its
//! port. So a socket the caller bound itself, any way it likes, can be given workers
//! ([`add_workers`]); only a socket some other process shares the port with cannot.
//!
//! Where the kernel steers a batch rather than a datagram, it steers it by its first datagram:
//! a segmented (GSO) send that stays whole to the receiver (loopback keeps it whole), and a
//! batch the receiving NIC's GRO coalesced from one source port. A batch mixing groups of
//! different workers is therefore possible, and a worker must handle (or hand over) a datagram
//! of a group it does not own: `worker_of` on each datagram says whose it is.

use crate::threaded::sockopt;
use control::addr::GROUP_BASE;
use control::wire::Flag;
use control::wire::steer::{CONTROL_WORKER, FLAG_AT, SOURCE_AT, group_at};
use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h, Linux 4.5), which the libc crate names on
/// some targets only.
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

// The kernel ends a program whose load runs past the datagram with 0: that answer must be the
// control worker's, as `worker_of` gives a datagram too short for its fields to it.
const _: () = assert!(CONTROL_WORKER == 0);

/// `workers` UDP sockets on `addr` (port 0: the first bind picks the port), steered by group
/// when there are several; index `i` is worker `i`. Errors name the cause in one line.
#[cfg(test)]
pub(crate) fn bind_workers(addr: SocketAddr, workers: u16) -> io::Result<Vec<UdpSocket>> {
    let first = UdpSocket::bind(addr).map_err(|e| failed(workers, addr, "binding worker 0", &e))?;
    add_workers(first, workers, true)
}

/// `first`, bound by the caller (with or without `SO_REUSEPORT`), and `workers - 1` sockets
/// bound beside it on its address: index `i` is worker `i`. With `steer`, the steering program
/// delivers each datagram to its worker; without it the kernel spreads datagrams by its hash
/// of addresses and ports (the hand-off mode's sockets). With one worker, `first` alone,
/// untouched. Errors name the cause in one line.
pub(crate) fn add_workers(
    first: UdpSocket,
    workers: u16,
    steer: bool,
) -> io::Result<Vec<UdpSocket>> {
    let addr = first.local_addr()?;
    if workers == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot start 0 workers on {addr}: a node needs at least one"),
        ));
    }
    let mut sockets = Vec::with_capacity(usize::from(workers));
    sockets.push(first);
    if workers == 1 {
        return Ok(sockets);
    }
    sockopt::set_int_at(&sockets[0], libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)
        .map_err(|e| failed(workers, addr, "sharing worker 0's port (SO_REUSEPORT)", &e))?;
    for worker in 1..workers {
        let socket = bind_reuseport(addr)
            .map_err(|e| failed(workers, addr, &format!("binding worker {worker}"), &e))?;
        sockets.push(socket);
    }
    if !steer {
        return Ok(sockets);
    }
    // Attached once every socket is in the group: an index beyond the group's size would make
    // the kernel fall back to its hash. Until here the kernel hashes by source port.
    attach(&sockets[0], &steering_program(workers)).map_err(|e| {
        failed(
            workers,
            addr,
            "the kernel refused the steering program (SO_ATTACH_REUSEPORT_CBPF, Linux 4.5 or later)",
            &e,
        )
    })?;
    Ok(sockets)
}

/// The one line every failure here is.
fn failed(workers: u16, addr: SocketAddr, what: &str, e: &io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("cannot start {workers} workers on {addr}: {what}: {e}"),
    )
}

/// A UDP socket with `SO_REUSEPORT` set before it binds to `addr` (std binds in one call).
fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: a plain socket(2) call; the descriptor is owned right below.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let socket = UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    sockopt::set_int_at(&socket, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    let (storage, len) = super::socket::sockaddr(addr);
    // SAFETY: `storage` holds a sockaddr of `len` bytes for the socket's family.
    let rc = unsafe { libc::bind(socket.as_raw_fd(), (&raw const storage).cast(), len) };
    if rc == 0 {
        Ok(socket)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Attaches `program` to the reuseport group of `socket`.
fn attach(socket: &UdpSocket, program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::ErrorKind::InvalidInput)?,
        // The kernel copies the program in; it only reads through this pointer.
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` and the program it points to live across the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&raw const prog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// The classic BPF instructions the program uses (linux/filter.h), as 16-bit opcodes.
const LOAD_HALF: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
const JUMP_IF_EQUAL: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JUMP_IF_AT_LEAST: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JUMP: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const SUBTRACT: u16 = (libc::BPF_ALU | libc::BPF_SUB | libc::BPF_K) as u16;
const MODULO: u16 = (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16;
const RETURN_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;

fn instruction(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A forward jump from the instruction at `from` to the one at `to`, as the offset BPF counts
/// from the next instruction.
fn offset(from: usize, to: usize) -> u8 {
    u8::try_from(to - from - 1).expect("the program is a few dozen instructions")
}

/// `worker_of` for `workers` (at least 2) as a classic BPF program, which the kernel runs on a
/// datagram's UDP payload (offset 0 is the DNP header) and whose result is the index of the
/// socket to deliver to. Classic BPF, not eBPF: it needs no privilege, no loader and no map, and
/// a few loads, compares and a modulo are all the rule takes. It is derived from the same
/// offsets as `worker_of` (`FLAG_AT`, `group_at`):
///
/// ```text
///        A = u16 at FLAG_AT                  (a datagram too short: the kernel returns 0)
///        for each RMTP flag: if A == flag goto load_<its group offset>
///        goto by_source                       (DRP, GMP, RAP, unknown flag)
/// load_2:  A = u16 at 2;  goto reduce         (DATA, RETRANSMIT, SPM: the DNP destination)
/// load_10: A = u16 at 10; goto reduce         (NACK, MAB, NCF: body bytes 0–1; too short: 0)
/// reduce:  if A < GROUP_BASE goto by_source   (not a group: no tree)
///          return (A - GROUP_BASE) % workers
/// by_source: return (u16 at SOURCE_AT) % workers
/// ```
///
/// Every result is below the socket count, never the kernel's hash fallback.
fn steering_program(workers: u16) -> Vec<libc::sock_filter> {
    let steered: Vec<(Flag, usize)> = Flag::ALL
        .into_iter()
        .filter_map(|flag| Some((flag, group_at(flag)?)))
        .collect();
    let mut loads: Vec<usize> = steered.iter().map(|&(_, at)| at).collect();
    loads.sort_unstable();
    loads.dedup();
    // Layout: the flag load, one compare per steered flag, the jump to `by_source`, two
    // instructions per group offset, then `reduce` (4) and `by_source` (3).
    let first_load = 1 + steered.len() + 1;
    let load_at = |at: usize| first_load + 2 * loads.iter().position(|&l| l == at).unwrap_or(0);
    let reduce = first_load + 2 * loads.len();
    let by_source = reduce + 4;

    let mut program = vec![instruction(LOAD_HALF, 0, 0, FLAG_AT as u32)];
    for &(flag, at) in &steered {
        let here = program.len();
        program.push(instruction(
            JUMP_IF_EQUAL,
            offset(here, load_at(at)),
            0,
            u32::from(flag as u16),
        ));
    }
    let here = program.len();
    program.push(instruction(JUMP, 0, 0, u32::from(offset(here, by_source))));
    for &at in &loads {
        program.push(instruction(LOAD_HALF, 0, 0, at as u32));
        let here = program.len();
        program.push(instruction(JUMP, 0, 0, u32::from(offset(here, reduce))));
    }
    debug_assert_eq!(program.len(), reduce);
    program.extend([
        instruction(JUMP_IF_AT_LEAST, 0, 3, u32::from(GROUP_BASE)),
        instruction(SUBTRACT, 0, 0, u32::from(GROUP_BASE)),
        instruction(MODULO, 0, 0, u32::from(workers)),
        instruction(RETURN_A, 0, 0, 0),
    ]);
    debug_assert_eq!(program.len(), by_source);
    program.extend([
        instruction(LOAD_HALF, 0, 0, SOURCE_AT as u32),
        instruction(MODULO, 0, 0, u32::from(workers)),
        instruction(RETURN_A, 0, 0, 0),
    ]);
    program
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::addr::{GroupAddr, NodeAddr};
    use control::wire::dnp::frame;
    use control::wire::rmtp::{self, Mab, SeqRange, SpmFields, TOTAL_UNKNOWN};
    use control::wire::steer::{worker_of, worker_of_group};
    use control::wire::{drp, gmp::GmpMessage, rap};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    /// `UDP_SEGMENT` (linux/udp.h), as the engine's socket module sets it per send.
    const UDP_SEGMENT: libc::c_int = 103;

    fn g(v: u16) -> GroupAddr {
        GroupAddr::new(v).unwrap()
    }

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    /// Runs a classic BPF program as the kernel does on `packet`, for the instructions the
    /// steering program uses: a load past the end ends the program with 0; a jump or a fall
    /// past the end, or an instruction it does not know, fails the test.
    fn run(program: &[libc::sock_filter], packet: &[u8]) -> u32 {
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let ins = program[pc];
            pc += 1;
            let k = ins.k;
            match ins.code {
                LOAD_HALF => match packet.get(k as usize..k as usize + 2) {
                    Some(b) => a = u32::from(u16::from_be_bytes([b[0], b[1]])),
                    None => return 0,
                },
                JUMP_IF_EQUAL => pc += usize::from(if a == k { ins.jt } else { ins.jf }),
                JUMP_IF_AT_LEAST => pc += usize::from(if a >= k { ins.jt } else { ins.jf }),
                JUMP => pc += k as usize,
                SUBTRACT => a = a.wrapping_sub(k),
                MODULO => a %= k,
                RETURN_A => return a,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    /// One packet of every flag, by the real builders: every RMTP flag of `group` (sender node
    /// 1, emitted by node 2), then DRP, GMP (which names a group, not steered by it) and RAP.
    fn every_flag(group: GroupAddr) -> Vec<Vec<u8>> {
        let ranges = [SeqRange { first: 5, len: 2 }];
        let built = |build: &dyn Fn(&mut [u8]) -> usize| {
            let mut p = vec![0u8; 128];
            let len = build(&mut p);
            p.truncate(len);
            p
        };
        let spm = SpmFields {
            spm_sequence: 7,
            trailing: 1,
            leading: 9,
            segment_size: 994,
            total: TOTAL_UNKNOWN,
            finished: false,
            hash: [0; 32],
        };
        let mab = Mab {
            group: group.get(),
            mab: 1 << 16,
            received: 1 << 15,
        };
        vec![
            rmtp::data_packet(group, n(1), Flag::RmtpData, 2, 2 * 994, b"payload"),
            rmtp::data_packet(group, n(1), Flag::RmtpRetransmit, 2, 2 * 994, b"payload"),
            built(&|p| rmtp::build_nack(p, n(1), n(2), group, &ranges).unwrap()),
            built(&|p| rmtp::build_mab(p, n(1), n(2), &mab).unwrap()),
            built(&|p| rmtp::build_ncf(p, n(3), n(2), group, n(1), &ranges).unwrap()),
            built(&|p| rmtp::build_spm(p, group, n(1), &spm).unwrap()),
            frame(n(2).into(), n(1).into(), Flag::Drp, &drp::hello()),
            frame(n(2).into(), n(1).into(), Flag::Drp, &drp::lsp_ack(n(1), 3)),
            GmpMessage::join(group, n(1)).packet(n(1), n(2)),
            rap::packet(n(1), n(2), &rap::request(0x10, 0x20)),
        ]
    }

    /// Datagrams that name no group, or are cut before it.
    fn garbage() -> Vec<Vec<u8>> {
        let nack = every_flag(g(0xF001)).remove(2);
        vec![
            vec![],
            vec![0xF0],
            vec![0xFF; 7],
            nack[..11].to_vec(),
            vec![0x00, 0x00, 0xF0, 0x01, 0x00, 0x00, 0x00, 0x16, 0x00, 0x0C],
            b"not a DNP packet at all".to_vec(),
        ]
    }

    #[test]
    fn the_program_computes_worker_of_on_every_flag() {
        for workers in 2..=9 {
            let program = steering_program(workers);
            for group in (0xF000..0xF010).chain([0xFFFE, 0xFFFF]) {
                for packet in every_flag(g(group)) {
                    let expected = worker_of(&packet, workers);
                    assert_eq!(run(&program, &packet), u32::from(expected));
                    // Every prefix, as a datagram cut short.
                    for len in 0..packet.len() {
                        let cut = &packet[..len];
                        assert_eq!(run(&program, cut), u32::from(worker_of(cut, workers)));
                    }
                }
            }
            for packet in garbage() {
                assert_eq!(
                    run(&program, &packet),
                    u32::from(worker_of(&packet, workers))
                );
            }
        }
    }

    proptest! {
        /// The program and `worker_of` agree on any bytes. Most inputs get an RMTP flag and a
        /// group-range value in both group fields, so that every path is taken.
        #[test]
        fn the_program_agrees_with_worker_of_on_any_bytes(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..32),
            flag in 0x000Fu16..=0x0016,
            group in any::<u16>(),
            shape in 0u8..4,
            workers in 2u16..=64,
        ) {
            let mut put = |at: usize, v: u16| {
                if let Some(field) = bytes.get_mut(at..at + 2) {
                    field.copy_from_slice(&v.to_be_bytes());
                }
            };
            if shape > 0 {
                put(FLAG_AT, flag);
            }
            if shape > 1 {
                put(2, group | 0xF000);
                put(10, group | 0xF000);
            }
            let program = steering_program(workers);
            prop_assert_eq!(run(&program, &bytes), u32::from(worker_of(&bytes, workers)));
        }
    }

    fn loopback() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 0).into()
    }

    /// The next datagram on `socket` (the timeout is a safety net against a lost datagram, not
    /// an assertion on speed).
    fn receive(socket: &UdpSocket) -> Vec<u8> {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = vec![0u8; 65_536];
        let len = socket
            .recv(&mut buf)
            .expect("a datagram on the expected worker");
        buf.truncate(len);
        buf
    }

    /// Nothing is left on any worker's socket.
    fn assert_drained(sockets: &[UdpSocket]) {
        for (worker, socket) in sockets.iter().enumerate() {
            socket.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 2048];
            let left = socket.recv(&mut buf);
            assert!(
                matches!(&left, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
                "worker {worker} has a datagram more: {left:?}"
            );
            socket.set_nonblocking(false).unwrap();
        }
    }

    /// Workers bound by `bind_workers` on port 0, or beside a socket the caller bound.
    fn workers_on_loopback(workers: u16, caller_bound: bool) -> Vec<UdpSocket> {
        let sockets = if caller_bound {
            add_workers(UdpSocket::bind(loopback()).unwrap(), workers, true).unwrap()
        } else {
            bind_workers(loopback(), workers).unwrap()
        };
        assert_eq!(sockets.len(), usize::from(workers));
        let addr = sockets[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert!(sockets.iter().all(|s| s.local_addr().unwrap() == addr));
        sockets
    }

    /// Every flag of several groups, and garbage, from several source ports (which the kernel's
    /// own hash would scatter): each datagram arrives on its worker's socket and on no other.
    #[test]
    fn the_kernel_delivers_each_datagram_to_its_worker() {
        for workers in [2u16, 3, 4] {
            for caller_bound in [false, true] {
                let sockets = workers_on_loopback(workers, caller_bound);
                let to = sockets[0].local_addr().unwrap();
                let clients: Vec<UdpSocket> = (0..4)
                    .map(|_| UdpSocket::bind(loopback()).unwrap())
                    .collect();
                let mut datagrams: Vec<Vec<u8>> = (0xF000..0xF009)
                    .chain([0xFFFF])
                    .flat_map(|group| every_flag(g(group)))
                    .collect();
                datagrams.extend(garbage());
                let mut seen = vec![0usize; usize::from(workers)];
                for (i, datagram) in datagrams.iter().enumerate() {
                    let client = &clients[i % clients.len()];
                    client.send_to(datagram, to).unwrap();
                    let worker = usize::from(worker_of(datagram, workers));
                    assert_eq!(&receive(&sockets[worker]), datagram, "datagram {i}");
                    seen[worker] += 1;
                }
                assert_drained(&sockets);
                // Every worker got its share (the groups cover every residue).
                assert!(seen.iter().all(|&count| count > 0), "{seen:?}");
            }
        }
    }

    /// A segmented (GSO) send of equal-size DATA packets of one group arrives whole on its
    /// worker: every segment, in order, and nothing elsewhere.
    #[test]
    fn a_segmented_send_arrives_whole_on_its_worker() {
        const SEGMENTS: u64 = 8;
        const PAYLOAD: usize = 994;
        for workers in [2u16, 3, 4] {
            let sockets = workers_on_loopback(workers, false);
            let to = sockets[0].local_addr().unwrap();
            // Group 5: worker 1, 2 and 1 of 2, 3 and 4; a worker other than 0.
            let group = g(0xF005);
            let expected = usize::from(worker_of_group(group, workers));
            assert_ne!(expected, 0);
            let packets: Vec<Vec<u8>> = (0..SEGMENTS)
                .map(|seq| {
                    let payload = vec![seq as u8; PAYLOAD];
                    let offset = seq * PAYLOAD as u64;
                    rmtp::data_packet(group, n(1), Flag::RmtpData, seq, offset, &payload)
                })
                .collect();
            let segment = packets[0].len();
            let client = UdpSocket::bind(loopback()).unwrap();
            sockopt::set_int_at(&client, libc::SOL_UDP, UDP_SEGMENT, segment as libc::c_int)
                .expect("UDP_SEGMENT (Linux 4.18)");
            let batch = packets.concat();
            assert_eq!(client.send_to(&batch, to).unwrap(), batch.len());
            for (i, packet) in packets.iter().enumerate() {
                assert_eq!(&receive(&sockets[expected]), packet, "segment {i}");
            }
            assert_drained(&sockets);
        }
    }

    /// Why a worker must expect datagrams of groups it does not own: the kernel steers a
    /// segmented send that stays whole (as on loopback) by its first datagram, so a batch
    /// mixing groups arrives whole on the first one's worker.
    #[test]
    fn a_segmented_send_mixing_groups_follows_its_first_datagram() {
        let sockets = workers_on_loopback(2, false);
        let to = sockets[0].local_addr().unwrap();
        // Groups 1 and 0 alternate: workers 1 and 0.
        let packets: Vec<Vec<u8>> = (0..4u64)
            .map(|seq| {
                let group = g(if seq % 2 == 0 { 0xF001 } else { 0xF000 });
                rmtp::data_packet(group, n(1), Flag::RmtpData, seq, seq * 100, &[7; 100])
            })
            .collect();
        assert_eq!(worker_of(&packets[0], 2), 1);
        assert_eq!(worker_of(&packets[1], 2), 0);
        let client = UdpSocket::bind(loopback()).unwrap();
        let segment = packets[0].len() as libc::c_int;
        sockopt::set_int_at(&client, libc::SOL_UDP, UDP_SEGMENT, segment).unwrap();
        client.send_to(&packets.concat(), to).unwrap();
        for packet in &packets {
            assert_eq!(&receive(&sockets[1]), packet);
        }
        assert_drained(&sockets);
    }

    #[test]
    fn one_worker_is_the_socket_alone() {
        let first = UdpSocket::bind(loopback()).unwrap();
        let addr = first.local_addr().unwrap();
        let sockets = add_workers(first, 1, true).unwrap();
        assert_eq!(sockets.len(), 1);
        assert_eq!(sockets[0].local_addr().unwrap(), addr);
        // Not shared: nothing else can bind beside it.
        assert!(bind_reuseport(addr).is_err());
    }

    #[test]
    fn refusals_name_the_cause_in_one_line() {
        let e = bind_workers(loopback(), 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("at least one"), "{e}");
        // A port held by a socket that does not share it.
        let holder = UdpSocket::bind(loopback()).unwrap();
        let taken = holder.local_addr().unwrap();
        for workers in [1, 3] {
            let e = bind_workers(taken, workers).unwrap_err();
            let line = e.to_string();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{line}");
            assert!(line.contains(&taken.to_string()), "{line}");
            assert!(line.contains("binding worker 0"), "{line}");
            assert!(!line.contains('\n'), "one line: {line}");
        }
    }
}
