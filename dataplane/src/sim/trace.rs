//! A running hash of every delivery, so two runs can be compared bit for bit without storing
//! them. FNV-1a (64-bit): ours, so the value never changes with the standard library's hasher.

use control::{Instant, NodeAddr};

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash(OFFSET)
    }
}

impl TraceHash {
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(PRIME);
        }
    }

    /// Folds one delivery in: when, over which link, and the exact bytes (length first, so
    /// packet boundaries count).
    pub(super) fn delivery(&mut self, at: Instant, from: NodeAddr, to: NodeAddr, packet: &[u8]) {
        self.bytes(&at.as_nanos().to_le_bytes());
        self.bytes(&from.get().to_le_bytes());
        self.bytes(&to.get().to_le_bytes());
        self.bytes(&(packet.len() as u64).to_le_bytes());
        self.bytes(packet);
    }

    pub(super) fn value(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    #[test]
    fn every_field_counts() {
        let hash = |at, from, to, p: &[u8]| {
            let mut h = TraceHash::default();
            h.delivery(Instant::from_nanos(at), n(from), n(to), p);
            h.value()
        };
        let base = hash(5, 1, 2, &[1, 2, 3]);
        assert_eq!(base, hash(5, 1, 2, &[1, 2, 3]));
        assert_ne!(base, hash(6, 1, 2, &[1, 2, 3]));
        assert_ne!(base, hash(5, 2, 1, &[1, 2, 3]));
        assert_ne!(base, hash(5, 1, 3, &[1, 2, 3]));
        assert_ne!(base, hash(5, 1, 2, &[1, 2, 4]));
        assert_ne!(base, hash(5, 1, 2, &[1, 2]));
    }

    #[test]
    fn order_counts() {
        let mut a = TraceHash::default();
        a.delivery(Instant::ZERO, n(1), n(2), &[1]);
        a.delivery(Instant::ZERO, n(1), n(2), &[2]);
        let mut b = TraceHash::default();
        b.delivery(Instant::ZERO, n(1), n(2), &[2]);
        b.delivery(Instant::ZERO, n(1), n(2), &[1]);
        assert_ne!(a.value(), b.value());
    }
}
