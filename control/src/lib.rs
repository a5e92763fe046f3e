//! The Burghers control plane: wire formats, the topology file, and the DRP, GMP and RAP
//! protocols as sans-IO state machines.
//!
//! Nothing in this crate reads a clock, opens a socket or starts a thread: time is passed in as
//! [`time::Instant`], randomness is seeded, and output is returned to the caller (an engine).

pub mod addr;
pub mod counters;
pub mod rng;
pub mod settings;
pub mod time;
pub mod topology;
pub mod wire;

pub use addr::{Addr, GroupAddr, NodeAddr};
pub use time::Instant;
pub mod drp;
pub mod gmp;
pub mod rap;

/// A packet a protocol core wants sent: a whole sealed DNP packet and the neighbour to send it
/// to. The engine maps the neighbour's address to its socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: NodeAddr,
    pub packet: Vec<u8>,
}
