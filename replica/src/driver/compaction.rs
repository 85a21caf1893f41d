//! Snapshots and log compaction: once the log has grown enough, a snapshot of the state as it
//! is now is asked for (`Effect::Snapshot`: an O(1) copy the replica serializes elsewhere) and,
//! once it is taken (`Event::SnapshotTaken`), the log is rewritten right behind it.
use super::{Effect, ShardDriver};
use bytes::Bytes;
use meridian_core::{Input, Slot};

impl ShardDriver {
    /// The log growth at which it is compacted: `compact_at`, or (scaling) the last
    /// snapshot's size if larger — each compaction serializes the whole state.
    pub(super) fn compact_threshold(&self) -> u64 {
        if self.cfg.compact_scales_with_snapshot {
            self.cfg.compact_at.max(self.snapshot_bytes)
        } else {
            self.cfg.compact_at
        }
    }

    /// Once the log has grown past the threshold, a snapshot of the state as it is now is
    /// taken first and the log is rewritten right behind it (`snapshot_taken`): a rewrite
    /// without a fresh snapshot would copy every applied entry, the whole log, every time.
    pub(super) fn maybe_compact(&mut self, log_size: u64) {
        let threshold = self.compact_threshold();
        if log_size <= threshold {
            self.compacting = false;
        } else if !self.compacting && !self.snapshotting {
            self.compacting = true;
            if self.applied_slot > self.core.snapshot_through() {
                self.take_snapshot(self.applied_slot);
            } else {
                self.compact();
            }
        }
    }

    /// The snapshot asked for is serialized (and durable, on a real replica).
    pub(super) fn snapshot_taken(&mut self, through: Slot, data: Bytes) {
        self.snapshotting = false;
        self.snapshot_bytes = data.len() as u64;
        // A snapshot installed from a peer meanwhile may have passed it: the core keeps the
        // newer one.
        self.step(Input::Snapshot { through, data });
        // Every snapshot is followed by a rewrite behind it (ordered after the snapshot's own
        // record): the log holds a reference and what came after.
        self.compacting = true;
        self.compact();
    }

    fn compact(&mut self) {
        self.out.push(Effect::Compact {
            records: self.core.compaction_records(),
        });
    }

    /// Asks for a snapshot of the state as it is now, right after applying `through`.
    pub(super) fn take_snapshot(&mut self, through: Slot) {
        self.last_snapshot = through.0;
        self.snapshotting = true;
        self.out.push(Effect::Snapshot {
            through,
            state: self.kv.clone(),
        });
    }
}
