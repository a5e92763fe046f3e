//! Every packet's bytes, read and written in place (zerocopy views, network byte order).
//!
//! A packet is a DNP header ([`dnp`]) followed by a protocol body chosen by the header's flag.
//! The byte tables are in `docs/PROTOCOL.md`; golden vectors in the tests keep the two in step.

pub mod checksum;
pub mod dnp;
pub mod drp;
pub mod gmp;
pub mod rap;
pub mod rmtp;
pub mod trailer;

pub use dnp::{DEFAULT_MTU, DNP_HEADER_LEN, DnpError, DnpHeader, Flag, Packet};

/// Why a protocol body could not be read. Bodies are only parsed after the DNP checksum passed,
/// and every body's CRC-32C trailer ([`trailer`]) is checked before its fields, so `BadCrc` is
/// line noise the checksum missed and the others mean a bug or a hostile peer. All are dropped
/// and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Fewer bytes than the fixed part of the body needs.
    TooShort { needed: usize, got: usize },
    /// A type or kind field with a value we do not define.
    UnknownKind(u16),
    /// A count field that does not match the bytes that follow.
    BadCount,
    /// Bytes left over after the last field.
    TrailingBytes(usize),
    /// A CRC-32C trailer that does not match the body (corruption the DNP checksum missed).
    BadCrc,
    /// An address field outside the range its role allows (a group below 0xF000, a node zero).
    BadAddress(crate::addr::AddrError),
    /// A text field that is not UTF-8.
    BadUtf8,
    /// A numeric field whose value its role forbids (e.g. a zero segment size).
    OutOfRange { field: &'static str, value: u64 },
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooShort { needed, got } => {
                write!(f, "body too short: needed {needed} bytes, got {got}")
            }
            BodyError::UnknownKind(k) => write!(f, "unknown body kind {k}"),
            BodyError::BadCount => write!(f, "count field disagrees with the body length"),
            BodyError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the body"),
            BodyError::BadCrc => write!(f, "CRC-32C trailer does not match the body"),
            BodyError::BadAddress(e) => write!(f, "bad address field: {e}"),
            BodyError::BadUtf8 => write!(f, "text field is not UTF-8"),
            BodyError::OutOfRange { field, value } => write!(f, "{field} {value} is out of range"),
        }
    }
}

impl std::error::Error for BodyError {}
