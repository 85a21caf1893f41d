//! Election safety (Lamport, "Paxos Made Simple": a proposer uses ballots no other proposer
//! uses; Raft §5.2 "at most one leader per term"): at most one replica ever leads a given
//! ballot, and a replica leads a ballot only after a phase-1 quorum promised it (the promises
//! are observed on the wire, so a core that miscounted its quorum is caught).
use super::Findings;
use meridian_core::{Ballot, Quorum, QuorumSystem, SiteId, SiteSet};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Ballot, usize>,
    promised: BTreeMap<Ballot, SiteSet>,
}

impl ElectionSafety {
    /// `site` sent a promise for `ballot`.
    pub fn promise(&mut self, site: usize, ballot: Ballot) {
        self.promised
            .entry(ballot)
            .or_default()
            .insert(SiteId(site as u8));
    }

    pub fn observe(&mut self, site: usize, leads: Option<Ballot>, q: &Quorum, f: &mut Findings) {
        let Some(b) = leads else { return };
        if self.leaders.contains_key(&b) {
            let first = self.leaders[&b];
            if first != site {
                f.violation(format!(
                    "election: ballot {b:?} led by sites {first} and {site}"
                ));
            }
            return;
        }
        self.leaders.insert(b, site);
        // Its own promise travels on the loopback, never on the wire.
        let mut set = self.promised.get(&b).copied().unwrap_or_default();
        set.insert(SiteId(site as u8));
        if !q.is_phase1_quorum(set) {
            f.violation(format!(
                "election: site {site} leads ballot {b:?} without a phase-1 quorum of promises"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(round: u64, site: u8) -> Ballot {
        Ballot {
            round,
            site: SiteId(site),
        }
    }

    #[test]
    fn a_leader_without_a_promise_quorum_and_two_leaders_of_a_ballot_are_caught() {
        let q = Quorum::Majority(5);
        let (mut e, mut f) = (ElectionSafety::default(), Findings::default());
        e.promise(1, b(1, 0));
        e.promise(2, b(1, 0));
        e.observe(0, Some(b(1, 0)), &q, &mut f);
        assert_eq!(f.other, 0, "self + 2 promises = 3 of 5");
        e.promise(4, b(2, 3));
        e.observe(3, Some(b(2, 3)), &q, &mut f);
        assert_eq!(f.other, 1, "self + 1 promise is no quorum");
        e.observe(2, Some(b(1, 0)), &q, &mut f);
        assert_eq!(f.other, 2, "two leaders of one ballot");
    }
}
