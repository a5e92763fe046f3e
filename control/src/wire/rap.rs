//! RAP bodies (seed §5), after the DNP header, all big-endian:
//!
//! | bytes | field |
//! |-------|-------|
//! | 0–1   | destination service id |
//! | 2–3   | source service id |
//! | 4–5   | kind: 1 request, 2 provide, 3 ack |
//! | 6–7   | rap_id: the session the server assigned (0 in a request) |
//!
//! An ack ends there; a request may go on with zero bytes of padding, which the client adds so
//! the request is as large as any answer (a server never answers with more bytes than it was
//! sent: no amplification toward a spoofed source). A provide goes on with a count (u16) and
//! that many service entries, each what a receiver needs to join a transfer:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0–1    | group (`0xF000..=0xFFFF`) |
//! | 2–3    | sender node |
//! | 4–11   | size in bytes (u64) |
//! | 12–43  | content hash (BLAKE3 of the file, 32 bytes) |
//! | 44–45  | segment size (non-zero) |
//! | 46     | name length L |
//! | 47–    | name, L bytes of UTF-8 |
//!
//! Every body, whatever its kind, then ends with a CRC-32C trailer ([`trailer`]) over the bytes
//! before it.
//!
//! RAP is end to end: the DNP destination is the server (or client) node and the source the
//! node that sent it; nodes in between route it by `next_hop`. A provide must fit one packet:
//! the server refuses, when it is configured, a list that would not fit (see [`ListError`]).

use super::dnp::{self, Flag};
use super::trailer::{self, CRC_LEN};
use super::{BodyError, DNP_HEADER_LEN};
use crate::addr::{GroupAddr, NodeAddr};
use zerocopy::byteorder::network_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const KIND_REQUEST: u16 = 1;
pub const KIND_PROVIDE: u16 = 2;
pub const KIND_ACK: u16 = 3;
/// The fixed part of every RAP body.
pub const RAP_HEADER_LEN: usize = 8;
/// The fixed part of one service entry, before the name bytes.
pub const ENTRY_FIXED_LEN: usize = 47;
/// The longest name an entry can carry (its length is one byte).
pub const MAX_NAME_LEN: usize = 255;
/// The largest RAP body of fixed size, trailer included: a provide with no entries (its count
/// and nothing else; a request and an ack are two bytes shorter).
pub const LARGEST_FIXED_BODY: usize = RAP_HEADER_LEN + 2 + CRC_LEN;

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RapHeader {
    dst_sid: U16,
    src_sid: U16,
    kind: U16,
    rap_id: U16,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct EntryFixed {
    group: U16,
    sender: U16,
    size: U64,
    hash: [u8; 32],
    segment_size: U16,
    name_len: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum RapKind {
    Request = KIND_REQUEST,
    Provide = KIND_PROVIDE,
    Ack = KIND_ACK,
}

/// A parsed RAP body; a provide's service list is borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RapMessage<'a> {
    pub dst_sid: u16,
    pub src_sid: u16,
    pub rap_id: u16,
    pub body: RapBody<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RapBody<'a> {
    /// `padding` zero bytes followed the header.
    Request {
        padding: usize,
    },
    Provide(ServiceList<'a>),
    Ack,
}

impl RapBody<'_> {
    pub fn kind(&self) -> RapKind {
        match self {
            RapBody::Request { .. } => RapKind::Request,
            RapBody::Provide(_) => RapKind::Provide,
            RapBody::Ack => RapKind::Ack,
        }
    }
}

/// A service as a server offers it (owned; what the server is configured with and what the
/// client hands to the layer above).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceEntry {
    pub group: GroupAddr,
    pub sender: NodeAddr,
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub hash: [u8; 32],
    /// Bytes of data per RMTP segment (the last one may be shorter).
    pub segment_size: u16,
    /// At most [`MAX_NAME_LEN`] bytes of UTF-8.
    pub name: String,
}

impl ServiceEntry {
    /// Bytes this entry takes in a provide.
    pub fn encoded_len(&self) -> usize {
        ENTRY_FIXED_LEN + self.name.len()
    }
}

/// One entry of a received list, borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceRef<'a> {
    pub group: GroupAddr,
    pub sender: NodeAddr,
    pub size: u64,
    pub hash: &'a [u8; 32],
    pub segment_size: u16,
    pub name: &'a str,
}

impl ServiceRef<'_> {
    pub fn to_entry(&self) -> ServiceEntry {
        ServiceEntry {
            group: self.group,
            sender: self.sender,
            size: self.size,
            hash: *self.hash,
            segment_size: self.segment_size,
            name: self.name.to_owned(),
        }
    }
}

/// A validated service list: `count` entries, every one of which parsed when the list did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceList<'a> {
    count: u16,
    bytes: &'a [u8],
}

impl<'a> ServiceList<'a> {
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = ServiceRef<'a>> + 'a {
        let mut rest = self.bytes;
        // Parsing cannot fail here (the list was validated); stopping on error keeps it total.
        std::iter::from_fn(move || {
            let (entry, next) = parse_entry(rest).ok()?;
            rest = next;
            Some(entry)
        })
        .take(self.len())
    }

    pub fn to_entries(&self) -> Vec<ServiceEntry> {
        self.iter().map(|e| e.to_entry()).collect()
    }

    fn parse(bytes: &'a [u8]) -> Result<Self, BodyError> {
        let (count, entries) = U16::read_from_prefix(bytes).map_err(|_| BodyError::TooShort {
            needed: RAP_HEADER_LEN + 2,
            got: RAP_HEADER_LEN.saturating_add(bytes.len()),
        })?;
        let mut rest = entries;
        for _ in 0..count.get() {
            rest = parse_entry(rest)?.1;
        }
        if !rest.is_empty() {
            return Err(BodyError::TrailingBytes(rest.len()));
        }
        Ok(ServiceList {
            count: count.get(),
            bytes: entries,
        })
    }
}

/// One entry off the front of `bytes`. Running out of bytes means the count lied.
fn parse_entry(bytes: &[u8]) -> Result<(ServiceRef<'_>, &[u8]), BodyError> {
    let (fixed, rest) = EntryFixed::ref_from_prefix(bytes).map_err(|_| BodyError::BadCount)?;
    let name_len = usize::from(fixed.name_len);
    let (name, rest) = rest.split_at_checked(name_len).ok_or(BodyError::BadCount)?;
    let group = GroupAddr::try_new(fixed.group.get()).map_err(BodyError::BadAddress)?;
    let sender = NodeAddr::try_new(fixed.sender.get()).map_err(BodyError::BadAddress)?;
    let segment_size = fixed.segment_size.get();
    if segment_size == 0 {
        return Err(BodyError::OutOfRange {
            field: "segment size",
            value: 0,
        });
    }
    let name = std::str::from_utf8(name).map_err(|_| BodyError::BadUtf8)?;
    Ok((
        ServiceRef {
            group,
            sender,
            size: fixed.size.get(),
            hash: &fixed.hash,
            segment_size,
            name,
        },
        rest,
    ))
}

impl<'a> RapMessage<'a> {
    /// Checks the trailer first: nothing of a corrupted body is read.
    pub fn parse(body: &'a [u8]) -> Result<Self, BodyError> {
        let body = trailer::checked(body)?;
        let (header, rest) = RapHeader::ref_from_prefix(body).map_err(|_| BodyError::TooShort {
            needed: RAP_HEADER_LEN,
            got: body.len(),
        })?;
        let parsed = match header.kind.get() {
            KIND_REQUEST if rest.iter().any(|&b| b != 0) => {
                return Err(BodyError::TrailingBytes(rest.len()));
            }
            KIND_ACK if !rest.is_empty() => return Err(BodyError::TrailingBytes(rest.len())),
            KIND_REQUEST => RapBody::Request {
                padding: rest.len(),
            },
            KIND_ACK => RapBody::Ack,
            KIND_PROVIDE => RapBody::Provide(ServiceList::parse(rest)?),
            other => return Err(BodyError::UnknownKind(other)),
        };
        Ok(RapMessage {
            dst_sid: header.dst_sid.get(),
            src_sid: header.src_sid.get(),
            rap_id: header.rap_id.get(),
            body: parsed,
        })
    }
}

/// Why a service list cannot be offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListError {
    /// Entry `index` has a name longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong { index: usize, len: usize },
    /// Entry `index` has segment size zero.
    ZeroSegmentSize { index: usize },
    /// The whole provide packet would take `needed` bytes, more than `mtu`; the first `fits`
    /// entries would fit.
    TooLarge {
        needed: usize,
        mtu: usize,
        fits: usize,
    },
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListError::NameTooLong { index, len } => write!(
                f,
                "service {index}: name of {len} bytes is longer than {MAX_NAME_LEN}"
            ),
            ListError::ZeroSegmentSize { index } => {
                write!(f, "service {index}: segment size is zero")
            }
            ListError::TooLarge { needed, mtu, fits } => write!(
                f,
                "service list needs a {needed}-byte packet, more than the MTU {mtu} \
                 (only the first {fits} services would fit)"
            ),
        }
    }
}

impl std::error::Error for ListError {}

/// Bytes of a provide packet besides its entries: DNP header, RAP header, count, trailer.
pub const PROVIDE_OVERHEAD: usize = DNP_HEADER_LEN + RAP_HEADER_LEN + 2 + CRC_LEN;

/// The size of the whole provide packet (DNP header and trailer included) carrying `entries`.
pub fn provide_packet_len(entries: &[ServiceEntry]) -> usize {
    PROVIDE_OVERHEAD + entries.iter().map(ServiceEntry::encoded_len).sum::<usize>()
}

/// Checks that `entries` can be sent in one provide under `mtu` (capped at the 65535 bytes a
/// DNP length field can say).
pub fn check_list(entries: &[ServiceEntry], mtu: usize) -> Result<(), ListError> {
    for (index, e) in entries.iter().enumerate() {
        if e.name.len() > MAX_NAME_LEN {
            return Err(ListError::NameTooLong {
                index,
                len: e.name.len(),
            });
        }
        if e.segment_size == 0 {
            return Err(ListError::ZeroSegmentSize { index });
        }
    }
    let mtu = mtu.min(usize::from(u16::MAX));
    let needed = provide_packet_len(entries);
    if needed > mtu {
        let mut room = mtu.saturating_sub(PROVIDE_OVERHEAD);
        let fits = entries
            .iter()
            .take_while(|e| match room.checked_sub(e.encoded_len()) {
                Some(left) => {
                    room = left;
                    true
                }
                None => false,
            })
            .count();
        return Err(ListError::TooLarge { needed, mtu, fits });
    }
    Ok(())
}

fn header(dst_sid: u16, src_sid: u16, kind: RapKind, rap_id: u16) -> RapHeader {
    RapHeader {
        dst_sid: dst_sid.into(),
        src_sid: src_sid.into(),
        kind: (kind as u16).into(),
        rap_id: rap_id.into(),
    }
}

/// A request body (rap_id 0: the server assigns one), without padding.
pub fn request(dst_sid: u16, src_sid: u16) -> Vec<u8> {
    padded_request(dst_sid, src_sid, 0)
}

/// Bytes of a request packet (DNP header and trailer included) without padding.
pub const REQUEST_PACKET_LEN: usize = DNP_HEADER_LEN + RAP_HEADER_LEN + CRC_LEN;

/// A request body padded with zeros so that its whole packet takes `packet_len` bytes (at
/// least [`REQUEST_PACKET_LEN`], at most the 65535 a DNP length field can say): a server
/// answers with at most as many bytes as a request brings.
pub fn padded_request(dst_sid: u16, src_sid: u16, packet_len: usize) -> Vec<u8> {
    let padding = packet_len
        .min(usize::from(u16::MAX))
        .saturating_sub(REQUEST_PACKET_LEN);
    let mut body = Vec::with_capacity(RAP_HEADER_LEN + padding + CRC_LEN);
    body.extend_from_slice(header(dst_sid, src_sid, RapKind::Request, 0).as_bytes());
    body.resize(RAP_HEADER_LEN + padding, 0);
    trailer::push(&mut body);
    body
}

/// The whole packet a request with `padding` bytes of padding took (saturating: the padding
/// was counted off a received body, so it cannot really overflow).
pub fn request_packet_len(padding: usize) -> usize {
    REQUEST_PACKET_LEN.saturating_add(padding)
}

pub fn ack(dst_sid: u16, src_sid: u16, rap_id: u16) -> Vec<u8> {
    header_only(header(dst_sid, src_sid, RapKind::Ack, rap_id))
}

fn header_only(h: RapHeader) -> Vec<u8> {
    let mut body = Vec::with_capacity(RAP_HEADER_LEN + CRC_LEN);
    body.extend_from_slice(h.as_bytes());
    trailer::push(&mut body);
    body
}

/// A provide body, after [`check_list`] against `mtu`.
pub fn provide(
    dst_sid: u16,
    src_sid: u16,
    rap_id: u16,
    entries: &[ServiceEntry],
    mtu: usize,
) -> Result<Vec<u8>, ListError> {
    check_list(entries, mtu)?;
    let mut body = Vec::with_capacity(provide_packet_len(entries) - DNP_HEADER_LEN);
    body.extend_from_slice(header(dst_sid, src_sid, RapKind::Provide, rap_id).as_bytes());
    // Checked above: the packet fits 65535 bytes and every entry takes at least 47.
    let count = u16::try_from(entries.len()).unwrap_or(u16::MAX);
    body.extend_from_slice(&count.to_be_bytes());
    for e in entries {
        let fixed = EntryFixed {
            group: e.group.get().into(),
            sender: e.sender.get().into(),
            size: e.size.into(),
            hash: e.hash,
            segment_size: e.segment_size.into(),
            name_len: u8::try_from(e.name.len()).unwrap_or(u8::MAX),
        };
        body.extend_from_slice(fixed.as_bytes());
        body.extend_from_slice(e.name.as_bytes());
    }
    trailer::push(&mut body);
    Ok(body)
}

/// A sealed RAP packet from node `src` to node `dst`.
pub fn packet(dst: NodeAddr, src: NodeAddr, body: &[u8]) -> Vec<u8> {
    dnp::frame(dst.into(), src.into(), Flag::Rap, body)
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

    fn entry(name: &str) -> ServiceEntry {
        ServiceEntry {
            group: g(0xF002),
            sender: n(0x0304),
            size: 0x0102_0304_0506_0708,
            hash: std::array::from_fn(|i| i as u8),
            segment_size: 1000,
            name: name.to_owned(),
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn golden_vectors() {
        // Computed by an independent reference (RFC 1071 and a bitwise CRC-32C in Python).
        assert_eq!(hex(&request(0x0010, 0x0020)), "0010002000010000ae9a6f05");
        assert_eq!(
            hex(&ack(0x0020, 0x0010, 0x0A0B)),
            "0020001000030a0bf7a7c8fa"
        );
        let body = provide(0x0020, 0x0010, 7, &[entry("a.txt")], DEFAULT_MTU).unwrap();
        assert_eq!(
            hex(&body),
            concat!(
                "00200010000200070001",
                "f00203040102030405060708",
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                "03e805612e747874",
                "ded49274"
            )
        );
        assert_eq!(
            body.len(),
            RAP_HEADER_LEN + 2 + ENTRY_FIXED_LEN + 5 + CRC_LEN
        );
        assert_eq!(
            provide_packet_len(&[entry("a.txt")]),
            DNP_HEADER_LEN + body.len()
        );
        assert_eq!(
            hex(&provide(1, 2, 3, &[], DEFAULT_MTU).unwrap()),
            "000100020002000300005de96098"
        );
        // Whole request packet from node 5 to server node 9.
        let p = packet(n(9), n(5), &request(0x0010, 0x0020));
        assert_eq!(hex(&p), "e20700090005000300160010002000010000ae9a6f05");
        let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
        assert_eq!(parsed.flag(), Flag::Rap);
        let m = RapMessage::parse(parsed.body()).unwrap();
        assert_eq!((m.dst_sid, m.src_sid, m.rap_id), (0x10, 0x20, 0));
        assert_eq!(m.body, RapBody::Request { padding: 0 });
    }

    #[test]
    fn a_padded_request_fills_the_packet_length_asked_for() {
        let body = padded_request(0x0010, 0x0020, DEFAULT_MTU);
        let p = packet(n(9), n(5), &body);
        assert_eq!(p.len(), DEFAULT_MTU);
        let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
        let m = RapMessage::parse(parsed.body()).unwrap();
        let padding = DEFAULT_MTU - REQUEST_PACKET_LEN;
        assert_eq!(m.body, RapBody::Request { padding });
        assert_eq!(request_packet_len(padding), DEFAULT_MTU);
        // Shorter than an unpadded request, or longer than DNP allows: the nearest it can be.
        assert_eq!(padded_request(1, 2, 0), request(1, 2));
        let most = packet(n(9), n(5), &padded_request(1, 2, usize::MAX));
        assert_eq!(most.len(), usize::from(u16::MAX));
    }

    #[test]
    fn one_flipped_bit_is_a_bad_crc() {
        let bodies = [
            request(1, 2),
            ack(2, 1, 9),
            provide(2, 1, 9, &[entry("x.bin")], DEFAULT_MTU).unwrap(),
        ];
        for body in bodies {
            assert!(RapMessage::parse(&body).is_ok());
            for bit in 0..body.len() * 8 {
                let mut bad = body.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(RapMessage::parse(&bad), Err(BodyError::BadCrc), "bit {bit}");
            }
        }
    }

    #[test]
    fn provide_parses_back() {
        let list = vec![entry("a.txt"), entry(""), entry("ünïcødé")];
        let body = provide(3, 4, 5, &list, DEFAULT_MTU).unwrap();
        let m = RapMessage::parse(&body).unwrap();
        match m.body {
            RapBody::Provide(l) => {
                assert_eq!(l.len(), 3);
                assert_eq!(l.to_entries(), list);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        use trailer::sealed;
        let good = provide(3, 4, 5, &[entry("ab")], DEFAULT_MTU).unwrap();
        // The fields without the trailer, re-sealed after each change.
        let ok = &good[..good.len() - CRC_LEN];
        assert_eq!(
            RapMessage::parse(&good[..3]),
            Err(BodyError::TooShort { needed: 4, got: 3 })
        );
        assert_eq!(
            RapMessage::parse(&sealed(&ok[..7])),
            Err(BodyError::TooShort { needed: 8, got: 7 })
        );
        assert_eq!(
            RapMessage::parse(&sealed(&[0, 1, 0, 2, 0, 9, 0, 0])),
            Err(BodyError::UnknownKind(9))
        );
        // A request may carry zero padding, nothing else.
        assert_eq!(
            RapMessage::parse(&sealed(&[0, 1, 0, 2, 0, 1, 0, 0, 0, 0])).map(|m| m.body),
            Ok(RapBody::Request { padding: 2 })
        );
        assert_eq!(
            RapMessage::parse(&sealed(&[0, 1, 0, 2, 0, 1, 0, 0, 0, 1])),
            Err(BodyError::TrailingBytes(2))
        );
        assert_eq!(
            RapMessage::parse(&sealed(&[0, 1, 0, 2, 0, 3, 0, 0, 0])),
            Err(BodyError::TrailingBytes(1))
        );
        assert_eq!(
            RapMessage::parse(&sealed(&ok[..9])),
            Err(BodyError::TooShort { needed: 10, got: 9 })
        );
        // Count says one more entry than there is; one entry cut short.
        let mut more = ok.to_vec();
        more[9] = 2;
        assert_eq!(RapMessage::parse(&sealed(&more)), Err(BodyError::BadCount));
        assert_eq!(
            RapMessage::parse(&sealed(&ok[..ok.len() - 1])),
            Err(BodyError::BadCount)
        );
        let mut extra = ok.to_vec();
        extra.push(0);
        assert_eq!(
            RapMessage::parse(&sealed(&extra)),
            Err(BodyError::TrailingBytes(1))
        );
        // Field checks: group, sender, segment size, UTF-8.
        let at = RAP_HEADER_LEN + 2;
        let mut bad = ok.to_vec();
        bad[at] = 0x10;
        assert_eq!(
            RapMessage::parse(&sealed(&bad)),
            Err(BodyError::BadAddress(AddrError::NotInGroupRange(0x1002)))
        );
        let mut bad = ok.to_vec();
        bad[at + 2..at + 4].copy_from_slice(&[0, 0]);
        assert_eq!(
            RapMessage::parse(&sealed(&bad)),
            Err(BodyError::BadAddress(AddrError::Zero))
        );
        let mut bad = ok.to_vec();
        bad[at + 44..at + 46].copy_from_slice(&[0, 0]);
        assert_eq!(
            RapMessage::parse(&sealed(&bad)),
            Err(BodyError::OutOfRange {
                field: "segment size",
                value: 0
            })
        );
        let mut bad = ok.to_vec();
        bad[at + ENTRY_FIXED_LEN] = 0xFF;
        assert_eq!(RapMessage::parse(&sealed(&bad)), Err(BodyError::BadUtf8));
        // A request without its trailer, as sent before the trailer existed.
        assert_eq!(
            RapMessage::parse(&[0, 1, 0, 2, 0, 1, 0, 0]),
            Err(BodyError::BadCrc)
        );
    }

    #[test]
    fn lists_that_do_not_fit_are_refused_without_panic() {
        let long = "x".repeat(256);
        assert_eq!(
            provide(1, 2, 3, &[entry("a"), entry(&long)], DEFAULT_MTU),
            Err(ListError::NameTooLong { index: 1, len: 256 })
        );
        let mut zero = entry("z");
        zero.segment_size = 0;
        assert_eq!(
            check_list(&[zero], DEFAULT_MTU),
            Err(ListError::ZeroSegmentSize { index: 0 })
        );
        // Each entry with a 200-byte name takes 247 bytes; 24 bytes of overhead (headers,
        // count, trailer) + 4 * 247 = 1012.
        let name = "n".repeat(200);
        let list: Vec<_> = (0..5).map(|_| entry(&name)).collect();
        assert!(check_list(&list[..4], DEFAULT_MTU).is_ok());
        assert_eq!(
            check_list(&list, DEFAULT_MTU),
            Err(ListError::TooLarge {
                needed: 24 + 5 * 247,
                mtu: DEFAULT_MTU,
                fits: 4
            })
        );
        // An MTU beyond what the length field can say is capped, not trusted.
        let many: Vec<_> = (0..300).map(|_| entry(&name)).collect();
        assert!(matches!(
            check_list(&many, usize::MAX),
            Err(ListError::TooLarge { mtu: 65535, .. })
        ));
        assert!(matches!(
            check_list(&[entry("a")], 5),
            Err(ListError::TooLarge { fits: 0, .. })
        ));
        // The trailer counts: 20 entries with 3-byte names fill 1024 exactly, 1023 fits 19.
        let small: Vec<_> = (0..20).map(|_| entry("abc")).collect();
        assert_eq!(provide_packet_len(&small), 1024);
        assert!(check_list(&small, 1024).is_ok());
        assert_eq!(
            check_list(&small, 1023),
            Err(ListError::TooLarge {
                needed: 1024,
                mtu: 1023,
                fits: 19
            })
        );
    }

    fn arb_entry() -> impl Strategy<Value = ServiceEntry> {
        (
            0xF000u16..,
            1u16..0xF000,
            any::<u64>(),
            any::<[u8; 32]>(),
            1u16..,
            "\\PC{0,40}",
        )
            .prop_map(
                |(group, sender, size, hash, segment_size, name)| ServiceEntry {
                    group: g(group),
                    sender: n(sender),
                    size,
                    hash,
                    segment_size,
                    name,
                },
            )
    }

    proptest! {
        #[test]
        fn provide_round_trip(dst: u16, src: u16, id: u16,
                              list in proptest::collection::vec(arb_entry(), 0..12)) {
            match provide(dst, src, id, &list, DEFAULT_MTU) {
                Ok(body) => {
                    let p = packet(n(1), n(2), &body);
                    let parsed = Packet::parse(&p, DEFAULT_MTU).unwrap();
                    let m = RapMessage::parse(parsed.body()).unwrap();
                    prop_assert_eq!((m.dst_sid, m.src_sid, m.rap_id), (dst, src, id));
                    match m.body {
                        RapBody::Provide(l) => prop_assert_eq!(l.to_entries(), list),
                        other => prop_assert!(false, "{:?}", other),
                    }
                }
                Err(ListError::TooLarge { fits, .. }) => {
                    prop_assert!(provide_packet_len(&list) > DEFAULT_MTU);
                    prop_assert!(provide(dst, src, id, &list[..fits], DEFAULT_MTU).is_ok());
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }

        #[test]
        fn request_and_ack_round_trip(dst: u16, src: u16, id: u16) {
            let req = request(dst, src);
            let m = RapMessage::parse(&req).unwrap();
            prop_assert_eq!(m, RapMessage { dst_sid: dst, src_sid: src, rap_id: 0, body: RapBody::Request { padding: 0 } });
            let a = ack(dst, src, id);
            let m = RapMessage::parse(&a).unwrap();
            prop_assert_eq!(m, RapMessage { dst_sid: dst, src_sid: src, rap_id: id, body: RapBody::Ack });
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            if let Ok(RapMessage { body: RapBody::Provide(l), .. }) = RapMessage::parse(&bytes) {
                prop_assert_eq!(l.iter().count(), l.len());
            }
        }

        #[test]
        fn provide_headers_with_random_tails_never_panic(
            count: u16, tail in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut body = vec![0, 1, 0, 2, 0, 2, 0, 3];
            body.extend_from_slice(&count.to_be_bytes());
            body.extend_from_slice(&tail);
            // Sealed, so that the list parser (not the trailer) meets the random bytes.
            let body = trailer::sealed(&body);
            if let Ok(RapMessage { body: RapBody::Provide(l), .. }) = RapMessage::parse(&body) {
                prop_assert_eq!(l.iter().count(), l.len());
            }
        }
    }
}
