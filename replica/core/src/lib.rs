//! IO-free Multi-Paxos for one shard group (DESIGN.md §2).
//!
//! Messages, time and durability notices go in; messages, writes, applies and replies come out.
//! No tokio, no clock, no RNG of its own: the same core runs under the seeded simulator and under
//! the real runtime.
#![forbid(unsafe_code)]

mod catchup;
mod config;
mod core;
mod election;
#[doc(hidden)]
pub mod harness;
mod io;
mod lease;
mod log;
mod message;
mod qlease;
mod quorum;
mod replication;
mod rng;
mod types;

pub use crate::config::{CoreConfig, PlantedBug};
pub use crate::core::Core;
pub use crate::io::{Input, Output, Record, Rejection};
pub use crate::lease::LeaseTracker;
pub use crate::log::Log;
pub use crate::message::Message;
pub use crate::quorum::{Quorum, QuorumSystem, SiteSet};
pub use crate::rng::Rng;
pub use crate::types::{Ballot, Batch, Command, LogEntry, Proposal, ShardId, SiteId, Slot};
#[cfg(test)]
mod tests;
