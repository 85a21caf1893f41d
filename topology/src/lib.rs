//! The topology planner: a pure library from an RTT matrix to scored replica placements
//! (DESIGN.md §6-7). No IO.
#![forbid(unsafe_code)]

pub mod assess;
mod error;
pub mod failure;
pub mod input;
mod land;
pub mod leases;
pub mod model;
pub mod plan;
pub mod regions;
pub mod rtt;
pub mod search;
pub mod svg;

pub use error::Error;
pub use rtt::RttMatrix;
