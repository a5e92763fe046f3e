//! GMP bodies (seed §4), after the DNP header, all big-endian:
//!
//! | bytes | field |
//! |-------|-------|
//! | 0–1   | group (`0xF000..=0xFFFF`) |
//! | 2–3   | sender: the node whose tree this is (membership is per (group, sender)) |
//! | 4–5   | kind: 1 join, 2 leave |
//! | 6–9   | CRC-32C of bytes 0–5 ([`trailer`]) |
//!
//! GMP goes hop by hop: the DNP destination is the upstream neighbour the message is for and the
//! source is the node that sent it, so both ends of the header are one link apart.

use super::BodyError;
use super::dnp::{self, Flag};
use super::trailer::{self, CRC_LEN};
use crate::addr::{GroupAddr, NodeAddr};
use zerocopy::byteorder::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const KIND_JOIN: u16 = 1;
pub const KIND_LEAVE: u16 = 2;
/// The fields of a GMP body, before its CRC-32C trailer.
pub const GMP_FIELDS_LEN: usize = 6;
/// Every GMP body has this size, trailer included.
pub const GMP_BODY_LEN: usize = GMP_FIELDS_LEN + CRC_LEN;

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct GmpBody {
    group: U16,
    sender: U16,
    kind: U16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum GmpKind {
    Join = KIND_JOIN,
    Leave = KIND_LEAVE,
}

/// A parsed GMP body: join or leave the tree of `sender` for `group`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GmpMessage {
    pub group: GroupAddr,
    pub sender: NodeAddr,
    pub kind: GmpKind,
}

impl GmpMessage {
    pub fn join(group: GroupAddr, sender: NodeAddr) -> Self {
        GmpMessage {
            group,
            sender,
            kind: GmpKind::Join,
        }
    }

    pub fn leave(group: GroupAddr, sender: NodeAddr) -> Self {
        GmpMessage {
            group,
            sender,
            kind: GmpKind::Leave,
        }
    }

    /// Validates the trailer, then the length, then the kind, then the two addresses.
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let body = trailer::checked(body)?;
        let (raw, rest) = GmpBody::ref_from_prefix(body).map_err(|_| BodyError::TooShort {
            needed: GMP_FIELDS_LEN,
            got: body.len(),
        })?;
        if !rest.is_empty() {
            return Err(BodyError::TrailingBytes(rest.len()));
        }
        let kind = match raw.kind.get() {
            KIND_JOIN => GmpKind::Join,
            KIND_LEAVE => GmpKind::Leave,
            other => return Err(BodyError::UnknownKind(other)),
        };
        let group = GroupAddr::try_new(raw.group.get()).map_err(BodyError::BadAddress)?;
        let sender = NodeAddr::try_new(raw.sender.get()).map_err(BodyError::BadAddress)?;
        Ok(GmpMessage {
            group,
            sender,
            kind,
        })
    }

    pub fn encode(&self) -> [u8; GMP_BODY_LEN] {
        let body = GmpBody {
            group: self.group.get().into(),
            sender: self.sender.get().into(),
            kind: (self.kind as u16).into(),
        };
        let mut out = [0u8; GMP_BODY_LEN];
        out[..GMP_FIELDS_LEN].copy_from_slice(body.as_bytes());
        // The array is sized for the fields and the trailer: this cannot fail.
        let _ = trailer::append(&mut out, GMP_FIELDS_LEN);
        out
    }

    /// The whole sealed packet from `me` to the neighbour `to`.
    pub fn packet(&self, to: NodeAddr, me: NodeAddr) -> Vec<u8> {
        dnp::frame(to.into(), me.into(), Flag::Gmp, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::AddrError;
    use crate::wire::{DEFAULT_MTU, Packet};
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
    fn golden_vectors() {
        // Computed by an independent reference (RFC 1071 and a bitwise CRC-32C in Python).
        assert_eq!(
            hex(&GmpMessage::join(g(0xF001), n(0x0102)).encode()),
            "f00101020001588ea21e"
        );
        assert_eq!(
            hex(&GmpMessage::leave(g(0xFFFF), n(7)).encode()),
            "ffff00070002d332288b"
        );
        // Whole packet: join for (0xF001, sender 3) from node 2 to its upstream node 1.
        let p = GmpMessage::join(g(0xF001), n(3)).packet(n(1), n(2));
        assert_eq!(hex(&p), "547e0001000200020014f00100030001208a9ad8");
        let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
        assert_eq!(parsed.flag(), Flag::Gmp);
        assert_eq!(
            GmpMessage::parse(parsed.body()).unwrap(),
            GmpMessage::join(g(0xF001), n(3))
        );
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        use trailer::sealed;
        assert_eq!(
            GmpMessage::parse(&[0xF0, 0, 0]),
            Err(BodyError::TooShort { needed: 4, got: 3 })
        );
        assert_eq!(
            GmpMessage::parse(&sealed(&[0xF0, 0, 0, 1, 0])),
            Err(BodyError::TooShort { needed: 6, got: 5 })
        );
        assert_eq!(
            GmpMessage::parse(&sealed(&[0xF0, 0, 0, 1, 0, 1, 9])),
            Err(BodyError::TrailingBytes(1))
        );
        assert_eq!(
            GmpMessage::parse(&sealed(&[0xF0, 0, 0, 1, 0, 3])),
            Err(BodyError::UnknownKind(3))
        );
        assert_eq!(
            GmpMessage::parse(&sealed(&[0x00, 5, 0, 1, 0, 1])),
            Err(BodyError::BadAddress(AddrError::NotInGroupRange(5)))
        );
        assert_eq!(
            GmpMessage::parse(&sealed(&[0xF0, 0, 0, 0, 0, 2])),
            Err(BodyError::BadAddress(AddrError::Zero))
        );
        assert_eq!(
            GmpMessage::parse(&sealed(&[0xF0, 0, 0xF0, 9, 0, 2])),
            Err(BodyError::BadAddress(AddrError::InGroupRange(0xF009)))
        );
        // The six field bytes alone, as sent before the trailer existed.
        assert_eq!(
            GmpMessage::parse(&[0xF0, 1, 0, 3, 0, 1]),
            Err(BodyError::BadCrc)
        );
    }

    #[test]
    fn one_flipped_bit_is_a_bad_crc() {
        let body = GmpMessage::join(g(0xF001), n(3)).encode();
        for bit in 0..GMP_BODY_LEN * 8 {
            let mut bad = body;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(GmpMessage::parse(&bad), Err(BodyError::BadCrc), "bit {bit}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(group in 0xF000u16.., sender in 1u16..0xF000, join: bool) {
            let m = GmpMessage {
                group: g(group),
                sender: n(sender),
                kind: if join { GmpKind::Join } else { GmpKind::Leave },
            };
            prop_assert_eq!(GmpMessage::parse(&m.encode()), Ok(m));
            let p = m.packet(n(1), n(2));
            let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
            prop_assert_eq!(GmpMessage::parse(parsed.body()), Ok(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = GmpMessage::parse(&bytes);
        }

        #[test]
        fn six_arbitrary_bytes_parse_or_name_the_field(fields in proptest::array::uniform6(any::<u8>())) {
            // Every 6 field bytes with their trailer either parse back to themselves or are
            // refused for a field, not for length or CRC.
            let bytes = trailer::sealed(&fields);
            match GmpMessage::parse(&bytes) {
                Ok(m) => prop_assert_eq!(&m.encode()[..], &bytes[..]),
                Err(e) => prop_assert!(matches!(e, BodyError::UnknownKind(_) | BodyError::BadAddress(_))),
            }
        }
    }
}
