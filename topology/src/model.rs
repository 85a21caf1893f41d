//! The latency model of DESIGN.md §6, shared by the planner, the simulator, the benchmark and
//! the tests. Sites are region indices into an `RttMatrix`; a lost site is `None`.
use crate::rtt::RttMatrix;
use serde::{Deserialize, Serialize};

/// How a group's quorum is formed, over positions `0..n` of the site list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuorumShape {
    Majority,
    /// Groups of site positions; a quorum is a majority of groups, each by a majority of members.
    Hierarchical(Vec<Vec<usize>>),
}

impl QuorumShape {
    /// 3 groups of 3 consecutive positions.
    pub fn three_by_three() -> QuorumShape {
        QuorumShape::Hierarchical(
            (0..3)
                .map(|g| (0..3).map(|i| g * 3 + i).collect())
                .collect(),
        )
    }
}

/// The k-th smallest (1-based) of `xs`; infinity if there are fewer than k.
pub fn kth(k: usize, mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.get(k.wrapping_sub(1)).copied().unwrap_or(f64::INFINITY)
}

fn rtt_or_inf(m: &RttMatrix, x: usize, s: Option<usize>) -> f64 {
    s.map_or(f64::INFINITY, |s| m.rtt(x, s))
}

/// `ql(x)`: time for a round trip from region `x` to reach a quorum of `sites` (a lost site
/// never answers, and the quorum sizes of the full group stay). Infinite if no quorum survives.
pub fn quorum_latency(
    m: &RttMatrix,
    sites: &[Option<usize>],
    shape: &QuorumShape,
    x: usize,
) -> f64 {
    match shape {
        QuorumShape::Majority => {
            let n = sites.len();
            kth(
                n / 2 + 1,
                sites.iter().map(|s| rtt_or_inf(m, x, *s)).collect(),
            )
        }
        QuorumShape::Hierarchical(groups) => {
            let t: Vec<f64> = groups
                .iter()
                .map(|g| {
                    kth(
                        g.len() / 2 + 1,
                        g.iter().map(|&p| rtt_or_inf(m, x, sites[p])).collect(),
                    )
                })
                .collect();
            kth(groups.len() / 2 + 1, t)
        }
    }
}

/// write(c) = rtt(c, L) + ql(L); with quorum leases held by `holders`, the leader also waits for
/// every holder: rtt(c, L) + max(ql(L), max_h rtt(L, h)).
pub fn write_ms(
    m: &RttMatrix,
    sites: &[Option<usize>],
    shape: &QuorumShape,
    leader: usize,
    holders: &[usize],
    c: usize,
) -> f64 {
    let ql = quorum_latency(m, sites, shape, leader);
    let hold = holders
        .iter()
        .map(|&h| m.rtt(leader, h))
        .fold(0.0, f64::max);
    m.rtt(c, leader) + ql.max(hold)
}

/// leader read(c) = rtt(c, L).
pub fn leader_read_ms(m: &RttMatrix, leader: usize, c: usize) -> f64 {
    m.rtt(c, leader)
}

/// quorum read(c) = ql(c), from the client's own region.
pub fn quorum_read_ms(
    m: &RttMatrix,
    sites: &[Option<usize>],
    shape: &QuorumShape,
    c: usize,
) -> f64 {
    quorum_latency(m, sites, shape, c)
}

/// lease read(c) = min over holders of rtt(c, h); None without holders.
pub fn lease_read_ms(m: &RttMatrix, holders: &[usize], c: usize) -> Option<f64> {
    holders
        .iter()
        .map(|&h| m.rtt(c, h))
        .min_by(|a, b| a.total_cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::rtt::line;

    #[test]
    fn kth_counts_from_one_and_saturates() {
        assert_eq!(kth(2, vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(kth(4, vec![1.0]), f64::INFINITY);
    }

    #[test]
    fn majority_quorum_latency_by_hand() {
        let m = line();
        let sites = [Some(0), Some(1), Some(2), Some(3), Some(3)];
        // From r0: {0,10,30,60,60}: third smallest = 30.
        assert_eq!(quorum_latency(&m, &sites, &QuorumShape::Majority, 0), 30.0);
        // From r3: {60,50,30,0,0}: third = 30.
        assert_eq!(quorum_latency(&m, &sites, &QuorumShape::Majority, 3), 30.0);
        let lost = [Some(0), None, Some(2), Some(3), Some(3)];
        assert_eq!(quorum_latency(&m, &lost, &QuorumShape::Majority, 0), 60.0);
        let gone = [Some(0), None, None, None, Some(3)];
        assert_eq!(
            quorum_latency(&m, &gone, &QuorumShape::Majority, 0),
            f64::INFINITY
        );
    }

    #[test]
    fn hierarchical_quorum_latency_by_hand() {
        let m = line();
        let sites: Vec<Option<usize>> = [0, 0, 1, 2, 2, 3, 3, 3, 3].into_iter().map(Some).collect();
        let shape = QuorumShape::three_by_three();
        // From r0: group times (second smallest of each): {0, 30, 60}; second smallest = 30.
        assert_eq!(quorum_latency(&m, &sites, &shape, 0), 30.0);
        // Lose a member of group 2: it has {inf, 30, 60} -> 60; groups {0, 60, 60} -> 60.
        let mut lost = sites.clone();
        lost[3] = None;
        assert_eq!(quorum_latency(&m, &lost, &shape, 0), 60.0);
    }

    #[test]
    fn paths_by_hand() {
        let m = line();
        let sites: Vec<Option<usize>> = [0, 1, 2, 3, 3].into_iter().map(Some).collect();
        let sh = QuorumShape::Majority;
        // Client at r3, leader at r1: rtt 50 + ql(r1) = third of {10,0,20,50,50} = 20.
        assert_eq!(write_ms(&m, &sites, &sh, 1, &[], 3), 70.0);
        // Lease holders at r3 force the leader to wait 50 for them.
        assert_eq!(write_ms(&m, &sites, &sh, 1, &[3], 3), 100.0);
        assert_eq!(leader_read_ms(&m, 1, 3), 50.0);
        assert_eq!(quorum_read_ms(&m, &sites, &sh, 3), 30.0);
        assert_eq!(lease_read_ms(&m, &[0, 2], 3), Some(30.0));
        assert_eq!(lease_read_ms(&m, &[], 3), None);
    }
}
