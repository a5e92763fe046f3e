//! The Burghers dataplane: RMTP cores, node composition, and the engines that move bytes and
//! time for them (`sim`, `threaded`, `uring`).

pub mod garbler;
pub mod host;
pub mod node;
pub mod rmtp;
pub mod sim;
mod sync;
#[cfg(test)]
mod test_dir;
pub mod threaded;
pub mod uring;
