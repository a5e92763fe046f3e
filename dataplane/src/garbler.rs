//! The garbler: the topology file's per-link faults (loss, corruption, duplication, reordering,
//! delay and jitter, link down) applied on a real engine's send path, from a seeded generator,
//! changeable while the node runs. The seed's test harness called this "the garbler"; here it
//! lets real-socket nodes be tested under the same faults as the simulator.
//!
//! A [`LinkGarbler`] is one direction of one link (this node to one neighbour); each end of a
//! link garbles what it sends, so the file's "faults apply in both directions" holds when every
//! node reads the same file. It only decides: [`LinkGarbler::apply`] turns one packet into zero,
//! one or two copies, each with the delay it must wait before being sent. Copies with no delay
//! are sent by the engine at once; the others go through a [`DelayLine`] (a timer thread). So
//! the threaded engine and the io_uring engine can share it.
//!
//! A clean link costs one relaxed atomic load per packet ([`LinkGarbler::is_clean`]), after
//! which the engine sends the caller's bytes directly: no lock, no copy, no random draw. A link
//! whose faults can only drop (loss, down) copies nothing either: a packet that survives is
//! sent from the caller's bytes ([`LinkGarbler::apply`] says so), so a lossy benchmark measures
//! the engine, not copies the garbler made.
//!
//! For each packet on a faulty link, in this fixed order (the simulator's, see
//! `docs/SIMULATOR.md`): down drops it; loss drops it; duplicate makes a second copy; then per
//! copy: undetected corruption (payload changed, checksum resealed), corruption (1..=3 bits
//! flipped anywhere, which the receiver's DNP checksum catches), delay plus uniform jitter, and
//! reordering (an extra hold-back uniform in `(0, window]` so later packets overtake it).

mod delay;
pub mod mangle;
pub mod schedule;

pub use delay::{DelayLine, DelayStats};

use crate::sync::lock;
use control::NodeAddr;
use control::rng::Rng;
use control::topology::Faults;
use control::wire::Packet;
use mangle::{corrupt_undetected, flip_bits, nanos_upto};
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

// The default hold-back window for reordered packets.
use control::settings::garbler::REORDER_WINDOW;

/// The random stream of the direction `from -> to`, forked from a run's seed, so that traffic on
/// one link never shifts the fate of packets on another.
pub fn link_rng(seed: u64, from: NodeAddr, to: NodeAddr) -> Rng {
    Rng::new(seed).fork((u64::from(from.get()) << 16) | u64::from(to.get()))
}

control::counters! {
    /// Counters of one garbled direction. Packets sent while the link is clean are not counted here
    /// (the engine counts every send); `offered` counts those that went through the fault path.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct GarblerStats {
        pub offered: u64,
        pub dropped_down: u64,
        pub lost: u64,
        pub duplicated: u64,
        /// Copies with 1..=3 bits flipped.
        pub corrupted: u64,
        /// Corrupted copies that DNP parsing would still accept (the RFC 1071 sum cannot see some
        /// multi-bit flips).
        pub corrupted_escaped: u64,
        /// Copies with payload bytes changed and the checksum resealed (see
        /// [`LinkGarbler::set_undetected_corruption`]).
        pub corrupted_undetected: u64,
        /// Copies sent later than at once (delay, jitter or reorder hold-back).
        pub delayed: u64,
        /// Packets that went on as they were (the faults can only drop): sent from the
        /// caller's bytes, with no copy.
        pub unchanged: u64,
        pub reordered: u64,
    }
}

impl fmt::Display for GarblerStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.fields() {
            writeln!(f, "{name} {value}")?;
        }
        Ok(())
    }
}

/// One copy of a packet that survived the link, and how long to hold it before sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbledCopy {
    pub delay: Duration,
    pub packet: Vec<u8>,
}

#[derive(Debug)]
struct State {
    faults: Faults,
    undetected: f64,
    reorder_window: Duration,
    rng: Rng,
    stats: GarblerStats,
}

impl State {
    fn is_active(&self) -> bool {
        self.faults != Faults::default() || self.undetected > 0.0
    }

    /// Whether a packet that is neither lost nor dropped by a link down goes on unchanged and
    /// at once: every other fault is off.
    fn only_drops(&self) -> bool {
        let f = Faults {
            loss: 0.0,
            down: false,
            ..self.faults
        };
        f == Faults::default() && self.undetected == 0.0
    }
}

/// The faults of one direction of one link, with its own random stream and counters.
#[derive(Debug)]
pub struct LinkGarbler {
    /// Any fault set: mirrors `State::is_active`, read without the lock on every send.
    active: AtomicBool,
    state: Mutex<State>,
    /// To tell whether a corrupted copy still passes DNP parsing (`corrupted_escaped`).
    mtu: usize,
}

impl LinkGarbler {
    pub fn new(faults: Faults, rng: Rng, mtu: usize) -> Self {
        let state = State {
            faults,
            undetected: 0.0,
            reorder_window: REORDER_WINDOW,
            rng,
            stats: GarblerStats::default(),
        };
        LinkGarbler {
            active: AtomicBool::new(state.is_active()),
            state: Mutex::new(state),
            mtu,
        }
    }

    /// True when no fault is set: the caller sends its bytes as they are and skips
    /// [`LinkGarbler::apply`]. Relaxed is enough: a sender that sees a fault change one packet
    /// late is no different from one whose packet left just before the change.
    #[inline]
    pub fn is_clean(&self) -> bool {
        !self.active.load(Ordering::Relaxed)
    }

    pub fn faults(&self) -> Faults {
        lock(&self.state).faults
    }

    /// Replaces the faults at run time (a link going down or up, a loss rate changing).
    pub fn set_faults(&self, faults: Faults) {
        let mut s = lock(&self.state);
        s.faults = faults;
        self.active.store(s.is_active(), Ordering::Relaxed);
    }

    /// Probability of changing payload bytes and resealing the checksum, so DNP accepts the
    /// packet: for testing end-to-end integrity checks. Not part of the topology file.
    pub fn set_undetected_corruption(&self, p: f64) {
        let mut s = lock(&self.state);
        s.undetected = p;
        self.active.store(s.is_active(), Ordering::Relaxed);
    }

    /// Upper bound of the extra hold-back of a reordered copy.
    pub fn set_reorder_window(&self, window: Duration) {
        lock(&self.state).reorder_window = window;
    }

    pub fn stats(&self) -> GarblerStats {
        lock(&self.state).stats
    }

    /// Applies the faults to one packet and appends each surviving copy to `out` (nothing for a
    /// dropped packet). The draws happen in a fixed order, so one seed and one sequence of
    /// packets always give one outcome. True when the packet survived as it is and at once
    /// (the faults can only drop): nothing is added to `out`, the caller sends its own bytes.
    #[must_use = "true means the caller sends the packet itself"]
    pub fn apply(&self, packet: &[u8], out: &mut Vec<GarbledCopy>) -> bool {
        let mut guard = lock(&self.state);
        let s = &mut *guard;
        s.stats.offered += 1;
        if s.faults.down {
            s.stats.dropped_down += 1;
            return false;
        }
        if s.rng.chance(s.faults.loss) {
            s.stats.lost += 1;
            return false;
        }
        // The draws below all have probability 0 here (none is made): skipping them keeps
        // the random stream, and so every packet's fate, what it was.
        if s.only_drops() {
            s.stats.unchanged += 1;
            return true;
        }
        let copies = if s.rng.chance(s.faults.duplicate) {
            s.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut bytes = packet.to_vec();
            if s.rng.chance(s.undetected) && corrupt_undetected(&mut bytes, &mut s.rng) {
                s.stats.corrupted_undetected += 1;
            }
            if s.rng.chance(s.faults.corrupt) && flip_bits(&mut bytes, &mut s.rng) {
                s.stats.corrupted += 1;
                if Packet::parse(&bytes, self.mtu).is_ok() {
                    s.stats.corrupted_escaped += 1;
                }
            }
            let mut delay = s.faults.delay;
            if !s.faults.jitter.is_zero() {
                delay += nanos_upto(&mut s.rng, s.faults.jitter);
            }
            if s.rng.chance(s.faults.reorder) {
                s.stats.reordered += 1;
                delay += Duration::from_nanos(1) + nanos_upto(&mut s.rng, s.reorder_window);
            }
            if !delay.is_zero() {
                s.stats.delayed += 1;
            }
            out.push(GarbledCopy {
                delay,
                packet: bytes,
            });
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::Addr;
    use control::wire::{DEFAULT_MTU, Flag, dnp};

    fn sealed(body_len: usize) -> Vec<u8> {
        let body: Vec<u8> = (0..body_len).map(|i| i as u8).collect();
        dnp::frame(Addr::from_raw(2), Addr::from_raw(1), Flag::RmtpData, &body)
    }

    fn garbler(faults: Faults, seed: u64) -> LinkGarbler {
        LinkGarbler::new(faults, Rng::new(seed), DEFAULT_MTU)
    }

    /// Every packet that leaves, as the engines send them: the caller's own when it went on
    /// unchanged, else the garbler's copies.
    fn run(g: &LinkGarbler, n: usize) -> Vec<GarbledCopy> {
        let mut out = Vec::new();
        for _ in 0..n {
            let packet = sealed(40);
            if g.apply(&packet, &mut out) {
                out.push(GarbledCopy {
                    delay: Duration::ZERO,
                    packet,
                });
            }
        }
        out
    }

    #[test]
    fn clean_link_is_clean_and_any_fault_is_not() {
        let g = garbler(Faults::default(), 1);
        assert!(g.is_clean());
        g.set_faults(Faults {
            delay: Duration::from_millis(1),
            ..Faults::default()
        });
        assert!(!g.is_clean());
        g.set_faults(Faults::default());
        assert!(g.is_clean());
        g.set_undetected_corruption(0.5);
        assert!(!g.is_clean());
    }

    #[test]
    fn loss_duplicate_and_down_are_counted_and_balance() {
        let g = garbler(
            Faults {
                loss: 0.2,
                duplicate: 0.1,
                ..Faults::default()
            },
            7,
        );
        let out = run(&g, 10_000);
        let s = g.stats();
        assert_eq!(s.offered, 10_000);
        assert!((1_800..2_200).contains(&s.lost), "{s:?}");
        assert!((650..950).contains(&s.duplicated), "{s:?}");
        assert_eq!(out.len() as u64, s.offered - s.lost + s.duplicated);
        assert!(
            out.iter()
                .all(|c| c.packet == sealed(40) && c.delay.is_zero())
        );

        g.set_faults(Faults {
            down: true,
            ..Faults::default()
        });
        assert!(run(&g, 10).is_empty());
        assert_eq!(g.stats().dropped_down, 10);
    }

    #[test]
    fn a_link_that_only_drops_copies_nothing_and_drops_what_it_would_have() {
        let lossy = |delay| {
            garbler(
                Faults {
                    loss: 0.3,
                    delay,
                    ..Faults::default()
                },
                11,
            )
        };
        let (only_drops, delaying) = (lossy(Duration::ZERO), lossy(Duration::from_micros(1)));
        let mut copies = Vec::new();
        for i in 0..2_000 {
            let packet = sealed(40);
            let as_is = only_drops.apply(&packet, &mut copies);
            assert!(copies.is_empty(), "packet {i}: a copy made");
            // The same stream with a delay (which draws nothing) decides alike, by copies.
            let before = copies.len();
            assert!(!delaying.apply(&packet, &mut copies));
            assert_eq!(as_is, copies.len() > before, "packet {i}: another fate");
            copies.clear();
        }
        let s = only_drops.stats();
        assert_eq!(s.offered, 2_000);
        assert!((500..700).contains(&s.lost), "{s:?}");
        assert_eq!(s.unchanged, s.offered - s.lost);
        assert_eq!(delaying.stats().unchanged, 0);
    }

    #[test]
    fn corruption_is_caught_by_the_checksum_except_the_escapes_it_counts() {
        let g = garbler(
            Faults {
                corrupt: 1.0,
                ..Faults::default()
            },
            3,
        );
        let out = run(&g, 2_000);
        let s = g.stats();
        assert_eq!(s.corrupted, 2_000);
        let accepted = out
            .iter()
            .filter(|c| Packet::parse(&c.packet, DEFAULT_MTU).is_ok())
            .count() as u64;
        assert_eq!(accepted, s.corrupted_escaped);
        assert!(accepted < 100, "{accepted} of 2000 escaped");
        assert!(out.iter().all(|c| c.packet != sealed(40)));
    }

    #[test]
    fn same_seed_same_fate() {
        let faults = Faults {
            loss: 0.3,
            corrupt: 0.2,
            duplicate: 0.2,
            reorder: 0.2,
            jitter: Duration::from_millis(3),
            ..Faults::default()
        };
        assert_eq!(
            run(&garbler(faults, 11), 500),
            run(&garbler(faults, 11), 500)
        );
        assert_ne!(
            run(&garbler(faults, 11), 500),
            run(&garbler(faults, 12), 500)
        );
        let a = link_rng(5, NodeAddr::new(1).unwrap(), NodeAddr::new(2).unwrap()).next_u64();
        let b = link_rng(5, NodeAddr::new(2).unwrap(), NodeAddr::new(1).unwrap()).next_u64();
        assert_ne!(a, b, "each direction has its own stream");
    }

    #[test]
    fn delay_jitter_and_reorder_bounds() {
        let g = garbler(
            Faults {
                delay: Duration::from_millis(10),
                jitter: Duration::from_millis(2),
                reorder: 0.5,
                ..Faults::default()
            },
            5,
        );
        g.set_reorder_window(Duration::from_millis(30));
        let out = run(&g, 2_000);
        let s = g.stats();
        assert_eq!(s.delayed, 2_000);
        assert!((900..1_100).contains(&s.reordered), "{s:?}");
        let ms = Duration::from_millis;
        assert!(out.iter().all(|c| c.delay >= ms(10)));
        assert!(
            out.iter()
                .all(|c| c.delay <= ms(42) + Duration::from_nanos(1))
        );
        let held = out.iter().filter(|c| c.delay > ms(12)).count() as u64;
        assert!(held <= s.reordered && held > s.reordered * 9 / 10, "{held}");
    }
}
