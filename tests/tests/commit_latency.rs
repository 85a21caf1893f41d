//! Fault-free steady state: commit latency at the leader equals its fastest-quorum RTT
//! (DESIGN.md §6, ql(L)) within 1 ms — no extra round trips.
use meridian_core::SiteId;
use meridian_testkit::sim::{run_seed, Faults, SimConfig};
use meridian_topology::model::{quorum_latency, QuorumShape};
use meridian_topology::RttMatrix;

fn median(mut xs: Vec<u64>) -> f64 {
    xs.sort_unstable();
    xs[xs.len() / 2] as f64 / 1e6
}

fn check(sites: usize, leader: usize, shape: QuorumShape) {
    let mut cfg = SimConfig::for_sites(sites).unwrap();
    cfg.faults = Faults::NONE;
    cfg.vary = false;
    cfg.preferred_leader = Some(SiteId(leader as u8));
    cfg.ops = 400;
    let r = run_seed(&cfg, 1);
    assert_eq!(r.incomplete_after_heal, 0);
    assert!(
        r.leaders.iter().all(|(_, s)| *s == leader),
        "leadership moved: {:?}",
        r.leaders
    );
    let m = RttMatrix::embedded();
    let sites_idx: Vec<Option<usize>> = cfg
        .regions
        .iter()
        .map(|x| Some(m.index(x).unwrap()))
        .collect();
    let bound = quorum_latency(&m, &sites_idx, &shape, sites_idx[leader].unwrap());
    let fsync_ms = cfg.fsync.as_secs_f64() * 1e3;
    let measured = median(r.commit_latency_ns.clone());
    assert!(r.commit_latency_ns.len() > 100);
    assert!(
        (measured - bound).abs() <= 1.0 && measured >= bound,
        "{sites} sites, leader {}: median commit {measured:.2} ms vs ql(L) {bound:.2} ms (+{fsync_ms} ms fsync)",
        cfg.regions[leader]
    );
}

#[test]
fn five_regions_commit_at_the_quorum_rtt() {
    for leader in 0..5 {
        check(5, leader, QuorumShape::Majority);
    }
}

#[test]
fn nine_regions_hierarchical_commit_at_the_quorum_rtt() {
    check(9, 0, QuorumShape::three_by_three());
    check(9, 4, QuorumShape::three_by_three());
}
