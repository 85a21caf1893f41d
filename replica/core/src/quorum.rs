//! Quorum systems (DESIGN.md §2): `Majority(n)` and `Hierarchical(groups)`.
//!
//! Flexible Paxos (Howard et al., 2016) only needs every phase-1 quorum to intersect every phase-2
//! quorum; both systems here use the same family for both phases and the property tests check the
//! intersection exhaustively.
use crate::types::SiteId;
use serde::{Deserialize, Serialize};

/// A set of sites as a bitmask (at most 32 sites).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SiteSet(pub u32);

impl SiteSet {
    pub fn insert(&mut self, s: SiteId) {
        self.0 |= 1 << s.0;
    }
    pub fn contains(&self, s: SiteId) -> bool {
        self.0 & (1 << s.0) != 0
    }
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = SiteId> + '_ {
        (0..32u8).filter(|i| self.0 & (1 << i) != 0).map(SiteId)
    }
}

/// What a quorum system must answer. Phase-1 quorums must intersect phase-2 quorums.
pub trait QuorumSystem {
    /// Number of sites.
    fn size(&self) -> usize;
    /// Is `set` a phase-1 (prepare) quorum?
    fn is_phase1_quorum(&self, set: SiteSet) -> bool;
    /// Is `set` a phase-2 (accept) quorum?
    fn is_phase2_quorum(&self, set: SiteSet) -> bool;
}

/// The quorum systems Meridian ships.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quorum {
    /// Any strict majority of `n` sites.
    Majority(usize),
    /// A majority of groups, each represented by a majority of its members.
    Hierarchical(Vec<Vec<SiteId>>),
}

impl Quorum {
    /// 9 sites as 3 groups of 3: sites 0-2, 3-5, 6-8.
    pub fn three_by_three() -> Quorum {
        Quorum::Hierarchical(
            (0..3)
                .map(|g| (0..3).map(|i| SiteId(g * 3 + i)).collect())
                .collect(),
        )
    }

    fn is_quorum(&self, set: SiteSet) -> bool {
        match self {
            Quorum::Majority(n) => set.iter().filter(|s| (s.0 as usize) < *n).count() > n / 2,
            Quorum::Hierarchical(groups) => {
                let good = groups
                    .iter()
                    .filter(|g| g.iter().filter(|s| set.contains(**s)).count() > g.len() / 2)
                    .count();
                good > groups.len() / 2
            }
        }
    }
}

impl QuorumSystem for Quorum {
    fn size(&self) -> usize {
        match self {
            Quorum::Majority(n) => *n,
            Quorum::Hierarchical(groups) => groups.iter().map(|g| g.len()).sum(),
        }
    }
    fn is_phase1_quorum(&self, set: SiteSet) -> bool {
        self.is_quorum(set)
    }
    fn is_phase2_quorum(&self, set: SiteSet) -> bool {
        self.is_quorum(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_sets(n: usize) -> impl Iterator<Item = SiteSet> {
        (0..(1u32 << n)).map(SiteSet)
    }

    /// Flexible Paxos safety condition, checked exhaustively: every phase-1 quorum meets every
    /// phase-2 quorum.
    fn assert_intersecting(q: &Quorum) {
        let n = q.size();
        let p1: Vec<_> = all_sets(n).filter(|s| q.is_phase1_quorum(*s)).collect();
        let p2: Vec<_> = all_sets(n).filter(|s| q.is_phase2_quorum(*s)).collect();
        assert!(!p1.is_empty() && !p2.is_empty());
        for a in &p1 {
            for b in &p2 {
                assert!(a.0 & b.0 != 0, "{a:?} and {b:?} do not intersect");
            }
        }
    }

    #[test]
    fn majority_quorums_intersect() {
        for n in 1..=9 {
            assert_intersecting(&Quorum::Majority(n));
        }
    }

    #[test]
    fn three_by_three_quorums_intersect_and_have_four_members_minimum() {
        let q = Quorum::three_by_three();
        assert_intersecting(&q);
        let min = all_sets(9)
            .filter(|s| q.is_phase2_quorum(*s))
            .map(|s| s.len())
            .min();
        assert_eq!(min, Some(4));
        // Two full groups without the third is a quorum; one full group is not.
        assert!(q.is_phase2_quorum(SiteSet(0b000_111_111)));
        assert!(!q.is_phase2_quorum(SiteSet(0b000_000_111)));
        // Five sites, but only one group with a majority: not a quorum.
        assert!(!q.is_phase2_quorum(SiteSet(0b001_001_111)));
    }

    #[test]
    fn majority_of_five_needs_three() {
        let q = Quorum::Majority(5);
        assert!(!q.is_phase2_quorum(SiteSet(0b00011)));
        assert!(q.is_phase2_quorum(SiteSet(0b10101)));
    }

    proptest! {
        /// Any partition of up to 9 sites into odd-sized groups gives intersecting quorums.
        #[test]
        fn random_hierarchies_intersect(sizes in proptest::collection::vec(1usize..=3, 1..=4)) {
            let mut next = 0u8;
            let groups: Vec<Vec<SiteId>> = sizes.iter().map(|&k| {
                let g = (0..k).map(|i| SiteId(next + i as u8)).collect();
                next += k as u8;
                g
            }).collect();
            let q = Quorum::Hierarchical(groups);
            let n = q.size();
            // Sampled pairs over all subsets (exhaustive for n <= 9 is 2^18 pairs; keep it cheap).
            for a in all_sets(n).filter(|s| q.is_phase1_quorum(*s)) {
                for b in all_sets(n).filter(|s| q.is_phase2_quorum(*s)).step_by(7) {
                    prop_assert!(a.0 & b.0 != 0);
                }
            }
        }
    }
}
