//! One module per scenario. Each runs its comparisons through the runner and returns them with
//! its settings and conclusions, for the report.

pub mod control_plane;
pub mod forward;
pub mod kernel_chain;
pub mod latency;
pub mod limit;
pub mod multicast;
pub mod node_chain;
pub mod scale;
pub mod sink;
pub mod trees;

pub use dataplane::host::Engine;

use crate::runner::{ComparisonResult, SystemResult};
use crate::traffic::Rate;
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
/// between forwards it by `next_hop` in its DNP receiver. The body has an intact CRC trailer,
/// so the sink counts it by its service id, not as a corrupt body.
pub fn dnp_packet(dst: NodeAddr, src: NodeAddr, len: usize) -> Vec<u8> {
    let fields = len - control::wire::DNP_HEADER_LEN - control::wire::trailer::CRC_LEN;
    let mut body = vec![0xA5; fields];
    body[..2].copy_from_slice(&UNCLAIMED_RAP_SID.to_be_bytes());
    control::wire::trailer::push(&mut body);
    control::wire::dnp::frame(Addr::Node(dst), Addr::Node(src), Flag::Rap, &body)
}

/// A sealed DNP packet of `len` bytes from `src` to `dst` with an RMTP data flag: a node without
/// the RMTP layer passes it on by `next_hop` in its DNP receiver, the path of [`dnp_packet`],
/// and the node it is for counts it in its data plane (`rmtp_unclaimed`), with no hand-off to
/// a control thread as a RAP packet's. The body is never read.
pub fn rmtp_packet(dst: NodeAddr, src: NodeAddr, len: usize) -> Vec<u8> {
    let body = vec![0xA5; len - control::wire::DNP_HEADER_LEN];
    control::wire::dnp::frame(Addr::Node(dst), Addr::Node(src), Flag::RmtpData, &body)
}

/// One comparison per offered load, in the order measured.
pub type Sweep = Vec<(Rate, ComparisonResult)>;

/// Where `system` delivered the most over a sweep: the offered load, that point's comparison
/// and the system's row in it.
pub fn saturation<'a>(
    sweep: &'a [(Rate, ComparisonResult)],
    system: &str,
) -> Option<(Rate, &'a ComparisonResult, &'a SystemResult)> {
    sweep
        .iter()
        .filter_map(|(rate, c)| c.system(system).map(|s| (*rate, c, s)))
        .filter(|(_, _, s)| s.median.is_finite())
        .max_by(|a, b| a.2.median.total_cmp(&b.2.median))
}

/// The sweep's points for the charts (`summary.sweep`, read by figures.rs): per offered load and
/// system, the offered and delivered medians, and the chain length when there is one.
pub fn sweep_points(
    sweep: &[(Rate, ComparisonResult)],
    hops: Option<usize>,
) -> Vec<serde_json::Value> {
    sweep
        .iter()
        .flat_map(|(rate, comparison)| {
            comparison.systems.iter().map(move |s| {
                serde_json::json!({
                    "hops": hops,
                    "system": s.name,
                    "offered": rate.to_string(),
                    "offered_pkt_per_s": s.details.get("offered_pkt_per_s"),
                    "delivered_pkt_per_s": s.median,
                })
            })
        })
        .collect()
}
