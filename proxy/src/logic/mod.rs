//! The proxy's decisions as sans-IO code (DESIGN.md §4): no sockets, no clock of its own. The
//! same code runs in `meridian proxy` (driven by tokio, `reads.rs` and `batcher.rs`) and in the
//! simulator's proxies (driven by its event queue), so every decision a client sees is simulated.
//!
//! A request is an operation state machine (`ReadOp`, `WriteOp`): it asks for calls to replica
//! sites (`Step::Call`) and is told their results (`on_result`) until it is `Step::Done`.
pub mod batch;
pub mod quorum;
pub mod read_op;
pub mod write_op;

pub use quorum::{combine, Decision};
pub use read_op::{ReadOp, ReadPlan};
pub use write_op::WriteOp;

use meridian_replica::driver::ReadMode;
use meridian_replica::kv::{KvCommand, KvResult};
use std::time::Duration;

/// What one replica answered to a read call.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteRead {
    pub result: KvResult,
    /// `lease`, `log`, `local` or `quorum`, as the replica says.
    pub path: String,
    pub applied: u64,
    pub barrier: u64,
    pub staleness_ms: u64,
}

/// The result of one call, as the adapter (tokio or simulator) saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum CallResult {
    Read(SiteRead),
    Submit(Vec<KvResult>),
    NotLeader(Option<usize>),
    /// A lease read at a site that holds no valid quorum lease.
    NotHolder,
    /// Transient: transport error, timeout, overload, a replica not caught up in time.
    Failed,
    /// Permanent: the replica refused the request as invalid (never retried).
    Refused(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum CallKind {
    Read {
        mode: ReadMode,
        min_applied: u64,
        /// How long the replica may wait for `min_applied`.
        wait: Duration,
    },
    Submit {
        commands: Vec<KvCommand>,
    },
}

/// One call to a replica site: start it after `delay`, give up on it after `timeout`.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub id: u32,
    pub site: usize,
    pub kind: CallKind,
    pub delay: Duration,
    pub timeout: Duration,
}

/// Why a request failed: one typed error, mapped to a status code at each edge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("overloaded: too many requests queued for this shard; retry after a second")]
    Overloaded,
    /// No answer in time; for a write the outcome is unknown.
    #[error("{0}")]
    Timeout(&'static str),
    /// A replica refused the request as invalid.
    #[error("refused by the replica: {0}")]
    Refused(String),
    /// `read_mode=lease` and no reachable replica holds a valid quorum lease on the key.
    #[error("{0}")]
    NoLease(String),
    /// `[auth]`: no credential, or an unknown one.
    #[error("{0}")]
    Unauthenticated(String),
    /// `[auth]`: a known client without the grant for a key it touches.
    #[error("{0}")]
    Forbidden(String),
}

pub const READ_TIMEOUT: &str = "no read quorum or leader answered in time";
pub const WRITE_TIMEOUT: &str = "no leader acknowledged the write in time; its outcome is unknown";

/// What a finished read produced.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadOutcome {
    pub result: KvResult,
    /// The path name of the `x-meridian-read-path` header: `lease`, `leader`, `log`, `quorum`,
    /// `local`.
    pub path: &'static str,
    pub site: usize,
}

/// A step of an operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Step<T> {
    Call(Call),
    Done(Result<T, ServiceError>),
}

/// The next site to try after a failed attempt at `target`: the known leader if it is another
/// site, else the next site in order.
pub fn retarget(leader: Option<usize>, target: usize, n: usize) -> usize {
    leader
        .filter(|&l| l != target && l < n)
        .unwrap_or((target + 1) % n)
}

/// Exponential backoff between attempts, 20 ms doubling to 500 ms.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((20u64 << attempt.min(5)).min(500))
}
