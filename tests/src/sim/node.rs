//! One simulated replica site: the real core, the real KV state machine, a simulated disk
//! (records become durable only when their fsync completes; a crash loses the rest) and a
//! drifting local clock.
use super::invariants::durability::Acknowledged;
use meridian_core::{Core, Record};
use meridian_replica::kv::KvStore;
use meridian_replica::storage::{LogStore, MemLog};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::client::ClientRequest;

/// Rewrite the simulated log once it holds this many records.
pub const COMPACT_AT_RECORDS: u64 = 100;

pub struct SimNode {
    pub core: Option<Core>,
    pub kv: KvStore,
    pub region: usize,
    pub incarnation: u64,
    /// Durable records (the same in-memory log the storage conformance suite checks).
    pub disk: MemLog,
    /// Written but not yet fsync'd.
    pub pending_disk: VecDeque<(u64, Vec<Record>)>,
    pub disk_free_at: u64,
    /// Client writes awaiting their apply here: (client id, seq) -> (client index, proposed at).
    pub waiting: BTreeMap<(u64, u64), (usize, u64)>,
    pub reads: BTreeMap<u64, ClientRequest>,
    pub clock_offset_ns: u64,
    pub clock_rate: f64,
    pub acked: Acknowledged,
    pub last_snapshot: u64,
    /// A stalled process handles nothing before this true time.
    pub paused_until: u64,
}

impl SimNode {
    pub fn new(region: usize, clock_offset_ns: u64, clock_rate: f64) -> SimNode {
        SimNode {
            core: None,
            kv: KvStore::default(),
            region,
            incarnation: 0,
            disk: MemLog::default(),
            pending_disk: VecDeque::new(),
            disk_free_at: 0,
            waiting: BTreeMap::new(),
            reads: BTreeMap::new(),
            clock_offset_ns,
            clock_rate,
            acked: Acknowledged::default(),
            last_snapshot: 0,
            paused_until: 0,
        }
    }

    /// This site's clock reading at true time `t`.
    pub fn local(&self, t: u64) -> Duration {
        Duration::from_nanos(self.clock_offset_ns + (t as f64 * self.clock_rate) as u64)
    }

    /// A crash: the process and everything not yet fsync'd are gone.
    pub fn crash(&mut self) {
        self.core = None;
        self.kv = KvStore::default();
        self.pending_disk.clear();
        self.waiting.clear();
        self.reads.clear();
        self.incarnation += 1;
        self.last_snapshot = 0;
    }

    /// The fsync of everything up to `token` completed.
    pub fn persisted(&mut self, token: u64) {
        while self.pending_disk.front().is_some_and(|(t, _)| *t <= token) {
            let (_, records) = self.pending_disk.pop_front().expect("front exists");
            self.disk.append(&records).expect("memory");
        }
        self.disk.sync().expect("memory");
        // Compact like the real WAL does: replace the log with the core's equivalent state.
        if self.disk.size() > COMPACT_AT_RECORDS {
            if let Some(core) = &self.core {
                self.disk
                    .rewrite(&core.compaction_records())
                    .expect("memory");
            }
        }
    }
}
