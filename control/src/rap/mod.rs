//! RAP, the service announcement protocol (seed §5), as two sans-IO state machines.
//!
//! A client sends a request to a server (by node and service id); the server answers with a
//! provide carrying a fresh `rap_id` and its service list; the client acknowledges that id and
//! the server forgets the request. Both sides repeat themselves on timers, so one lost packet
//! in any direction costs a retry period, not the exchange:
//!
//! - the client re-sends its request every `rap_retry` while DRP has a route to the server,
//!   and holds still (no sends) while it has none;
//! - the server re-sends a provide until it is acknowledged, a bounded number of times, so a
//!   lost provide is recovered even if the client's retries are lost too;
//! - the client acknowledges every provide it receives, duplicates included, so a server whose
//!   ack was lost can still free its state.
//!
//! A provide is one packet: a server refuses, when it is configured, a list that would not fit
//! the MTU ([`RapError`]), rather than truncate it silently.

mod client;
mod server;

pub use crate::wire::rap::{ListError, RapBody, RapMessage, ServiceEntry};
pub use client::{RapClient, RapClientStats, RapEvent};
pub use server::{RapServer, RapServerOptions, RapServerStats};

use crate::wire::BodyError;

/// Parses a received RAP body; a malformed one is counted in `malformed` and its error returned.
fn parse_counted<'a>(body: &'a [u8], malformed: &mut u64) -> Result<RapMessage<'a>, BodyError> {
    RapMessage::parse(body).inspect_err(|_| *malformed += 1)
}

/// Why a server cannot offer a service list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RapError {
    /// The list cannot be encoded in one provide under the server's MTU.
    List(ListError),
}

impl From<ListError> for RapError {
    fn from(e: ListError) -> Self {
        RapError::List(e)
    }
}

impl std::fmt::Display for RapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RapError::List(e) => write!(f, "cannot offer the service list: {e}"),
        }
    }
}

impl std::error::Error for RapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RapError::List(e) => Some(e),
        }
    }
}
