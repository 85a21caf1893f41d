//! Steady state without faults: one election, no duelling proposers, every operation done.
use meridian_testkit::sim::{run_seed, Faults, SimConfig};

#[test]
fn fault_free_runs_elect_exactly_once() {
    for sites in [5, 9] {
        let mut cfg = SimConfig::for_sites(sites).unwrap();
        cfg.faults = Faults::NONE;
        cfg.vary = false;
        for seed in 0..20 {
            let r = run_seed(&cfg, seed);
            assert_eq!(
                r.leaders.len(),
                1,
                "{sites} sites, seed {seed}: leadership changed hands: {:?}",
                r.leaders
            );
            assert!(!r.failed(), "seed {seed}: {:?}", r.examples);
            assert_eq!(r.ops_completed, cfg.ops);
        }
    }
}

#[test]
fn reads_are_served_under_the_lease_without_a_log_round() {
    let mut cfg = SimConfig::for_sites(5).unwrap();
    cfg.faults = Faults::NONE;
    cfg.vary = false;
    let r = run_seed(&cfg, 3);
    let at_leader = |r: &meridian_testkit::sim::SeedReport, p: &str| {
        r.history
            .iter()
            .filter(|h| h.op == meridian_testkit::history::OpKind::Get)
            .filter(|h| h.path.as_deref() == Some(p))
            .count()
    };
    let (lease, log) = (at_leader(&r, "leader"), at_leader(&r, "log"));
    assert!(lease > 0);
    assert!(
        lease >= 9 * (lease + log) / 10,
        "{lease} of {} leader-path reads used the lease",
        lease + log
    );
    assert!(!r.failed(), "{:?}", r.examples);
    // Without leases every leader-path read goes through the log.
    cfg.lease = false;
    let r = run_seed(&cfg, 3);
    assert_eq!(at_leader(&r, "leader"), 0);
    assert!(at_leader(&r, "log") > 0);
    assert!(!r.failed(), "{:?}", r.examples);
}

#[test]
fn every_read_path_is_exercised_through_the_proxies() {
    let cfg = SimConfig::for_sites(5).unwrap();
    let s = meridian_testkit::sim::sweep(&cfg, 0..12, |_| {});
    for p in ["leader", "log", "quorum", "local"] {
        assert!(
            s.reads_by_path.get(p).copied().unwrap_or(0) > 0,
            "no {p} reads: {:?}",
            s.reads_by_path
        );
    }
    assert!(s.seeds_without_lease > 0 && s.seeds_with_transfers > 0);
}
