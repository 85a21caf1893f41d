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
        if r.failed() {
            s.failing_seeds.push(seed);
        }
        each(&r);
    }
    s
}
