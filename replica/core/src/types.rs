//! Newtypes shared by every part of the protocol.
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Index of a site (replica) in the group, `0..n`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct SiteId(pub u8);

/// A shard group. Each group runs its own independent core.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct ShardId(pub u32);

/// A log position. Slot 0 means "nothing": the first real slot is 1.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Slot(pub u64);

impl Slot {
    pub const ZERO: Slot = Slot(0);
    pub fn next(self) -> Slot {
        Slot(self.0 + 1)
    }
}

/// A ballot `(round, site)`: totally ordered (round first), disjoint per proposer because the
/// proposer's own site index is part of it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Ballot {
    pub round: u64,
    pub site: SiteId,
}

impl Ballot {
    pub const ZERO: Ballot = Ballot {
        round: 0,
        site: SiteId(0),
    };
}

/// One opaque client command. The core never looks inside; the state machine decodes it.
pub type Command = Bytes;

/// One client command with the driver's opaque token. The token never leaves this replica (it is
/// not part of the replicated batch): `Output::Apply` hands it back beside the command, so the
/// driver matches replies to requests without decoding anything. Tokens live in memory only, so a
/// slot re-applied after a restart carries none and can never answer a new request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub token: u64,
    pub command: Command,
    /// Whether the command may change what a read returns. Batches of commands that do not
    /// (reads through the log, configuration) commit without waiting for quorum-lease holders.
    pub writes: bool,
}

/// The value chosen for one slot: a batch of commands. An empty batch is a no-op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Batch(pub Vec<Command>);

impl Batch {
    pub fn noop() -> Batch {
        Batch(Vec::new())
    }
    pub fn bytes(&self) -> usize {
        self.0.iter().map(|c| c.len()).sum()
    }
}

/// One acceptor log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The ballot in which this acceptor accepted `batch` (ZERO for entries learned as chosen).
    pub ballot: Ballot,
    pub batch: Batch,
    /// True once this replica knows the value is chosen.
    pub chosen: bool,
}
