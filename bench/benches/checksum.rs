//! The DNP checksum, word-at-a-time against the textbook word-by-word loop, over the packet
//! sizes the network carries. Run: `cargo bench -p bench --bench checksum`.
//!
//! Criterion measures each variant; a closing best-of-N pass prints the speed-up per size so
//! that the claim in docs/BENCHMARKS.md is a ratio measured in one run.

use control::wire::checksum::{ones_complement_sum, ones_complement_sum_bytewise};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use std::hint::black_box;
use std::time::Instant;

const SIZES: [usize; 5] = [64, 256, 1024, 1472, 9000];

fn data(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

fn checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("dnp_checksum");
    for size in SIZES {
        let data = data(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("wordwise", size), &data, |b, d| {
            b.iter(|| ones_complement_sum(black_box(d)))
        });
        group.bench_with_input(BenchmarkId::new("bytewise", size), &data, |b, d| {
            b.iter(|| ones_complement_sum_bytewise(black_box(d)))
        });
    }
    group.finish();
}

/// Best of 15 rounds of `iters` calls, in nanoseconds per call.
fn best_ns(iters: u32, f: impl Fn() -> u16) -> f64 {
    (0..15)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            start.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .fold(f64::INFINITY, f64::min)
}

fn print_ratios() {
    println!("\nchecksum speed-up, wordwise vs bytewise (best of 15):");
    for size in SIZES {
        let d = data(size);
        let iters = (4_000_000 / size as u32).max(1000);
        let word = best_ns(iters, || ones_complement_sum(black_box(&d)));
        let byte = best_ns(iters, || ones_complement_sum_bytewise(black_box(&d)));
        println!(
            "  {size:>5} B: wordwise {word:>8.1} ns ({:>5.1} GB/s), bytewise {byte:>8.1} ns: {:.2}x",
            size as f64 / word,
            byte / word
        );
    }
}

criterion_group!(benches, checksum);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios();
}
