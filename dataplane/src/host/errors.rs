//! Why a hosted node refused a request, whatever the engine.

use control::NodeAddr;
use std::fmt;

/// Why [`RunningNode::request_services`](super::RunningNode::request_services) returned
/// without a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RapRequestError {
    /// No answer within the time given (the request stays outstanding, retried while a route
    /// exists; a later call may get its answer).
    TimedOut,
    /// The node is shutting down.
    Stopped,
}

impl fmt::Display for RapRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RapRequestError::TimedOut => write!(f, "no answer from the RAP server in time"),
            RapRequestError::Stopped => write!(f, "the node is stopping"),
        }
    }
}

impl std::error::Error for RapRequestError {}

/// [`RunningNode::set_faults`](super::RunningNode::set_faults) named a node this one has no
/// socket address for, so no link to garble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownPeer(pub NodeAddr);

impl fmt::Display for UnknownPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no socket address known for node {}", self.0)
    }
}

impl std::error::Error for UnknownPeer {}
