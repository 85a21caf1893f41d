//! Leader-lease bookkeeping on the leader's side (DESIGN.md §2 "Leases").
//!
//! Each acknowledgement of a message the leader sent at its local time `t_send` is a promise, by
//! that acceptor, not to answer another ballot's prepare until `t_recv + lease·(1+ε)` on the
//! acceptor's clock. The leader counts it only until `t_send + lease·(1−ε)` on its own clock,
//! which ends earlier in real time as long as clock rates differ by less than ε.
use crate::quorum::{Quorum, QuorumSystem, SiteSet};
use crate::types::SiteId;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct LeaseTracker {
    /// Per site: the latest lease expiry its acknowledgements earned (leader clock).
    expiry: Vec<Duration>,
    /// Acknowledgements of messages sent at or before this time are ignored (lease given up).
    floor: Option<Duration>,
}

impl LeaseTracker {
    pub fn new(n: usize) -> LeaseTracker {
        LeaseTracker {
            expiry: vec![Duration::ZERO; n],
            floor: None,
        }
    }

    /// Counts an acknowledgement from `site` of a message sent at `t_send`.
    pub fn record(&mut self, site: SiteId, t_send: Duration, lease: Duration, drift: f64) {
        if self.floor.is_some_and(|f| t_send <= f) {
            return;
        }
        let until = t_send + lease.mul_f64((1.0 - drift).max(0.0));
        let e = &mut self.expiry[site.0 as usize];
        *e = (*e).max(until);
    }

    /// Gives the lease up for good in this ballot (leadership transfer): no acknowledgement
    /// counts again, so acceptors may safely drop their promises.
    pub fn relinquish(&mut self) {
        self.floor = Some(Duration::MAX);
        self.expiry.iter_mut().for_each(|e| *e = Duration::ZERO);
    }

    /// The lease end: the latest `T` such that the sites whose expiry is at least `T` form a
    /// phase-2 quorum (so they intersect every phase-1 quorum a rival would need).
    pub fn expiry(&self, quorum: &Quorum) -> Duration {
        let mut candidates = self.expiry.clone();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        for t in candidates {
            let mut set = SiteSet::default();
            for (i, e) in self.expiry.iter().enumerate() {
                if *e >= t {
                    set.insert(SiteId(i as u8));
                }
            }
            if quorum.is_phase2_quorum(set) {
                return t;
            }
        }
        Duration::ZERO
    }

    /// The expiry `site`'s acknowledgements earned (ZERO: none).
    pub fn expiry_of(&self, site: SiteId) -> Duration {
        self.expiry[site.0 as usize]
    }

    pub fn valid(&self, now: Duration, quorum: &Quorum) -> bool {
        now < self.expiry(quorum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const L: Duration = Duration::from_millis(1000);
    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn lease_is_the_quorum_th_latest_expiry_counted_from_send() {
        let q = Quorum::Majority(5);
        let mut t = LeaseTracker::new(5);
        t.record(SiteId(0), ms(100), L, 0.0);
        t.record(SiteId(1), ms(300), L, 0.0);
        assert_eq!(
            t.expiry(&q),
            Duration::ZERO,
            "two acks are not a quorum of five"
        );
        t.record(SiteId(2), ms(200), L, 0.0);
        // Expiries 1100, 1300, 1200: the third latest is 1100.
        assert_eq!(t.expiry(&q), ms(1100));
        assert!(t.valid(ms(1099), &q));
        assert!(!t.valid(ms(1100), &q));
    }

    #[test]
    fn drift_bound_shortens_the_lease() {
        let q = Quorum::Majority(3);
        let mut t = LeaseTracker::new(3);
        t.record(SiteId(0), ms(0), L, 0.1);
        t.record(SiteId(1), ms(0), L, 0.1);
        assert_eq!(t.expiry(&q), ms(900));
    }

    #[test]
    fn relinquished_lease_never_comes_back() {
        let q = Quorum::Majority(3);
        let mut t = LeaseTracker::new(3);
        for s in 0..3 {
            t.record(SiteId(s), ms(10), L, 0.0);
        }
        t.relinquish();
        assert!(!t.valid(ms(20), &q));
        for s in 0..3 {
            t.record(SiteId(s), ms(30), L, 0.0);
        }
        assert!(!t.valid(ms(40), &q));
    }

    #[test]
    fn hierarchical_lease_needs_a_hierarchical_quorum() {
        let q = Quorum::three_by_three();
        let mut t = LeaseTracker::new(9);
        // Four sites, but all in one group plus one: not a quorum.
        for s in [0, 1, 2, 3] {
            t.record(SiteId(s), ms(0), L, 0.0);
        }
        assert!(!t.valid(ms(1), &q));
        t.record(SiteId(4), ms(0), L, 0.0);
        assert!(t.valid(ms(1), &q));
    }
}
