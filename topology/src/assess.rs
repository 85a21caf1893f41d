//! Scoring one placement (DESIGN.md §7): choose the leader and, with leases, the lease-holder
//! set that minimise the demand-weighted objective, and report per-region latencies.
use crate::input::{Demand, PlanInput};
use crate::leases::{best_holders, objective};
use crate::model::{quorum_latency, QuorumShape};
use crate::rtt::RttMatrix;

#[derive(Clone, Debug, PartialEq)]
pub struct RegionLatency {
    pub region: usize,
    pub weight: f64,
    pub read_share: f64,
    pub write_ms: f64,
    pub leader_read_ms: f64,
    pub quorum_read_ms: f64,
    pub lease_read_ms: Option<f64>,
    pub read_ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// Position of the leader in the site list.
    pub leader: usize,
    /// Positions of the lease holders (empty without leases).
    pub holders: Vec<usize>,
    pub objective_ms: f64,
    pub per_region: Vec<RegionLatency>,
}

/// Scores `sites` (region per position; `None` = lost) for the given demand. `None` if no
/// quorum survives. The holders for each candidate leader come from `leases::best_holders`,
/// the rule `[leases] mode = "auto"` runs live.
pub fn assess(
    m: &RttMatrix,
    shape: &QuorumShape,
    demand: &[Demand],
    leases: bool,
    sites: &[Option<usize>],
) -> Option<Assessment> {
    let qread: Vec<f64> = demand
        .iter()
        .map(|d| quorum_latency(m, sites, shape, d.region))
        .collect();
    let mut best: Option<(f64, usize, Vec<usize>)> = None;
    for p in 0..sites.len() {
        let choice = if leases {
            best_holders(m, shape, demand, sites, p)
        } else {
            sites[p]
                .filter(|&l| quorum_latency(m, sites, shape, l).is_finite())
                .map(|_| (objective(m, shape, demand, sites, p, &[]), Vec::new()))
        };
        let Some((obj, holders)) = choice else {
            continue;
        };
        if best.as_ref().is_none_or(|b| obj < b.0 - 1e-9) {
            best = Some((obj, p, holders));
        }
    }
    let (objective_ms, leader, holders) = best?;
    let l = sites[leader].expect("leader is alive");
    let ql = quorum_latency(m, sites, shape, l);
    let hold = holders
        .iter()
        .map(|&h| m.rtt(l, sites[h].unwrap()))
        .fold(0.0, f64::max);
    let per_region = demand
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let lease = holders
                .iter()
                .map(|&h| m.rtt(d.region, sites[h].unwrap()))
                .min_by(|a, b| a.total_cmp(b));
            let leader_read = m.rtt(d.region, l);
            RegionLatency {
                region: d.region,
                weight: d.weight,
                read_share: d.read_share,
                write_ms: leader_read + ql.max(hold),
                leader_read_ms: leader_read,
                quorum_read_ms: qread[i],
                lease_read_ms: lease,
                read_ms: leader_read
                    .min(qread[i])
                    .min(lease.unwrap_or(f64::INFINITY)),
            }
        })
        .collect();
    Some(Assessment {
        leader,
        holders,
        objective_ms,
        per_region,
    })
}

/// Does a quorum survive with these sites (`None` = lost)?
pub fn has_quorum(shape: &QuorumShape, sites: &[Option<usize>]) -> bool {
    match shape {
        QuorumShape::Majority => sites.iter().filter(|s| s.is_some()).count() > sites.len() / 2,
        QuorumShape::Hierarchical(groups) => {
            let ok = groups
                .iter()
                .filter(|g| g.iter().filter(|&&p| sites[p].is_some()).count() > g.len() / 2)
                .count();
            ok > groups.len() / 2
        }
    }
}

/// For hierarchical quorums: orders 9 sites into 3 groups of 3 (positions 0-2, 3-5, 6-8)
/// that minimise the total round trip inside groups — the way operators group by continent.
pub fn group_nine(m: &RttMatrix, sites: &[usize]) -> Vec<usize> {
    assert_eq!(sites.len(), 9);
    let cost = |g: [usize; 3]| {
        m.rtt(sites[g[0]], sites[g[1]])
            + m.rtt(sites[g[0]], sites[g[2]])
            + m.rtt(sites[g[1]], sites[g[2]])
    };
    let mut best = (f64::INFINITY, [0usize; 9]);
    for a in 1..9 {
        for b in a + 1..9 {
            let g1 = [0, a, b];
            let rest: Vec<usize> = (1..9).filter(|x| *x != a && *x != b).collect();
            for i in 1..6 {
                for j in i + 1..6 {
                    let g2 = [rest[0], rest[i], rest[j]];
                    let g3: Vec<usize> = rest[1..]
                        .iter()
                        .copied()
                        .filter(|x| *x != rest[i] && *x != rest[j])
                        .collect();
                    let g3 = [g3[0], g3[1], g3[2]];
                    let c = cost(g1) + cost(g2) + cost(g3);
                    if c < best.0 - 1e-9 {
                        best = (
                            c,
                            [
                                g1[0], g1[1], g1[2], g2[0], g2[1], g2[2], g3[0], g3[1], g3[2],
                            ],
                        );
                    }
                }
            }
        }
    }
    best.1.iter().map(|&p| sites[p]).collect()
}

/// The site list as the planner scores it (hierarchical placements are grouped first).
pub fn arrange(input: &PlanInput, sites: &[usize]) -> Vec<usize> {
    match input.quorum {
        crate::input::QuorumKind::Hierarchical => group_nine(&input.matrix, sites),
        crate::input::QuorumKind::Majority => sites.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::rtt::line;
    fn d(region: usize, weight: f64, read_share: f64) -> Demand {
        Demand {
            region,
            weight,
            read_share,
        }
    }

    #[test]
    fn write_only_demand_picks_the_leader_by_hand() {
        let m = line();
        let sites: Vec<_> = [0, 1, 2, 3, 3].into_iter().map(Some).collect();
        // Client at r0 only. Leader at r0 (pos 0): 0 + ql(r0) = third of {0,10,30,60,60} = 30.
        // Leader r1: 10 + third of {10,0,20,50,50} = 10 + 20 = 30 as well; r2: 30 + 30 = 60.
        let a = assess(&m, &QuorumShape::Majority, &[d(0, 1.0, 0.0)], false, &sites).unwrap();
        assert_eq!(a.objective_ms, 30.0);
        assert_eq!(a.leader, 0, "ties go to the first position");
    }

    #[test]
    fn reads_take_the_cheapest_valid_path() {
        let m = line();
        let sites: Vec<_> = [0, 1, 2, 3, 3].into_iter().map(Some).collect();
        let a = assess(&m, &QuorumShape::Majority, &[d(3, 1.0, 1.0)], false, &sites).unwrap();
        // Read-only client at r3: leader at r3 gives 0.
        assert_eq!(a.objective_ms, 0.0);
        assert_eq!(a.per_region[0].read_ms, 0.0);
        // Two clients at the ends, all reads: one leader can't serve both; quorum reads from
        // r0 cost 30 and from r3 cost 30; leader at r3 gives r3 0, r0 min(60, 30) = 30.
        let a = assess(
            &m,
            &QuorumShape::Majority,
            &[d(0, 1.0, 1.0), d(3, 1.0, 1.0)],
            false,
            &sites,
        )
        .unwrap();
        assert_eq!(a.objective_ms, 15.0);
    }

    #[test]
    fn leases_trade_write_latency_for_local_reads() {
        let m = line();
        let sites: Vec<_> = [0, 1, 2, 3, 3].into_iter().map(Some).collect();
        let demand = [d(0, 1.0, 0.9), d(3, 1.0, 0.9)];
        let without = assess(&m, &QuorumShape::Majority, &demand, false, &sites).unwrap();
        let with = assess(&m, &QuorumShape::Majority, &demand, true, &sites).unwrap();
        assert!(with.objective_ms < without.objective_ms);
        // Exhaustive over every subset: the prefix shortcut finds the true optimum.
        let mut best = f64::INFINITY;
        for l in 0..5 {
            for mask in 0u32..32 {
                let h: Vec<usize> = (0..5).filter(|i| mask & (1 << i) != 0).collect();
                let lr = sites[l].unwrap();
                let ql = quorum_latency(&m, &sites, &QuorumShape::Majority, lr);
                let hold = h
                    .iter()
                    .map(|&x| m.rtt(lr, sites[x].unwrap()))
                    .fold(0.0, f64::max);
                let mut obj = 0.0;
                for dd in &demand {
                    let w = m.rtt(dd.region, lr) + ql.max(hold);
                    let lease = h
                        .iter()
                        .map(|&x| m.rtt(dd.region, sites[x].unwrap()))
                        .fold(f64::INFINITY, f64::min);
                    let r = m
                        .rtt(dd.region, lr)
                        .min(quorum_latency(
                            &m,
                            &sites,
                            &QuorumShape::Majority,
                            dd.region,
                        ))
                        .min(lease);
                    obj += dd.weight * ((1.0 - dd.read_share) * w + dd.read_share * r);
                }
                best = best.min(obj / 2.0);
            }
        }
        assert!(
            (with.objective_ms - best).abs() < 1e-9,
            "{} vs exhaustive {best}",
            with.objective_ms
        );
    }

    #[test]
    fn lost_quorum_is_none() {
        let m = line();
        let sites = [Some(0), None, None, None, Some(3)];
        assert!(assess(&m, &QuorumShape::Majority, &[d(0, 1.0, 0.5)], false, &sites).is_none());
        assert!(!has_quorum(&QuorumShape::Majority, &sites));
    }

    #[test]
    fn nine_sites_group_by_proximity() {
        let m = RttMatrix::embedded();
        let names = [
            "us-east-1",
            "eu-west-1",
            "ap-northeast-1",
            "us-east-2",
            "eu-west-2",
            "ap-northeast-2",
            "us-west-2",
            "eu-central-1",
            "ap-northeast-3",
        ];
        let sites: Vec<usize> = names.iter().map(|n| m.index(n).unwrap()).collect();
        let g = group_nine(&m, &sites);
        let cont = |r: usize| m.regions[r].split('-').next().unwrap().to_string();
        for grp in g.chunks(3) {
            assert!(
                grp.iter().all(|&r| cont(r) == cont(grp[0])),
                "mixed group {:?}",
                grp.iter().map(|&r| &m.regions[r]).collect::<Vec<_>>()
            );
        }
    }
}
