//! The CRC-32C trailer every protocol body ends with (DATA excepted: it carries its own CRC in
//! its header). The 16-bit DNP checksum lets some multi-bit corruptions through; the trailer
//! makes a receiver refuse such a body rather than act on it.

use super::crc32c::crc32c;
use super::{BodyError, BuildError, room};

/// Bytes of the trailer: a big-endian CRC-32C (Castagnoli) of the body bytes before it.
pub const CRC_LEN: usize = 4;

/// The fields of `body` when its trailer matches them.
pub fn checked(body: &[u8]) -> Result<&[u8], BodyError> {
    let Some(split) = body.len().checked_sub(CRC_LEN) else {
        return Err(BodyError::TooShort {
            needed: CRC_LEN,
            got: body.len(),
        });
    };
    let (fields, trailer) = body.split_at(split);
    let carried = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc32c(fields) == carried {
        Ok(fields)
    } else {
        Err(BodyError::BadCrc)
    }
}

/// Writes the trailer of `body[..len]` right after it; returns the length with the trailer.
/// A `body` shorter than `len + CRC_LEN` is refused, untouched.
pub fn append(body: &mut [u8], len: usize) -> Result<usize, BuildError> {
    let end = len.saturating_add(CRC_LEN);
    room(end, body.len())?;
    let crc = crc32c(&body[..len]);
    body[len..end].copy_from_slice(&crc.to_be_bytes());
    Ok(end)
}

/// Pushes the trailer of everything in `body` onto its end.
pub fn push(body: &mut Vec<u8>) {
    let crc = crc32c(body);
    body.extend_from_slice(&crc.to_be_bytes());
}

/// `fields` with their trailer, for tests that build bodies by hand.
#[cfg(test)]
pub(crate) fn sealed(fields: &[u8]) -> Vec<u8> {
    let mut body = fields.to_vec();
    push(&mut body);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        // The standard CRC-32C check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn push_append_and_checked_agree() {
        // Independent reference (bitwise CRC-32C): "123456789" -> e3069283.
        let pushed = sealed(b"123456789");
        assert_eq!(&pushed[9..], [0xE3, 0x06, 0x92, 0x83]);
        let mut buf = [0u8; 13];
        buf[..9].copy_from_slice(b"123456789");
        assert_eq!(append(&mut buf, 9), Ok(13));
        assert_eq!(
            append(&mut buf[..12], 9),
            Err(BuildError::BufferTooSmall {
                needed: 13,
                got: 12
            })
        );
        assert_eq!(buf[..], pushed[..]);
        assert_eq!(checked(&pushed), Ok(&b"123456789"[..]));
        for bit in 0..pushed.len() * 8 {
            let mut bad = pushed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(checked(&bad), Err(BodyError::BadCrc), "bit {bit}");
        }
        assert_eq!(
            checked(&[1, 2, 3]),
            Err(BodyError::TooShort { needed: 4, got: 3 })
        );
        // An empty body's trailer is the CRC of nothing, zero.
        assert_eq!(checked(&[0, 0, 0, 0]), Ok(&[][..]));
    }
}
