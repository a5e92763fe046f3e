//! The library part of the `burghers` package: what the `burghers` command and the benchmarks
//! share to run real `burghers` processes on loopback (the `demo`, and bench's `multicast`).

pub mod ctl_client;
pub mod lab;
pub mod units;
