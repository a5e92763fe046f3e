//! Fan-out: DATA and SPM from the tree's upstream to every downstream neighbour and the
//! local members (and into the repair cache), RETRANSMIT only toward those who asked.

use super::*;

/// A DATA/RETRANSMIT or SPM that passed the plausibility checks.
#[derive(Clone, Copy)]
enum Downward {
    Spm(SpmFields),
    /// `len` payload bytes ending before byte `end`.
    Data {
        seq: u64,
        len: u64,
        end: u64,
    },
}

impl RmtpRelay {
    pub(super) fn on_downward(
        &mut self,
        now: Instant,
        from: Option<NodeAddr>,
        packet: &Packet<'_>,
        mcast: &MulticastTable,
    ) -> RelayAction {
        let (Addr::Group(group), Addr::Node(sender)) = (packet.dst(), packet.src()) else {
            return RelayAction::Drop(DropReason::Malformed);
        };
        let Some(entry) = mcast.lookup(group, sender) else {
            return RelayAction::Drop(DropReason::NotOnTree);
        };
        match from {
            None if sender != self.config.me => return RelayAction::Drop(DropReason::NotOnTree),
            Some(f) if entry.upstream != Some(f) => {
                return RelayAction::Drop(DropReason::NotFromUpstream);
            }
            _ => {}
        }
        let flag = packet.flag();
        // Values no sender can send (`None`) are refused before they touch anything.
        let down = match flag {
            Flag::RmtpSpm => SpmFields::parse(packet.body())
                .map(|spm| (spm.trailing <= spm.leading).then_some(Downward::Spm(spm))),
            _ => Data::parse(packet.body()).map(|d| {
                let end = d.offset().checked_add(d.payload().len() as u64);
                let seq = d.sequence();
                let len = d.payload().len() as u64;
                end.filter(|_| seq < u64::MAX)
                    .map(|end| Downward::Data { seq, len, end })
            }),
        };
        let down = match down {
            Ok(Some(down)) => down,
            Ok(None) => {
                match flag {
                    Flag::RmtpSpm => self.stats.spms_implausible += 1,
                    _ => self.stats.data_implausible += 1,
                }
                return RelayAction::Drop(DropReason::Implausible);
            }
            Err(_) => return RelayAction::Drop(DropReason::Malformed),
        };
        // A repair nobody here waits for moves nothing (not even the cache).
        if let Downward::Data { seq, .. } = down
            && flag == Flag::RmtpRetransmit
            && self
                .slot_of(group.get(), sender.get())
                .and_then(|slot| self.trees[slot].as_ref())
                .is_none_or(|tree| tree.find_nack(seq).is_err())
        {
            return RelayAction::Drop(DropReason::Unrequested);
        }
        let Ok(slot) = self.tree_slot(entry, now, Claim::Traffic) else {
            // No state to spare: still forward data, just without cache or NACK routing.
            return match flag {
                Flag::RmtpRetransmit => RelayAction::Drop(DropReason::TableFull),
                _ => self.fan_out(entry, from),
            };
        };
        let step = self.config.max_edge_step;
        let tree = self.trees[slot].as_mut().expect("slot in use");
        let seq = match down {
            Downward::Spm(spm) => {
                tree.edges.on_spm(&spm, step);
                // The sender probes a closed window with SPMs: our MAB upstream may be the one
                // that was lost, so it goes again.
                tree.mab_due |= tree.min.is_some();
                let keep = tree
                    .nacks
                    .partition_point(|e| e.seq < tree.edges.trailing());
                if keep > 0 {
                    tree.nacks.drain(..keep);
                }
                return self.fan_out(entry, from);
            }
            Downward::Data { seq, len, end } => {
                tree.edges.on_data(seq, len, end, step);
                seq
            }
        };
        // The cache repairs what a link lost. Where the tree goes on to no neighbour, only the
        // local members take the packet, with no link to lose it on (unless the engine's
        // buffers on the way may drop); they refuse in-window DATA only before they know the
        // transfer's shape (a receiver that learns it from an SPM), so the copy is kept until
        // every one of them reports receiving.
        let onward = entry.downstream.iter().any(|&n| Some(n) != from);
        let cached = onward
            || !self.config.lossless_to_members
            || tree.receiving_locals < entry.local_members.len();
        match flag {
            Flag::RmtpData => {
                if cached {
                    tree.cache.insert(seq, packet.bytes());
                }
                // Everyone downstream gets this one: nothing left to wait for.
                if let Ok(i) = tree.find_nack(seq) {
                    tree.nacks.remove(i);
                }
                self.fan_out(entry, from)
            }
            _ => {
                if cached {
                    tree.cache.insert(seq, packet.bytes());
                }
                let Ok(i) = tree.find_nack(seq) else {
                    return RelayAction::Drop(DropReason::Unrequested);
                };
                let e = tree.nacks.remove(i);
                match tree.rtt.time_answer(&e.sent, now) {
                    AnswerTiming::Measured(rtt) => {
                        tree.rtt.sample(rtt);
                        self.stats.upstream_rtt_samples += 1;
                    }
                    AnswerTiming::SpuriousRetry => self.stats.upstream_retries_spurious += 1,
                    AnswerTiming::Ambiguous | AnswerTiming::Unasked => {}
                }
                let mut to = Fanout::empty();
                let mut deliver_local = false;
                let mut served = 0u64;
                for (bit, p) in tree.peers.iter().enumerate() {
                    if e.waiters & (1 << bit) == 0 || !p.used {
                        continue;
                    }
                    match p.key {
                        PeerKey::Neighbour(n) if Some(n) != from => {
                            to.push(n);
                        }
                        PeerKey::Neighbour(_) => continue,
                        PeerKey::Local(_) => deliver_local = true,
                    }
                    served |= 1 << bit;
                }
                let holdoff = tree.repair_holdoff(&self.config);
                tree.cache.forwarded_repair(seq, served, now, holdoff);
                self.stats.retransmissions_forwarded += 1;
                RelayAction::Forward { to, deliver_local }
            }
        }
    }

    pub(super) fn fan_out(&mut self, entry: &TreeEntry, from: Option<NodeAddr>) -> RelayAction {
        let mut to = Fanout::empty();
        for &n in &entry.downstream {
            if Some(n) != from && !to.push(n) {
                self.stats.fanout_overflow += 1;
            }
        }
        self.stats.forwarded += 1;
        RelayAction::Forward {
            to,
            deliver_local: !entry.local_members.is_empty(),
        }
    }
}
