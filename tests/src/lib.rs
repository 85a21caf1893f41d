//! Meridian's test kit: the deterministic WAN simulator, its invariant checkers and the
//! linearizability checker. Used by the test suite and by `meridian sim` / `meridian check`.
#![forbid(unsafe_code)]

pub mod history;
pub mod linearizability;
pub mod sim;
