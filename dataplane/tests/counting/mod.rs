//! A global allocator that counts the allocations (and reallocations) of the thread that asked
//! for it, between `start` and `stop`: a test's own thread, with nothing else counted.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

fn count_one() {
    // `try_with`: a thread being torn down is not counted (and must not panic here).
    let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Counts this thread's allocations from now on.
pub fn start() {
    COUNT.with(|c| c.set(Some(0)));
}

/// This thread's allocations since `start`, which stop being counted.
pub fn stop() -> u64 {
    COUNT
        .with(|c| c.replace(None))
        .expect("counting was started")
}

/// `f`'s result, and the allocations it made on this thread.
pub fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    start();
    let out = f();
    (out, stop())
}
