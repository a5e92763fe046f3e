//! What a caller of [`RunningNode::send`](super::RunningNode::send) and
//! [`RunningNode::receive`](super::RunningNode::receive) holds, whatever the engine: options
//! in, and handles that read the progress the engine publishes for each transfer (a mutex and a
//! condition variable per transfer, updated once per batch of packets). The engine keeps the
//! other side, [`SendShared`] and [`ReceiveShared`]: it publishes into them and marks them
//! ended; a receive handle's abort reaches it through the flag and the kick it supplied.

use crate::rmtp::{ReceiverConfig, ReceiverStats, SenderConfig, SenderStats, TransferShape};
use crate::sync::{lock, wait_until};
use control::rap::ServiceEntry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How a local RMTP server sends.
#[derive(Clone, Debug, Default)]
pub struct SendOptions {
    /// Pacing of data and repairs, bytes per second; `None`: limited by the receivers' window
    /// only.
    pub rate: Option<u64>,
    /// How far (bytes) the sender may go before the first MAB arrives; `None`: the core's
    /// default (64 KiB).
    pub initial_window: Option<u64>,
    /// The source's BLAKE3 hash, when the caller has it already (it hashed the source to
    /// announce the transfer ahead): the engine then does not read the whole source again for
    /// it. A wrong one fails every receiver's verification. `None`: the engine hashes it.
    pub content_hash: Option<[u8; 32]>,
}

/// How a local RMTP client receives.
#[derive(Clone, Debug)]
pub struct ReceiveOptions {
    /// Bytes accepted beyond what was written to the sink (the MAB's window), at most what the
    /// engine can hold in a burst (more would be lost in every burst): on the threaded engine
    /// its impatient buffers (buffer capacity × segment payload, about 97 KiB with the
    /// defaults), on the uring engine the socket's receive buffer. The default, 2 MiB, is that
    /// most on the threaded engine; on uring it held 2% loss to 3 receivers at 62 MB/s where
    /// 256 KiB gave 37 (bench multicast, 64 MiB, star; indicative).
    pub window: u64,
    /// The receiver fails when the sender has been unreachable by routing, or silent (no DATA
    /// or SPM of the transfer), this long.
    pub sender_timeout: Duration,
    /// The transfer's shape from the sender's RAP announcement, if the caller asked for it:
    /// SPMs that disagree are refused. `None`: learnt from the first plausible SPM.
    pub announced: Option<TransferShape>,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions {
            window: control::settings::host::RECEIVE_WINDOW,
            sender_timeout: control::settings::receiver::SENDER_TIMEOUT,
            announced: None,
        }
    }
}

impl SendOptions {
    /// Puts these settings into a sender's configuration: the one rule every engine follows.
    pub fn apply(&self, config: &mut SenderConfig) {
        if let Some(w) = self.initial_window {
            config.initial_window = w;
        }
        config.rate = self.rate;
    }
}

impl ReceiveOptions {
    /// Puts these settings into a receiver's configuration, its window at most `max_window`
    /// (what the engine can buffer): the one rule every engine follows.
    pub fn apply(&self, config: &mut ReceiverConfig, max_window: u64) {
        config.window = self.window.clamp(1, max_window.max(1));
        config.announced = self.announced;
        config.sender_timeout = self.sender_timeout;
    }
}

/// A sender's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendProgress {
    /// Bytes in the transfer.
    pub total: u64,
    /// Bytes sent at least once.
    pub sent: u64,
    /// Bytes every receiver reported holding.
    pub acked: u64,
    pub retransmissions: u64,
    /// NACK packets that reached the sender (after aggregation in the tree).
    pub nacks: u64,
    /// Every receiver has everything.
    pub complete: bool,
    /// Why the transfer ended without every receiver (every one failed, or none is left).
    pub failed: Option<String>,
}

/// Where a receiver stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiveState {
    Receiving,
    /// Every byte is in the sink and its hash verified (a file sink renamed its file).
    Complete,
    /// The transfer stopped; a file sink leaves `NAME.partial`.
    Failed(String),
}

/// A receiver's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveProgress {
    /// Bytes written to the sink, in order.
    pub delivered: u64,
    /// The transfer's size, once an SPM announced it.
    pub total: Option<u64>,
    /// Retransmissions used (from the sender or a relay's cache).
    pub repairs: u64,
    /// NACK packets sent.
    pub nacks: u64,
    /// Data packets refused for a bad CRC (corruption the DNP checksum missed).
    pub crc_failures: u64,
    pub state: ReceiveState,
}

/// What an engine's server or client (a thread, a task) publishes.
pub(crate) struct Status<P, S> {
    pub progress: P,
    pub stats: S,
    /// The engine's side has not ended yet.
    pub running: bool,
}

/// A transfer's published status, the condition variable its waiters sleep on, and what else
/// the handle shares with the engine (`X`).
pub(crate) struct Shared<P, S, X> {
    pub status: Mutex<Status<P, S>>,
    changed: Condvar,
    /// Whether a new progress is worth waking the waiters for (what they wait for changed).
    wakes: fn(&P, &P) -> bool,
    extra: X,
}

impl<P, S: Clone, X> Shared<P, S, X> {
    fn create(progress: P, stats: S, wakes: fn(&P, &P) -> bool, extra: X) -> Arc<Self> {
        Arc::new(Shared {
            status: Mutex::new(Status {
                progress,
                stats,
                running: true,
            }),
            changed: Condvar::new(),
            wakes,
            extra,
        })
    }

    /// Publishes the engine's view; wakes waiters only when something they wait for changed.
    pub fn publish(&self, progress: P, stats: &S) {
        let mut s = lock(&self.status);
        let wake = (self.wakes)(&s.progress, &progress);
        s.progress = progress;
        s.stats.clone_from(stats);
        drop(s);
        if wake {
            self.changed.notify_all();
        }
    }

    pub fn ended(&self) {
        lock(&self.status).running = false;
        self.changed.notify_all();
    }

    pub fn is_running(&self) -> bool {
        lock(&self.status).running
    }
}

/// What an engine's server shares with its [`SendHandle`]: the entry its RAP server announces.
pub(crate) type SendShared = Shared<SendProgress, SenderStats, ServiceEntry>;

impl SendShared {
    pub fn new(entry: ServiceEntry) -> Arc<Self> {
        let progress = SendProgress {
            total: entry.size,
            ..SendProgress::default()
        };
        Shared::create(
            progress,
            SenderStats::default(),
            |old, new| old.complete != new.complete || old.failed != new.failed,
            entry,
        )
    }

    pub fn entry(&self) -> &ServiceEntry {
        &self.extra
    }
}

/// The caller's side of a transfer this node multicasts. Cloning shares it.
#[derive(Clone)]
pub struct SendHandle {
    pub(crate) shared: Arc<SendShared>,
}

impl SendHandle {
    pub fn progress(&self) -> SendProgress {
        lock(&self.shared.status).progress.clone()
    }

    /// Waits at most `timeout` until every receiver has everything; true if they have. Returns
    /// early (false) if the engine's server ended incomplete (the node stopped, or the transfer
    /// failed: see `SendProgress::failed`).
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.shared.status);
        loop {
            if s.progress.complete {
                return true;
            }
            if !s.running || Instant::now() >= deadline {
                return false;
            }
            s = wait_until(&self.shared.changed, s, Some(deadline));
        }
    }

    /// What this node's RAP server announces for the transfer.
    pub fn entry(&self) -> &ServiceEntry {
        self.shared.entry()
    }
}

impl std::fmt::Debug for SendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendHandle")
            .field("name", &self.shared.entry().name)
            .field("progress", &self.progress())
            .finish()
    }
}

/// Wakes an engine's client so that it looks at its abort flag (the threaded engine kicks the
/// client thread's inbox). Called from the caller's thread, never on the engine's fast path.
pub(crate) type Kick = Box<dyn Fn() + Send + Sync>;

/// What an engine's client shares with its [`ReceiveHandle`].
pub(crate) struct ReceiveExtra {
    abort: AtomicBool,
    kick: Kick,
}

pub(crate) type ReceiveShared = Shared<ReceiveProgress, ReceiverStats, ReceiveExtra>;

impl ReceiveShared {
    /// `kick` makes the client see an abort soon (its flag is set first).
    pub fn new(kick: Kick) -> Arc<Self> {
        let progress = ReceiveProgress {
            delivered: 0,
            total: None,
            repairs: 0,
            nacks: 0,
            crc_failures: 0,
            state: ReceiveState::Receiving,
        };
        let extra = ReceiveExtra {
            abort: AtomicBool::new(false),
            kick,
        };
        Shared::create(
            progress,
            ReceiverStats::default(),
            // The end, and the first byte delivered (so a caller times the transfer exactly).
            |old, new| old.state != new.state || (old.delivered == 0 && new.delivered > 0),
            extra,
        )
    }

    pub fn abort_requested(&self) -> bool {
        self.extra.abort.load(Ordering::Acquire)
    }
}

/// The caller's side of a transfer a local client receives. Cloning shares it.
#[derive(Clone)]
pub struct ReceiveHandle {
    pub(crate) shared: Arc<ReceiveShared>,
}

impl ReceiveHandle {
    pub fn progress(&self) -> ReceiveProgress {
        lock(&self.shared.status).progress.clone()
    }

    /// Waits at most `timeout` until the first byte was delivered or the transfer ended; the
    /// progress when it returns.
    pub fn wait_started(&self, timeout: Duration) -> ReceiveProgress {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.shared.status);
        loop {
            let p = &s.progress;
            if p.delivered > 0 || p.state != ReceiveState::Receiving || Instant::now() >= deadline {
                return s.progress.clone();
            }
            s = wait_until(&self.shared.changed, s, Some(deadline));
        }
    }

    /// Waits at most `timeout` for the transfer to complete or fail; the state when it returns.
    pub fn wait(&self, timeout: Duration) -> ReceiveState {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.shared.status);
        loop {
            if s.progress.state != ReceiveState::Receiving || Instant::now() >= deadline {
                return s.progress.state.clone();
            }
            s = wait_until(&self.shared.changed, s, Some(deadline));
        }
    }

    /// Waits at most `timeout` for the engine's client to end (it left the group); true if it
    /// has. A completed client stays in the group until the sender's SPM shows that every
    /// receiver has everything (about one SPM interval), so that the MAB which completes the
    /// sender is not cut off: a program about to stop its node after `Complete` waits for this.
    pub fn wait_ended(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.shared.status);
        loop {
            if !s.running {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            s = wait_until(&self.shared.changed, s, Some(deadline));
        }
    }

    /// Gives up: the sink is aborted (a file stays `NAME.partial`), the client leaves the group
    /// and the state becomes `Failed("aborted")`. Nothing happens to a completed transfer.
    pub fn abort(&self) {
        self.shared.extra.abort.store(true, Ordering::Release);
        (self.shared.extra.kick)();
    }
}

impl std::fmt::Debug for ReceiveHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveHandle")
            .field("progress", &self.progress())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn abort_sets_the_flag_then_kicks_the_engine() {
        let kicks = Arc::new(AtomicU64::new(0));
        let shared = {
            let kicks = Arc::clone(&kicks);
            ReceiveShared::new(Box::new(move || {
                kicks.fetch_add(1, Ordering::SeqCst);
            }))
        };
        let handle = ReceiveHandle {
            shared: Arc::clone(&shared),
        };
        assert!(!shared.abort_requested());
        handle.abort();
        assert!(shared.abort_requested());
        assert_eq!(kicks.load(Ordering::SeqCst), 1);
    }

    /// What an engine publishes from its own thread reaches a handle waiting on another.
    #[test]
    fn a_waiting_handle_sees_what_the_engine_publishes() {
        let shared = ReceiveShared::new(Box::new(|| {}));
        let handle = ReceiveHandle {
            shared: Arc::clone(&shared),
        };
        let engine = std::thread::spawn(move || {
            let mut progress = ReceiveProgress {
                delivered: 10,
                total: Some(10),
                repairs: 1,
                nacks: 2,
                crc_failures: 0,
                state: ReceiveState::Complete,
            };
            shared.publish(progress.clone(), &ReceiverStats::default());
            progress.repairs = 3;
            shared.publish(progress, &ReceiverStats::default());
            shared.ended();
        });
        let limit = Duration::from_secs(30);
        assert_eq!(handle.wait(limit), ReceiveState::Complete);
        assert!(handle.wait_ended(limit));
        engine.join().unwrap();
        assert_eq!(handle.progress().repairs, 3);

        let entry = ServiceEntry {
            group: control::GroupAddr::from_index(1).unwrap(),
            sender: control::NodeAddr::new(1).unwrap(),
            size: 5,
            hash: [0; 32],
            segment_size: 1000,
            name: "x".into(),
        };
        let shared = SendShared::new(entry.clone());
        let send = SendHandle {
            shared: Arc::clone(&shared),
        };
        assert_eq!(send.progress().total, 5);
        assert_eq!(send.entry(), &entry);
        shared.ended();
        assert!(!send.wait(limit), "ended incomplete");
    }
}
