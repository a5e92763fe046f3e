//! One "please stop" flag per process, raised by SIGINT, SIGTERM or SIGHUP (through `ctrlc`,
//! whose handler runs on its own thread, so it may lock and notify) or by `ctl stop`. Whoever
//! hosts a node waits on it and then stops the node cleanly. A second signal while the first
//! stop is still under way exits at once, in case the clean stop hangs.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Exit status after a second signal: 128 + SIGINT, as a shell reports an interrupted job.
const FORCED_EXIT: i32 = 130;

#[derive(Default)]
struct State {
    raised: Mutex<Option<&'static str>>,
    cond: Condvar,
}

/// A handle on the process's stop flag; clones share it.
#[derive(Clone)]
pub struct Shutdown(Arc<State>);

static PROCESS: OnceLock<Shutdown> = OnceLock::new();

impl Shutdown {
    /// The process's flag, with the signal handler installed on first use.
    pub fn install() -> Result<Shutdown, String> {
        if let Some(s) = PROCESS.get() {
            return Ok(s.clone());
        }
        let s = Shutdown(Arc::new(State::default()));
        let handler = s.clone();
        ctrlc::set_handler(move || {
            if handler.is_raised() {
                eprintln!("burghers: second signal, exiting without a clean stop");
                std::process::exit(FORCED_EXIT);
            }
            handler.raise("signal");
        })
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
        Ok(PROCESS.get_or_init(|| s).clone())
    }

    /// Raises the flag (`why` is what the log says stopped us); later calls keep the first why.
    pub fn raise(&self, why: &'static str) {
        let mut raised = self.0.raised.lock().unwrap_or_else(|p| p.into_inner());
        if raised.is_none() {
            *raised = Some(why);
            self.0.cond.notify_all();
        }
    }

    pub fn is_raised(&self) -> bool {
        self.reason().is_some()
    }

    pub fn reason(&self) -> Option<&'static str> {
        *self.0.raised.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the flag is raised or `timeout` passes; true if raised.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut raised = self.0.raised.lock().unwrap_or_else(|p| p.into_inner());
        while raised.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            raised = self
                .0
                .cond
                .wait_timeout(raised, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_wakes_a_waiter_and_keeps_the_first_reason() {
        let s = Shutdown(Arc::new(State::default()));
        assert!(!s.wait_timeout(Duration::from_millis(10)));
        let other = s.clone();
        let t = std::thread::spawn(move || other.wait_timeout(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        s.raise("ctl stop");
        s.raise("signal");
        assert!(t.join().unwrap());
        assert_eq!(s.reason(), Some("ctl stop"));
    }
}
