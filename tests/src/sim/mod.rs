//! The seeded discrete-event WAN simulator (DESIGN.md §5, §9): the real core and state machine
//! on simulated disks, links, clocks and clients.
pub mod client;
pub mod config;
pub mod events;
pub mod invariants;
pub mod network;
pub mod node;
pub mod proxy;
pub mod sweep;
pub mod world;

pub use config::{Faults, SimConfig};
pub use sweep::{sweep, Summary};
pub use world::{run_seed, SeedReport};
