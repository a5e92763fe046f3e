//! A wake-up for threads that sleep on a timer rather than on a buffer: the DRP hello and LSP
//! threads (seed §3.2: "enters a pthread conditional wait", "waits either to be alerted of a
//! topology change or to be awakened by a timeout").

use crate::sync::{lock, wait_until};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

#[derive(Debug, Default)]
struct State {
    signalled: bool,
    stopped: bool,
}

/// Why [`Signal::wait_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Signalled,
    Timeout,
    Stopped,
}

#[derive(Debug, Default)]
pub struct Signal {
    state: Mutex<State>,
    cv: Condvar,
}

impl Signal {
    /// Wakes the waiter (or the next wait, if nobody waits now).
    pub fn signal(&self) {
        lock(&self.state).signalled = true;
        self.cv.notify_all();
    }

    /// Wakes the waiter for good: every wait returns [`Wake::Stopped`] from now on.
    pub fn stop(&self) {
        lock(&self.state).stopped = true;
        self.cv.notify_all();
    }

    pub fn wait_until(&self, deadline: Option<Instant>) -> Wake {
        let mut s = lock(&self.state);
        loop {
            if s.stopped {
                return Wake::Stopped;
            }
            if std::mem::take(&mut s.signalled) {
                return Wake::Signalled;
            }
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return Wake::Timeout;
            }
            s = wait_until(&self.cv, s, deadline);
        }
    }
}
