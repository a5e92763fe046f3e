//! The transfer handles and options are engine-neutral and live in [`crate::host`]; this
//! engine's RMTP threads reach them here.

pub use crate::host::{
    ReceiveHandle, ReceiveOptions, ReceiveProgress, ReceiveState, SendHandle, SendOptions,
    SendProgress,
};
pub(crate) use crate::host::{ReceiveShared, SendShared};
