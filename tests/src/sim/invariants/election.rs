//! Election safety (Lamport, "Paxos Made Simple": a proposer uses ballots no other proposer
//! uses; Raft §5.2 "at most one leader per term"): at most one replica ever leads a given ballot.
use super::Findings;
use meridian_core::Ballot;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Ballot, usize>,
}

impl ElectionSafety {
    pub fn observe(&mut self, site: usize, leads: Option<Ballot>, f: &mut Findings) {
        let Some(b) = leads else { return };
        let first = *self.leaders.entry(b).or_insert(site);
        if first != site {
            f.violation(format!(
                "election: ballot {b:?} led by sites {first} and {site}"
            ));
        }
    }
}
