//! Hosting a node: what a node some engine runs offers its users, whatever the engine. The
//! [`RunningNode`] trait (tables, membership, transfers, RAP, faults, counters, stop), and the
//! engine-neutral types of its transfers: options in, [`SendHandle`] and [`ReceiveHandle`] out,
//! with the progress the engine publishes. Each engine (`threaded`, `uring`) implements
//! the trait; the `burghers` command holds an `Arc<dyn RunningNode>` and chooses the engine
//! where it starts the node, from the one list of engines ([`Engine`]) the benchmarks share.

mod engine;
mod errors;
mod running;
mod transfer;

pub(crate) mod lines;

pub use engine::{Engine, EngineOptions};
pub use errors::{RapRequestError, UnknownPeer};
pub use running::{RunningNode, counter};
pub(crate) use transfer::{Kick, ReceiveShared, SendShared};
pub use transfer::{
    ReceiveHandle, ReceiveOptions, ReceiveProgress, ReceiveState, SendHandle, SendOptions,
    SendProgress,
};
