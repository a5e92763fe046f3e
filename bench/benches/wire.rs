//! The per-packet wire work of every hop, over the sizes the network carries (64 bytes, the
//! default 1024-byte MTU, and 1472, the most a 1500-byte Ethernet MTU leaves for UDP over IPv4):
//! DNP header validation (`Packet::parse`: size, length field, RFC 1071 checksum, flag) and the
//! CRC-32C that every control body's trailer and every DATA header carries.
//! Run: `cargo bench -p bench --bench wire`.

use control::wire::dnp::{self, Packet};
use control::wire::{DNP_HEADER_LEN, Flag};
use control::{Addr, NodeAddr};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

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

fn crc32c(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for size in SIZES {
        let bytes = packet(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &bytes, |b, bytes| {
            b.iter(|| ::crc32c::crc32c(black_box(bytes)))
        });
    }
    group.finish();
}

criterion_group!(benches, header_validation, crc32c);
criterion_main!(benches);
