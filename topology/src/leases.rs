//! The quorum-lease holder rule (DESIGN.md §6-7), shared by the planner (`meridian plan
//! --leases`) and the replicas' `[leases] mode = "auto"`: for a fixed leader and a client
//! demand, which sites should hold read leases. One function, so the plan and the live choice
//! cannot disagree.
//!
//! A region's read costs the cheapest valid path: rtt(c, L) (leader), ql(c) (quorum read) or
//! min over holders rtt(c, h) (lease); a write costs rtt(c, L) + max(ql(L), max_h rtt(L, h)).
//! The objective is the demand-weighted mean latency of one operation.
use crate::input::Demand;
use crate::model::{quorum_latency, QuorumShape};
use crate::rtt::RttMatrix;

/// The objective (ms per operation) of `holders` (site positions) with the leader at position
/// `leader`; `sites` maps positions to matrix regions (`None` = lost). Infinite when no quorum
/// survives.
pub fn objective(
    m: &RttMatrix,
    shape: &QuorumShape,
    demand: &[Demand],
    sites: &[Option<usize>],
    leader: usize,
    holders: &[usize],
) -> f64 {
    let Some(l) = sites.get(leader).copied().flatten() else {
        return f64::INFINITY;
    };
    let ql = quorum_latency(m, sites, shape, l);
    let hold = holders
        .iter()
        .filter_map(|&h| sites.get(h).copied().flatten())
        .map(|h| m.rtt(l, h))
        .fold(0.0, f64::max);
    let total_w: f64 = demand.iter().map(|d| d.weight).sum();
    if !ql.is_finite() || total_w <= 0.0 {
        return if ql.is_finite() { 0.0 } else { f64::INFINITY };
    }
    let mut obj = 0.0;
    for d in demand {
        let lease = holders
            .iter()
            .filter_map(|&h| sites.get(h).copied().flatten())
            .map(|h| m.rtt(d.region, h))
            .fold(f64::INFINITY, f64::min);
        let write = m.rtt(d.region, l) + ql.max(hold);
        let read = m
            .rtt(d.region, l)
            .min(quorum_latency(m, sites, shape, d.region))
            .min(lease);
        obj += d.weight * ((1.0 - d.read_share) * write + d.read_share * read);
    }
    obj / total_w
}

/// The best holder set for the leader at position `leader`: `(objective, holders)` with holders
/// sorted, or `None` when the leader is lost or no quorum survives.
///
/// Exact: the best set is always "every live site within some distance of the leader" (adding
/// a site no farther than the farthest holder costs writes nothing and can only speed reads),
/// so the n+1 prefixes by distance cover all 2^n subsets. Ties go to the smaller set.
pub fn best_holders(
    m: &RttMatrix,
    shape: &QuorumShape,
    demand: &[Demand],
    sites: &[Option<usize>],
    leader: usize,
) -> Option<(f64, Vec<usize>)> {
    let l = sites.get(leader).copied().flatten()?;
    if !quorum_latency(m, sites, shape, l).is_finite() {
        return None;
    }
    let mut order: Vec<usize> = (0..sites.len()).filter(|&q| sites[q].is_some()).collect();
    order.sort_by(|&a, &b| {
        m.rtt(l, sites[a].unwrap())
            .total_cmp(&m.rtt(l, sites[b].unwrap()))
            .then(a.cmp(&b))
    });
    let mut best = (objective(m, shape, demand, sites, leader, &[]), 0);
    for k in 1..=order.len() {
        // Only the last of a group of equidistant sites is a distinct choice.
        let hold = m.rtt(l, sites[order[k - 1]].unwrap());
        if k < order.len() && m.rtt(l, sites[order[k]].unwrap()) == hold {
            continue;
        }
        let obj = objective(m, shape, demand, sites, leader, &order[..k]);
        if obj < best.0 - 1e-9 {
            best = (obj, k);
        }
    }
    let mut holders = order[..best.1].to_vec();
    holders.sort_unstable();
    Some((best.0, holders))
}

/// Hysteresis for a live choice: move from the current set (objective `current`) to a better
/// one (objective `best`) only when it saves at least `relative` of the current objective and
/// at least `absolute_ms`, so measurement noise and small demand shifts do not flip leases
/// (every change costs a guard period of local reads).
pub fn worth_switching(current: f64, best: f64, relative: f64, absolute_ms: f64) -> bool {
    if !current.is_finite() {
        return best.is_finite();
    }
    current - best >= (current * relative).max(absolute_ms)
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
    fn the_prefix_rule_is_the_exhaustive_optimum() {
        let m = line();
        let sites: Vec<_> = [0, 1, 2, 3, 3].into_iter().map(Some).collect();
        let shape = QuorumShape::Majority;
        for demand in [
            vec![d(0, 1.0, 0.9), d(3, 1.0, 0.9)],
            vec![d(3, 5.0, 0.99), d(1, 1.0, 0.1)],
            vec![d(0, 1.0, 0.2)],
        ] {
            for leader in 0..5 {
                let (obj, holders) = best_holders(&m, &shape, &demand, &sites, leader).unwrap();
                let mut exhaustive = f64::INFINITY;
                for mask in 0u32..32 {
                    let h: Vec<usize> = (0..5).filter(|i| mask & (1 << i) != 0).collect();
                    exhaustive = exhaustive.min(objective(&m, &shape, &demand, &sites, leader, &h));
                }
                assert!((obj - exhaustive).abs() < 1e-9, "{obj} vs {exhaustive}");
                assert!(
                    (objective(&m, &shape, &demand, &sites, leader, &holders) - obj).abs() < 1e-9
                );
            }
        }
    }

    #[test]
    fn a_heavy_far_reader_gets_a_holder_and_writers_get_none() {
        let m = line();
        let sites: Vec<_> = [0, 1, 2, 3, 3].into_iter().map(Some).collect();
        let shape = QuorumShape::Majority;
        // Leader at r0; r3 reads almost only: the far sites hold.
        let (_, h) = best_holders(&m, &shape, &[d(3, 1.0, 0.99)], &sites, 0).unwrap();
        assert!(h.contains(&3) || h.contains(&4), "{h:?}");
        // Writes only: any holder beyond the quorum only slows writes.
        let (_, h) = best_holders(&m, &shape, &[d(3, 1.0, 0.0)], &sites, 0).unwrap();
        assert!(
            h.iter().all(|&p| m.rtt(0, sites[p].unwrap()) <= 30.0),
            "{h:?}"
        );
    }

    #[test]
    fn lost_sites_never_hold() {
        let m = line();
        let sites = [Some(0), Some(1), Some(2), None, Some(3)];
        let (_, h) =
            best_holders(&m, &QuorumShape::Majority, &[d(3, 1.0, 1.0)], &sites, 0).unwrap();
        assert!(!h.contains(&3), "{h:?}");
        assert!(best_holders(&m, &QuorumShape::Majority, &[d(3, 1.0, 1.0)], &sites, 3).is_none());
    }

    #[test]
    fn hysteresis_needs_a_real_saving() {
        assert!(!worth_switching(100.0, 96.0, 0.05, 1.0));
        assert!(worth_switching(100.0, 94.0, 0.05, 1.0));
        assert!(!worth_switching(10.0, 9.5, 0.01, 1.0), "absolute floor");
        assert!(worth_switching(f64::INFINITY, 50.0, 0.05, 1.0));
    }
}
