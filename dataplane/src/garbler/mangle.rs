//! The bit-level damage a faulty link does to a packet, shared by the simulator's links and the
//! real-socket garbler so that "corrupt" means the same thing under every engine (and one seed
//! draws the same damage from the same stream).

use control::rng::Rng;
use control::wire::{DNP_HEADER_LEN, checksum};
use std::time::Duration;

/// Uniform in `[0, max]`, nanosecond grain.
pub fn nanos_upto(rng: &mut Rng, max: Duration) -> Duration {
    let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.below(max.saturating_add(1)))
}

/// `n` distinct indices below `len` (fewer if `len < n`), in draw order.
fn distinct(rng: &mut Rng, n: u64, len: u64) -> impl Iterator<Item = u64> + use<> {
    let mut picked = [u64::MAX; 3];
    let n = n.min(len).min(3) as usize;
    for i in 0..n {
        loop {
            let v = rng.below(len);
            if !picked[..i].contains(&v) {
                picked[i] = v;
                break;
            }
        }
    }
    picked.into_iter().take(n)
}

/// Flips 1..=3 distinct random bits anywhere in the packet. False for an empty packet.
pub fn flip_bits(packet: &mut [u8], rng: &mut Rng) -> bool {
    let bits = packet.len() as u64 * 8;
    if bits == 0 {
        return false;
    }
    let n = 1 + rng.below(3);
    for bit in distinct(rng, n, bits) {
        packet[(bit / 8) as usize] ^= 1 << (bit % 8);
    }
    true
}

/// Changes 1..=3 distinct payload bytes (after the DNP header) and reseals the checksum so DNP
/// accepts the packet. False when there is no payload to change.
pub fn corrupt_undetected(packet: &mut [u8], rng: &mut Rng) -> bool {
    let Some(payload_len) = packet.len().checked_sub(DNP_HEADER_LEN) else {
        return false;
    };
    if payload_len == 0 {
        return false;
    }
    let n = 1 + rng.below(3);
    for i in distinct(rng, n, payload_len as u64) {
        // XOR with a non-zero mask: the byte always changes.
        packet[DNP_HEADER_LEN + i as usize] ^= 1 + rng.below(255) as u8;
    }
    packet[..2].copy_from_slice(&[0, 0]);
    let sum = checksum::checksum(packet);
    packet[..2].copy_from_slice(&sum.to_be_bytes());
    true
}
