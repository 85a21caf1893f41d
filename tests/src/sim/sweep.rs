//! Seed sweeps and their JSON summary (the last line `meridian sim` prints).
use super::config::SimConfig;
use super::world::{run_seed, SeedReport};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub seeds: u64,
    pub ops: u64,
    pub violations: u64,
    pub agreement_violations: u64,
    pub incomplete_after_heal: u64,
    /// Bounded-staleness reads that missed a write older than their bound.
    pub stale_reads: u64,
    /// Reads answered per path, keyed like the `x-meridian-read-path` header.
    pub reads_by_path: std::collections::BTreeMap<String, u64>,
    /// Seeds run without leases, with a preferred leader (transfers), and compaction rewrites
    /// completed / interrupted by a crash: what the sweep covered.
    pub seeds_without_lease: u64,
    pub seeds_with_transfers: u64,
    pub seeds_with_quorum_leases: u64,
    /// Of those, seeds whose leaders chose the holders (`mode = "auto"`), and the lease
    /// configurations committed in them.
    pub seeds_with_auto_leases: u64,
    pub lease_config_changes: u64,
    pub leader_changes: u64,
    pub compactions: u64,
    pub compaction_crashes: u64,
    pub snapshot_installs: u64,
    /// Reads at a revision judged against the reference (`invariants::at_revision`).
    pub reads_at_revision: u64,
    pub failing_seeds: Vec<u64>,
}

/// Runs every seed in `seeds`; `each` sees every report as it finishes (for progress and
/// reproduction lines).
pub fn sweep(
    cfg: &SimConfig,
    seeds: std::ops::Range<u64>,
    mut each: impl FnMut(&SeedReport),
) -> Summary {
    let mut s = Summary::default();
    for seed in seeds {
        let r = run_seed(cfg, seed);
        s.seeds += 1;
        s.ops += r.ops_completed as u64;
        s.violations += r.violations();
        s.agreement_violations += r.agreement_violations;
        s.incomplete_after_heal += r.incomplete_after_heal as u64;
        s.stale_reads += r.stale_reads;
        for (p, n) in &r.reads_by_path {
            *s.reads_by_path.entry(p.clone()).or_default() += n;
        }
        s.seeds_without_lease += u64::from(!r.lease);
        s.seeds_with_transfers += u64::from(r.preferred_leader.is_some());
        s.seeds_with_quorum_leases += u64::from(!r.holders.is_empty());
        s.seeds_with_auto_leases += u64::from(r.auto_leases);
        s.lease_config_changes += r.lease_config_changes;
        s.leader_changes += r.leaders.len().saturating_sub(1) as u64;
        s.compactions += r.compactions;
        s.compaction_crashes += r.compaction_crashes;
        s.snapshot_installs += r.snapshot_installs;
        s.reads_at_revision += r.reads_at_revision;
        if r.failed() {
            s.failing_seeds.push(seed);
        }
        each(&r);
    }
    s
}
