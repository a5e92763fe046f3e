//! What a receiver pays to hash and hand over the bytes of a transfer, two ways: staged (each
//! segment's payload copied into a 256 KiB block, the block hashed in one call, as `FileSink`
//! does) and in place (the hash updated segment by segment straight from where the payloads
//! lie in the receive buffers, which is what writing "without a copy from the receive buffer"
//! would hash from). Run: `cargo bench -p bench --bench sink_hash`.
//!
//! The payloads are DATA payloads of 1024-byte datagrams (994 bytes), each after its headers
//! as in a coalesced (GRO) receive buffer, so the in-place hash is fed pieces that are neither
//! BLAKE3 chunks nor aligned to them. A closing best-of-N pass prints the ratio in one run.

use control::settings::receiver::STAGED_BYTES;
use control::wire::DNP_HEADER_LEN;
use control::wire::rmtp::DATA_HEADER_LEN;
use criterion::{Criterion, Throughput, criterion_group};
use std::hint::black_box;
use std::time::Instant;

const DATAGRAM: usize = 1024;
const HEADERS: usize = DNP_HEADER_LEN + DATA_HEADER_LEN;
const PAYLOAD: usize = DATAGRAM - HEADERS;
/// Datagrams in one pass: a staged block's worth of payloads, rounded up.
const SEGMENTS: usize = STAGED_BYTES.div_ceil(PAYLOAD);

/// Receive buffers as the kernel fills them: datagram after datagram, headers and payload.
fn received() -> Vec<u8> {
    (0..SEGMENTS * DATAGRAM)
        .map(|i| (i * 31 + 7) as u8)
        .collect()
}

fn payloads(received: &[u8]) -> impl Iterator<Item = &[u8]> {
    received.chunks(DATAGRAM).map(|d| &d[HEADERS..])
}

/// Copies every payload into `block`, then hashes the block in one call.
fn staged(received: &[u8], block: &mut Vec<u8>) -> blake3::Hash {
    block.clear();
    for payload in payloads(received) {
        block.extend_from_slice(payload);
    }
    blake3::Hasher::new().update(block).finalize()
}

/// Hashes every payload where it lies.
fn in_place(received: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    for payload in payloads(received) {
        hasher.update(payload);
    }
    hasher.finalize()
}

/// The copy alone, for what staging adds.
fn copy_only(received: &[u8], block: &mut Vec<u8>) -> usize {
    block.clear();
    for payload in payloads(received) {
        block.extend_from_slice(payload);
    }
    block.len()
}

fn sink(c: &mut Criterion) {
    let received = received();
    let mut block = Vec::with_capacity(SEGMENTS * PAYLOAD);
    let mut group = c.benchmark_group("sink_hash");
    group.throughput(Throughput::Bytes((SEGMENTS * PAYLOAD) as u64));
    group.bench_function("staged", |b| {
        b.iter(|| staged(black_box(&received), &mut block))
    });
    group.bench_function("in_place", |b| b.iter(|| in_place(black_box(&received))));
    group.bench_function("copy_only", |b| {
        b.iter(|| copy_only(black_box(&received), &mut block))
    });
    group.finish();
}

/// Best of 15 rounds, in GB/s of payload.
fn best_gb_per_s(mut f: impl FnMut()) -> f64 {
    let rounds = 40;
    let best = (0..15)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..rounds {
                f();
            }
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    (SEGMENTS * PAYLOAD * rounds) as f64 / best / 1e9
}

fn print_ratio() {
    let received = received();
    let mut block = Vec::with_capacity(SEGMENTS * PAYLOAD);
    let staged_rate = best_gb_per_s(|| {
        black_box(staged(black_box(&received), &mut block));
    });
    let in_place_rate = best_gb_per_s(|| {
        black_box(in_place(black_box(&received)));
    });
    let copy_rate = best_gb_per_s(|| {
        black_box(copy_only(black_box(&received), &mut block));
    });
    println!(
        "\nhashing {PAYLOAD}-byte payloads (best of 15): staged {staged_rate:.2} GB/s, in place \
         {in_place_rate:.2} GB/s (in place / staged {:.2}x); the copy alone {copy_rate:.2} GB/s",
        in_place_rate / staged_rate
    );
}

criterion_group!(benches, sink);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratio();
}
