//! The CI slice of the simulator sweep (issue: consensus foundation, "Done means"): 500 seeds
//! mixing every fault on 5-site majority and 9-site hierarchical groups. Set MERIDIAN_SIM_SEEDS
//! to sweep more (e.g. MERIDIAN_SIM_SEEDS=20000 for a long soak).
use meridian_testkit::sim::{sweep, Faults, SimConfig};

fn seeds(default: u64) -> u64 {
    std::env::var("MERIDIAN_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn assert_clean(sites: usize, range: std::ops::Range<u64>) {
    assert_clean_with(sites, range, false)
}

fn assert_clean_with(sites: usize, range: std::ops::Range<u64>, quorum_leases: bool) {
    let mut cfg = SimConfig::for_sites(sites).unwrap();
    cfg.quorum_leases = quorum_leases;
    assert_clean_cfg(cfg, range);
}

fn assert_clean_cfg(
    mut cfg: SimConfig,
    range: std::ops::Range<u64>,
) -> meridian_testkit::sim::Summary {
    let sites = cfg.sites();
    cfg.faults = Faults::ALL;
    let mut failures = Vec::new();
    let s = sweep(&cfg, range.clone(), |r| {
        if r.failed() {
            failures.push(format!(
                "seed {}: {:?} (reproduce: meridian sim --seeds {} --sites {sites})",
                r.seed, r.examples, r.seed
            ));
        }
    });
    assert_eq!(s.seeds, range.end - range.start);
    assert!(
        s.ops >= s.seeds * cfg.ops as u64,
        "every seed completes all its operations"
    );
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        (
            s.violations,
            s.agreement_violations,
            s.stale_reads,
            s.incomplete_after_heal
        ),
        (0, 0, 0, 0)
    );
    // The sweep covers what it claims: every read path, seeds without leases (log reads),
    // leadership transfers, compaction rewrites and crashes that interrupt them.
    for p in ["leader", "log", "quorum", "local"] {
        assert!(s.reads_by_path.get(p).copied().unwrap_or(0) > 0, "{s:?}");
    }
    assert!(
        s.seeds_without_lease > 0 && s.seeds_with_transfers > 0,
        "{s:?}"
    );
    assert!(s.compactions > 0, "{s:?}");
    assert!(
        s.reads_at_revision > 0,
        "reads at a revision were judged: {s:?}"
    );
    // (Crashes inside a compaction are rare: the quorum-lease slices may have none; the two
    // plain sweeps must.)
    assert!(cfg.quorum_leases || s.compaction_crashes > 0, "{s:?}");
    assert!(
        s.snapshot_installs > 0,
        "no snapshot installed under faults: {s:?}"
    );
    if cfg.quorum_leases {
        assert!(
            s.reads_by_path.get("lease").copied().unwrap_or(0) > 0,
            "{s:?}"
        );
        assert!(s.seeds_with_auto_leases > 0, "{s:?}");
    }
    s
}

#[test]
fn five_site_majority_sweep_with_every_fault_is_clean() {
    let n = seeds(300);
    assert_clean(5, 10_000..10_000 + n);
}

#[test]
fn nine_site_hierarchical_sweep_with_every_fault_is_clean() {
    let n = seeds(200);
    assert_clean(9, 20_000..20_000 + n);
}

/// Quorum leases (issue "Quorum leases"): 500 seeds with holders chosen per seed crashing,
/// partitioned, paused, clocks drifting up to 0.95 ε.
#[test]
fn five_site_sweep_with_quorum_leases_is_clean() {
    let n = seeds(300);
    assert_clean_with(5, 30_000..30_000 + n, true);
}

#[test]
fn nine_site_sweep_with_quorum_leases_is_clean() {
    let n = seeds(200);
    assert_clean_with(9, 40_000..40_000 + n, true);
}

/// `[leases] mode = "auto"` in every seed: the leaders choose the holders from the demand and
/// change them through the log while sites crash, partition, pause and drift.
#[test]
fn five_site_sweep_with_auto_leases_is_clean() {
    let n = seeds(200);
    let mut cfg = SimConfig::for_sites(5).unwrap();
    cfg.quorum_leases = true;
    cfg.auto_leases = true;
    let s = assert_clean_cfg(cfg, 50_000..50_000 + n);
    assert_eq!(s.seeds_with_auto_leases, s.seeds);
    assert!(s.lease_config_changes >= s.seeds / 2, "{s:?}");
}

#[test]
fn nine_site_sweep_with_auto_leases_is_clean() {
    let n = seeds(100);
    let mut cfg = SimConfig::for_sites(9).unwrap();
    cfg.quorum_leases = true;
    cfg.auto_leases = true;
    let s = assert_clean_cfg(cfg, 60_000..60_000 + n);
    assert!(s.lease_config_changes >= s.seeds / 2, "{s:?}");
}

#[test]
fn faults_actually_happen_in_the_sweep() {
    // A sweep that never changes leader would prove little: check the faults bite.
    let cfg = SimConfig::for_sites(5).unwrap();
    let mut changes = 0;
    sweep(&cfg, 10_000..10_020, |r| {
        changes += r.leaders.len().saturating_sub(1)
    });
    assert!(
        changes >= 20,
        "only {changes} leader changes in 20 faulty seeds"
    );
}
