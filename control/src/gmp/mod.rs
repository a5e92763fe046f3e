//! GMP, soft-state multicast group membership (seed §4), as a sans-IO state machine.

pub mod table;

pub use table::{MulticastTable, TreeEntry};
