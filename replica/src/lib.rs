//! The Meridian replica: the KV state machine (and, with the replica-process issue, storage, the
//! tokio driver and the gRPC transport).
#![forbid(unsafe_code)]

mod error;
pub mod kv;
pub mod storage;

pub use error::Error;
