//! The DNP header (seed §2): five big-endian 16-bit fields, the checksum first.
//!
//! | bytes | field                 |
//! |-------|-----------------------|
//! | 0–1   | checksum (RFC 1071)   |
//! | 2–3   | destination address   |
//! | 4–5   | source address        |
//! | 6–7   | flag (protocol)       |
//! | 8–9   | length of the packet  |
//!
//! The checksum covers the whole packet (header with the checksum field as zero, and the body).
//! Destination and source are end to end: a relayed packet is forwarded unchanged, and the hop it
//! came from is known to the engine from the link (socket address), not from the header.

use super::{BuildError, checksum};
use crate::addr::Addr;
use zerocopy::byteorder::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const DNP_HEADER_LEN: usize = 10;
/// The seed's packet size limit, [`crate::settings::network::MTU`]; a network may configure a
/// larger MTU.
pub use crate::settings::network::MTU as DEFAULT_MTU;

/// The header as it lies in the buffer.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DnpHeader {
    pub checksum: U16,
    pub dst: U16,
    pub src: U16,
    pub flag: U16,
    pub length: U16,
}

/// The protocol a packet belongs to (the header's flag field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Flag {
    Drp = 0x0001,
    Gmp = 0x0002,
    Rap = 0x0003,
    /// First transmission of RMTP data.
    RmtpData = 0x0010,
    /// RMTP data sent again in answer to a NACK.
    RmtpRetransmit = 0x0011,
    RmtpNack = 0x0012,
    RmtpMab = 0x0013,
    /// NACK confirmation (from PGM).
    RmtpNcf = 0x0014,
    /// Source path message: the sender's window and end of transfer (from PGM).
    RmtpSpm = 0x0015,
}

impl Flag {
    pub const ALL: [Flag; 9] = [
        Flag::Drp,
        Flag::Gmp,
        Flag::Rap,
        Flag::RmtpData,
        Flag::RmtpRetransmit,
        Flag::RmtpNack,
        Flag::RmtpMab,
        Flag::RmtpNcf,
        Flag::RmtpSpm,
    ];

    pub fn from_raw(raw: u16) -> Option<Flag> {
        Flag::ALL.into_iter().find(|f| *f as u16 == raw)
    }
}

/// Why a datagram is not a DNP packet. Every such datagram is dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DnpError {
    /// Shorter than the 10-byte header.
    TooShort(usize),
    /// Longer than the configured MTU.
    TooLong {
        len: usize,
        mtu: usize,
    },
    /// The header's length field disagrees with the datagram's size.
    LengthMismatch {
        header: u16,
        actual: usize,
    },
    BadChecksum,
    UnknownFlag(u16),
}

impl DnpError {
    /// A short stable name, for counters.
    pub fn name(&self) -> &'static str {
        match self {
            DnpError::TooShort(_) => "too_short",
            DnpError::TooLong { .. } => "too_long",
            DnpError::LengthMismatch { .. } => "length_mismatch",
            DnpError::BadChecksum => "bad_checksum",
            DnpError::UnknownFlag(_) => "unknown_flag",
        }
    }
}

impl std::fmt::Display for DnpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnpError::TooShort(n) => {
                write!(f, "datagram of {n} bytes is shorter than a DNP header")
            }
            DnpError::TooLong { len, mtu } => {
                write!(f, "datagram of {len} bytes exceeds MTU {mtu}")
            }
            DnpError::LengthMismatch { header, actual } => {
                write!(f, "header says {header} bytes but datagram has {actual}")
            }
            DnpError::BadChecksum => write!(f, "bad checksum"),
            DnpError::UnknownFlag(v) => write!(f, "unknown flag 0x{v:04x}"),
        }
    }
}

impl std::error::Error for DnpError {}

/// A validated packet borrowed from a receive buffer: header fields read in place, no copy.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    bytes: &'a [u8],
    flag: Flag,
}

impl<'a> Packet<'a> {
    /// Validates in the seed's order: size, length field, checksum, then flag.
    pub fn parse(bytes: &'a [u8], mtu: usize) -> Result<Self, DnpError> {
        Self::check(bytes, mtu, true)
    }

    /// A packet this node's own builder has just sealed (so never one from the network): the
    /// same checks but the checksum, which the builder computed over these very bytes. Saves
    /// a pass over every packet a local sender, receiver or relay builds.
    pub fn built_here(bytes: &'a [u8], mtu: usize) -> Result<Self, DnpError> {
        Self::check(bytes, mtu, false)
    }

    fn check(bytes: &'a [u8], mtu: usize, verify_checksum: bool) -> Result<Self, DnpError> {
        let (header, _) =
            DnpHeader::ref_from_prefix(bytes).map_err(|_| DnpError::TooShort(bytes.len()))?;
        if bytes.len() > mtu {
            return Err(DnpError::TooLong {
                len: bytes.len(),
                mtu,
            });
        }
        let length = header.length.get();
        if usize::from(length) != bytes.len() {
            return Err(DnpError::LengthMismatch {
                header: length,
                actual: bytes.len(),
            });
        }
        if verify_checksum && !checksum::verify(bytes) {
            return Err(DnpError::BadChecksum);
        }
        let raw_flag = header.flag.get();
        let flag = Flag::from_raw(raw_flag).ok_or(DnpError::UnknownFlag(raw_flag))?;
        Ok(Packet { bytes, flag })
    }

    fn header(&self) -> &'a DnpHeader {
        DnpHeader::ref_from_prefix(self.bytes).expect("validated").0
    }

    pub fn flag(&self) -> Flag {
        self.flag
    }

    pub fn dst(&self) -> Addr {
        Addr::from_raw(self.header().dst.get())
    }

    /// The raw source field. End to end: the originator, not the previous hop.
    pub fn src_raw(&self) -> u16 {
        self.header().src.get()
    }

    pub fn src(&self) -> Addr {
        Addr::from_raw(self.src_raw())
    }

    /// Everything after the header.
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[DNP_HEADER_LEN..]
    }

    /// The whole packet, header included: what a relay forwards unchanged.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Writes the header over the first ten bytes of `packet` and seals it with the checksum.
/// `packet` is the whole packet (header room + body); its length goes in the length field.
/// A packet shorter than the header, or longer than the 16-bit length field can say, is
/// refused untouched.
pub fn seal(packet: &mut [u8], dst: Addr, src: Addr, flag: Flag) -> Result<(), BuildError> {
    let length = u16::try_from(packet.len()).map_err(|_| BuildError::TooMany {
        count: packet.len(),
        max: usize::from(u16::MAX),
    })?;
    let Ok((header, _)) = DnpHeader::mut_from_prefix(packet) else {
        return Err(BuildError::BufferTooSmall {
            needed: DNP_HEADER_LEN,
            got: packet.len(),
        });
    };
    header.checksum.set(0);
    header.dst.set(dst.raw());
    header.src.set(src.raw());
    header.flag.set(flag as u16);
    header.length.set(length);
    let sum = checksum::checksum(packet);
    packet[..2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// A new packet: header + `body`, sealed. For control traffic; the fast path seals in place.
/// Every caller frames a body it built under the MTU, so the length always fits; a body too
/// long for the 16-bit length field is left unsealed (an all-zero header, which every receiver
/// refuses as a length mismatch) rather than panicking.
pub fn frame(dst: Addr, src: Addr, flag: Flag, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; DNP_HEADER_LEN + body.len()];
    packet[DNP_HEADER_LEN..].copy_from_slice(body);
    let _ = seal(&mut packet, dst, src, flag);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{GroupAddr, NodeAddr};
    use proptest::prelude::*;

    fn node(n: u16) -> Addr {
        NodeAddr::new(n).unwrap().into()
    }

    #[test]
    fn built_here_skips_only_the_checksum() {
        let p = frame(node(2), node(1), Flag::Gmp, &[1, 2, 3, 4]);
        let built = Packet::built_here(&p, DEFAULT_MTU).unwrap();
        assert_eq!(
            (built.flag(), built.dst(), built.body()),
            (Flag::Gmp, node(2), &p[10..])
        );
        let mut unsealed = p.clone();
        unsealed[0] ^= 0xff;
        assert!(Packet::built_here(&unsealed, DEFAULT_MTU).is_ok());
        assert_eq!(
            Packet::parse(&unsealed, DEFAULT_MTU).unwrap_err(),
            DnpError::BadChecksum
        );
        assert!(matches!(
            Packet::built_here(&p[..p.len() - 1], DEFAULT_MTU),
            Err(DnpError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn golden_hello_sized_packet() {
        // DRP hello from node 1 to node 2: kind 00 01 and its CRC-32C trailer (PROTOCOL.md;
        // checksum from an independent RFC 1071 reference).
        let hello = [0x00, 0x01, 0x03, 0x0a, 0xf4, 0xd1];
        let p = frame(node(2), node(1), Flag::Drp, &hello);
        assert_eq!(
            p,
            [
                0x08, 0x0f, 0, 2, 0, 1, 0, 1, 0, 16, 0, 1, 0x03, 0x0a, 0xf4, 0xd1
            ]
        );
        let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
        assert_eq!(parsed.flag(), Flag::Drp);
        assert_eq!(parsed.dst(), node(2));
        assert_eq!(parsed.src(), node(1));
        assert_eq!(parsed.body(), &hello);
    }

    #[test]
    fn each_error_is_reported() {
        let good = frame(
            GroupAddr::new(0xF000).unwrap().into(),
            node(1),
            Flag::RmtpData,
            &[1, 2, 3],
        );
        assert!(Packet::parse(&good, DEFAULT_MTU).is_ok());
        assert_eq!(
            Packet::parse(&good[..9], DEFAULT_MTU).unwrap_err(),
            DnpError::TooShort(9)
        );
        assert_eq!(
            Packet::parse(&good, 12).unwrap_err(),
            DnpError::TooLong { len: 13, mtu: 12 }
        );
        assert_eq!(
            Packet::parse(&good[..12], DEFAULT_MTU).unwrap_err(),
            DnpError::LengthMismatch {
                header: 13,
                actual: 12
            }
        );
        let mut flipped = good.clone();
        flipped[11] ^= 0x40;
        assert_eq!(
            Packet::parse(&flipped, DEFAULT_MTU).unwrap_err(),
            DnpError::BadChecksum
        );
        let mut unknown = good.clone();
        unknown[10] = 0; // keep length; rewrite the flag and reseal by hand
        unknown[6..8].copy_from_slice(&0x0099u16.to_be_bytes());
        unknown[..2].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&unknown);
        unknown[..2].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            Packet::parse(&unknown, DEFAULT_MTU).unwrap_err(),
            DnpError::UnknownFlag(0x99)
        );
    }

    proptest! {
        #[test]
        fn frame_parse_round_trip(dst in 1u16.., src in 1u16.., flag in 0usize..9,
                                  body in proptest::collection::vec(any::<u8>(), 0..1014)) {
            let flag = Flag::ALL[flag];
            let p = frame(Addr::from_raw(dst), Addr::from_raw(src), flag, &body);
            let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
            prop_assert_eq!(parsed.flag(), flag);
            prop_assert_eq!(parsed.dst().raw(), dst);
            prop_assert_eq!(parsed.src_raw(), src);
            prop_assert_eq!(parsed.body(), &body[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = Packet::parse(&bytes, DEFAULT_MTU);
        }

        #[test]
        fn any_single_bit_flip_is_caught(body in proptest::collection::vec(any::<u8>(), 0..200),
                                         bit in 0usize..1600) {
            let mut p = frame(Addr::from_raw(3), Addr::from_raw(4), Flag::Gmp, &body);
            let bit = bit % (p.len() * 8);
            p[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Packet::parse(&p, DEFAULT_MTU).is_err());
        }
    }
}
