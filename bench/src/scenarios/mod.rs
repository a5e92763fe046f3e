//! One module per scenario. Each runs its comparisons through the runner and returns them with
//! its settings and conclusions, for the report.

pub mod forward;
pub mod kernel_chain;
pub mod limit;
pub mod node_chain;

use crate::runner::ComparisonResult;
use control::wire::Flag;
use control::{Addr, NodeAddr};

/// What a scenario run produced.
pub struct Outcome {
    pub settings: serde_json::Value,
    pub comparisons: Vec<ComparisonResult>,
    pub summary: serde_json::Value,
}

/// Every throughput scenario moves datagrams of this size: the default DNP MTU.
pub const PACKET_LEN: usize = control::wire::DEFAULT_MTU;

/// A RAP service id no node registers: the sink node accepts each packet and counts it as
/// `rap_no_endpoint`, which makes that counter the count of delivered benchmark packets.
pub const UNCLAIMED_RAP_SID: u16 = 0xBE0C;

/// A sealed DNP packet of `len` bytes from `src` to `dst`, with a RAP flag so that every node in
/// between forwards it by `next_hop` in its DNP receiver.
pub fn dnp_packet(dst: NodeAddr, src: NodeAddr, len: usize) -> Vec<u8> {
    let mut body = vec![0xA5; len - control::wire::DNP_HEADER_LEN];
    body[..2].copy_from_slice(&UNCLAIMED_RAP_SID.to_be_bytes());
    control::wire::dnp::frame(Addr::Node(dst), Addr::Node(src), Flag::Rap, &body)
}
