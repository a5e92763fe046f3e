//! A relay's per-tree repair cache: the one copy it makes of a payload, served in answer to
//! NACKs from below (PGM's nearest repairer), each copy toward each peer at most once per
//! hold-off so that a NACK storm, forged or not, is not amplified.

use control::Instant;
use control::wire::dnp::Flag;
use control::wire::rmtp;
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    seq: u64,
    /// 0: empty.
    len: u16,
    /// Peers (bits) this copy was last served to, since `repaired_at`.
    repaired_to: u64,
    repaired_at: Instant,
    /// Times a peer this copy was served to asked for it again after the hold-off.
    asked_again: u8,
}

impl Slot {
    /// The copy went toward the peers `bits`; `held`: within the hold-off window opened by the
    /// first repair served in it.
    fn served(&mut self, bits: u64, now: Instant, held: bool) {
        if self.repaired_to == 0 || !held {
            self.repaired_to = 0;
            self.repaired_at = now;
        }
        self.repaired_to |= bits;
    }
}

// A copy asked for again this many times is dropped (`CacheRepair::AskedAgain`): once may
// be a lost repair (served again), twice is taken as a copy the receiver refuses.
use control::settings::relay::ASKED_AGAIN_LIMIT;

/// Whether a NACKed sequence can be served from the cache.
pub(crate) enum CacheRepair {
    NotCached,
    /// Served to this peer less than a hold-off ago.
    HeldOff,
    /// Served to a peer that asked for it again after the hold-off, [`ASKED_AGAIN_LIMIT`]
    /// times: the copy does not help (repairs lost, or a forged DATA with a valid CRC that the
    /// receiver refuses). Dropped; the sequence is asked upstream, whose repair fills the slot
    /// again.
    AskedAgain,
    Serve,
}

/// Direct-mapped ring of recent DATA packets (already retagged as RETRANSMIT): sequence `s`
/// lives in slot `s % slots`, so in-order traffic evicts the oldest, and lookups are O(1).
pub(crate) struct Cache {
    slot_len: usize,
    meta: Vec<Slot>,
    bytes: Vec<u8>,
}

impl Cache {
    pub(crate) fn new(bytes: usize, slot_len: usize) -> Self {
        let slots = bytes.checked_div(slot_len).unwrap_or(0);
        Cache {
            slot_len,
            meta: vec![Slot::default(); slots],
            bytes: vec![0; slots * slot_len],
        }
    }

    /// Bytes the cache holds reserved, slot table included.
    pub(crate) fn reserved_bytes(&self) -> usize {
        self.meta.capacity() * std::mem::size_of::<Slot>() + self.bytes.capacity()
    }

    fn index(&self, seq: u64) -> Option<usize> {
        let slots = self.meta.len() as u64;
        (slots > 0).then(|| (seq % slots) as usize)
    }

    pub(crate) fn insert(&mut self, seq: u64, packet: &[u8]) {
        let Some(i) = self.index(seq) else { return };
        if packet.len() > self.slot_len || (self.meta[i].seq == seq && self.meta[i].len > 0) {
            return;
        }
        let dst = &mut self.bytes[i * self.slot_len..i * self.slot_len + packet.len()];
        dst.copy_from_slice(packet);
        if rmtp::retag(dst, Flag::RmtpRetransmit).is_err() {
            return;
        }
        self.meta[i] = Slot {
            seq,
            len: u16::try_from(packet.len()).unwrap_or(0),
            ..Slot::default()
        };
    }

    /// Claims a repair of `seq` toward the peer `bit`: at most one per `holdoff`.
    pub(crate) fn claim_repair(
        &mut self,
        seq: u64,
        bit: u64,
        now: Instant,
        holdoff: Duration,
    ) -> CacheRepair {
        if self.get(seq).is_none() {
            return CacheRepair::NotCached;
        }
        let Some(slot) = self.index(seq).map(|i| &mut self.meta[i]) else {
            return CacheRepair::NotCached;
        };
        let held = now.saturating_since(slot.repaired_at) < holdoff;
        if slot.repaired_to & bit != 0 {
            if held {
                return CacheRepair::HeldOff;
            }
            slot.asked_again = slot.asked_again.saturating_add(1);
            if slot.asked_again >= ASKED_AGAIN_LIMIT {
                slot.len = 0;
                return CacheRepair::AskedAgain;
            }
        }
        slot.served(bit, now, held);
        CacheRepair::Serve
    }

    /// A repair of `seq` from upstream went toward the peers `bits`: the cached copy is held
    /// off toward them as if it had served them (else the next NACK, already on its way, would
    /// draw a second repair at once).
    pub(crate) fn forwarded_repair(
        &mut self,
        seq: u64,
        bits: u64,
        now: Instant,
        holdoff: Duration,
    ) {
        let Some(i) = self.index(seq) else { return };
        let slot = &mut self.meta[i];
        if slot.len > 0 && slot.seq == seq && bits != 0 {
            let held = now.saturating_since(slot.repaired_at) < holdoff;
            slot.served(bits, now, held);
        }
    }

    pub(crate) fn get(&self, seq: u64) -> Option<&[u8]> {
        let i = self.index(seq)?;
        let m = self.meta[i];
        (m.len > 0 && m.seq == seq)
            .then(|| &self.bytes[i * self.slot_len..i * self.slot_len + usize::from(m.len)])
    }

    pub(crate) fn evict(&mut self, seq: u64) {
        if let Some(i) = self.index(seq)
            && self.meta[i].seq == seq
        {
            self.meta[i].len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::wire::rmtp::data_packet;
    use control::{GroupAddr, NodeAddr};

    #[test]
    fn a_copy_is_served_to_each_peer_once_per_holdoff() {
        let mut cache = Cache::new(4096, 1024);
        let group = GroupAddr::new(0xF000).unwrap();
        let packet = data_packet(group, NodeAddr::new(1).unwrap(), Flag::RmtpData, 5, 0, b"x");
        cache.insert(5, &packet);
        let holdoff = Duration::from_millis(10);
        let t0 = Instant::from_millis(1);
        let serve = |c: &mut Cache, bit, at| {
            matches!(c.claim_repair(5, bit, at, holdoff), CacheRepair::Serve)
        };
        assert!(serve(&mut cache, 1, t0));
        assert!(serve(&mut cache, 2, t0), "another peer is not held off");
        assert!(!serve(&mut cache, 1, t0 + Duration::from_millis(9)));
        assert!(
            serve(&mut cache, 1, t0 + holdoff),
            "asked again once: a lost repair"
        );
        assert!(matches!(
            cache.claim_repair(5, 1, t0 + holdoff * 2, holdoff),
            CacheRepair::AskedAgain
        ));
        assert!(cache.get(5).is_none(), "a copy asked for again is dropped");
        assert!(matches!(
            cache.claim_repair(6, 1, t0, holdoff),
            CacheRepair::NotCached
        ));
    }
}
