//! RMTP bodies (seed §6 plus PGM's NCF and SPM), after the DNP header, all big-endian.
//! The byte tables are in `docs/PROTOCOL.md`; the golden vectors below keep the two in step.
//!
//! | flag            | DNP dst               | DNP src        | body                                  |
//! |-----------------|-----------------------|----------------|---------------------------------------|
//! | DATA/RETRANSMIT | group                 | sender         | sequence u64, offset u64, crc u32, payload |
//! | NACK            | sender                | emitting node  | group u16, count u16, count × range, crc |
//! | NCF             | downstream NACKer     | emitting node  | group u16, sender u16, count u16, count × range, crc |
//! | MAB             | sender                | emitting node  | group u16, mab u64, received u64, crc |
//! | SPM             | group                 | sender         | see [`SpmFields`], crc                |
//!
//! A range is `first u64, len u32` (12 bytes): the sequences `first..first + len`, `len >= 1`.
//! Data carries a CRC-32C over sequence, offset and payload: the 16-bit DNP checksum is per hop
//! and weak, the CRC is end to end (sender to receiver) and catches what the checksum misses.
//! Control bodies end with a CRC-32C trailer ([`trailer`]) over the bytes before it, for the
//! same reason, as every DRP, GMP and RAP body does.

use super::dnp::{DNP_HEADER_LEN, Flag, seal};
use super::trailer::{self, CRC_LEN, checked};
use super::{BodyError, BuildError, largest, room};
use crate::addr::{GroupAddr, NodeAddr};
use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes of a DATA/RETRANSMIT body before the payload.
pub const DATA_HEADER_LEN: usize = 20;
/// Bytes of one sequence range in NACK and NCF.
pub const RANGE_LEN: usize = 12;
pub const NACK_FIXED_LEN: usize = 4;
pub const NCF_FIXED_LEN: usize = 6;
/// MAB body fields, without the CRC trailer.
pub const MAB_LEN: usize = 18;
/// SPM body fields, without the CRC trailer.
pub const SPM_LEN: usize = 67;
/// The largest RMTP body of fixed size, trailer included: the SPM (DATA with one payload byte,
/// MAB, and NACK and NCF with one range are all smaller).
pub const LARGEST_FIXED_BODY: usize = largest(&[
    DATA_HEADER_LEN + 1,
    NACK_FIXED_LEN + RANGE_LEN + CRC_LEN,
    NCF_FIXED_LEN + RANGE_LEN + CRC_LEN,
    MAB_LEN + CRC_LEN,
    SPM_LEN + CRC_LEN,
]);
/// SPM `total` while the sender does not yet know the size of what it sends.
pub const TOTAL_UNKNOWN: u64 = u64::MAX;
/// SPM flags bit 0: every segment has been sent once; `total` and `hash` are final.
pub const SPM_FINISHED: u8 = 0x01;

/// The payload room in one DATA packet under `mtu` (DNP header and data header taken off).
pub const fn max_payload(mtu: usize) -> usize {
    mtu.saturating_sub(DNP_HEADER_LEN + DATA_HEADER_LEN)
}

/// The most ranges one NACK can carry under `mtu` (83 at the default 1024).
pub const fn max_nack_ranges(mtu: usize) -> usize {
    mtu.saturating_sub(DNP_HEADER_LEN + NACK_FIXED_LEN + CRC_LEN) / RANGE_LEN
}

/// The most ranges one NCF can carry under `mtu` (83 at the default 1024).
pub const fn max_ncf_ranges(mtu: usize) -> usize {
    mtu.saturating_sub(DNP_HEADER_LEN + NCF_FIXED_LEN + CRC_LEN) / RANGE_LEN
}

/// Sequences `first..first + len`, as carried in NACK and NCF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqRange {
    pub first: u64,
    pub len: u32,
}

impl SeqRange {
    pub const fn single(seq: u64) -> Self {
        SeqRange { first: seq, len: 1 }
    }

    /// One past the last sequence (cannot overflow for a parsed range).
    pub const fn end(&self) -> u64 {
        self.first.saturating_add(self.len as u64)
    }

    pub fn contains(&self, seq: u64) -> bool {
        seq >= self.first && seq < self.end()
    }

    pub fn iter(&self) -> std::ops::Range<u64> {
        self.first..self.end()
    }
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DataHeader {
    pub sequence: U64,
    pub offset: U64,
    pub crc: U32,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RangeWire {
    first: U64,
    len: U32,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct MabWire {
    group: U16,
    mab: U64,
    received: U64,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct SpmWire {
    spm_sequence: U64,
    trailing: U64,
    leading: U64,
    segment_size: U16,
    total: U64,
    flags: u8,
    hash: [u8; 32],
}

/// A DATA or RETRANSMIT body, borrowed: header read in place, payload not copied.
#[derive(Clone, Copy, Debug)]
pub struct Data<'a> {
    header: &'a DataHeader,
    payload: &'a [u8],
}

impl<'a> Data<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, BodyError> {
        let (header, payload) =
            DataHeader::ref_from_prefix(body).map_err(|_| BodyError::TooShort {
                needed: DATA_HEADER_LEN,
                got: body.len(),
            })?;
        Ok(Data { header, payload })
    }

    pub fn sequence(&self) -> u64 {
        self.header.sequence.get()
    }

    pub fn offset(&self) -> u64 {
        self.header.offset.get()
    }

    pub fn crc(&self) -> u32 {
        self.header.crc.get()
    }

    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// True when the carried CRC-32C matches sequence, offset and payload.
    pub fn crc_ok(&self) -> bool {
        data_crc(self.sequence(), self.offset(), self.payload) == self.crc()
    }
}

/// CRC-32C (Castagnoli) over the big-endian sequence, the big-endian offset and the payload.
pub fn data_crc(sequence: u64, offset: u64, payload: &[u8]) -> u32 {
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&sequence.to_be_bytes());
    head[8..].copy_from_slice(&offset.to_be_bytes());
    super::crc32c::crc32c_append(super::crc32c::crc32c(&head), payload)
}

/// Parsed sequence ranges, borrowed from a NACK or NCF body. Every range was checked at parse
/// time to have `len >= 1` and not to run past `u64::MAX`.
#[derive(Clone, Copy, Debug)]
pub struct Ranges<'a>(&'a [RangeWire]);

impl<'a> Ranges<'a> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = SeqRange> + 'a {
        self.0.iter().map(|r| SeqRange {
            first: r.first.get(),
            len: r.len.get(),
        })
    }

    fn parse(rest: &'a [u8], count: usize) -> Result<Self, BodyError> {
        let (ranges, rest) = <[RangeWire]>::ref_from_prefix_with_elems(rest, count)
            .map_err(|_| BodyError::BadCount)?;
        no_trailing(rest)?;
        // A NACK for nothing, an empty range or one wrapping past u64::MAX is malformed.
        if count == 0
            || ranges.iter().any(|r| {
                r.len.get() == 0 || r.first.get().checked_add(r.len.get().into()).is_none()
            })
        {
            return Err(BodyError::BadCount);
        }
        Ok(Ranges(ranges))
    }
}

impl PartialEq for Ranges<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

/// A NACK: the sequences the emitting node (or a node below it) misses in `group`'s tree
/// toward the DNP destination (the sender).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Nack<'a> {
    pub group: u16,
    pub ranges: Ranges<'a>,
}

/// A NACK confirmation: the emitting node has these sequences of (group, sender) on order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ncf<'a> {
    pub group: u16,
    pub sender: u16,
    pub ranges: Ranges<'a>,
}

/// A flow-window report, aggregated (minimum) at every hop toward the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mab {
    pub group: u16,
    /// Maximum acceptable byte offset, exclusive: the sender may send bytes below it.
    pub mab: u64,
    /// Every byte below is held contiguously by every receiver below the emitting node.
    pub received: u64,
}

/// The sender's window and end of transfer, sent down the tree like data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpmFields {
    /// Increases by one per SPM, so receivers can ignore an older SPM arriving late.
    pub spm_sequence: u64,
    /// The oldest sequence the sender still repairs.
    pub trailing: u64,
    /// The next sequence to be sent (highest sent + 1).
    pub leading: u64,
    /// Payload bytes of every DATA packet but the last.
    pub segment_size: u16,
    /// Bytes in the transfer; [`TOTAL_UNKNOWN`] while unknown.
    pub total: u64,
    /// Every segment sent once; `total` and `hash` are final.
    pub finished: bool,
    /// BLAKE3 of the whole transfer; meaningful when `finished`.
    pub hash: [u8; 32],
}

/// Any RMTP body, selected by the DNP flag.
#[derive(Clone, Copy, Debug)]
pub enum RmtpMessage<'a> {
    Data(Data<'a>),
    Retransmit(Data<'a>),
    Nack(Nack<'a>),
    Mab(Mab),
    Ncf(Ncf<'a>),
    Spm(SpmFields),
}

impl<'a> RmtpMessage<'a> {
    /// Parses `body` as the RMTP body for `flag`; a non-RMTP flag is `UnknownKind`.
    pub fn parse(flag: Flag, body: &'a [u8]) -> Result<Self, BodyError> {
        match flag {
            Flag::RmtpData => Data::parse(body).map(RmtpMessage::Data),
            Flag::RmtpRetransmit => Data::parse(body).map(RmtpMessage::Retransmit),
            Flag::RmtpNack => Nack::parse(body).map(RmtpMessage::Nack),
            Flag::RmtpMab => Mab::parse(body).map(RmtpMessage::Mab),
            Flag::RmtpNcf => Ncf::parse(body).map(RmtpMessage::Ncf),
            Flag::RmtpSpm => SpmFields::parse(body).map(RmtpMessage::Spm),
            other => Err(BodyError::UnknownKind(other as u16)),
        }
    }
}

fn too_short(needed: usize, body: &[u8]) -> BodyError {
    BodyError::TooShort {
        needed,
        got: body.len(),
    }
}

impl<'a> Nack<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, BodyError> {
        let body = checked(body)?;
        let (group, rest) =
            U16::read_from_prefix(body).map_err(|_| too_short(NACK_FIXED_LEN, body))?;
        let (count, rest) =
            U16::read_from_prefix(rest).map_err(|_| too_short(NACK_FIXED_LEN, body))?;
        Ok(Nack {
            group: group.get(),
            ranges: Ranges::parse(rest, count.get().into())?,
        })
    }
}

impl<'a> Ncf<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, BodyError> {
        let body = checked(body)?;
        let (fixed, rest) =
            <[U16; 3]>::read_from_prefix(body).map_err(|_| too_short(NCF_FIXED_LEN, body))?;
        Ok(Ncf {
            group: fixed[0].get(),
            sender: fixed[1].get(),
            ranges: Ranges::parse(rest, fixed[2].get().into())?,
        })
    }
}

impl Mab {
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let body = checked(body)?;
        let (w, rest) = MabWire::read_from_prefix(body).map_err(|_| too_short(MAB_LEN, body))?;
        no_trailing(rest)?;
        Ok(Mab {
            group: w.group.get(),
            mab: w.mab.get(),
            received: w.received.get(),
        })
    }

    /// Writes the body with its trailer into `body`; its length.
    pub fn write(&self, body: &mut [u8]) -> Result<usize, BuildError> {
        room(MAB_LEN + CRC_LEN, body.len())?;
        let w = MabWire {
            group: self.group.into(),
            mab: self.mab.into(),
            received: self.received.into(),
        };
        body[..MAB_LEN].copy_from_slice(w.as_bytes());
        trailer::append(body, MAB_LEN)
    }
}

impl SpmFields {
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let body = checked(body)?;
        let (w, rest) = SpmWire::read_from_prefix(body).map_err(|_| too_short(SPM_LEN, body))?;
        no_trailing(rest)?;
        // Reserved flag bits must be zero, so that they can be given a meaning later.
        if w.flags & !SPM_FINISHED != 0 {
            return Err(BodyError::UnknownKind(w.flags.into()));
        }
        Ok(SpmFields {
            spm_sequence: w.spm_sequence.get(),
            trailing: w.trailing.get(),
            leading: w.leading.get(),
            segment_size: w.segment_size.get(),
            total: w.total.get(),
            finished: w.flags & SPM_FINISHED != 0,
            hash: w.hash,
        })
    }

    /// Writes the body with its trailer into `body`; its length.
    pub fn write(&self, body: &mut [u8]) -> Result<usize, BuildError> {
        room(SPM_LEN + CRC_LEN, body.len())?;
        let w = SpmWire {
            spm_sequence: self.spm_sequence.into(),
            trailing: self.trailing.into(),
            leading: self.leading.into(),
            segment_size: self.segment_size.into(),
            total: self.total.into(),
            flags: if self.finished { SPM_FINISHED } else { 0 },
            hash: self.hash,
        };
        body[..SPM_LEN].copy_from_slice(w.as_bytes());
        trailer::append(body, SPM_LEN)
    }
}

fn no_trailing(rest: &[u8]) -> Result<(), BodyError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(BodyError::TrailingBytes(rest.len()))
    }
}

/// Writes the count (the last two fixed bytes) and `ranges` after `fixed_len` bytes, having
/// checked the room for them and the trailer; the length before the trailer. The caller writes
/// the other fixed fields into `body[..fixed_len - 2]`, then the trailer.
fn write_counted_ranges(
    body: &mut [u8],
    fixed_len: usize,
    ranges: &[SeqRange],
) -> Result<usize, BuildError> {
    if ranges.is_empty() {
        return Err(BuildError::NoRanges);
    }
    let count = u16::try_from(ranges.len()).map_err(|_| BuildError::TooMany {
        count: ranges.len(),
        max: usize::from(u16::MAX),
    })?;
    // At most 65535 ranges: no overflow.
    let len = fixed_len + ranges.len() * RANGE_LEN;
    room(len + CRC_LEN, body.len())?;
    body[fixed_len - 2..fixed_len].copy_from_slice(&count.to_be_bytes());
    write_ranges(&mut body[fixed_len..], ranges);
    Ok(len)
}

fn write_ranges(body: &mut [u8], ranges: &[SeqRange]) {
    for (chunk, r) in body.chunks_exact_mut(RANGE_LEN).zip(ranges) {
        let w = RangeWire {
            first: r.first.into(),
            len: r.len.into(),
        };
        chunk.copy_from_slice(w.as_bytes());
    }
}

/// Writes a NACK body into `body`; its length. Refused: no ranges, more than 65535, or a
/// `body` too small for them.
pub fn write_nack(
    body: &mut [u8],
    group: GroupAddr,
    ranges: &[SeqRange],
) -> Result<usize, BuildError> {
    let len = write_counted_ranges(body, NACK_FIXED_LEN, ranges)?;
    body[..2].copy_from_slice(&group.get().to_be_bytes());
    trailer::append(body, len)
}

/// Writes an NCF body into `body`; its length. Refused as [`write_nack`].
pub fn write_ncf(
    body: &mut [u8],
    group: GroupAddr,
    sender: NodeAddr,
    ranges: &[SeqRange],
) -> Result<usize, BuildError> {
    let len = write_counted_ranges(body, NCF_FIXED_LEN, ranges)?;
    body[..2].copy_from_slice(&group.get().to_be_bytes());
    body[2..4].copy_from_slice(&sender.get().to_be_bytes());
    trailer::append(body, len)
}

/// The body part of `packet` (after the DNP header), or the error for a packet buffer too
/// small to hold even the header.
fn body_of(packet: &mut [u8]) -> Result<&mut [u8], BuildError> {
    room(DNP_HEADER_LEN, packet.len())?;
    Ok(&mut packet[DNP_HEADER_LEN..])
}

/// A body writer's result counted in whole-packet bytes (header included).
fn in_packet(body: Result<usize, BuildError>) -> Result<usize, BuildError> {
    match body {
        Ok(len) => Ok(DNP_HEADER_LEN + len),
        Err(BuildError::BufferTooSmall { needed, got }) => Err(BuildError::BufferTooSmall {
            needed: DNP_HEADER_LEN + needed,
            got: DNP_HEADER_LEN + got,
        }),
        Err(e) => Err(e),
    }
}

/// Builds a whole sealed NACK packet into `packet`; returns its length.
pub fn build_nack(
    packet: &mut [u8],
    sender: NodeAddr,
    me: NodeAddr,
    group: GroupAddr,
    ranges: &[SeqRange],
) -> Result<usize, BuildError> {
    let len = in_packet(write_nack(body_of(packet)?, group, ranges))?;
    seal(&mut packet[..len], sender.into(), me.into(), Flag::RmtpNack)?;
    Ok(len)
}

/// Builds a whole sealed NCF packet to the downstream neighbour `to`; returns its length.
pub fn build_ncf(
    packet: &mut [u8],
    to: NodeAddr,
    me: NodeAddr,
    group: GroupAddr,
    sender: NodeAddr,
    ranges: &[SeqRange],
) -> Result<usize, BuildError> {
    let len = in_packet(write_ncf(body_of(packet)?, group, sender, ranges))?;
    seal(&mut packet[..len], to.into(), me.into(), Flag::RmtpNcf)?;
    Ok(len)
}

/// Builds a whole sealed MAB packet toward `sender`; returns its length.
pub fn build_mab(
    packet: &mut [u8],
    sender: NodeAddr,
    me: NodeAddr,
    mab: &Mab,
) -> Result<usize, BuildError> {
    let len = in_packet(mab.write(body_of(packet)?))?;
    seal(&mut packet[..len], sender.into(), me.into(), Flag::RmtpMab)?;
    Ok(len)
}

/// Builds a whole sealed SPM packet from `sender` to `group`; returns its length.
pub fn build_spm(
    packet: &mut [u8],
    group: GroupAddr,
    sender: NodeAddr,
    spm: &SpmFields,
) -> Result<usize, BuildError> {
    let len = in_packet(spm.write(body_of(packet)?))?;
    seal(
        &mut packet[..len],
        group.into(),
        sender.into(),
        Flag::RmtpSpm,
    )?;
    Ok(len)
}

/// Completes a DATA or RETRANSMIT packet whose payload the caller already placed at
/// `packet[DNP_HEADER_LEN + DATA_HEADER_LEN..]` (e.g. read from a file straight into the send
/// buffer): writes the data header with its CRC-32C, then the DNP header. `packet` is exactly
/// the packet (its length is the packet's length); one too short for the headers is refused.
pub fn seal_data(
    packet: &mut [u8],
    group: GroupAddr,
    sender: NodeAddr,
    flag: Flag,
    sequence: u64,
    offset: u64,
) -> Result<(), BuildError> {
    let body_start = DNP_HEADER_LEN + DATA_HEADER_LEN;
    room(body_start, packet.len())?;
    let crc = data_crc(sequence, offset, &packet[body_start..]);
    let header = DataHeader {
        sequence: sequence.into(),
        offset: offset.into(),
        crc: crc.into(),
    };
    packet[DNP_HEADER_LEN..body_start].copy_from_slice(header.as_bytes());
    seal(packet, group.into(), sender.into(), flag)
}

/// A whole DATA/RETRANSMIT packet in a new buffer (tests and tools; the fast path uses
/// [`seal_data`] on a buffer it owns).
pub fn data_packet(
    group: GroupAddr,
    sender: NodeAddr,
    flag: Flag,
    sequence: u64,
    offset: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = vec![0u8; DNP_HEADER_LEN + DATA_HEADER_LEN + payload.len()];
    p[DNP_HEADER_LEN + DATA_HEADER_LEN..].copy_from_slice(payload);
    // Sized for the headers; only a payload beyond the 16-bit length fails, left unsealed
    // (refused by every receiver) as `dnp::frame` does.
    let _ = seal_data(&mut p, group, sender, flag, sequence, offset);
    p
}

/// Rewrites the flag of a sealed packet in place and patches the DNP checksum incrementally
/// (RFC 1624, eqn. 3) instead of summing the whole packet again: a relay turns a cached DATA
/// packet into a RETRANSMIT for the price of two 16-bit words. A packet shorter than the DNP
/// header is refused untouched.
pub fn retag(packet: &mut [u8], flag: Flag) -> Result<(), BuildError> {
    room(DNP_HEADER_LEN, packet.len())?;
    let old_flag = u16::from_be_bytes([packet[6], packet[7]]);
    let new_flag = flag as u16;
    let old_sum = u16::from_be_bytes([packet[0], packet[1]]);
    // HC' = ~(~HC + ~m + m') in one's complement arithmetic.
    let mut acc = u32::from(!old_sum) + u32::from(!old_flag) + u32::from(new_flag);
    acc = (acc & 0xFFFF) + (acc >> 16);
    acc = (acc & 0xFFFF) + (acc >> 16);
    let new_sum = !(acc as u16);
    packet[6..8].copy_from_slice(&new_flag.to_be_bytes());
    packet[..2].copy_from_slice(&new_sum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Addr;
    use crate::wire::dnp::{DEFAULT_MTU, Packet, frame};
    use proptest::prelude::*;

    fn g(v: u16) -> GroupAddr {
        GroupAddr::new(v).unwrap()
    }

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn golden_data() {
        let p = data_packet(g(0xF001), n(1), Flag::RmtpData, 2, 2048, b"abc");
        assert_eq!(
            hex(&p),
            concat!(
                "aecdf00100010010002100000000000000020000000000000800",
                "44385061",
                "616263"
            )
        );
        let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
        match RmtpMessage::parse(parsed.flag(), parsed.body()).unwrap() {
            RmtpMessage::Data(d) => {
                assert_eq!(d.sequence(), 2);
                assert_eq!(d.offset(), 2048);
                assert_eq!(d.payload(), b"abc");
                assert!(d.crc_ok());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn builders_refuse_a_buffer_one_byte_short() {
        let spm = SpmFields {
            spm_sequence: 7,
            trailing: 1,
            leading: 9,
            segment_size: 994,
            total: 8000,
            finished: true,
            hash: [0xAB; 32],
        };
        let mab = Mab {
            group: 0xF000,
            mab: 1,
            received: 0,
        };
        let ranges = [SeqRange::single(3), SeqRange { first: 9, len: 4 }];
        let mut buf = [0u8; 200];
        // Each builder, given exactly the room it needs, then one byte less.
        type Build<'a> = &'a dyn Fn(&mut [u8]) -> Result<usize, BuildError>;
        let builds: [(&str, Build); 8] = [
            ("nack", &|b| build_nack(b, n(1), n(2), g(0xF000), &ranges)),
            ("ncf", &|b| {
                build_ncf(b, n(3), n(2), g(0xF000), n(1), &ranges)
            }),
            ("mab", &|b| build_mab(b, n(1), n(2), &mab)),
            ("spm", &|b| build_spm(b, g(0xF000), n(1), &spm)),
            ("nack body", &|b| write_nack(b, g(0xF000), &ranges)),
            ("ncf body", &|b| write_ncf(b, g(0xF000), n(1), &ranges)),
            ("mab body", &|b| mab.write(b)),
            ("spm body", &|b| spm.write(b)),
        ];
        for (what, build) in builds {
            let needed = build(&mut buf).unwrap();
            let short = &mut buf[..needed - 1];
            short.fill(0x5A);
            assert_eq!(
                build(short),
                Err(BuildError::BufferTooSmall {
                    needed,
                    got: needed - 1
                }),
                "{what}"
            );
            assert!(
                short.iter().all(|&b| b == 0x5A),
                "{what} wrote into a short buffer"
            );
        }
        assert_eq!(
            build_nack(&mut buf, n(1), n(2), g(0xF000), &[]),
            Err(BuildError::NoRanges)
        );
        // The SPM, the largest packet of fixed size, in the 80 bytes an MTU of 80 would give.
        assert_eq!(LARGEST_FIXED_BODY, SPM_LEN + CRC_LEN);
        assert_eq!(crate::wire::LARGEST_FIXED_PACKET, 81);
        assert!(build_spm(&mut buf[..80], g(0xF000), n(1), &spm).is_err());
        // Sealers and patchers given less than a DNP header.
        let mut tiny = [0u8; DNP_HEADER_LEN - 1];
        assert!(seal_data(&mut tiny, g(0xF000), n(1), Flag::RmtpData, 0, 0).is_err());
        assert!(retag(&mut tiny, Flag::RmtpRetransmit).is_err());
        assert!(seal(&mut tiny, n(1).into(), n(2).into(), Flag::Drp).is_err());
        assert_eq!(tiny, [0; DNP_HEADER_LEN - 1]);
    }

    #[test]
    fn golden_nack_ncf_mab_spm() {
        let ranges = [
            SeqRange { first: 5, len: 2 },
            SeqRange {
                first: 0x0102_0304_0506_0708,
                len: 1,
            },
        ];
        let mut buf = [0u8; 1024];
        let len = build_nack(&mut buf, n(1), n(2), g(0xF000), &ranges).unwrap();
        assert_eq!(
            hex(&buf[..len]),
            concat!(
                "c6fb000100020012002a",
                "f0000002",
                "000000000000000500000002",
                "010203040506070800000001",
                "e90e4f97"
            )
        );
        let len = build_ncf(&mut buf, n(3), n(2), g(0xF000), n(1), &ranges[..1]).unwrap();
        assert_eq!(
            hex(&buf[..len]),
            concat!(
                "53730003000200140020",
                "f000000100010000000000000005",
                "00000002",
                "c03afc0e"
            )
        );
        let mab = Mab {
            group: 0xF000,
            mab: 0x10000,
            received: 0x8000,
        };
        let len = build_mab(&mut buf, n(1), n(2), &mab).unwrap();
        assert_eq!(
            hex(&buf[..len]),
            concat!(
                "37520001000200130020",
                "f000",
                "0000000000010000",
                "0000000000008000",
                "c2bb95b9"
            )
        );
        let spm = SpmFields {
            spm_sequence: 7,
            trailing: 1,
            leading: 9,
            segment_size: 994,
            total: 8000,
            finished: true,
            hash: [0xAB; 32],
        };
        let len = build_spm(&mut buf, g(0xF000), n(1), &spm).unwrap();
        assert_eq!(
            hex(&buf[..len]),
            concat!(
                "03d0f000000100150051",
                "0000000000000007",
                "0000000000000001",
                "0000000000000009",
                "03e2",
                "0000000000001f40",
                "01",
                "abababababababababababababababababababababababababababababababab",
                "c1961896"
            )
        );
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        assert_eq!(
            Data::parse(&[0; 19]).unwrap_err(),
            BodyError::TooShort {
                needed: 20,
                got: 19
            }
        );
        assert_eq!(
            Nack::parse(&trailer::sealed(&[0xF0, 0])).unwrap_err(),
            BodyError::TooShort { needed: 4, got: 2 }
        );
        // Count 0.
        assert_eq!(
            Nack::parse(&trailer::sealed(&[0xF0, 0, 0, 0])).unwrap_err(),
            BodyError::BadCount
        );
        // Count 2 but one range.
        let mut b = vec![0xF0, 0, 0, 2];
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(
            Nack::parse(&trailer::sealed(&b)).unwrap_err(),
            BodyError::BadCount
        );
        // Empty range.
        let mut b = vec![0xF0, 0, 0, 1];
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            Nack::parse(&trailer::sealed(&b)).unwrap_err(),
            BodyError::BadCount
        );
        // Range wrapping past u64::MAX.
        let mut b = vec![0xF0, 0, 0, 1];
        b.extend_from_slice(&[0xFF; 8]);
        b.extend_from_slice(&[0, 0, 0, 2]);
        assert_eq!(
            Nack::parse(&trailer::sealed(&b)).unwrap_err(),
            BodyError::BadCount
        );
        // One byte too many.
        let mut b = vec![0xF0, 0, 0, 1];
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 9]);
        assert_eq!(
            Nack::parse(&trailer::sealed(&b)).unwrap_err(),
            BodyError::TrailingBytes(1)
        );
        assert_eq!(
            Mab::parse(&trailer::sealed(&[0; 19])).unwrap_err(),
            BodyError::TrailingBytes(1)
        );
        let mut spm = [0u8; SPM_LEN];
        spm[34] = 0x02;
        assert_eq!(
            SpmFields::parse(&trailer::sealed(&spm)).unwrap_err(),
            BodyError::UnknownKind(2)
        );
        // A good body with one bit changed: the CRC trailer refuses it.
        let mut good = [0u8; 40];
        let len = write_nack(&mut good, g(0xF000), &[SeqRange::single(3)]).unwrap();
        good[5] ^= 0x10;
        assert_eq!(Nack::parse(&good[..len]).unwrap_err(), BodyError::BadCrc);
        assert_eq!(
            Mab::parse(&[0; 3]).unwrap_err(),
            BodyError::TooShort { needed: 4, got: 3 }
        );
        assert_eq!(
            RmtpMessage::parse(Flag::Drp, &[]).unwrap_err(),
            BodyError::UnknownKind(1)
        );
    }

    #[test]
    fn crc_catches_what_the_dnp_checksum_misses() {
        // Swapping two 16-bit words leaves the one's-complement sum unchanged.
        let mut q = data_packet(g(0xF000), n(1), Flag::RmtpData, 0, 0, &[1, 2, 3, 4, 5, 6]);
        q.swap(30, 32);
        q.swap(31, 33);
        let parsed = Packet::parse(&q, DEFAULT_MTU).expect("DNP checksum is fooled");
        let d = Data::parse(parsed.body()).unwrap();
        assert!(!d.crc_ok(), "CRC-32C must catch the swap");
    }

    #[test]
    fn retag_keeps_the_checksum_valid() {
        let mut p = data_packet(g(0xF123), n(77), Flag::RmtpData, 9, 9 * 994, &[3u8; 994]);
        retag(&mut p, Flag::RmtpRetransmit).unwrap();
        let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
        assert_eq!(parsed.flag(), Flag::RmtpRetransmit);
        let again = frame(
            parsed.dst(),
            parsed.src(),
            Flag::RmtpRetransmit,
            parsed.body(),
        );
        assert_eq!(p, again);
    }

    fn ranges_strategy() -> impl Strategy<Value = Vec<SeqRange>> {
        proptest::collection::vec(
            (any::<u64>(), 1u32..).prop_map(|(f, l)| SeqRange {
                first: f.min(u64::MAX - u64::from(l)),
                len: l,
            }),
            1..=max_nack_ranges(DEFAULT_MTU),
        )
    }

    proptest! {
        #[test]
        fn data_round_trip(seq: u64, off: u64, grp in 0xF000u16.., snd in 1u16..0xF000,
                           retx: bool,
                           payload in proptest::collection::vec(any::<u8>(), 0..=max_payload(DEFAULT_MTU))) {
            let flag = if retx { Flag::RmtpRetransmit } else { Flag::RmtpData };
            let p = data_packet(g(grp), n(snd), flag, seq, off, &payload);
            let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
            prop_assert_eq!(parsed.dst().raw(), grp);
            prop_assert_eq!(parsed.src_raw(), snd);
            let d = match RmtpMessage::parse(parsed.flag(), parsed.body()).unwrap() {
                RmtpMessage::Data(d) if !retx => d,
                RmtpMessage::Retransmit(d) if retx => d,
                other => panic!("{other:?}"),
            };
            prop_assert_eq!(d.sequence(), seq);
            prop_assert_eq!(d.offset(), off);
            prop_assert_eq!(d.payload(), &payload[..]);
            prop_assert!(d.crc_ok());
        }

        #[test]
        fn nack_ncf_round_trip(grp in 0xF000u16.., snd in 1u16..0xF000, ranges in ranges_strategy()) {
            let mut buf = [0u8; DEFAULT_MTU];
            let len = build_nack(&mut buf, n(snd), n(1), g(grp), &ranges).unwrap();
            let parsed = Packet::parse(&buf[..len], DEFAULT_MTU).unwrap();
            prop_assert_eq!(parsed.flag(), Flag::RmtpNack);
            let nack = Nack::parse(parsed.body()).unwrap();
            prop_assert_eq!(nack.group, grp);
            prop_assert_eq!(nack.ranges.iter().collect::<Vec<_>>(), ranges.clone());

            let len = build_ncf(&mut buf, n(2), n(1), g(grp), n(snd), &ranges).unwrap();
            let parsed = Packet::parse(&buf[..len], DEFAULT_MTU).unwrap();
            let ncf = Ncf::parse(parsed.body()).unwrap();
            prop_assert_eq!((ncf.group, ncf.sender), (grp, snd));
            prop_assert_eq!(ncf.ranges.iter().collect::<Vec<_>>(), ranges);
        }

        #[test]
        fn mab_spm_round_trip(grp in 0xF000u16.., mab: u64, received: u64, s: u64, t: u64, l: u64,
                              seg: u16, total: u64, finished: bool, hash: [u8; 32]) {
            let m = Mab { group: grp, mab, received };
            let mut buf = [0u8; DEFAULT_MTU];
            let len = build_mab(&mut buf, n(1), n(2), &m).unwrap();
            let parsed = Packet::parse(&buf[..len], DEFAULT_MTU).unwrap();
            prop_assert_eq!(Mab::parse(parsed.body()).unwrap(), m);
            let spm = SpmFields { spm_sequence: s, trailing: t, leading: l, segment_size: seg,
                                  total, finished, hash };
            let len = build_spm(&mut buf, g(grp), n(1), &spm).unwrap();
            let parsed = Packet::parse(&buf[..len], DEFAULT_MTU).unwrap();
            prop_assert_eq!(SpmFields::parse(parsed.body()).unwrap(), spm);
        }

        #[test]
        fn retag_round_trip(flag in 0usize..9, to in 0usize..9,
                            body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut p = frame(Addr::from_raw(0xF000), Addr::from_raw(5), Flag::ALL[flag], &body);
            retag(&mut p, Flag::ALL[to]).unwrap();
            let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
            prop_assert_eq!(parsed.flag(), Flag::ALL[to]);
        }

        #[test]
        fn arbitrary_bodies_never_panic(flag in 0usize..9,
                                        bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            if let Ok(m) = RmtpMessage::parse(Flag::ALL[flag], &bytes) {
                match m {
                    RmtpMessage::Data(d) | RmtpMessage::Retransmit(d) => { let _ = d.crc_ok(); }
                    RmtpMessage::Nack(x) => { for r in x.ranges.iter() { prop_assert!(r.len >= 1); } }
                    RmtpMessage::Ncf(x) => { for r in x.ranges.iter() { prop_assert!(r.end() > r.first); } }
                    RmtpMessage::Mab(_) | RmtpMessage::Spm(_) => {}
                }
            }
        }
    }
}
