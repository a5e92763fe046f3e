//! How the worker waits for its next completion or deadline: a batch while a stream flows,
//! a brief spin when asked, else asleep in `io_uring_enter`.

use super::*;

impl Engine {
    /// Sleeps in the kernel until a completion or the next deadline (or only submits, when
    /// busy-polling).
    pub(super) fn wait(&mut self) {
        if self.busy_poll {
            let _ = self.ring.submit();
            // Nothing came in the last turn: let another spinning thread have the core (on a
            // machine with fewer cores than spinning threads, a spin that never yields
            // starves the thread that would produce the next packet).
            if self.last_completions == 0 {
                std::thread::yield_now();
            }
            return;
        }
        let now = StdInstant::now();
        let deadline = [
            self.data
                .poll_timeout()
                .and_then(|t| self.shared.clock.to_std(t)),
            self.handles.next_deadline(now),
            self.schedule
                .front()
                .and_then(|c| self.shared.clock.to_std(Instant::ZERO + c.at)),
        ]
        .into_iter()
        .flatten()
        .min();
        if self.last_received && self.spin(deadline.map(|d| d.saturating_duration_since(now))) {
            return;
        }
        // Streaming (the last turn reaped several completions): sleep until a few are in,
        // for a moment at most, rather than wake per completion (with deferred task running
        // the kernel wakes us only then, which spares the senders a wake-up per batch).
        let (batch, batch_limit) = if self.last_completions >= STREAMING {
            (WAIT_BATCH, Some(BATCH_WAIT_LIMIT))
        } else {
            (1, None)
        };
        let wait = [
            deadline.map(|d| d.saturating_duration_since(now)),
            batch_limit,
        ]
        .into_iter()
        .flatten()
        .min();
        let result = match wait {
            Some(d) if d.is_zero() => self.ring.submit(),
            Some(d) => {
                let ts = Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(batch, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        if let Err(e) = result
            && !matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY)
            )
        {
            self.stats.recv_errors += 1;
        }
    }

    /// Adaptive waiting, after a turn that received: submits what is queued, then looks at the
    /// ring for a moment (at most
    /// `spin_before_sleep`, and not past the next deadline) before the caller sleeps. True if
    /// completions came: as many as a streaming wait asks for, or any by the end of the spin
    /// (the caller then runs its next turn at once). With deferred task running, a completion
    /// is first a flag on the submission ring (work waits for this thread); the submit that
    /// sees it runs that work, which posts the completion.
    fn spin(&mut self, until_deadline: Option<Duration>) -> bool {
        let limit =
            until_deadline.map_or(self.spin_before_sleep, |d| d.min(self.spin_before_sleep));
        if limit.is_zero() {
            return false;
        }
        let want = if self.last_completions >= STREAMING {
            WAIT_BATCH
        } else {
            1
        };
        let _ = self.ring.submit();
        let start = StdInstant::now();
        loop {
            if self.ring.submission().taskrun() {
                let _ = self.ring.submit();
            }
            let ready = self.ring.completion().len();
            if ready >= want || (ready > 0 && start.elapsed() >= limit) {
                self.stats.spins_found_work += 1;
                return true;
            }
            if start.elapsed() >= limit {
                self.stats.spins_gave_up += 1;
                return false;
            }
            std::hint::spin_loop();
        }
    }
}
