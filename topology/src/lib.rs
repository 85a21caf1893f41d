//! The topology planner: a pure library from an RTT matrix to scored replica placements
//! (DESIGN.md §6-7). No IO.
#![forbid(unsafe_code)]

mod error;
pub mod model;
pub mod rtt;

pub use error::Error;
pub use rtt::RttMatrix;
