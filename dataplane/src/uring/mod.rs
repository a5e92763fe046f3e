//! The product engine (issue 10): per-core workers, each with its own io_uring and UDP socket
//! on the node's port, drive the same sans-IO data plane as the simulator; one control thread
//! runs DRP, GMP and RAP and publishes the tables the workers read.
//!
//! ```text
//!             commands (send, receive, subscribe, stats, stop) ──► queue + eventfd
//!                                                                     │
//!   UDP socket ──► multishot recvmsg ──► provided buffer ring ──┐     ▼
//!   (UDP_GRO: one receive, many datagrams, split in place)      ├─► worker: DataPlane
//!                                                               │   handle_batch / timeout
//!   sendmsg per run of equal-size packets to one neighbour ◄────┤   poll_outgoing ─► garbler
//!   (UDP_SEGMENT), from send slots held until completion        │   (delayed copies: delay line)
//!   write per staged block of a local receiver's file ◄─────────┘
//! ```
//!
//! A packet passed on leaves from the receive buffer it arrived in, and a packet the node built
//! from the one buffer it was built in, whatever the number of next hops: each buffer counts
//! the sends that refer to it (`holds.rs` for receive buffers, the node's outbox for its own).
//! Packets of one tree go to one worker (`steer.rs`: a reuseport program on the group field,
//! or a hand-off between workers). A local receiver's file is written through the ring
//! (`writes.rs`).
//!
//! A worker waits in `io_uring_enter` until a completion or its next deadline (spinning only
//! briefly when set, or always with [`UringOptions::busy_poll`]). The engine decides nothing
//! about protocols: it moves bytes and time. `docs/ARCHITECTURE.md` ("The io_uring engine")
//! says what is done and what is left.

mod bufring;
mod control;
mod engine;
mod holds;
mod node;
mod send;
mod shared;
mod socket;
mod stats;
mod steer;
mod transfers;
mod writes;

pub use node::{MAX_WORKERS, UringNode, UringOptions};
pub use stats::{EngineStats, UringStats};
