//! Counters of the node's own work: what DNP accepted and rejected, what was routed on.

use control::wire::dnp::DnpError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub accepted: u64,
    pub too_short: u64,
    pub too_long: u64,
    pub length_mismatch: u64,
    pub bad_checksum: u64,
    pub unknown_flag: u64,
    /// A valid DNP packet whose protocol body did not parse.
    pub malformed_body: u64,
    /// A packet whose destination makes no sense for its protocol (e.g. RAP to a group).
    pub misaddressed: u64,
    /// A RAP packet for a service id this node does not run.
    pub unknown_service: u64,
    /// End-to-end packets passed on toward another node.
    pub forwarded: u64,
    /// Packets dropped because no route leads to their destination.
    pub no_route: u64,
    /// End-to-end packets dropped because our route would send them back to the neighbour
    /// they came from (a routing loop).
    pub looped: u64,
    /// RMTP packets for this node, or to a group, while the RMTP layer is off.
    pub rmtp_unclaimed: u64,
}

impl NodeStats {
    pub fn count_dnp_error(&mut self, e: &DnpError) {
        match e {
            DnpError::TooShort(_) => self.too_short += 1,
            DnpError::TooLong { .. } => self.too_long += 1,
            DnpError::LengthMismatch { .. } => self.length_mismatch += 1,
            DnpError::BadChecksum => self.bad_checksum += 1,
            DnpError::UnknownFlag(_) => self.unknown_flag += 1,
        }
    }

    /// Every datagram DNP refused.
    pub fn rejected(&self) -> u64 {
        self.too_short
            + self.too_long
            + self.length_mismatch
            + self.bad_checksum
            + self.unknown_flag
    }
}
