//! The threaded engine: the seed's own design (sections 1–6 of the 2001 document) on real UDP
//! sockets, built faithfully so that the io_uring engine has an honest baseline to be measured
//! against, on the same wire format byte for byte (the same sans-IO cores build every packet).
//!
//! ```text
//!                        UDP socket (one per node)
//!                               │ recvfrom, one heap buffer per datagram
//!                     ┌─────────▼──────────┐
//!                     │ DNP receiver thread│ parse (length, checksum, flag), map the source
//!                     └─┬──────┬──────┬──┬─┘ socket to a neighbour, dispatch by flag
//!     impatient buffers │      │      │  └──────────────► forward by next_hop (sendto)
//!        (100, drop     ▼      ▼      ▼
//!         oldest)     [drp]  [gmp]  [rap.<sid>] ...      [rmtp]
//!                       │      │      │                    │
//!      DRP receiver ◄───┘      │      ├─► RAP server thread per server
//!      DRP hello  ─┐           │      └─► RAP client thread  ▼
//!      DRP LSP    ─┴─ Mutex<Drp>       GMP thread      RMTP middle layer ◄── [rmtp.local] ◄─┐
//!            │ publishes RwLock<Arc<RoutingTable>>  │     │ Mutex<RmtpRelay>             │
//!            ▼                                      ▼     ├► [rmtp.client.<sid>] ► client ┘
//!        RwLock<Arc<MulticastTable>> (GMP publishes)     └► [rmtp.server.<group>] ► server
//!     every sender: Dnp::send_to_neighbour / send_routed ── garbler ── sendto per packet
//! ```
//!
//! `docs/ARCHITECTURE.md` ("The threaded engine") maps each piece to the seed's sections;
//! [`ThreadedNode::send`] and [`ThreadedNode::receive`] start RMTP transfers.

mod buffer;
mod clock;
mod counters;
mod dnp;
mod drp;
mod gmp;
mod node;
mod packet;
mod rap;
mod receiver;
mod rmtp;
mod schedule;
mod signal;
pub(crate) mod sockopt;
mod stats;

pub use buffer::{BufferHandle, BufferStats, ImpatientBuffer, Pop, Push};
pub use clock::Clock;
pub use counters::{DnpStats, ERROR_NAMES, FLAG_NAMES};
pub use dnp::{Dnp, PeerInfo, SendError};
pub use node::{RapServerConfig, ThreadedNode, ThreadedOptions};
pub use packet::{PacketBuf, Received};
pub use rap::RapRequestError;
pub use rmtp::{
    MiddleStats, ReceiveHandle, ReceiveOptions, ReceiveProgress, ReceiveState, RmtpStats,
    SendHandle, SendOptions, SendProgress,
};
pub use signal::{Signal, Wake};
pub use stats::NodeStats;
