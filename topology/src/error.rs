//! The planner's error type: every message names the offending input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("RTT matrix: {0}")]
    Matrix(String),
    #[error("regions file: {0}")]
    Regions(String),
    #[error("unknown region '{0}' (not in the RTT matrix)")]
    UnknownRegion(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("infeasible: {0}")]
    Infeasible(String),
}
