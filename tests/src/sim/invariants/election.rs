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
