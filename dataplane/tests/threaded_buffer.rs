//! The impatient buffer (seed §1.2): the producer never waits; a full buffer loses its oldest
//! item and counts it; consumers block with a deadline, can be kicked, and are released by close.
//! And the reference-counted packet buffers that pass through it.

use dataplane::threaded::{ImpatientBuffer, PacketBuf, Pop, Push};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Polls `cond` until it holds (true) or a generous deadline passes (false).
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

#[test]
fn a_burst_drops_the_oldest_and_counts_it() {
    let buf = ImpatientBuffer::new("test", 100);
    let mut outcomes = Vec::new();
    for i in 0..1000u32 {
        outcomes.push(buf.push(i));
    }
    assert!(outcomes[..100].iter().all(|&o| o == Push::Stored));
    assert!(outcomes[100..].iter().all(|&o| o == Push::DroppedOldest));
    let s = buf.stats();
    assert_eq!(
        (s.pushed, s.dropped, s.len, s.high_water),
        (1000, 900, 100, 100)
    );
    let kept: Vec<u32> = std::iter::from_fn(|| buf.try_pop()).collect();
    assert_eq!(
        kept,
        (900..1000).collect::<Vec<_>>(),
        "the newest 100, in order"
    );
    assert_eq!(buf.stats().popped, 100);
}

#[test]
fn a_slow_consumer_never_blocks_the_producer() {
    let buf = Arc::new(ImpatientBuffer::new("test", 10));
    let consumer = {
        let buf = Arc::clone(&buf);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Some(v) = buf.pop() {
                seen.push(v);
                // The subject: a consumer slower than the producer.
                std::thread::sleep(Duration::from_millis(1));
            }
            seen
        })
    };
    for i in 0..5000u32 {
        buf.push(i);
    }
    // Let the consumer drain what is left, then release it.
    assert!(
        wait_for(|| buf.is_empty() && buf.waiting() == 1),
        "the consumer never drained the buffer: {buf:?}"
    );
    buf.close();
    let seen = consumer.join().unwrap();
    let s = buf.stats();
    assert_eq!(s.popped + s.dropped, 5000);
    assert_eq!(seen.len() as u64, s.popped);
    assert!(s.dropped > 0, "the burst outran the consumer");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "FIFO order, gaps where items were dropped"
    );
    assert_eq!(seen.last(), Some(&4999), "the newest item always survives");
    assert_eq!(buf.push(1), Push::Closed);
    assert_eq!(buf.stats().refused, 1);
}

#[test]
fn deadlines_kicks_and_close_wake_a_consumer() {
    let buf = Arc::new(ImpatientBuffer::<u8>::new("test", 4));
    let deadline = Instant::now() + Duration::from_millis(30);
    assert_eq!(buf.pop_until(Some(deadline)), Pop::Timeout);
    assert!(Instant::now() >= deadline, "a timeout never comes early");
    buf.kick();
    assert_eq!(
        buf.pop_until(None),
        Pop::Kicked,
        "a kick before the wait is remembered"
    );
    let waiter = {
        let buf = Arc::clone(&buf);
        std::thread::spawn(move || buf.pop_until(None))
    };
    // Closed while the consumer waits, not before it does.
    assert!(wait_for(|| buf.waiting() == 1), "the consumer never waited");
    buf.close();
    assert_eq!(waiter.join().unwrap(), Pop::Closed);
    assert_eq!(buf.pop(), None);
}

#[test]
fn packets_are_shared_by_reference_count() {
    let p = PacketBuf::from_vec(vec![1, 2, 3]);
    let clients: Vec<ImpatientBuffer<PacketBuf>> = (0..3)
        .map(|i| ImpatientBuffer::new(format!("client{i}"), 2))
        .collect();
    for c in &clients {
        c.push(p.clone());
    }
    assert_eq!(p.ref_count(), 4);
    let got = clients[0].try_pop().unwrap();
    assert_eq!(&*got, &[1, 2, 3]);
    assert!(
        std::ptr::eq(got.bytes().as_ptr(), p.bytes().as_ptr()),
        "no copy"
    );
    drop(clients);
    drop(got);
    assert_eq!(p.ref_count(), 1, "the last holder frees it");
}
