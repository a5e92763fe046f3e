//! DRP bodies (seed §3.2), after the DNP header, all big-endian:
//!
//! | bytes | field |
//! |-------|-------|
//! | 0–1   | kind: 1 hello, 2 terminate, 3 LSP, 4 LSP-ack |
//!
//! Hello and terminate end there. An LSP goes on with originator (u16), sequence (u32),
//! neighbour count (u16) and that many neighbour addresses (u16 each). An LSP-ack goes on with
//! originator (u16) and sequence (u32).

use super::BodyError;
use crate::addr::NodeAddr;
use zerocopy::byteorder::network_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const KIND_HELLO: u16 = 1;
pub const KIND_TERMINATE: u16 = 2;
pub const KIND_LSP: u16 = 3;
pub const KIND_LSP_ACK: u16 = 4;

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
    pub fn parse(body: &'a [u8]) -> Result<Self, BodyError> {
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
    KIND_HELLO.to_be_bytes().to_vec()
}

pub fn terminate() -> Vec<u8> {
    KIND_TERMINATE.to_be_bytes().to_vec()
}

/// An LSP body. The caller keeps `neighbours` within what fits the MTU
/// (`(mtu - 10 - 10) / 2` addresses: 502 at the default 1024).
pub fn lsp(originator: NodeAddr, sequence: u32, neighbours: &[NodeAddr]) -> Vec<u8> {
    let count = u16::try_from(neighbours.len()).expect("neighbour count fits u16");
    let mut body = Vec::with_capacity(10 + 2 * neighbours.len());
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
    body
}

pub fn lsp_ack(originator: NodeAddr, sequence: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(8);
    body.extend_from_slice(&KIND_LSP_ACK.to_be_bytes());
    body.extend_from_slice(
        LspId {
            originator: originator.get().into(),
            sequence: sequence.into(),
        }
        .as_bytes(),
    );
    body
}

/// The most neighbours one LSP can list under `mtu`.
pub const fn max_lsp_neighbours(mtu: usize) -> usize {
    (mtu - super::DNP_HEADER_LEN - 10) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    #[test]
    fn golden_vectors() {
        assert_eq!(hello(), [0x00, 0x01]);
        assert_eq!(terminate(), [0x00, 0x02]);
        assert_eq!(
            lsp(n(0x0102), 0x0A0B0C0D, &[n(3), n(0x0405)]),
            [
                0x00, 0x03, 0x01, 0x02, 0x0A, 0x0B, 0x0C, 0x0D, 0x00, 0x02, 0x00, 0x03, 0x04, 0x05
            ]
        );
        assert_eq!(lsp_ack(n(7), 9), [0x00, 0x04, 0x00, 0x07, 0, 0, 0, 9]);
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        assert_eq!(
            DrpMessage::parse(&[]),
            Err(BodyError::TooShort { needed: 2, got: 0 })
        );
        assert_eq!(DrpMessage::parse(&[0, 9]), Err(BodyError::UnknownKind(9)));
        assert_eq!(
            DrpMessage::parse(&[0, 1, 0]),
            Err(BodyError::TrailingBytes(1))
        );
        // LSP claiming 3 neighbours but carrying one.
        assert_eq!(
            DrpMessage::parse(&[0, 3, 0, 1, 0, 0, 0, 1, 0, 3, 0, 2]),
            Err(BodyError::BadCount)
        );
    }

    proptest! {
        #[test]
        fn lsp_round_trip(orig in 1u16..0xF000, seq: u32, ns in proptest::collection::vec(1u16..0xF000, 0..500)) {
            let nodes: Vec<NodeAddr> = ns.iter().map(|&v| n(v)).collect();
            let body = lsp(n(orig), seq, &nodes);
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
