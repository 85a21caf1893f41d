//! Steady state without faults: one election, no duelling proposers, every operation done.
use meridian_testkit::sim::{run_seed, Faults, SimConfig};

#[test]
fn fault_free_runs_elect_exactly_once() {
    for sites in [5, 9] {
        let mut cfg = SimConfig::for_sites(sites).unwrap();
        cfg.faults = Faults::NONE;
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
    let r = run_seed(&cfg, 3);
    let reads: Vec<_> = r
        .history
        .iter()
        .filter(|h| h.op == meridian_testkit::history::OpKind::Get)
        .collect();
    let lease = reads
        .iter()
        .filter(|h| h.path.as_deref() == Some("leader"))
        .count();
    assert!(
        lease * 10 >= reads.len() * 9,
        "{lease} of {} reads used the lease",
        reads.len()
    );
    // Without leases every read goes through the log.
    cfg.lease = false;
    let r = run_seed(&cfg, 3);
    assert!(r
        .history
        .iter()
        .filter(|h| h.op == meridian_testkit::history::OpKind::Get)
        .all(|h| h.path.as_deref() == Some("log")));
    assert!(!r.failed());
}
