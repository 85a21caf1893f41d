//! Planner tests against hand-computed cases (DESIGN.md §6-7) and the search's agreement with
//! exhaustive enumeration.
use meridian_topology::failure::{analyse, linchpin};
use meridian_topology::input::{parse_demand, parse_sites, Demand, PlanInput, QuorumKind, Survive};
use meridian_topology::plan::{evaluate_fixed, plan};
use meridian_topology::regions::Regions;
use meridian_topology::search::{search_exhaustive, search_local};
use meridian_topology::{Error, RttMatrix};
use proptest::prelude::*;

fn input(
    m: RttMatrix,
    demand: Vec<Demand>,
    replicas: usize,
    quorum: QuorumKind,
    survive: Survive,
    leases: bool,
) -> PlanInput {
    let regions = Regions::embedded();
    let continent = m
        .regions
        .iter()
        .map(|r| {
            regions
                .get(r)
                .map_or(format!("?{r}"), |g| g.continent.clone())
        })
        .collect();
    let candidates = (0..m.regions.len()).map(|r| (r, 1)).collect();
    PlanInput {
        matrix: m,
        continent,
        candidates,
        demand,
        replicas,
        quorum,
        survive,
        leases,
        top: 3,
    }
}

/// The SRE book's example (Site Reliability Engineering, ch. 23): two replicas in the central
/// US, one on the east coast, two in Europe; clients in the central US and in Europe, writes
/// only. The east-coast replica is the linchpin: losing it forces every write across the
/// Atlantic.
#[test]
fn sre_book_placement_names_the_east_coast_replica_as_linchpin() {
    let m = RttMatrix::embedded();
    let demand = parse_demand(&m, "us-east-2=50:0,eu-west-1=50:0").unwrap();
    let inp = input(
        m.clone(),
        demand,
        5,
        QuorumKind::Majority,
        Survive::Site,
        false,
    );
    let fixed = parse_sites(&m, "us-east-2*2,us-east-1,eu-west-1,eu-west-2").unwrap();
    let (rep, _) = evaluate_fixed(&inp, &fixed).unwrap();
    let p = &rep.placements[0];
    assert_eq!(p.linchpin.as_deref(), Some("us-east-1"));
    // By hand: leader us-east-2, ql = third of {0, 0, 15.4, 80.3, 88.3} = 15.4.
    assert_eq!(p.leader, "us-east-2");
    let eu = |rows: &Vec<meridian_topology::plan::RegionReport>| {
        rows.iter()
            .find(|r| r.region == "eu-west-1")
            .unwrap()
            .write_ms
    };
    assert_eq!(eu(&p.per_region), 80.3 + 15.4);
    assert_eq!(
        p.objective_ms,
        ((15.4 + 95.7) / 2.0_f64 * 100.0).round() / 100.0
    );
    // After losing us-east-1 the quorum needs Europe: ql(us-east-2) = third of
    // {0, 0, 80.3, 88.3, inf} = 80.3 and ql(eu-west-1) = 80.3 as well; both leaders give
    // an objective of (80.3 + 160.6) / 2 = 120.45.
    let lost = p.failures.iter().find(|f| f.lost == "us-east-1").unwrap();
    assert_eq!(lost.objective_ms, Some(120.45));
    let eu_after = eu(&lost.per_region);
    assert!(
        eu_after == 160.6 || eu_after == 80.3,
        "European write after the loss: {eu_after}"
    );
    assert!(eu_after > eu(&p.per_region) - 15.4, "Europe gets no better");
    // Losing one central site is bad but less so (leader moves to us-east-1 or Europe).
    let central = p.failures.iter().find(|f| f.lost == "us-east-2#1").unwrap();
    assert!(central.objective_ms.unwrap() < 120.45);
}

#[test]
fn an_infeasible_survival_constraint_names_the_domain() {
    let m = RttMatrix::embedded();
    let demand = parse_demand(&m, "eu-west-1=1").unwrap();
    let inp = input(
        m.clone(),
        demand,
        5,
        QuorumKind::Majority,
        Survive::Continent,
        false,
    );
    let fixed = parse_sites(&m, "eu-west-1,eu-west-2,eu-central-1,us-east-1,us-east-2").unwrap();
    let err = evaluate_fixed(&inp, &fixed).unwrap_err();
    assert_eq!(
        err,
        Error::Infeasible("losing continent 'Europe' leaves no quorum".into())
    );
    // A search over candidates spanning only two continents has no answer either.
    let mut inp2 = inp.clone();
    inp2.candidates = parse_sites(
        &m,
        "eu-west-1,eu-west-2,eu-central-1,us-east-1,us-east-2,us-west-2",
    )
    .unwrap();
    assert!(matches!(plan(&inp2), Err(Error::Infeasible(_))));
}

#[test]
fn hierarchical_failure_analysis_by_continent() {
    let m = RttMatrix::embedded();
    let demand = parse_demand(&m, "us-east-1=1,eu-west-1=1,ap-northeast-1=1").unwrap();
    let inp = input(
        m.clone(),
        demand,
        9,
        QuorumKind::Hierarchical,
        Survive::Continent,
        false,
    );
    let fixed = parse_sites(
        &m,
        "us-east-1,us-east-2,us-west-2,eu-west-1,eu-west-2,eu-central-1,ap-northeast-1,ap-northeast-2,ap-northeast-3",
    )
    .unwrap();
    let (rep, best) = evaluate_fixed(&inp, &fixed).unwrap();
    let p = &rep.placements[0];
    assert_eq!(p.groups.as_ref().unwrap().len(), 3);
    assert_eq!(p.failures.len(), 3, "one case per continent");
    assert!(
        p.failures.iter().all(|f| f.feasible),
        "2 of 3 groups survive any continent"
    );
    // Losing a whole group leaves the other two, each needing its own majority: the quorum
    // latency from the new leader is its second-fastest group's second-fastest member.
    let cases = analyse(&inp, &best[0].sites, Survive::Continent);
    let worst = linchpin(&cases).unwrap();
    assert!(worst.outcome.as_ref().unwrap().objective_ms > p.objective_ms);
}

fn random_matrix(n: usize, seed: u64) -> RttMatrix {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 10_000) as f64 / 10_000.0
    };
    let pts: Vec<(f64, f64)> = (0..n).map(|_| (next() * 200.0, next() * 100.0)).collect();
    let mut ms = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..i {
            let d = ((pts[i].0 - pts[j].0).powi(2) + (pts[i].1 - pts[j].1).powi(2)).sqrt();
            let v = ((d + next() * 20.0) * 10.0).round() / 10.0;
            ms[i][j] = v;
            ms[j][i] = v;
        }
    }
    RttMatrix {
        regions: (0..n).map(|i| format!("r{i}")).collect(),
        ms,
    }
}

#[test]
fn local_search_finds_the_exhaustive_optimum_on_random_instances() {
    for seed in 0..24u64 {
        let m = random_matrix(11, seed);
        let demand: Vec<Demand> = (0..11)
            .filter(|i| !(seed + *i as u64).is_multiple_of(3))
            .map(|i| Demand {
                region: i,
                weight: 1.0 + ((seed * 7 + i as u64) % 5) as f64,
                read_share: ((seed + i as u64) % 10) as f64 / 10.0,
            })
            .collect();
        let leases = seed % 2 == 0;
        let inp = input(m, demand, 5, QuorumKind::Majority, Survive::Site, leases);
        let ex = search_exhaustive(&inp);
        let lo = search_local(&inp);
        let (e, l) = (
            ex.best[0].assessment.objective_ms,
            lo.best[0].assessment.objective_ms,
        );
        assert!(
            (e - l).abs() < 1e-9,
            "seed {seed}: exhaustive {e} vs local {l}"
        );
        assert!(
            lo.evaluated < ex.evaluated,
            "the heuristic should look at fewer placements"
        );
    }
}

#[test]
fn search_reports_its_method_and_count() {
    let m = RttMatrix::embedded();
    let demand = parse_demand(&m, "us-east-1=1,eu-central-1=1,ap-northeast-1=1").unwrap();
    let mut inp = input(
        m.clone(),
        demand,
        5,
        QuorumKind::Majority,
        Survive::Site,
        false,
    );
    inp.candidates = parse_sites(
        &m,
        "us-east-1,us-west-2,eu-west-1,eu-central-1,ap-northeast-1,ap-southeast-2,sa-east-1",
    )
    .unwrap();
    let (rep, _) = plan(&inp).unwrap();
    assert_eq!(rep.search.method, "exhaustive");
    assert_eq!(rep.search.evaluated, 21, "C(7,5)");
    assert_eq!(rep.placements.len(), 3);
    assert!(rep
        .placements
        .windows(2)
        .all(|w| w[0].objective_ms <= w[1].objective_ms));
}

proptest! {
    /// Losing a domain never helps: quorum sizes stay, so every latency can only grow.
    #[test]
    fn failures_never_improve_the_objective(seed in 0u64..1000, leases: bool) {
        let m = random_matrix(8, seed);
        let demand: Vec<Demand> = (0..8).map(|i| Demand { region: i, weight: 1.0, read_share: 0.5 }).collect();
        let inp = input(m, demand, 5, QuorumKind::Majority, Survive::Site, leases);
        let best = &search_local(&inp).best[0];
        for f in analyse(&inp, &best.sites, Survive::Site) {
            let o = f.outcome.expect("5 sites survive one loss");
            prop_assert!(o.objective_ms >= best.assessment.objective_ms - 1e-9);
        }
    }

    /// Leases only add options (the empty holder set is always allowed).
    #[test]
    fn leases_never_hurt(seed in 0u64..1000) {
        let m = random_matrix(8, seed);
        let demand: Vec<Demand> = (0..8).map(|i| Demand { region: i, weight: 1.0 + i as f64, read_share: 0.8 }).collect();
        let a = search_exhaustive(&input(m.clone(), demand.clone(), 5, QuorumKind::Majority, Survive::Site, false));
        let b = search_exhaustive(&input(m, demand, 5, QuorumKind::Majority, Survive::Site, true));
        prop_assert!(b.best[0].assessment.objective_ms <= a.best[0].assessment.objective_ms + 1e-9);
    }
}
