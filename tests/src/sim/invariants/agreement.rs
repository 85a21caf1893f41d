//! Agreement (Lamport, "Paxos Made Simple", §2.1 safety: only a single value is chosen): at most
//! one batch per slot, so every replica applies the same sequence — and reaches the same state
//! after each slot. The state check also sees a divergence that no two replicas applied side
//! by side: a replica that catches up by installing another's snapshot, then applies the same
//! later slots, ends in a different state from one whose log held another value.
use super::Findings;
use meridian_core::{Batch, Slot};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct Agreement {
    /// The first batch applied at each slot, by anyone, and the state digest after it.
    applied: BTreeMap<Slot, (u64, u64, usize)>,
    disagreeing: std::collections::BTreeSet<Slot>,
}

pub fn batch_hash(b: &Batch) -> u64 {
    let mut h = crate::sim::world::Fnv::default();
    for c in &b.0 {
        h.write(&(c.len() as u64).to_le_bytes());
        h.write(c);
    }
    h.0
}

impl Agreement {
    pub fn applied(
        &mut self,
        site: usize,
        slot: Slot,
        batch: &Batch,
        digest: u64,
        f: &mut Findings,
    ) {
        let h = batch_hash(batch);
        match self.applied.get(&slot) {
            None => {
                self.applied.insert(slot, (h, digest, site));
            }
            Some((first, _, by)) if *first != h => {
                if self.disagreeing.insert(slot) {
                    f.agreement(format!(
                        "agreement: slot {} applied differently by site {by} and site {site}",
                        slot.0
                    ));
                }
            }
            Some((_, state, by)) if *state != digest => {
                if self.disagreeing.insert(slot) {
                    f.agreement(format!(
                        "agreement: the state after slot {} differs between site {by} and site {site} (same batch: an earlier slot diverged)",
                        slot.0
                    ));
                }
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn two_values_in_one_slot_are_reported_once() {
        let (mut a, mut f) = (Agreement::default(), Findings::default());
        let x = Batch(vec![Bytes::from_static(b"x")]);
        let y = Batch(vec![Bytes::from_static(b"y")]);
        a.applied(0, Slot(1), &x, 5, &mut f);
        a.applied(1, Slot(1), &x, 5, &mut f);
        assert_eq!(f.agreement, 0);
        a.applied(2, Slot(1), &y, 6, &mut f);
        a.applied(3, Slot(1), &y, 6, &mut f);
        assert_eq!(f.agreement, 1);
    }

    #[test]
    fn the_same_batch_onto_different_states_is_reported() {
        let (mut a, mut f) = (Agreement::default(), Findings::default());
        let x = Batch(vec![Bytes::from_static(b"x")]);
        a.applied(0, Slot(7), &x, 5, &mut f);
        a.applied(1, Slot(7), &x, 5, &mut f);
        assert_eq!(f.agreement, 0);
        a.applied(2, Slot(7), &x, 9, &mut f);
        assert_eq!(f.agreement, 1);
    }
}
