//! DRP bodies (seed §3.2), after the DNP header, all big-endian:
//!
//! | bytes | field |
//! |-------|-------|
//! | 0–1   | kind: 1 hello, 2 terminate, 3 LSP, 4 LSP-ack |
//!
//! Hello and terminate end there. An LSP goes on with originator (u16), sequence (u32),
//! neighbour count (u16) and that many neighbour addresses (u16 each). An LSP-ack goes on with
//! originator (u16) and sequence (u32). Every body then ends with a CRC-32C trailer
//! ([`trailer`]) over the bytes before it.

use super::trailer::{self, CRC_LEN};
use super::{BodyError, BuildError, largest};
use crate::addr::NodeAddr;
use zerocopy::byteorder::network_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const KIND_HELLO: u16 = 1;
pub const KIND_TERMINATE: u16 = 2;
pub const KIND_LSP: u16 = 3;
pub const KIND_LSP_ACK: u16 = 4;
/// Kind, originator, sequence and count: an LSP's bytes before its neighbour list.
pub const LSP_FIXED_LEN: usize = 10;
/// Kind, originator and sequence: a whole LSP-ack before its trailer.
pub const LSP_ACK_LEN: usize = 8;
/// The largest DRP body of fixed size, trailer included: an LSP listing no neighbour (hello,
/// terminate and LSP-ack are smaller).
pub const LARGEST_FIXED_BODY: usize =
    largest(&[2 + CRC_LEN, LSP_FIXED_LEN + CRC_LEN, LSP_ACK_LEN + CRC_LEN]);

/// Originator and sequence, shared by LSP and LSP-ack.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct LspId {
    originator: U16,
    sequence: U32,
}

/// A parsed DRP body. LSP neighbour lists are borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrpMessage<'a> {
    Hello,
    Terminate,
    Lsp(Lsp<'a>),
    LspAck { originator: u16, sequence: u32 },
}

/// A link-state packet: who originated it, its sequence number, and its neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lsp<'a> {
    pub originator: u16,
    pub sequence: u32,
    neighbours: &'a [U16],
}

impl<'a> Lsp<'a> {
    /// Raw neighbour addresses as carried (not yet checked to be node addresses).
    pub fn neighbours(&self) -> impl ExactSizeIterator<Item = u16> + 'a {
        self.neighbours.iter().map(|n| n.get())
    }
}

impl<'a> DrpMessage<'a> {
    /// Checks the trailer first: nothing of a corrupted body is read.
    pub fn parse(body: &'a [u8]) -> Result<Self, BodyError> {
        let body = trailer::checked(body)?;
        let (kind, rest) = U16::read_from_prefix(body).map_err(|_| BodyError::TooShort {
            needed: 2,
            got: body.len(),
        })?;
        match kind.get() {
            KIND_HELLO => no_trailing(rest).map(|()| DrpMessage::Hello),
            KIND_TERMINATE => no_trailing(rest).map(|()| DrpMessage::Terminate),
            KIND_LSP => {
                let (id, rest) = LspId::ref_from_prefix(rest).map_err(|_| BodyError::TooShort {
                    needed: 10,
                    got: body.len(),
                })?;
                let (count, rest) =
                    U16::read_from_prefix(rest).map_err(|_| BodyError::TooShort {
                        needed: 10,
                        got: body.len(),
                    })?;
                let count = usize::from(count.get());
                let (neighbours, rest) = <[U16]>::ref_from_prefix_with_elems(rest, count)
                    .map_err(|_| BodyError::BadCount)?;
                no_trailing(rest)?;
                Ok(DrpMessage::Lsp(Lsp {
                    originator: id.originator.get(),
                    sequence: id.sequence.get(),
                    neighbours,
                }))
            }
            KIND_LSP_ACK => {
                let (id, rest) = LspId::ref_from_prefix(rest).map_err(|_| BodyError::TooShort {
                    needed: 8,
                    got: body.len(),
                })?;
                no_trailing(rest)?;
                Ok(DrpMessage::LspAck {
                    originator: id.originator.get(),
                    sequence: id.sequence.get(),
                })
            }
            other => Err(BodyError::UnknownKind(other)),
        }
    }
}

fn no_trailing(rest: &[u8]) -> Result<(), BodyError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(BodyError::TrailingBytes(rest.len()))
    }
}

pub fn hello() -> Vec<u8> {
    kind_only(KIND_HELLO)
}

pub fn terminate() -> Vec<u8> {
    kind_only(KIND_TERMINATE)
}

fn kind_only(kind: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + CRC_LEN);
    body.extend_from_slice(&kind.to_be_bytes());
    trailer::push(&mut body);
    body
}

/// An LSP body. The caller keeps `neighbours` within [`max_lsp_neighbours`] so that it fits its
/// MTU; a list longer than the count field can say is refused.
pub fn lsp(
    originator: NodeAddr,
    sequence: u32,
    neighbours: &[NodeAddr],
) -> Result<Vec<u8>, BuildError> {
    let count = u16::try_from(neighbours.len()).map_err(|_| BuildError::TooMany {
        count: neighbours.len(),
        max: usize::from(u16::MAX),
    })?;
    let mut body = Vec::with_capacity(LSP_FIXED_LEN + 2 * neighbours.len() + CRC_LEN);
    body.extend_from_slice(&KIND_LSP.to_be_bytes());
    body.extend_from_slice(
        LspId {
            originator: originator.get().into(),
            sequence: sequence.into(),
        }
        .as_bytes(),
    );
    body.extend_from_slice(&count.to_be_bytes());
    for n in neighbours {
        body.extend_from_slice(&n.get().to_be_bytes());
    }
    trailer::push(&mut body);
    Ok(body)
}

pub fn lsp_ack(originator: NodeAddr, sequence: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(LSP_ACK_LEN + CRC_LEN);
    body.extend_from_slice(&KIND_LSP_ACK.to_be_bytes());
    body.extend_from_slice(
        LspId {
            originator: originator.get().into(),
            sequence: sequence.into(),
        }
        .as_bytes(),
    );
    trailer::push(&mut body);
    body
}

/// The most neighbours one LSP can list under `mtu`: `(mtu - 10 - 10 - 4) / 2`, 500 at the
/// default 1024 (DNP header, LSP fields before the list, CRC trailer).
pub const fn max_lsp_neighbours(mtu: usize) -> usize {
    mtu.saturating_sub(super::DNP_HEADER_LEN + LSP_FIXED_LEN + CRC_LEN) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn golden_vectors() {
        // Computed by an independent reference (bitwise CRC-32C in Python), as in PROTOCOL.md.
        assert_eq!(hex(&hello()), "0001030af4d1");
        assert_eq!(hex(&terminate()), "0002105a0725");
        assert_eq!(
            hex(&lsp(n(0x0102), 0x0A0B0C0D, &[n(3), n(0x0405)]).unwrap()),
            "000301020a0b0c0d000200030405\
             48ba5e00"
        );
        assert_eq!(hex(&lsp_ack(n(7), 9)), "0004000700000009f90ca2d3");
        assert_eq!(max_lsp_neighbours(crate::wire::DEFAULT_MTU), 500);
        let too_many = vec![n(1); usize::from(u16::MAX) + 1];
        assert!(matches!(
            lsp(n(2), 1, &too_many),
            Err(BuildError::TooMany { .. })
        ));
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        use trailer::sealed;
        assert_eq!(
            DrpMessage::parse(&[]),
            Err(BodyError::TooShort { needed: 4, got: 0 })
        );
        assert_eq!(
            DrpMessage::parse(&sealed(&[0])),
            Err(BodyError::TooShort { needed: 2, got: 1 })
        );
        assert_eq!(
            DrpMessage::parse(&sealed(&[0, 9])),
            Err(BodyError::UnknownKind(9))
        );
        assert_eq!(
            DrpMessage::parse(&sealed(&[0, 1, 0])),
            Err(BodyError::TrailingBytes(1))
        );
        // LSP claiming 3 neighbours but carrying one.
        assert_eq!(
            DrpMessage::parse(&sealed(&[0, 3, 0, 1, 0, 0, 0, 1, 0, 3, 0, 2])),
            Err(BodyError::BadCount)
        );
        // A hello without its trailer, as sent before the trailer existed.
        assert_eq!(
            DrpMessage::parse(&[0, 1]),
            Err(BodyError::TooShort { needed: 4, got: 2 })
        );
    }

    #[test]
    fn one_flipped_bit_is_a_bad_crc() {
        let bodies = [
            hello(),
            terminate(),
            lsp(n(9), 4, &[n(1), n(2), n(3)]).unwrap(),
            lsp_ack(n(9), 4),
        ];
        for body in bodies {
            assert!(DrpMessage::parse(&body).is_ok());
            for bit in 0..body.len() * 8 {
                let mut bad = body.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(DrpMessage::parse(&bad), Err(BodyError::BadCrc), "bit {bit}");
            }
        }
    }

    proptest! {
        #[test]
        fn lsp_round_trip(orig in 1u16..0xF000, seq: u32, ns in proptest::collection::vec(1u16..0xF000, 0..500)) {
            let nodes: Vec<NodeAddr> = ns.iter().map(|&v| n(v)).collect();
            let body = lsp(n(orig), seq, &nodes).unwrap();
            match DrpMessage::parse(&body).unwrap() {
                DrpMessage::Lsp(l) => {
                    prop_assert_eq!(l.originator, orig);
                    prop_assert_eq!(l.sequence, seq);
                    prop_assert_eq!(l.neighbours().collect::<Vec<_>>(), ns);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn ack_round_trip(orig in 1u16..0xF000, seq: u32) {
            let body = lsp_ack(n(orig), seq);
            prop_assert_eq!(DrpMessage::parse(&body).unwrap(),
                            DrpMessage::LspAck { originator: orig, sequence: seq });
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = DrpMessage::parse(&bytes);
        }
    }
}
