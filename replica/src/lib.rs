//! The Meridian replica: the KV state machine (and, with the replica-process issue, storage, the
//! tokio driver and the gRPC transport).
#![forbid(unsafe_code)]

pub mod client;
mod client_pipe;
pub mod config;
pub mod delay;
pub mod driver;
mod error;
pub mod fuzzing;
pub mod kv;
pub mod metrics;
pub mod node;
pub mod storage;
pub mod tls;
pub mod trace;
pub mod wire;

pub use error::Error;
