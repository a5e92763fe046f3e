//! The DNP checksum, word-at-a-time against the textbook word-by-word loop, over the packet
//! sizes the network carries. Run: `cargo bench -p bench --bench checksum`.

use control::wire::checksum::{ones_complement_sum, ones_complement_sum_bytewise};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("dnp_checksum");
    for size in [64usize, 256, 1024, 9000] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
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

criterion_group!(benches, checksum);
criterion_main!(benches);
