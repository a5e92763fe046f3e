//! The per-packet wire work of every hop, over the sizes the network carries (64 bytes, the
//! default 1024-byte MTU, and 1472, the most a 1500-byte Ethernet MTU leaves for UDP over IPv4):
//! DNP header validation (`Packet::parse`: size, length field, RFC 1071 checksum, flag) and the
//! CRC-32C that every control body's trailer and every DATA header carries.
//! Run: `cargo bench -p bench --bench wire`; a closing best-of-15 pass prints each CRC-32C
//! candidate's ratio to the `crc32c` crate.

use control::wire::dnp::{self, Packet};
use control::wire::{DNP_HEADER_LEN, Flag};
use control::{Addr, NodeAddr};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use std::hint::black_box;
use std::time::Instant;

const SIZES: [usize; 3] = [64, 1024, 1472];

fn node(n: u16) -> NodeAddr {
    NodeAddr::new(n).expect("a node address")
}

/// A sealed DNP packet of `len` bytes.
fn packet(len: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..len - DNP_HEADER_LEN)
        .map(|i| (i * 31 + 7) as u8)
        .collect();
    dnp::frame(Addr::Node(node(2)), Addr::Node(node(1)), Flag::Rap, &body)
}

fn header_validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("dnp_parse");
    for size in SIZES {
        let bytes = packet(size);
        assert!(Packet::parse(&bytes, size).is_ok());
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &bytes, |b, bytes| {
            b.iter(|| Packet::parse(black_box(bytes), size).map(|p| p.flag()))
        });
    }
    group.finish();
}

/// The CRC-32C candidates: the workspace's own (`control::wire::crc32c`), the `crc32c` crate it
/// replaced on the fast path, `crc-fast` (PCLMULQDQ folding fused with CRC32 streams, built for
/// long buffers) and `crc`'s slice-by-16 table (software, for scale).
type Candidate = (&'static str, Box<dyn Fn(&[u8]) -> u32>);

fn crc32c_candidates() -> Vec<Candidate> {
    let table16 = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
    vec![
        ("control", Box::new(control::wire::crc32c::crc32c)),
        ("crc32c_crate", Box::new(::crc32c::crc32c)),
        (
            "crc_fast",
            Box::new(|bytes| crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32),
        ),
        (
            "crc_slice16",
            Box::new(move |bytes| table16.checksum(bytes)),
        ),
    ]
}

fn crc32c(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    let candidates = crc32c_candidates();
    for size in SIZES {
        let bytes = packet(size);
        group.throughput(Throughput::Bytes(size as u64));
        for (name, crc) in &candidates {
            assert_eq!(crc(&bytes), ::crc32c::crc32c(&bytes), "{name}");
            group.bench_with_input(BenchmarkId::new(*name, size), &bytes, |b, bytes| {
                b.iter(|| crc(black_box(bytes)))
            });
        }
    }
    group.finish();
}

/// Each candidate's best time per call over 15 rounds of `iters` calls, the candidates taking
/// turns within every round so that the machine's load falls on all of them alike.
fn best_ns(candidates: &[Candidate], bytes: &[u8], iters: u32) -> Vec<f64> {
    let mut best = vec![f64::INFINITY; candidates.len()];
    for _ in 0..15 {
        for ((_, crc), best) in candidates.iter().zip(&mut best) {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(crc(black_box(bytes)));
            }
            *best = best.min(start.elapsed().as_nanos() as f64 / f64::from(iters));
        }
    }
    best
}

/// Each candidate's best time per size and its ratio to the `crc32c` crate, measured in one
/// pass so that the claim in docs/BENCHMARKS.md survives a noisy machine.
fn print_crc32c_ratios() {
    println!("\nCRC-32C, best of 15, speed-up over the crc32c crate:");
    let candidates = crc32c_candidates();
    let reference = candidates
        .iter()
        .position(|(name, _)| *name == "crc32c_crate")
        .expect("the crate is a candidate");
    for size in SIZES {
        let bytes = packet(size);
        let iters = (4_000_000 / size as u32).max(1000);
        let best = best_ns(&candidates, &bytes, iters);
        for ((name, _), ns) in candidates.iter().zip(&best) {
            println!(
                "  {size:>5} B {name:<13} {ns:>7.1} ns ({:>5.1} GB/s): {:.2}x",
                size as f64 / ns,
                best[reference] / ns
            );
        }
    }
}

criterion_group!(benches, header_validation, crc32c);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if wants_ratios() {
        print_crc32c_ratios();
    }
}

/// The closing pass runs under `cargo bench`, not under `cargo test --benches` (the smoke run).
fn wants_ratios() -> bool {
    std::env::args().any(|a| a == "--bench")
}
