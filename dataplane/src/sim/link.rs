//! One direction of a link: its faults, its own random stream, its counters, and the code that
//! decides what becomes of a packet offered to it.
//!
//! Each direction draws from its own stream (forked from the run's seed by the (from, to) pair),
//! so what happens on one link never shifts the randomness of another: changing traffic on
//! link A leaves link B's fate sequence untouched.

use super::stats::LinkStats;
use crate::garbler::mangle::{corrupt_undetected, flip_bits, nanos_upto};
use control::Instant;
use control::rng::Rng;
use control::topology::Faults;
use control::wire::Packet;
use std::time::Duration;

/// A directed link `from -> to` (node indices into the engine's sorted node list).
#[derive(Debug)]
pub(super) struct DirLink {
    pub from: u32,
    pub to: u32,
    faults: Faults,
    /// Probability of the checksum-defeating corrupter (payload changed, checksum recomputed).
    pub undetected: f64,
    rng: Rng,
    pub stats: LinkStats,
    /// Bumped each time the link goes down, so copies sent before that are discarded on arrival.
    pub epoch: u32,
    /// Copies scheduled and not yet arrived.
    pub in_flight: u64,
    /// When the link finishes sending what it already took (with a rate).
    pub busy_until: Instant,
}

/// A copy that survived the link, and how long after the offer it arrives (queueing and
/// serialisation included).
pub(super) struct Copy {
    pub delay: Duration,
    pub packet: Vec<u8>,
}

/// What the link does with one offered packet, beyond the faults of its own settings.
pub(super) struct Offer {
    /// Network MTU, to tell whether a corrupted copy still passes DNP parsing.
    pub mtu: usize,
    /// Upper bound of the extra hold-back given to reordered copies.
    pub reorder_window: Duration,
    /// When the packet is offered.
    pub now: Instant,
}

impl DirLink {
    pub(super) fn new(from: u32, to: u32, faults: Faults, rng: Rng) -> Self {
        DirLink {
            from,
            to,
            faults,
            undetected: 0.0,
            rng,
            stats: LinkStats::default(),
            epoch: 0,
            in_flight: 0,
            busy_until: Instant::ZERO,
        }
    }

    /// Serialisation rate in bytes per second; `None`: infinitely fast.
    pub(super) fn rate(&self) -> Option<u64> {
        self.faults.rate.filter(|&r| r > 0)
    }

    pub(super) fn set_rate(&mut self, rate: Option<u64>) {
        self.faults.rate = rate;
    }

    /// Bytes taken and not yet fully on the wire at `now` (0 without a rate).
    pub(super) fn backlog(&self, now: Instant) -> u64 {
        let Some(rate) = self.rate() else { return 0 };
        let nanos = self.busy_until.saturating_since(now).as_nanos();
        (nanos * u128::from(rate)).div_ceil(1_000_000_000) as u64
    }

    /// Takes `len` bytes into the queue at `now`: whether they fit (drop-tail: a packet that
    /// would make the backlog exceed `queue_bytes` is refused), and if so, when they are fully
    /// on the wire. Packets queue behind each other at the link's rate, or leave at once
    /// without a rate.
    fn enqueue(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let Some(rate) = self.rate() else {
            return Some(now);
        };
        if let Some(limit) = self.faults.queue_bytes
            && self.backlog(now).saturating_add(len as u64) > limit
        {
            return None;
        }
        let start = self.busy_until.max(now);
        let nanos = (len as u128 * 1_000_000_000 / u128::from(rate)) as u64;
        self.busy_until = start + Duration::from_nanos(nanos);
        Some(self.busy_until)
    }

    pub(super) fn faults(&self) -> Faults {
        self.faults
    }

    pub(super) fn is_down(&self) -> bool {
        self.faults.down
    }

    /// Replaces the faults (rate and queue included). Going down starts a new epoch: whatever
    /// is on the wire is lost.
    pub(super) fn set_faults(&mut self, faults: Faults) {
        if faults.down && !self.faults.down {
            self.epoch = self.epoch.wrapping_add(1);
        }
        self.faults = faults;
    }

    /// Applies the faults to one offered packet and appends each surviving copy to `out`.
    ///
    /// A packet that does not fit the link's queue is dropped before any draw; one that does
    /// occupies the link whatever becomes of it on the wire. The draws happen in a fixed order
    /// (loss, duplicate, then per copy: undetected corruption, corruption, jitter, reorder) so
    /// one seed always gives one outcome.
    pub(super) fn offer(&mut self, packet: Vec<u8>, how: &Offer, out: &mut Vec<Copy>) {
        self.stats.offered += 1;
        if self.faults.down {
            self.stats.dropped_down += 1;
            return;
        }
        let Some(on_wire) = self.enqueue(how.now, packet.len()) else {
            self.stats.dropped_queue += 1;
            return;
        };
        let queued = on_wire.saturating_since(how.now);
        if self.rng.chance(self.faults.loss) {
            self.stats.lost += 1;
            return;
        }
        let mut second = None;
        if self.rng.chance(self.faults.duplicate) {
            self.stats.duplicated += 1;
            second = Some(packet.clone());
        }
        for packet in std::iter::once(packet).chain(second) {
            let mut copy = self.mangle(packet, how);
            copy.delay += queued;
            out.push(copy);
        }
    }

    fn mangle(&mut self, mut packet: Vec<u8>, how: &Offer) -> Copy {
        if self.rng.chance(self.undetected) && corrupt_undetected(&mut packet, &mut self.rng) {
            self.stats.corrupted_undetected += 1;
        }
        if self.rng.chance(self.faults.corrupt) && flip_bits(&mut packet, &mut self.rng) {
            self.stats.corrupted += 1;
            if Packet::parse(&packet, how.mtu).is_ok() {
                self.stats.corrupted_escaped += 1;
            }
        }
        let mut delay = self.faults.delay;
        if !self.faults.jitter.is_zero() {
            delay += nanos_upto(&mut self.rng, self.faults.jitter);
        }
        if self.rng.chance(self.faults.reorder) {
            self.stats.reordered += 1;
            // At least 1 ns, so a copy held back always lands behind one sent at the same instant.
            delay += Duration::from_nanos(1) + nanos_upto(&mut self.rng, how.reorder_window);
        }
        Copy { delay, packet }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::Addr;
    use control::wire::{DEFAULT_MTU, DNP_HEADER_LEN, Flag, dnp};

    fn sealed(body_len: usize) -> Vec<u8> {
        let body: Vec<u8> = (0..body_len).map(|i| i as u8).collect();
        dnp::frame(Addr::from_raw(2), Addr::from_raw(1), Flag::RmtpData, &body)
    }

    fn hamming(a: &[u8], b: &[u8]) -> u32 {
        a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
    }

    #[test]
    fn flips_one_to_three_bits() {
        let mut rng = Rng::new(3);
        let mut seen = [0u32; 4];
        for _ in 0..3000 {
            let orig = sealed(20);
            let mut p = orig.clone();
            assert!(flip_bits(&mut p, &mut rng));
            let d = hamming(&orig, &p);
            assert!((1..=3).contains(&d), "{d} bits flipped");
            seen[d as usize] += 1;
        }
        assert!(seen[1..].iter().all(|&c| c > 800), "{seen:?}");
        assert!(!flip_bits(&mut [], &mut rng));
        // A 1-byte packet has 8 bits: still 1..=3 distinct flips.
        let mut one = [0u8];
        assert!(flip_bits(&mut one, &mut rng));
        assert!((1..=3).contains(&one[0].count_ones()));
    }

    #[test]
    fn undetected_corruption_passes_dnp_and_changes_payload_only() {
        let mut rng = Rng::new(9);
        for len in 1..40 {
            let orig = sealed(len);
            let mut p = orig.clone();
            assert!(corrupt_undetected(&mut p, &mut rng));
            let parsed = Packet::parse(&p, DEFAULT_MTU).expect("DNP accepts it");
            assert_ne!(parsed.body(), &orig[DNP_HEADER_LEN..]);
            assert_eq!(p[2..DNP_HEADER_LEN], orig[2..DNP_HEADER_LEN]);
        }
        let mut header_only = sealed(0);
        let before = header_only.clone();
        assert!(!corrupt_undetected(&mut header_only, &mut rng));
        assert_eq!(header_only, before);
        assert!(!corrupt_undetected(&mut [1, 2, 3], &mut rng));
    }

    #[test]
    fn down_link_drops_and_starts_a_new_epoch() {
        let mut link = DirLink::new(0, 1, Faults::default(), Rng::new(1));
        let how = Offer {
            mtu: DEFAULT_MTU,
            reorder_window: Duration::ZERO,
            now: Instant::ZERO,
        };
        let mut out = Vec::new();
        link.offer(sealed(4), &how, &mut out);
        assert_eq!(out.len(), 1);
        link.set_faults(Faults {
            down: true,
            ..Faults::default()
        });
        assert_eq!(link.epoch, 1);
        link.offer(sealed(4), &how, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(link.stats.dropped_down, 1);
        assert_eq!(link.stats.offered, 2);
        // Staying down does not start another epoch.
        link.set_faults(link.faults());
        assert_eq!(link.epoch, 1);
    }

    #[test]
    fn a_full_queue_drops_the_tail_and_drains_at_the_rate() {
        // 1000 bytes per millisecond, room for three 400-byte packets.
        let faults = Faults {
            rate: Some(1_000_000),
            queue_bytes: Some(1200),
            ..Faults::default()
        };
        let mut link = DirLink::new(0, 1, faults, Rng::new(2));
        let mut how = Offer {
            mtu: DEFAULT_MTU,
            reorder_window: Duration::ZERO,
            now: Instant::ZERO,
        };
        let mut out = Vec::new();
        let len = sealed(390).len();
        assert_eq!(len, 400);
        for _ in 0..5 {
            link.offer(sealed(390), &how, &mut out);
        }
        assert_eq!(out.len(), 3);
        assert_eq!(link.stats.dropped_queue, 2);
        // Each copy arrives once it is fully on the wire: 0.4, 0.8, 1.2 ms.
        let delays: Vec<u64> = out.iter().map(|c| c.delay.as_micros() as u64).collect();
        assert_eq!(delays, [400, 800, 1200]);
        assert_eq!(link.backlog(Instant::ZERO), 1200);
        // 0.4 ms later one packet has left: room for exactly one more.
        how.now = Instant::from_nanos(400_000);
        assert_eq!(link.backlog(how.now), 800);
        link.offer(sealed(390), &how, &mut out);
        link.offer(sealed(390), &how, &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(link.stats.dropped_queue, 3);
        assert_eq!(out[3].delay, Duration::from_micros(1200));
    }

    #[test]
    fn delay_jitter_and_reorder_bounds() {
        let faults = Faults {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(2),
            reorder: 0.5,
            ..Faults::default()
        };
        let mut link = DirLink::new(0, 1, faults, Rng::new(5));
        let how = Offer {
            mtu: DEFAULT_MTU,
            reorder_window: Duration::from_millis(30),
            now: Instant::ZERO,
        };
        let mut out = Vec::new();
        for _ in 0..2000 {
            link.offer(sealed(4), &how, &mut out);
        }
        let held = out
            .iter()
            .filter(|c| c.delay > Duration::from_millis(12))
            .count();
        assert!(out.iter().all(|c| c.delay >= Duration::from_millis(10)));
        assert!(
            out.iter()
                .all(|c| c.delay <= Duration::from_millis(42) + Duration::from_nanos(1))
        );
        // Held copies are nearly all the reordered ones (a hold-back can be tiny).
        assert!(held as u64 <= link.stats.reordered);
        assert!(held as u64 > link.stats.reordered * 9 / 10, "{held}");
        assert!((900..1100).contains(&link.stats.reordered));
    }
}
