//! Core configuration. Every duration is on the replica's own (possibly drifting) clock.
use crate::quorum::Quorum;
use crate::types::SiteId;
use std::time::Duration;

/// Bugs planted on purpose so that tests can prove the checkers catch them. Never set in
/// production: the only way to set one is this field, and only `meridian sim --bug` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Acceptors accept proposals of ballots lower than the one they promised.
    AcceptLowerBallot,
    /// The leader answers reads locally without checking that its lease is valid.
    ReadWithoutLease,
    /// Shard driver: the first read applied through the log answers every read waiting in the
    /// log (replies matched by a shared identity instead of by token).
    LogReadSharedToken,
    /// Proxy: a quorum read answers from the most advanced replier without honouring the barrier.
    PqrIgnoreBarrier,
    /// Core: a follower counts itself fresh as of when it *received* any leader message (even one
    /// it rejected), not as of the timestamp of its own that the leader echoed.
    BoundedFromReceiveTime,
    /// Proxy: a retried write takes a new sequence number (no exactly-once across retries).
    ProxyRetryNewSeq,
    /// Quorum leases: the leader commits a write without the acknowledgement of a lease holder.
    WriteSkipsHolder,
    /// Shard driver: a read at a revision (`ScanAt`) answers from the present state without
    /// undoing the changes above the revision.
    ScanAtPresent,
}

impl PlantedBug {
    pub const ALL: [(&'static str, PlantedBug); 8] = [
        ("accept-lower-ballot", PlantedBug::AcceptLowerBallot),
        ("read-without-lease", PlantedBug::ReadWithoutLease),
        ("log-read-shared-token", PlantedBug::LogReadSharedToken),
        ("pqr-ignore-barrier", PlantedBug::PqrIgnoreBarrier),
        (
            "bounded-from-receive-time",
            PlantedBug::BoundedFromReceiveTime,
        ),
        ("proxy-retry-new-seq", PlantedBug::ProxyRetryNewSeq),
        ("write-skips-holder", PlantedBug::WriteSkipsHolder),
        ("scan-at-present", PlantedBug::ScanAtPresent),
    ];

    pub fn parse(name: &str) -> Option<PlantedBug> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }
}

#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub me: SiteId,
    pub quorum: Quorum,
    /// Planner-chosen leader site: campaigns first and takes leadership back when healthy.
    pub preferred_leader: Option<SiteId>,
    pub heartbeat_interval: Duration,
    /// Base election timeout; a random jitter in `[0, election_jitter)` is added.
    pub election_timeout: Duration,
    pub election_jitter: Duration,
    /// Backoff after failed elections doubles the timeout, up to this factor.
    pub max_backoff: u32,
    /// Leader lease length; `None` disables lease reads.
    pub lease: Option<Duration>,
    /// Quorum-lease length (promises to the configured holders); `None` disables them.
    pub quorum_lease: Option<Duration>,
    /// Bound on clock drift *rate* between any two sites (ε of DESIGN.md §2).
    pub drift_bound: f64,
    /// Slots in flight (pipelining window).
    pub window: usize,
    /// The leader opens a new slot only once its own log writes are durable, waiting at most
    /// this long for them: requests that arrive during a leader fsync share the next slot
    /// instead of one slot each (group commit across slots; costs a request at most one local
    /// fsync of waiting). A leader whose disk stalls longer goes on proposing (followers can
    /// commit without it), from the next tick on. `None`: a slot per arrival while the window
    /// has room.
    pub batch_behind_fsync: Option<Duration>,
    pub max_batch_commands: usize,
    pub max_batch_bytes: usize,
    /// Resend an unacknowledged accept after this long.
    pub retransmit_interval: Duration,
    pub catchup_max_entries: usize,
    /// Log entries kept behind a snapshot for cheap catch-up.
    pub log_retain: u64,
    /// Seed for election jitter.
    pub seed: u64,
    pub planted_bug: Option<PlantedBug>,
}

impl CoreConfig {
    /// WAN defaults: tuned for inter-continental RTTs up to ~300 ms.
    pub fn wan(me: SiteId, quorum: Quorum, seed: u64) -> CoreConfig {
        CoreConfig {
            me,
            quorum,
            preferred_leader: None,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1500),
            election_jitter: Duration::from_millis(1000),
            max_backoff: 8,
            lease: Some(Duration::from_millis(1000)),
            quorum_lease: None,
            drift_bound: 0.01,
            window: 32,
            batch_behind_fsync: Some(Duration::from_millis(5)),
            max_batch_commands: 1024,
            max_batch_bytes: 1 << 20,
            retransmit_interval: Duration::from_millis(700),
            catchup_max_entries: 64,
            log_retain: 64,
            seed,
            planted_bug: None,
        }
    }
}
