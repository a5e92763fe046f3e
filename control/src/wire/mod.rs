//! Every packet's bytes, read and written in place (zerocopy views, network byte order).
//!
//! A packet is a DNP header ([`dnp`]) followed by a protocol body chosen by the header's flag.
//! The byte tables are in `docs/PROTOCOL.md`; golden vectors in the tests keep the two in step.

pub mod checksum;
pub mod crc32c;
pub mod dnp;
pub mod drp;
pub mod gmp;
pub mod rap;
pub mod rmtp;
pub mod steer;
pub mod trailer;

pub use dnp::{DEFAULT_MTU, DNP_HEADER_LEN, DnpError, DnpHeader, Flag, Packet};

/// The largest packet of fixed size any protocol builds, DNP header and trailer included: the
/// SPM (81 bytes). Packets that grow (LSP neighbours, NACK/NCF ranges, RAP entries, DATA
/// payload) are cut to the MTU by their builders; these cannot be, so the MTU must hold them all
/// and the topology file refuses a smaller one.
pub const LARGEST_FIXED_PACKET: usize = DNP_HEADER_LEN
    + largest(&[
        drp::LARGEST_FIXED_BODY,
        gmp::GMP_BODY_LEN,
        rap::LARGEST_FIXED_BODY,
        rmtp::LARGEST_FIXED_BODY,
    ]);

/// The largest of `lens` (a `const fn`, so that the limits above stay derived from the formats).
pub(crate) const fn largest(lens: &[usize]) -> usize {
    let mut max = 0;
    let mut i = 0;
    while i < lens.len() {
        if lens[i] > max {
            max = lens[i];
        }
        i += 1;
    }
    max
}

/// Why a builder could not write a packet into the caller's buffer. Builders check before they
/// write: an error leaves the buffer's meaning unchanged and never panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The buffer (or the packet slice given to a sealer) is shorter than the packet.
    BufferTooSmall { needed: usize, got: usize },
    /// More items than the packet's 16-bit count (or length) field can say.
    TooMany { count: usize, max: usize },
    /// A NACK or NCF must name at least one range.
    NoRanges,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::BufferTooSmall { needed, got } => {
                write!(f, "packet needs {needed} bytes, the buffer has {got}")
            }
            BuildError::TooMany { count, max } => write!(f, "{count} items, at most {max} fit"),
            BuildError::NoRanges => write!(f, "a NACK or NCF names at least one range"),
        }
    }
}

impl std::error::Error for BuildError {}

/// `Ok(())` if `got` bytes hold `needed`.
pub(crate) fn room(needed: usize, got: usize) -> Result<(), BuildError> {
    if got < needed {
        Err(BuildError::BufferTooSmall { needed, got })
    } else {
        Ok(())
    }
}

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
