//! Quorum-lease safety (DESIGN.md §2 invariant 1; Moraru et al., SoCC 2014): when a write
//! commits, every replica that believes it may answer reads as a quorum-lease holder has
//! accepted it (so it waits for its commit before answering). Checked at the first apply of
//! each slot that writes anywhere — never earlier than its commit. Slots that change no key
//! (no-ops, reads through the log, lease configuration) commit without the holders.
use super::Findings;
use meridian_core::{Batch, Core, Slot};
use meridian_replica::kv::{KvCommand, Op};
use std::collections::BTreeSet;
use std::time::Duration;

#[derive(Default)]
pub struct QuorumLeaseSafety {
    checked: BTreeSet<Slot>,
}

impl QuorumLeaseSafety {
    /// `slot` was just applied somewhere; `cores`: every live replica with its local clock.
    pub fn committed(
        &mut self,
        true_ns: u64,
        slot: Slot,
        batch: &Batch,
        cores: &[(usize, &Core, Duration)],
        f: &mut Findings,
    ) {
        if !self.checked.insert(slot) {
            return;
        }
        let writes = batch.0.iter().any(|c| {
            KvCommand::decode(c)
                .is_ok_and(|c| !c.is_read_only() && !matches!(c.op, Op::SetLeaseHolders { .. }))
        });
        if !writes {
            return;
        }
        for (i, c, now) in cores {
            if !c.holds_quorum_lease(*now) {
                continue;
            }
            let seen = c.applied_index() >= slot
                || slot <= c.snapshot_through()
                || c.accepted_ballot(slot).is_some();
            if !seen {
                f.violation(format!(
                    "qlease: site {i} holds a quorum lease at t={}ms but never accepted committed slot {}",
                    true_ns / 1_000_000,
                    slot.0
                ));
            }
        }
    }
}
