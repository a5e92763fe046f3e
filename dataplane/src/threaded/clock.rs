//! The engine's clock: `std::time::Instant` mapped to the cores' `control::Instant`, as
//! nanoseconds since the node started.

use control::Instant;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        self.at(std::time::Instant::now())
    }

    /// The cores' time of a wall-clock instant (zero if it is before the origin).
    pub fn at(&self, t: std::time::Instant) -> Instant {
        let nanos = t.saturating_duration_since(self.origin).as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The wall-clock instant of a core's deadline, to wait on; `None` if it is too far away to
    /// represent (treated as "never").
    pub fn to_std(&self, t: Instant) -> Option<std::time::Instant> {
        self.origin.checked_add(Duration::from_nanos(t.as_nanos()))
    }

    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.origin.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Clock::start();
        let t = Instant::from_millis(1500);
        let std_t = c.to_std(t).unwrap();
        assert_eq!(c.at(std_t), t);
        assert!(c.now() < Instant::from_millis(60_000));
    }
}
