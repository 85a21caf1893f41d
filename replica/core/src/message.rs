//! Peer-to-peer protocol messages. `t_send` is the leader's local clock when it sent the message;
//! acceptors echo it so the leader can time its lease from the send (DESIGN.md §2 "Leases").
use crate::quorum::SiteSet;
use crate::types::{Ballot, Batch, LogEntry, SiteId, Slot};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a: promise `ballot`, report what you accepted from `from_slot` on.
    Prepare { ballot: Ballot, from_slot: Slot },
    /// Phase 1b. `snapshot_through`: entries at or below it were compacted into a snapshot.
    Promise {
        ballot: Ballot,
        entries: Vec<(Slot, LogEntry)>,
        snapshot_through: Slot,
    },
    /// Phase 2a, with the leader's commit index piggybacked.
    Accept {
        ballot: Ballot,
        slot: Slot,
        batch: Batch,
        commit: Slot,
        t_send: Duration,
    },
    /// Phase 2b. `grants`: the acceptor's quorum-lease grant set when it acknowledged.
    Accepted {
        ballot: Ballot,
        slot: Slot,
        t_send: Duration,
        f_send: Duration,
        grants: SiteSet,
    },
    /// Leader liveness, commit index and lease renewal. `relinquish` releases lease promises.
    /// `echo`: the latest `f_send` of the receiver's that reached this leader, sent only while
    /// the leader holds its lease (then `commit` covers every write acknowledged before it).
    Heartbeat {
        ballot: Ballot,
        commit: Slot,
        t_send: Duration,
        relinquish: bool,
        echo: Option<Duration>,
    },
    /// `f_send`: the follower's own clock when it acknowledged; `max_accepted`: its highest
    /// accepted slot (the leader closes orphaned slots above its log with no-ops).
    HeartbeatAck {
        ballot: Ballot,
        t_send: Duration,
        commit: Slot,
        f_send: Duration,
        max_accepted: Slot,
    },
    /// "I promised a higher ballot than yours."
    Nack { promised: Ballot },
    /// Send me the chosen entries from `from_slot` on.
    CatchUpRequest { from_slot: Slot },
    CatchUpReply {
        entries: Vec<(Slot, Batch)>,
        commit: Slot,
    },
    /// The state machine up to `through`, for a replica whose missing entries were compacted.
    Snapshot { through: Slot, data: Bytes },
    /// Leadership transfer: the leader of `ballot` asks the receiver to campaign now.
    TimeoutNow { ballot: Ballot },
    /// A quorum-lease holder asks for (or renews) a promise; `t_send` on its clock.
    LeaseRequest { t_send: Duration },
    /// A grantor's promise. `accept_bar`: its highest accepted slot (the guard).
    LeaseGrant { t_send: Duration, accept_bar: Slot },
    /// The leader asks grantors to stop renewing `site`'s promises for a while: it has not
    /// acknowledged the leader for a long time, so writes would wait for it forever.
    LeaseRevoke { site: SiteId },
    /// For the shard driver, not the core (which ignores it): a follower's linearizable reads
    /// since its last report, in thousandths, by origin site (`[leases] mode = "auto"`).
    ReadLoad { milli_reads: Vec<u64> },
    /// The leader of `ballot` advanced its commit index to `commit` and had no accept to carry
    /// it: followers apply at once instead of at the next heartbeat (watches and local reads
    /// at followers trail the leader by one one-way delay, not a heartbeat interval).
    Commit { ballot: Ballot, commit: Slot },
}

impl Message {
    /// Short name, for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Prepare { .. } => "prepare",
            Message::Promise { .. } => "promise",
            Message::Accept { .. } => "accept",
            Message::Accepted { .. } => "accepted",
            Message::Heartbeat { .. } => "heartbeat",
            Message::HeartbeatAck { .. } => "heartbeat_ack",
            Message::Nack { .. } => "nack",
            Message::CatchUpRequest { .. } => "catchup_request",
            Message::CatchUpReply { .. } => "catchup_reply",
            Message::Snapshot { .. } => "snapshot",
            Message::TimeoutNow { .. } => "timeout_now",
            Message::LeaseRequest { .. } => "lease_request",
            Message::LeaseGrant { .. } => "lease_grant",
            Message::LeaseRevoke { .. } => "lease_revoke",
            Message::ReadLoad { .. } => "read_load",
            Message::Commit { .. } => "commit",
        }
    }
}
