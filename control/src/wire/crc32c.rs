//! CRC-32C (Castagnoli, the iSCSI CRC of RFC 3720): the one place the workspace computes it.
//!
//! Every DATA packet's CRC is computed by its sender and checked by its receiver (and by a relay
//! before it serves a repair), so this is per-packet work at 1024-1472 bytes. The CPU's CRC32
//! instruction takes 8 bytes per cycle only when three independent streams are in flight (its
//! latency is three cycles). The `crc32c` crate runs three streams only over whole 768-byte or
//! 24 KiB blocks and the rest one word at a time: a quarter of a 1024-byte buffer and almost
//! half of a 1472-byte one. Here every buffer is cut into three equal streams, and their CRCs
//! are joined with two carry-less multiplications by constants computed at compile time.
//! Without SSE 4.2 and PCLMULQDQ the crate does the work.

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// CRC-32C of the bytes whose CRC-32C is `crc` followed by `data`.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2")
        && std::arch::is_x86_feature_detected!("pclmulqdq")
    {
        // SAFETY: the CPU was just found to have both features (checked once, cached by std).
        return unsafe { x86::crc32c_append(crc, data) };
    }
    ::crc32c::crc32c_append(crc, data)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _mm_clmulepi64_si128, _mm_crc32_u8, _mm_crc32_u64, _mm_cvtsi32_si128, _mm_cvtsi128_si64,
        _mm_xor_si128,
    };

    /// CRC-32C's polynomial, bit-reflected (the instruction's and the wire's bit order).
    const POLY: u32 = 0x82F6_3B78;

    /// Most 8-byte words one stream takes at a time: longer buffers go round in 3 KiB chunks.
    const MAX_STREAM_WORDS: usize = 128;

    /// Fewest words per stream worth the joining (about as many cycles as four words cost).
    const MIN_STREAM_WORDS: usize = 4;

    /// `SHIFT[w]` is x^(64w - 33) mod P, bit-reflected: multiplying a raw CRC state by it
    /// carry-lessly and reducing the product with one CRC32 of a zero state (which multiplies
    /// by x^33 in this bit order) moves the state past 8w zero bytes.
    static SHIFT: [u32; 2 * MAX_STREAM_WORDS + 1] = shift_table();

    /// x * v mod P, bit-reflected.
    const fn times_x(v: u32) -> u32 {
        if v & 1 == 1 { (v >> 1) ^ POLY } else { v >> 1 }
    }

    const fn shift_table() -> [u32; 2 * MAX_STREAM_WORDS + 1] {
        let mut table = [0u32; 2 * MAX_STREAM_WORDS + 1];
        // Entry 1 is x^31, bit 0 in this bit order; every further entry is 64 steps on.
        let mut power = 1u32;
        table[1] = power;
        let mut w = 2;
        while w < table.len() {
            let mut step = 0;
            while step < 64 {
                power = times_x(power);
                step += 1;
            }
            table[w] = power;
            w += 1;
        }
        table
    }

    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
        let mut state = u64::from(!crc);
        let mut rest = data;
        while rest.len() >= 3 * 8 * MIN_STREAM_WORDS {
            let words = (rest.len() / (3 * 8)).min(MAX_STREAM_WORDS);
            let (chunk, after) = rest.split_at(3 * 8 * words);
            state = three_streams(state, chunk, words);
            rest = after;
        }
        let mut words = rest.chunks_exact(8);
        for word in &mut words {
            state = _mm_crc32_u64(state, u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let mut state = state as u32;
        for &byte in words.remainder() {
            state = _mm_crc32_u8(state, byte);
        }
        !state
    }

    /// The raw state after `chunk` (three streams of `words` 8-byte words each) from `state`.
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    fn three_streams(state: u64, chunk: &[u8], words: usize) -> u64 {
        let stream = 8 * words;
        let (a, bc) = chunk.split_at(stream);
        let (b, c) = bc.split_at(stream);
        let (mut sa, mut sb, mut sc) = (state, 0u64, 0u64);
        for ((wa, wb), wc) in a
            .chunks_exact(8)
            .zip(b.chunks_exact(8))
            .zip(c.chunks_exact(8))
        {
            sa = _mm_crc32_u64(sa, u64::from_le_bytes(wa.try_into().expect("8 bytes")));
            sb = _mm_crc32_u64(sb, u64::from_le_bytes(wb.try_into().expect("8 bytes")));
            sc = _mm_crc32_u64(sc, u64::from_le_bytes(wc.try_into().expect("8 bytes")));
        }
        // CRC without the inversions is linear: the state after a||b||c is a's moved past b and
        // c, xor b's moved past c, xor c's. Both moves share the one reducing CRC32.
        let moved_a = clmul(sa as u32, SHIFT[2 * words]);
        let moved_b = clmul(sb as u32, SHIFT[words]);
        let joined = _mm_cvtsi128_si64(_mm_xor_si128(moved_a, moved_b)) as u64;
        _mm_crc32_u64(0, joined) ^ sc
    }

    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    fn clmul(a: u32, b: u32) -> std::arch::x86_64::__m128i {
        _mm_clmulepi64_si128(_mm_cvtsi32_si128(a as i32), _mm_cvtsi32_si128(b as i32), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn castagnoli_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// RFC 3720 appendix B.4: the CRC as the bytes it is sent as (least significant first).
    #[test]
    fn rfc3720_vectors() {
        let le = |data: &[u8]| crc32c(data).to_le_bytes();
        assert_eq!(le(&[0u8; 32]), [0xaa, 0x36, 0x91, 0x8a]);
        assert_eq!(le(&[0xffu8; 32]), [0x43, 0xab, 0xa8, 0x62]);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(le(&ascending), [0x4e, 0x79, 0xdd, 0x46]);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(le(&descending), [0x5c, 0xdb, 0x3f, 0x11]);
        let mut iscsi_read = [0u8; 48];
        iscsi_read[..8].copy_from_slice(&[0x01, 0xc0, 0, 0, 0, 0, 0, 0]);
        iscsi_read[16..24].copy_from_slice(&[0x14, 0, 0, 0, 0, 0, 0x04, 0]);
        iscsi_read[24..32].copy_from_slice(&[0, 0, 0, 0x14, 0, 0, 0, 0x18]);
        iscsi_read[32..40].copy_from_slice(&[0x28, 0, 0, 0, 0, 0, 0, 0]);
        iscsi_read[40..48].copy_from_slice(&[0x02, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(le(&iscsi_read), [0x56, 0x3a, 0x96, 0xd9]);
    }

    #[test]
    fn every_stream_split_matches_the_crate() {
        // Every length up to two full 3 KiB chunks and a tail, at every alignment of 8.
        let data: Vec<u8> = (0..6300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..8 {
            for len in (0..data.len() - start).step_by(7) {
                let bytes = &data[start..start + len];
                assert_eq!(crc32c(bytes), ::crc32c::crc32c(bytes), "{start}+{len}");
            }
        }
    }

    proptest! {
        #[test]
        fn matches_the_crate(
            data in proptest::collection::vec(any::<u8>(), 0..9000),
            split in any::<prop::sample::Index>(),
            seed in any::<u32>(),
        ) {
            prop_assert_eq!(crc32c(&data), ::crc32c::crc32c(&data));
            let cut = split.index(data.len() + 1);
            let (head, tail) = data.split_at(cut);
            prop_assert_eq!(crc32c_append(crc32c(head), tail), crc32c(&data));
            prop_assert_eq!(crc32c_append(seed, &data), ::crc32c::crc32c_append(seed, &data));
        }
    }
}
