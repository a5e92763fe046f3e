//! Running real `burghers` processes on loopback: what the `burghers demo` and bench's
//! `multicast` scenario share. A crate of its own so that the `burghers` command can depend on
//! the bench (for `burghers bench`) while the bench depends on this.

pub mod ctl_client;
pub mod lab;
pub mod units;
