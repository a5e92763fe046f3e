//! Lock helpers that survive a poisoned lock. A thread that panicked while holding a lock has
//! already failed loudly; the engine's other threads keep going with the state as it was left
//! (every protected structure stays valid between statements) rather than panicking in turn.

use std::sync::{
    Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::Duration;

/// What a test runs just before a lock is taken through these helpers.
#[cfg(test)]
pub(crate) type LockProbe = Box<dyn Fn()>;

#[cfg(test)]
thread_local! {
    /// Called on this thread just before each lock it takes through these helpers: tests look
    /// at which locks the thread holds already (a lock taken while holding another is one half
    /// of a possible deadlock).
    pub(crate) static BEFORE_LOCK: std::cell::RefCell<Option<LockProbe>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs this thread's lock probe; taken out while it runs, so that its own locks do not
/// call it again.
#[cfg(test)]
fn before_lock() {
    let Ok(probe) = BEFORE_LOCK.try_with(|p| p.borrow_mut().take()) else {
        return;
    };
    if let Some(probe) = probe {
        probe();
        BEFORE_LOCK.with(|p| *p.borrow_mut() = Some(probe));
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(test)]
    before_lock();
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    #[cfg(test)]
    before_lock();
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    #[cfg(test)]
    before_lock();
    l.write().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    match cv.wait_timeout(guard, timeout) {
        Ok((g, _)) => g,
        Err(e) => e.into_inner().0,
    }
}

/// Waits on `cv` until `deadline` (for ever if `None`), or until woken; spurious wake-ups
/// return early too, so callers re-check their condition in a loop.
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<std::time::Instant>,
) -> MutexGuard<'a, T> {
    match deadline {
        None => wait(cv, guard),
        Some(d) => {
            let left = d.saturating_duration_since(std::time::Instant::now());
            wait_timeout(cv, guard, left)
        }
    }
}
