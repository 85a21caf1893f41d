//! The simulator's storage: durable records in memory; a crash keeps only what was synced.
use super::{LogStore, StorageError};
use meridian_core::Record;

#[derive(Default, Clone, Debug)]
pub struct MemLog {
    durable: Vec<Record>,
    buffered: Vec<Record>,
    /// Durable records since the last rewrite.
    grown: u64,
}

impl MemLog {
    /// The records a restarted process would read back.
    pub fn durable(&self) -> &[Record] {
        &self.durable
    }
    /// A crash: unsynced records are gone.
    pub fn crash(&mut self) {
        self.buffered.clear();
    }
}

impl LogStore for MemLog {
    fn append(&mut self, records: &[Record]) -> Result<(), StorageError> {
        self.buffered.extend_from_slice(records);
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.grown += self.buffered.len() as u64;
        self.durable.append(&mut self.buffered);
        Ok(())
    }
    fn rewrite(&mut self, records: &[Record]) -> Result<(), StorageError> {
        self.buffered.clear();
        self.durable = records.to_vec();
        self.grown = 0;
        Ok(())
    }
    /// Counted in records, not bytes.
    fn size(&self) -> u64 {
        (self.durable.len() + self.buffered.len()) as u64
    }
    fn grown(&self) -> u64 {
        self.grown + self.buffered.len() as u64
    }
}
