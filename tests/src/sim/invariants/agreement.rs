//! Agreement (Lamport, "Paxos Made Simple", §2.1 safety: only a single value is chosen): at most
//! one batch per slot, so every replica applies the same sequence.
use super::Findings;
use meridian_core::{Batch, Slot};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct Agreement {
    /// The first batch applied at each slot, by anyone.
    applied: BTreeMap<Slot, (u64, usize)>,
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
    pub fn applied(&mut self, site: usize, slot: Slot, batch: &Batch, f: &mut Findings) {
        let h = batch_hash(batch);
        match self.applied.get(&slot) {
            None => {
                self.applied.insert(slot, (h, site));
            }
            Some((first, by)) if *first != h => {
                if self.disagreeing.insert(slot) {
                    f.agreement(format!(
                        "agreement: slot {} applied differently by site {by} and site {site}",
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
        a.applied(0, Slot(1), &x, &mut f);
        a.applied(1, Slot(1), &x, &mut f);
        assert_eq!(f.agreement, 0);
        a.applied(2, Slot(1), &y, &mut f);
        a.applied(3, Slot(1), &y, &mut f);
        assert_eq!(f.agreement, 1);
    }
}
