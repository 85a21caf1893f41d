//! One simulated replica site: the real `ShardDriver` (core, KV state machine, request table,
//! parked reads, barrier, freshness), a simulated disk (records become durable only when their
//! fsync completes; a crash loses the rest, and a compaction rewrite still queued when the site
//! crashes never happened) and a drifting local clock.
use super::invariants::durability::Acknowledged;
use meridian_core::Record;
use meridian_replica::driver::ShardDriver;
use meridian_replica::storage::{LogStore, MemLog};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Compact the simulated log once it holds this many records.
pub const COMPACT_AT_RECORDS: u64 = 100;

/// One queued disk operation, completed in order.
pub enum DiskOp {
    Append { token: u64, records: Vec<Record> },
    Compact { records: Vec<Record> },
}

/// Who asked a driver request: the proxy, its operation and call, and when it arrived.
#[derive(Clone, Copy, Debug)]
pub struct CallOrigin {
    pub proxy: usize,
    pub op: u64,
    pub call: u32,
    pub submit: bool,
    pub arrived: u64,
}

pub struct SimNode {
    pub driver: Option<ShardDriver>,
    pub region: usize,
    pub incarnation: u64,
    /// Durable records (the same in-memory log the storage conformance suite checks).
    pub disk: MemLog,
    pub pending_disk: VecDeque<DiskOp>,
    pub disk_free_at: u64,
    pub calls: BTreeMap<u64, CallOrigin>,
    pub next_call: u64,
    pub clock_offset_ns: u64,
    pub clock_rate: f64,
    pub acked: Acknowledged,
    /// A stalled process handles nothing before this true time.
    pub paused_until: u64,
}

impl SimNode {
    pub fn new(region: usize, clock_offset_ns: u64, clock_rate: f64) -> SimNode {
        SimNode {
            driver: None,
            region,
            incarnation: 0,
            disk: MemLog::default(),
            pending_disk: VecDeque::new(),
            disk_free_at: 0,
            calls: BTreeMap::new(),
            next_call: 0,
            clock_offset_ns,
            clock_rate,
            acked: Acknowledged::default(),
            paused_until: 0,
        }
    }

    /// This site's clock reading at true time `t`.
    pub fn local(&self, t: u64) -> Duration {
        Duration::from_nanos(self.clock_offset_ns + (t as f64 * self.clock_rate) as u64)
    }

    /// A crash: the process and everything not yet fsync'd are gone. Returns whether a
    /// compaction rewrite was interrupted.
    pub fn crash(&mut self) -> bool {
        self.driver = None;
        let interrupted = self
            .pending_disk
            .iter()
            .any(|d| matches!(d, DiskOp::Compact { .. }));
        self.pending_disk.clear();
        self.disk.crash();
        self.calls.clear();
        self.incarnation += 1;
        interrupted
    }

    /// Completes the oldest queued disk operation; an append returns its token.
    pub fn disk_done(&mut self) -> Option<u64> {
        match self.pending_disk.pop_front()? {
            DiskOp::Append { token, records } => {
                self.disk.append(&records).expect("memory");
                self.disk.sync().expect("memory");
                Some(token)
            }
            DiskOp::Compact { records } => {
                self.disk.rewrite(&records).expect("memory");
                None
            }
        }
    }
}
