//! Burghers benchmarks: scenarios that measure every compared system in one run, alternating
//! repetitions between them, and print ratios and shares of the kernel's own limit
//! (`cargo run --release -p bench -- <scenario>`; docs/BENCHMARKS.md). The criterion
//! micro-benchmarks live in benches/.

pub mod affinity;
pub mod chart;
pub mod cli;
pub mod figures;
pub mod forwarders;
pub mod machine;
pub mod openloop;
pub mod pingpong;
pub mod profile;
pub mod publish;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod threads;
pub mod traffic;
pub mod udp;
