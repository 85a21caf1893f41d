//! Durable storage (DESIGN.md §3): the write-ahead log of a shard group's acceptor state, and the
//! in-memory log the simulator uses. Both pass the same conformance suite.
#[cfg(test)]
mod conformance;
mod frame;
mod mem;
pub mod snapshot_file;
mod wal;

pub use mem::MemLog;
pub use wal::{FileLog, Recovery, StorageError};

use meridian_core::Record;

/// What the driver needs from a log: append, make durable, reload, and rewrite compacted.
pub trait LogStore {
    /// Buffers records (not yet durable).
    fn append(&mut self, records: &[Record]) -> Result<(), StorageError>;
    /// Makes every appended record durable (one fsync for all: group commit).
    fn sync(&mut self) -> Result<(), StorageError>;
    /// Makes room for the appended records ahead of `sync`, durably, where a log preallocates
    /// its space (so a group commit's fsync, which the WAL thread times, is only the records').
    fn reserve(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Replaces the whole log with `records` (an equivalent, compacted state), durably.
    fn rewrite(&mut self, records: &[Record]) -> Result<(), StorageError>;
    /// Bytes the log occupies, snapshot files included.
    fn size(&self) -> u64;
    /// What was added since the last rewrite (to decide when to compact: a log whose compacted
    /// form is itself large must still compact again once it has grown).
    fn grown(&self) -> u64;
}
