//! Repairs from the relay's cache (PGM's nearest repairer), toward the peer that asked.

use super::nacks::{merge_fresh, record_nack};
use super::*;

pub(super) fn nack_hop(key: PeerKey) -> Hop {
    match key {
        PeerKey::Neighbour(n) => Hop::Neighbour(n),
        PeerKey::Local(_) => Hop::Local,
    }
}

impl RmtpRelay {
    pub(super) fn serve_repair(
        &mut self,
        now: Instant,
        job: RepairJob,
        buf: &mut [u8],
    ) -> Option<RelayTransmit> {
        let tree = self.trees.get_mut(usize::from(job.tree))?.as_mut()?;
        let peer = *tree.peers.get(usize::from(job.peer))?;
        if !peer.used {
            return None;
        }
        let cached = tree.cache.get(job.seq)?;
        let intact = Data::parse(&cached[DNP_HEADER_LEN..]).is_ok_and(|d| d.crc_ok());
        if !intact {
            // A copy corrupted on the way in (the DNP checksum let it through): never serve it,
            // ask upstream instead.
            self.stats.cache_corrupt += 1;
            tree.cache.evict(job.seq);
            let stale = tree.nack_stale(&self.config);
            record_nack(tree, job.seq, 1 << job.peer, now, stale, &mut self.fresh);
            merge_fresh(tree, &mut self.fresh);
            return None;
        }
        let len = cached.len();
        buf[..len].copy_from_slice(cached);
        self.stats.repairs_from_cache += 1;
        Some(RelayTransmit {
            to: nack_hop(peer.key),
            len,
            group: tree.group,
            sender: tree.sender,
        })
    }
}
