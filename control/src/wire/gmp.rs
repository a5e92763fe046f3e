//! GMP bodies (seed §4), after the DNP header, all big-endian:
//!
//! | bytes | field |
//! |-------|-------|
//! | 0–1   | group (`0xF000..=0xFFFF`) |
//! | 2–3   | sender: the node whose tree this is (membership is per (group, sender)) |
//! | 4–5   | kind: 1 join, 2 leave |
//!
//! GMP goes hop by hop: the DNP destination is the upstream neighbour the message is for and the
//! source is the node that sent it, so both ends of the header are one link apart.

use super::BodyError;
use super::dnp::{self, Flag};
use crate::addr::{GroupAddr, NodeAddr};
use zerocopy::byteorder::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const KIND_JOIN: u16 = 1;
pub const KIND_LEAVE: u16 = 2;
/// Every GMP body has this size.
pub const GMP_BODY_LEN: usize = 6;

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

    /// Validates the length, then the kind, then the two addresses.
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let (raw, rest) = GmpBody::ref_from_prefix(body).map_err(|_| BodyError::TooShort {
            needed: GMP_BODY_LEN,
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
        out.copy_from_slice(body.as_bytes());
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

    #[test]
    fn golden_vectors() {
        assert_eq!(
            GmpMessage::join(g(0xF001), n(0x0102)).encode(),
            [0xF0, 0x01, 0x01, 0x02, 0x00, 0x01]
        );
        assert_eq!(
            GmpMessage::leave(g(0xFFFF), n(7)).encode(),
            [0xFF, 0xFF, 0x00, 0x07, 0x00, 0x02]
        );
        // Whole packet: join for (0xF001, sender 3) from node 2 to its upstream node 1.
        // Checksum: ones' complement of 0001+0002+0002+0010+F001+0003+0001 = F01A -> 0FE5.
        let p = GmpMessage::join(g(0xF001), n(3)).packet(n(1), n(2));
        assert_eq!(
            p,
            [
                0x0F, 0xE5, 0x00, 0x01, 0x00, 0x02, 0x00, 0x02, 0x00, 0x10, 0xF0, 0x01, 0x00, 0x03,
                0x00, 0x01
            ]
        );
        let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
        assert_eq!(parsed.flag(), Flag::Gmp);
        assert_eq!(
            GmpMessage::parse(parsed.body()).unwrap(),
            GmpMessage::join(g(0xF001), n(3))
        );
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        assert_eq!(
            GmpMessage::parse(&[0xF0, 0, 0, 1, 0]),
            Err(BodyError::TooShort { needed: 6, got: 5 })
        );
        assert_eq!(
            GmpMessage::parse(&[0xF0, 0, 0, 1, 0, 1, 9]),
            Err(BodyError::TrailingBytes(1))
        );
        assert_eq!(
            GmpMessage::parse(&[0xF0, 0, 0, 1, 0, 3]),
            Err(BodyError::UnknownKind(3))
        );
        assert_eq!(
            GmpMessage::parse(&[0x00, 5, 0, 1, 0, 1]),
            Err(BodyError::BadAddress(AddrError::NotInGroupRange(5)))
        );
        assert_eq!(
            GmpMessage::parse(&[0xF0, 0, 0, 0, 0, 2]),
            Err(BodyError::BadAddress(AddrError::Zero))
        );
        assert_eq!(
            GmpMessage::parse(&[0xF0, 0, 0xF0, 9, 0, 2]),
            Err(BodyError::BadAddress(AddrError::InGroupRange(0xF009)))
        );
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
        fn six_arbitrary_bytes_parse_or_name_the_field(bytes in proptest::array::uniform6(any::<u8>())) {
            // Every 6-byte body either parses back to itself or is refused for a field, not length.
            match GmpMessage::parse(&bytes) {
                Ok(m) => prop_assert_eq!(m.encode(), bytes),
                Err(e) => prop_assert!(matches!(e, BodyError::UnknownKind(_) | BodyError::BadAddress(_))),
            }
        }
    }
}
