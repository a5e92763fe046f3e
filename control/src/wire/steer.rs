//! Which of a node's dataplane workers owns a datagram (issue 10: N workers, each with its own
//! UDP socket on the node's port, one multicast tree per worker).
//!
//! The owner is read from the datagram's bytes alone, without validating anything (the worker
//! that receives it validates): the engine's kernel-side steering program
//! (`dataplane/src/uring/steer.rs`) computes exactly [`worker_of`], from the offsets this module
//! publishes, before any checksum is known. So it is total: any bytes, any length, no panic.
//!
//! - An RMTP packet belongs to the worker of its group ([`worker_of_group`]). The group alone,
//!   not (group, sender): a tree is (group, sender), but NACKs and MABs carry the sender only as
//!   DNP destination (which, at the sender's node, is the node itself), so a mapping on the group
//!   is the one cheap rule under which the DATA, NACKs, NCFs and MABs of one tree meet on one
//!   worker. Every sender of a group therefore shares the group's worker.
//! - A datagram that names no tree (DRP, GMP, RAP, an unknown flag, and an RMTP packet whose
//!   group field is not a group: RMTP to a node, which a node without the RMTP layer passes on,
//!   else refused and counted) belongs to the worker of its DNP source ([`worker_of_source`]):
//!   it carries no per-tree state, so any worker may handle it (one for this node goes on to
//!   the control thread from whichever worker has it), and spreading by source lets a node's
//!   workers share the end-to-end traffic it passes on while one origin's packets stay in
//!   order on one worker.
//! - A datagram too short to hold the fields read goes to [`CONTROL_WORKER`].

use super::dnp::{DNP_HEADER_LEN, Flag};
use crate::addr::{GROUP_BASE, GroupAddr};

/// The owner of a datagram too short for its fields, and of an RMTP packet that names no group.
pub const CONTROL_WORKER: u16 = 0;

/// Where every datagram's flag lies: DNP header bytes 6–7 (big-endian).
pub const FLAG_AT: usize = 6;

/// Where every datagram's originator lies: DNP header bytes 4–5 (big-endian).
pub const SOURCE_AT: usize = 4;

/// Where an RMTP packet carrying its group as DNP destination has it: header bytes 2–3.
pub const HEADER_GROUP_AT: usize = 2;

/// Where an RMTP packet carrying its group in its body has it: body bytes 0–1.
pub const BODY_GROUP_AT: usize = DNP_HEADER_LEN;

/// Where a datagram of `flag` carries its tree's group, or `None` for a protocol that is not
/// steered by group (it goes by its source, [`worker_of_source`]). See the RMTP table of `docs/PROTOCOL.md`.
pub const fn group_at(flag: Flag) -> Option<usize> {
    match flag {
        Flag::RmtpData | Flag::RmtpRetransmit | Flag::RmtpSpm => Some(HEADER_GROUP_AT),
        Flag::RmtpNack | Flag::RmtpMab | Flag::RmtpNcf => Some(BODY_GROUP_AT),
        Flag::Drp | Flag::Gmp | Flag::Rap => None,
    }
}

/// The group a datagram would be steered by, read unchecked: `None` when it names none (not
/// RMTP, too short for its group field, or a group field outside the group range).
pub fn group_of(datagram: &[u8]) -> Option<GroupAddr> {
    let flag = Flag::from_raw(read_u16(datagram, FLAG_AT)?)?;
    GroupAddr::new(read_u16(datagram, group_at(flag)?)?)
}

/// The worker, of `workers`, that owns `datagram`: its group's worker for an RMTP packet naming
/// a group, its source's for one that names no tree, [`CONTROL_WORKER`] for one too short for
/// its fields. Always below `workers`
/// (0 when `workers` is 0 or 1). Never panics.
pub fn worker_of(datagram: &[u8], workers: u16) -> u16 {
    let Some(flag) = read_u16(datagram, FLAG_AT) else {
        return CONTROL_WORKER;
    };
    // The flag is read, so the source field before it is there.
    let by_source =
        || read_u16(datagram, SOURCE_AT).map_or(CONTROL_WORKER, |s| worker_of_source(s, workers));
    match Flag::from_raw(flag).and_then(group_at) {
        Some(at) => match read_u16(datagram, at) {
            Some(field) => match GroupAddr::new(field) {
                Some(group) => worker_of_group(group, workers),
                None => by_source(),
            },
            None => CONTROL_WORKER,
        },
        None => by_source(),
    }
}

/// The worker, of `workers`, that must handle `datagram` because it holds its tree's state:
/// `Some` for an RMTP packet naming a group, `None` for anything any worker may handle.
pub fn tree_worker(datagram: &[u8], workers: u16) -> Option<u16> {
    Some(worker_of_group(group_of(datagram)?, workers))
}

/// The worker, of `workers`, of a datagram from DNP source `source` that names no tree: the
/// raw source field modulo the count. Always below `workers` (0 when `workers` is 0 or 1).
pub const fn worker_of_source(source: u16, workers: u16) -> u16 {
    if workers <= 1 {
        CONTROL_WORKER
    } else {
        source % workers
    }
}

/// The worker, of `workers`, that owns `group`'s trees: group index modulo the worker count, so
/// that consecutive groups spread evenly. Where the engine places a local sender or receiver of
/// the group. Always below `workers` (0 when `workers` is 0 or 1).
pub const fn worker_of_group(group: GroupAddr, workers: u16) -> u16 {
    if workers <= 1 {
        CONTROL_WORKER
    } else {
        // A group is at least GROUP_BASE: no underflow.
        (group.get() - GROUP_BASE) % workers
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let field = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([field[0], field[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Addr, NodeAddr};
    use crate::wire::dnp::frame;
    use crate::wire::rmtp::{self, Mab, SeqRange, SpmFields, TOTAL_UNKNOWN};
    use crate::wire::{drp, gmp::GmpMessage, rap};
    use proptest::prelude::*;

    fn g(v: u16) -> GroupAddr {
        GroupAddr::new(v).unwrap()
    }

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    /// One packet of every RMTP flag for `group`, built by the real builders (sender node 1,
    /// emitted by node 2), with the flag each was built as.
    fn rmtp_packets(group: GroupAddr) -> Vec<(Flag, Vec<u8>)> {
        let ranges = [SeqRange { first: 5, len: 2 }];
        let mut nack = vec![0u8; 64];
        let len = rmtp::build_nack(&mut nack, n(1), n(2), group, &ranges).unwrap();
        nack.truncate(len);
        let mut ncf = vec![0u8; 64];
        let len = rmtp::build_ncf(&mut ncf, n(3), n(2), group, n(1), &ranges).unwrap();
        ncf.truncate(len);
        let mut mab = vec![0u8; 64];
        let fields = Mab {
            group: group.get(),
            mab: 1 << 16,
            received: 1 << 15,
        };
        let len = rmtp::build_mab(&mut mab, n(1), n(2), &fields).unwrap();
        mab.truncate(len);
        let mut spm = vec![0u8; 128];
        let fields = SpmFields {
            spm_sequence: 7,
            trailing: 1,
            leading: 9,
            segment_size: 994,
            total: TOTAL_UNKNOWN,
            finished: false,
            hash: [0; 32],
        };
        let len = rmtp::build_spm(&mut spm, group, n(1), &fields).unwrap();
        spm.truncate(len);
        vec![
            (
                Flag::RmtpData,
                rmtp::data_packet(group, n(1), Flag::RmtpData, 2, 2 * 994, b"payload"),
            ),
            (
                Flag::RmtpRetransmit,
                rmtp::data_packet(group, n(1), Flag::RmtpRetransmit, 2, 2 * 994, b"payload"),
            ),
            (Flag::RmtpNack, nack),
            (Flag::RmtpMab, mab),
            (Flag::RmtpNcf, ncf),
            (Flag::RmtpSpm, spm),
        ]
    }

    /// One packet of every control-plane flag, built by the real builders; one of them (GMP)
    /// names a group in its body, which must not steer it.
    fn control_packets() -> Vec<(Flag, Vec<u8>)> {
        let drp = |body: Vec<u8>| frame(n(2).into(), n(1).into(), Flag::Drp, &body);
        vec![
            (Flag::Drp, drp(drp::hello())),
            (Flag::Drp, drp(drp::terminate())),
            (Flag::Drp, drp(drp::lsp(n(1), 3, &[n(2), n(3)]).unwrap())),
            (Flag::Drp, drp(drp::lsp_ack(n(1), 3))),
            (
                Flag::Gmp,
                GmpMessage::join(g(0xF003), n(1)).packet(n(1), n(2)),
            ),
            (
                Flag::Gmp,
                GmpMessage::leave(g(0xF003), n(1)).packet(n(1), n(2)),
            ),
            (
                Flag::Rap,
                rap::packet(n(1), n(2), &rap::request(0x10, 0x20)),
            ),
            (Flag::Rap, rap::packet(n(1), n(2), &rap::ack(0x20, 0x10, 3))),
        ]
    }

    #[test]
    fn every_rmtp_flag_goes_to_its_groups_worker() {
        let groups = [0xF000, 0xF001, 0xF002, 0xF003, 0xF005, 0xF00B, 0xFFFF];
        for group in groups.map(g) {
            for (flag, packet) in rmtp_packets(group) {
                assert_eq!(group_of(&packet), Some(group), "{flag:?}");
                for workers in 0..=9 {
                    let worker = worker_of(&packet, workers);
                    assert_eq!(worker, worker_of_group(group, workers), "{flag:?}");
                    assert!(worker < workers.max(1), "{flag:?} {workers}");
                }
            }
        }
    }

    #[test]
    fn groups_are_spread_by_index() {
        // Group i is 0xF000 + i; the worker is i modulo the count.
        assert_eq!(worker_of_group(g(0xF000), 4), 0);
        assert_eq!(worker_of_group(g(0xF005), 4), 1);
        assert_eq!(worker_of_group(g(0xF005), 3), 2);
        assert_eq!(worker_of_group(g(0xFFFF), 7), 4095 % 7);
        assert_eq!(worker_of_group(g(0xF005), 1), 0);
        assert_eq!(worker_of_group(g(0xF005), 0), 0);
        // The same tree's data (to the group) and NACKs (to the sender) meet.
        let packets = rmtp_packets(g(0xF006));
        let workers: Vec<u16> = packets.iter().map(|(_, p)| worker_of(p, 4)).collect();
        assert_eq!(workers, vec![2; packets.len()]);
    }

    #[test]
    fn control_plane_packets_go_by_their_source() {
        for (flag, packet) in control_packets() {
            assert_eq!(group_of(&packet), None, "{flag:?}");
            assert_eq!(tree_worker(&packet, 4), None, "{flag:?}");
            let source = u16::from_be_bytes([packet[4], packet[5]]);
            assert!(source == 1 || source == 2, "{flag:?}");
            for workers in 0..=9 {
                let expected = if workers <= 1 { 0 } else { source % workers };
                assert_eq!(worker_of(&packet, workers), expected, "{flag:?}");
            }
        }
        // Sources spread over every worker.
        let from = |source: u16| rap::packet(n(1), n(source), &rap::request(0x10, 0x20));
        let workers: Vec<u16> = (1..=6).map(|s| worker_of(&from(s), 3)).collect();
        assert_eq!(workers, vec![1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn rmtp_without_a_group_goes_by_its_source() {
        // DATA addressed to a node (passed on by a node without the RMTP layer), a NACK whose
        // group field is a node, an SPM to no one: no tree, so by source (node 1: worker 1).
        let data = frame(n(3).into(), n(1).into(), Flag::RmtpData, &[0; 24]);
        assert_eq!(worker_of(&data, 4), 1);
        assert_eq!(tree_worker(&data, 4), None);
        let mut nack = rmtp_packets(g(0xF001)).remove(2).1;
        nack[BODY_GROUP_AT..BODY_GROUP_AT + 2].copy_from_slice(&0x0003u16.to_be_bytes());
        let source = u16::from_be_bytes([nack[SOURCE_AT], nack[SOURCE_AT + 1]]);
        assert_eq!(worker_of(&nack, 4), source % 4);
        assert_eq!(tree_worker(&nack, 4), None);
        let unspecified = frame(Addr::Unspecified, n(1).into(), Flag::RmtpSpm, &[0; 8]);
        assert_eq!(worker_of(&unspecified, 4), 1);
        // An unknown flag names no tree either.
        let mut odd = rmtp_packets(g(0xF001)).remove(0).1;
        odd[FLAG_AT..FLAG_AT + 2].copy_from_slice(&0x0016u16.to_be_bytes());
        assert_eq!(worker_of(&odd, 4), 1);
        assert_eq!(tree_worker(&odd, 4), None);
    }

    #[test]
    fn a_datagram_too_short_for_its_fields_goes_to_the_control_worker() {
        for (flag, packet) in rmtp_packets(g(0xF001)) {
            // Bytes 2-3 and 6-7 (header group) or 6-7 and 10-11 (body group) must be there.
            let needed = match group_at(flag) {
                Some(at) => (at + 2).max(FLAG_AT + 2),
                None => unreachable!("an RMTP flag has a group"),
            };
            for len in 0..packet.len() {
                let expected = if len < needed { 0 } else { 1 };
                assert_eq!(worker_of(&packet[..len], 4), expected, "{flag:?} {len}");
            }
        }
        assert_eq!(worker_of(&[], 4), CONTROL_WORKER);
    }

    proptest! {
        /// Any bytes: no panic, a worker in range; and the worker is the group's when the bytes
        /// name one. Half of the inputs get an RMTP flag, so that the group paths are exercised.
        #[test]
        fn arbitrary_bytes_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..40),
            flag in 0x0010u16..=0x0015,
            force_flag in any::<bool>(),
            workers in any::<u16>(),
        ) {
            if force_flag && bytes.len() >= FLAG_AT + 2 {
                bytes[FLAG_AT..FLAG_AT + 2].copy_from_slice(&flag.to_be_bytes());
            }
            let worker = worker_of(&bytes, workers);
            prop_assert!(worker < workers.max(1));
            let group_field_at = bytes
                .get(FLAG_AT..FLAG_AT + 2)
                .and_then(|f| Flag::from_raw(u16::from_be_bytes([f[0], f[1]])))
                .and_then(group_at);
            match group_of(&bytes) {
                Some(group) => {
                    prop_assert_eq!(worker, worker_of_group(group, workers));
                    prop_assert_eq!(tree_worker(&bytes, workers), Some(worker));
                }
                None if bytes.len() < FLAG_AT + 2 => prop_assert_eq!(worker, CONTROL_WORKER),
                None if group_field_at.is_some_and(|at| bytes.len() < at + 2) => {
                    prop_assert_eq!(worker, CONTROL_WORKER);
                }
                None => {
                    prop_assert_eq!(tree_worker(&bytes, workers), None);
                    prop_assert_eq!(
                        worker,
                        worker_of_source(u16::from_be_bytes([bytes[4], bytes[5]]), workers)
                    );
                }
            }
        }
    }
}
