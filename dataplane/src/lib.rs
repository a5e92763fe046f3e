//! The Burghers dataplane: RMTP cores, node composition, and the engines that move bytes and
//! time for them (`sim` now; `threaded` and `uring` later).

pub mod node;
pub mod rmtp;
pub mod sim;
