//! The Internet checksum (RFC 1071): the one's complement of the one's complement sum of the
//! data taken as big-endian 16-bit words, an odd last byte padded with zero.
//!
//! Summed four bytes at a time in native order into a wide accumulator; RFC 1071 §2(B) shows the
//! sum is byte-order independent up to a final swap, so this equals the word-by-word definition.

/// One's complement sum of `data`, folded to 16 bits, as a big-endian word value.
pub fn ones_complement_sum(data: &[u8]) -> u16 {
    // Every packet is summed at every hop: where the CPU has AVX2 (checked once, cached by
    // the standard library), the same loop compiled for it sums four words per instruction
    // rather than the baseline x86-64's two.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just found to have AVX2.
        return unsafe { wide_sum_avx2(data) };
    }
    wide_sum(data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn wide_sum_avx2(data: &[u8]) -> u16 {
    wide_sum(data)
}

#[inline(always)]
fn wide_sum(data: &[u8]) -> u16 {
    // 32-bit native words widened into a u64 need no carry handling until the fold (2^32 words
    // would be needed to overflow), which leaves the loop free for the compiler to vectorise.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes(w.try_into().expect("chunk of 4")));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 4];
        tail[..rest.len()].copy_from_slice(rest);
        acc += u64::from(u32::from_ne_bytes(tail));
    }
    // Fold 64 -> 16 bits, adding carries back in.
    let mut folded = (acc >> 32) + (acc & 0xFFFF_FFFF);
    folded = (folded >> 16) + (folded & 0xFFFF);
    folded = (folded >> 16) + (folded & 0xFFFF);
    folded = (folded >> 16) + (folded & 0xFFFF);
    u16::from_be(folded as u16)
}

/// The checksum to store: the complement of the sum (computed with the checksum field zeroed).
pub fn checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data)
}

/// True when `data`, checksum field included, sums to all ones.
pub fn verify(data: &[u8]) -> bool {
    ones_complement_sum(data) == 0xFFFF
}

/// The textbook definition, one big-endian word at a time. Kept as the oracle for tests and as
/// the baseline of the checksum benchmark.
pub fn ones_complement_sum_bytewise(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        acc += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
        i += 2;
    }
    if i < data.len() {
        acc += u32::from(data[i]) << 8;
    }
    while acc > 0xFFFF {
        acc = (acc >> 16) + (acc & 0xFFFF);
    }
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(ones_complement_sum(&[0xab]), 0xab00);
        assert_eq!(ones_complement_sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(ones_complement_sum(&[]), 0);
    }

    proptest! {
        #[test]
        fn wordwise_equals_bytewise(data in proptest::collection::vec(any::<u8>(), 0..2100)) {
            prop_assert_eq!(ones_complement_sum(&data), ones_complement_sum_bytewise(&data));
            // The baseline build too, whichever one the CPU running the test gets.
            prop_assert_eq!(wide_sum(&data), ones_complement_sum_bytewise(&data));
        }

        #[test]
        fn stored_checksum_verifies(mut data in proptest::collection::vec(any::<u8>(), 2..1100)) {
            data[0] = 0;
            data[1] = 0;
            let c = checksum(&data);
            data[..2].copy_from_slice(&c.to_be_bytes());
            prop_assert!(verify(&data));
        }
    }
}
