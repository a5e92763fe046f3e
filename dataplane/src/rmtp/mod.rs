//! RMTP (seed §6, with PGM's NCF, SPM and nearest-cache repair) as sans-IO cores.
//!
//! - [`sender::RmtpSender`]: one transfer from a [`source::Source`] to a group.
//! - [`receiver::RmtpReceiver`]: one member's side of one transfer, into a [`sink::Sink`].
//! - [`relay::RmtpRelay`]: one per node, forwarding, NACK/MAB aggregation and repair cache for
//!   every tree through the node.
//!
//! Wire formats are in `control::wire::rmtp`; none of these cores reads a clock or does I/O
//! (the `FileSink` writes the file it is given, which is its job).

mod cache;
mod edges;
pub mod in_flight;
mod missing;
pub mod receiver;
pub mod relay;
mod reorder;
pub mod rtt;
pub mod sender;
pub mod sink;
pub mod source;

pub use receiver::{
    ReceiverConfig, ReceiverEvent, ReceiverStats, RmtpReceiver, TableUsage, TransferShape,
};
pub use relay::{
    Fanout, Hop, RelayAction, RelayConfig, RelayFootprint, RelayStats, RelayTransmit, RmtpRelay,
};
pub use rtt::RttEstimate;
pub use sender::{RmtpSender, SendFailure, SenderConfig, SenderStats, SentBatch};
pub use sink::{
    FileBlocks, FileSink, FinalSync, Finished, MemSink, Sink, SinkError, ToWriter, hints,
};
pub use source::{FileSource, MemSource, Source};

use control::wire::BodyError;

/// Fits a local receiver to the relay its NACKs go through: it tracks no more missing
/// sequences than the relay's NACK table holds (beyond that they would only be refused there,
/// at the cost of NACKing them every retry). Every engine builds its receivers through this.
pub fn fit_receiver_to_relay(receiver: &mut ReceiverConfig, relay: &RelayConfig) {
    receiver.max_missing = receiver.max_missing.min(relay.nack_entries);
}

/// Why an RMTP packet handed to a sender or receiver was not used. Dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmtpError {
    Body(BodyError),
    /// A flag this core does not take (e.g. DATA handed to a sender).
    UnexpectedFlag(u16),
    /// The packet belongs to another (group, sender) tree.
    OtherTree,
}

impl From<BodyError> for RmtpError {
    fn from(e: BodyError) -> Self {
        RmtpError::Body(e)
    }
}

impl std::fmt::Display for RmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RmtpError::Body(e) => write!(f, "malformed RMTP body: {e}"),
            RmtpError::UnexpectedFlag(v) => write!(f, "flag 0x{v:04x} not handled here"),
            RmtpError::OtherTree => write!(f, "packet of another tree"),
        }
    }
}

impl std::error::Error for RmtpError {}

/// Collects ascending sequences into at most `N` ranges (consecutive ones merged), without
/// allocating: what NACK and NCF builders fill before writing a packet.
#[derive(Clone, Copy, Debug)]
pub struct RangeBuf<const N: usize> {
    ranges: [control::wire::rmtp::SeqRange; N],
    len: usize,
}

impl<const N: usize> Default for RangeBuf<N> {
    fn default() -> Self {
        RangeBuf {
            ranges: [control::wire::rmtp::SeqRange { first: 0, len: 0 }; N],
            len: 0,
        }
    }
}

impl<const N: usize> RangeBuf<N> {
    /// Adds `seq` (ascending order expected); false when it needs a new range and `limit`
    /// (at most `N`) ranges are already used.
    pub fn push(&mut self, seq: u64, limit: usize) -> bool {
        if let Some(last) = self.len.checked_sub(1).map(|i| &mut self.ranges[i])
            && last.end() == seq
            && last.len < u32::MAX
        {
            last.len += 1;
            return true;
        }
        if self.len >= limit.min(N) {
            return false;
        }
        self.ranges[self.len] = control::wire::rmtp::SeqRange { first: seq, len: 1 };
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[control::wire::rmtp::SeqRange] {
        &self.ranges[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// The largest number of ranges any NACK/NCF we build carries (fits MTUs up to ~3 KB).
pub const MAX_RANGES: usize = 256;
