//! Counters of the node's own work: what DNP accepted and rejected, what was routed on. Named
//! as the threaded engine's DNP names the same events, so `ctl stats` reads both engines alike
//! (the uring engine prints them as `dnp.<name>`).

use control::wire::dnp::DnpError;

control::counters! {
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct NodeStats {
        /// Datagrams that passed DNP validation.
        pub rx_accepted: u64,
        /// Datagrams DNP refused, by error.
        pub rx_error_too_short: u64,
        pub rx_error_too_long: u64,
        pub rx_error_length_mismatch: u64,
        pub rx_error_bad_checksum: u64,
        pub rx_error_unknown_flag: u64,
        /// A valid DNP packet whose protocol body did not parse.
        pub malformed_body: u64,
        /// A packet whose destination makes no sense for its protocol (e.g. RAP to a group).
        pub rx_bad_address: u64,
        /// A RAP packet for a service id this node does not run.
        pub rap_no_endpoint: u64,
        /// End-to-end packets passed on toward another node.
        pub forwarded: u64,
        /// Packets dropped because no route leads to their destination.
        pub forward_no_route: u64,
        /// End-to-end packets dropped because our route would send them back to the neighbour
        /// they came from (a routing loop).
        pub forward_loop: u64,
        /// RMTP packets for this node, or to a group, while the RMTP layer is off.
        pub rmtp_unclaimed: u64,
        /// Batches of received datagrams handed in (a receive completion's, GRO-coalesced or
        /// not; the simulator hands in batches of one): `rx_accepted / rx_batches` is the batch.
        pub rx_batches: u64,
        /// Passes of the RMTP worker over its local cores and relay for what they send: at most
        /// one per batch of received datagrams and one per timer call, never one per datagram.
        pub transfer_pumps: u64,
    }
}

impl NodeStats {
    pub fn count_dnp_error(&mut self, e: &DnpError) {
        match e {
            DnpError::TooShort(_) => self.rx_error_too_short += 1,
            DnpError::TooLong { .. } => self.rx_error_too_long += 1,
            DnpError::LengthMismatch { .. } => self.rx_error_length_mismatch += 1,
            DnpError::BadChecksum => self.rx_error_bad_checksum += 1,
            DnpError::UnknownFlag(_) => self.rx_error_unknown_flag += 1,
        }
    }

    /// Every datagram DNP refused.
    pub fn rejected(&self) -> u64 {
        self.rx_error_too_short
            + self.rx_error_too_long
            + self.rx_error_length_mismatch
            + self.rx_error_bad_checksum
            + self.rx_error_unknown_flag
    }
}
