//! The io_uring engine, first slice (issue 10): one engine thread per node drives the same
//! sans-IO [`Node`](crate::node::Node) as the simulator, over one UDP socket and one io_uring.
//!
//! ```text
//!             commands (send, receive, subscribe, stats, stop) ──► queue + eventfd
//!                                                                     │
//!   UDP socket ──► multishot recvmsg ──► provided buffer ring ──┐     ▼
//!   (UDP_GRO: one receive, many datagrams, split in place)      ├─► engine thread: Node
//!                                                               │   handle_received / timeout
//!   sendmsg per run of equal-size packets to one neighbour ◄────┘   poll_outgoing ─► garbler
//!   (UDP_SEGMENT), from send slots held until completion            (delayed copies: delay line)
//! ```
//!
//! A packet passed on leaves from the receive buffer it arrived in, and a packet the node built
//! from the one buffer it was built in, whatever the number of next hops: each buffer counts
//! the sends that refer to it (`holds.rs` for receive buffers, the node's outbox for its own).
//!
//! It waits in `io_uring_enter` until a completion or the node's next deadline (never
//! spinning unless [`UringOptions::busy_poll`]). The engine decides nothing about protocols:
//! it moves bytes and time. `docs/ARCHITECTURE.md` ("The io_uring engine") says what is done
//! and what is left.

mod bufring;
mod control;
mod engine;
mod holds;
mod node;
mod send;
mod shared;
mod socket;
mod stats;
// Not called yet: the engine's split into per-core workers (issue 10) wires it in.
mod steer;
mod transfers;

pub use node::{MAX_WORKERS, UringNode, UringOptions};
pub use stats::{EngineStats, UringStats};
