//! Durability (DESIGN.md §3; Paxos acceptors must remember promises and votes across crashes,
//! "Paxos Made Simple" §2.3): whatever a replica acknowledged — a promise or an accepted value —
//! is in the state it recovers after a crash, and its promised ballot never goes back.
use super::Findings;
use meridian_core::{Ballot, Core, Message, Slot};
use std::collections::BTreeMap;

#[derive(Default, Clone)]
pub struct Acknowledged {
    promised: Ballot,
    accepted: BTreeMap<Slot, Ballot>,
}

impl Acknowledged {
    /// The highest ballot this site has acknowledged (promised or accepted).
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// Notes what an outgoing message acknowledges.
    pub fn sent(&mut self, msg: &Message) {
        match msg {
            Message::Promise { ballot, .. } | Message::HeartbeatAck { ballot, .. } => {
                self.promised = self.promised.max(*ballot);
            }
            Message::Accepted { ballot, slot, .. } => {
                self.promised = self.promised.max(*ballot);
                let e = self.accepted.entry(*slot).or_insert(*ballot);
                *e = (*e).max(*ballot);
            }
            _ => {}
        }
    }

    /// Checks a freshly recovered core against everything acknowledged before the crash.
    pub fn check_recovered(&self, site: usize, core: &Core, f: &mut Findings) {
        if core.promised() < self.promised {
            f.violation(format!(
                "durability: site {site} acknowledged ballot {:?} but recovered promising {:?}",
                self.promised,
                core.promised()
            ));
        }
        for (slot, b) in &self.accepted {
            let kept = *slot <= core.snapshot_through()
                || core.is_chosen(*slot)
                || core.accepted_ballot(*slot).is_some_and(|have| have >= *b);
            if !kept {
                f.violation(format!(
                    "durability: site {site} acknowledged slot {} at {b:?} and lost it",
                    slot.0
                ));
                return;
            }
        }
    }
}
