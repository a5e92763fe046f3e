//! DRP, the link-state routing protocol (seed §3), as a sans-IO state machine.

pub mod table;

pub use table::{Route, RoutingTable};
