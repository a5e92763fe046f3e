//! DRP counters, for `burghers ctl`, the simulator's reports and tests.

crate::counters! {
    /// Monotonic counters of one DRP instance.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct DrpStats {
        pub hellos_sent: u64,
        pub hellos_recv: u64,
        /// Own LSPs created (each with a new sequence number).
        pub lsps_originated: u64,
        /// LSP packets sent, first sends and retransmissions together.
        pub lsps_sent: u64,
        pub lsps_recv: u64,
        /// Received LSPs newer than what the database held (stored and flooded on).
        pub lsps_new: u64,
        /// Received LSPs with the sequence we already hold (acknowledged only).
        pub lsps_dup: u64,
        /// Received LSPs older than ours (acknowledged, and our copy sent back).
        pub lsps_old: u64,
        pub acks_sent: u64,
        pub acks_recv: u64,
        /// LSPs sent again because the neighbour had not acknowledged them in time.
        pub retransmissions: u64,
        pub neighbours_up: u64,
        pub neighbours_down: u64,
        pub terminates_sent: u64,
        pub terminates_recv: u64,
        /// Terminates not believed: their sender came back after an earlier terminate, so they are
        /// held down for the terminate hold-down (its death is still noticed by the dead interval).
        pub terminates_held_down: u64,
        /// Our own LSP came back with a sequence at least ours (we had restarted): sequence raised.
        pub sequence_jumps: u64,
        /// A neighbour sent its own LSP older than ours (it had restarted): database sent again.
        pub neighbour_restarts: u64,
        /// LSP neighbour lists cut to what fits the MTU.
        pub lsps_truncated: u64,
        /// Malformed content (addresses 0 or in the group range, a packet from ourselves).
        pub bad_messages: u64,
        /// Well-formed but unexpected (ack for an unknown or stale LSP, terminate from a
        /// non-neighbour, anything after our own terminate).
        pub ignored_messages: u64,
        /// An LSP of an originator the database did not hold, refused (dropped unacknowledged)
        /// because the database was at its capacity.
        pub lsps_refused_full: u64,
        /// Packets from a node that was not yet a neighbour, refused because the neighbour table
        /// was at its capacity (the file's neighbours are always admitted).
        pub neighbours_refused: u64,
        /// Entries removed because their originator did not refresh them within the maximum age.
        pub lsps_aged_out: u64,
        /// Our own LSP re-originated because the refresh interval passed.
        pub lsp_refreshes: u64,
        /// Our own LSP flushed: the sequence space's top was reached (or a flush, or an LSP of ours
        /// too near the top, arrived); the new life starts from sequence 1 after the flush hold.
        pub flushes_originated: u64,
        /// Flushes (ours or others') removed once held long enough and acknowledged by every
        /// neighbour.
        pub flushes_removed: u64,
        /// LSPs older than a flush we hold, dropped unacknowledged: the sender repeats them until
        /// the flush is gone and they are news.
        pub lsps_behind_flush: u64,
        /// Acknowledgements of an LSP newer than the one we hold (so not one we sent): a forgery
        /// reached that neighbour over our link. We offer it our copy so that it sends its own
        /// back, toward the originator.
        pub acks_ahead: u64,
        pub spf_runs: u64,
        /// New routing tables published (SPF runs whose result differed).
        pub routes_published: u64,
    }
}
