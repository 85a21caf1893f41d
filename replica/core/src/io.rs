//! What goes into the core and what comes out of it.
//!
//! THE PERSISTENCE CONTRACT (as in etcd-io/raft's `Ready`): the driver MUST make every
//! `Output::Persist` durable (write + fsync) and then report `Input::Persisted { token }`. The core
//! itself holds back every message that depends on those records (promises, accepted
//! acknowledgements) until that report, so a driver may perform every `Send` as soon as it sees it.
//! Storage completes in order: `Persisted { token }` means every token up to it is durable.
use crate::message::Message;
use crate::types::{Ballot, Batch, Proposal, SiteId, Slot};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug)]
pub enum Input {
    Message {
        from: SiteId,
        msg: Message,
    },
    /// Time passed; the core checks its timers.
    Tick,
    /// Every `Persist` up to `token` is durable.
    Persisted {
        token: u64,
    },
    /// Client commands for this shard with their tokens (only a leader accepts them).
    Propose(Vec<Proposal>),
    /// A linearizable read that the leader may answer alone under its lease.
    Read {
        id: u64,
    },
    /// The quorum-lease holders the log configured (applied by the driver, in log order).
    LeaseHolders(crate::quorum::SiteSet),
    /// The driver took a snapshot of the state machine after applying `through`.
    Snapshot {
        through: Slot,
        data: Bytes,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Send {
        to: SiteId,
        msg: Message,
    },
    /// Make `records` durable, then report `Input::Persisted { token }`.
    Persist {
        records: Vec<Record>,
        token: u64,
    },
    /// Apply the chosen batch of `slot` to the state machine. Emitted in slot order, exactly once
    /// per slot per incarnation. `tokens` is aligned with `batch.0` when this replica proposed
    /// exactly this batch for this slot in this incarnation, else empty.
    Apply {
        slot: Slot,
        batch: Batch,
        tokens: Vec<u64>,
    },
    /// Replace the state machine with this snapshot (applied through `through`).
    InstallSnapshot {
        through: Slot,
        data: Bytes,
    },
    /// The read may be served from the state machine now: it already reflects every write
    /// committed before the read arrived.
    ReadReady {
        id: u64,
    },
    ReadRejected {
        id: u64,
        reason: Rejection,
    },
    /// Proposals (by token) that were never proposed because this replica is not (or no longer)
    /// the leader.
    NotLeader {
        tokens: Vec<u64>,
        hint: Option<SiteId>,
    },
    /// Proposals this replica put in a slot that was then chosen with another value, or that a
    /// snapshot covered before they were applied here: their outcome is unknown to this replica
    /// (a retry with the same exactly-once identity is safe).
    Abandoned {
        tokens: Vec<u64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    NotLeader {
        hint: Option<SiteId>,
    },
    /// Leader, but without a valid lease (or not yet caught up in its ballot).
    LeaseExpired,
}

/// A durable record. Recovery replays them in order (`Core::recover`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Promise(Ballot),
    Accept {
        slot: Slot,
        ballot: Ballot,
        batch: Batch,
    },
    Chosen {
        slot: Slot,
        batch: Batch,
    },
    Snapshot {
        through: Slot,
        data: Bytes,
    },
}
