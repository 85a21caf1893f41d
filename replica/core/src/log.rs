//! The acceptor's log: accepted and chosen entries above the latest snapshot.
use crate::types::{Ballot, Batch, LogEntry, Slot};
use bytes::Bytes;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct Log {
    entries: BTreeMap<Slot, LogEntry>,
    snapshot: Option<(Slot, Bytes)>,
}

impl Log {
    /// Every slot at or below this is chosen and folded into the snapshot.
    pub fn snapshot_through(&self) -> Slot {
        self.snapshot.as_ref().map_or(Slot::ZERO, |s| s.0)
    }
    pub fn snapshot(&self) -> Option<&(Slot, Bytes)> {
        self.snapshot.as_ref()
    }
    pub fn get(&self, slot: Slot) -> Option<&LogEntry> {
        self.entries.get(&slot)
    }
    pub fn last_slot(&self) -> Slot {
        self.entries
            .keys()
            .next_back()
            .copied()
            .unwrap_or(Slot::ZERO)
            .max(self.snapshot_through())
    }
    /// The lowest slot whose entry is still held (entries below were compacted).
    pub fn first_held(&self) -> Slot {
        self.entries
            .keys()
            .next()
            .copied()
            .unwrap_or(self.snapshot_through().next())
    }
    /// Records an accepted proposal. A chosen value is never replaced; returns whether the entry
    /// changed.
    pub fn accept(&mut self, slot: Slot, ballot: Ballot, batch: Batch) -> bool {
        if slot <= self.snapshot_through() {
            return false;
        }
        match self.entries.get_mut(&slot) {
            // A chosen value stays, but the acceptor still records that it accepted it at the
            // higher ballot: what it acknowledged must survive a crash.
            Some(e) if e.chosen => {
                let raised = ballot > e.ballot;
                e.ballot = e.ballot.max(ballot);
                raised
            }
            Some(e) if e.ballot == ballot => false,
            Some(e) => {
                e.ballot = ballot;
                e.batch = batch;
                true
            }
            None => {
                self.entries.insert(
                    slot,
                    LogEntry {
                        ballot,
                        batch,
                        chosen: false,
                    },
                );
                true
            }
        }
    }
    /// Marks `slot` chosen if this acceptor holds the value accepted in `ballot`.
    pub fn mark_chosen_if(&mut self, slot: Slot, ballot: Ballot) -> bool {
        match self.entries.get_mut(&slot) {
            Some(e) if !e.chosen && e.ballot == ballot => {
                e.chosen = true;
                true
            }
            _ => false,
        }
    }
    /// Stores a value learned to be chosen. Returns false if it was already known.
    pub fn insert_chosen(&mut self, slot: Slot, batch: Batch) -> bool {
        if slot <= self.snapshot_through() {
            return false;
        }
        match self.entries.get_mut(&slot) {
            Some(e) if e.chosen => false,
            Some(e) => {
                e.batch = batch;
                e.chosen = true;
                true
            }
            None => {
                self.entries.insert(
                    slot,
                    LogEntry {
                        ballot: Ballot::ZERO,
                        batch,
                        chosen: true,
                    },
                );
                true
            }
        }
    }
    pub fn is_chosen(&self, slot: Slot) -> bool {
        slot <= self.snapshot_through() || self.entries.get(&slot).is_some_and(|e| e.chosen)
    }
    /// Entries strictly above `slot`, in order.
    pub fn entries_above(&self, slot: Slot) -> impl Iterator<Item = (Slot, &LogEntry)> + '_ {
        self.entries.range(slot.next()..).map(|(s, e)| (*s, e))
    }

    /// Entries from `from` on, for a promise.
    pub fn entries_from(&self, from: Slot) -> Vec<(Slot, LogEntry)> {
        self.entries
            .range(from..)
            .map(|(s, e)| (*s, e.clone()))
            .collect()
    }
    /// Up to `max` consecutive chosen entries starting at `from`.
    pub fn chosen_from(&self, from: Slot, max: usize) -> Vec<(Slot, Batch)> {
        let mut out = Vec::new();
        let mut want = from;
        for (s, e) in self.entries.range(from..) {
            if *s != want || !e.chosen || out.len() >= max {
                break;
            }
            out.push((*s, e.batch.clone()));
            want = want.next();
        }
        out
    }
    /// Keeps a local snapshot taken through `through` and drops entries older than `retain`
    /// slots behind it (they are all chosen and applied).
    pub fn compact(&mut self, through: Slot, data: Bytes, retain: u64) {
        if through <= self.snapshot_through() {
            return;
        }
        self.snapshot = Some((through, data));
        let keep_from = Slot(through.0.saturating_sub(retain) + 1);
        self.entries = self.entries.split_off(&keep_from);
    }
    /// Installs a snapshot received from a peer: every entry at or below `through` goes.
    pub fn install(&mut self, through: Slot, data: Bytes) {
        if through <= self.snapshot_through() {
            return;
        }
        self.snapshot = Some((through, data));
        self.entries = self.entries.split_off(&through.next());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SiteId;

    fn b(round: u64) -> Ballot {
        Ballot {
            round,
            site: SiteId(0),
        }
    }
    fn v(x: u8) -> Batch {
        Batch(vec![Bytes::from(vec![x])])
    }

    #[test]
    fn chosen_value_is_never_replaced() {
        let mut log = Log::default();
        assert!(log.accept(Slot(1), b(1), v(1)));
        assert!(log.mark_chosen_if(Slot(1), b(1)));
        assert!(
            log.accept(Slot(1), b(2), v(2)),
            "the higher ballot is recorded"
        );
        assert_eq!(log.get(Slot(1)).unwrap().batch, v(1));
        assert_eq!(log.get(Slot(1)).unwrap().ballot, b(2));
    }

    #[test]
    fn mark_chosen_needs_the_same_ballot() {
        let mut log = Log::default();
        log.accept(Slot(1), b(1), v(1));
        assert!(!log.mark_chosen_if(Slot(1), b(2)));
        assert!(!log.is_chosen(Slot(1)));
    }

    #[test]
    fn chosen_from_stops_at_first_gap() {
        let mut log = Log::default();
        log.insert_chosen(Slot(1), v(1));
        log.insert_chosen(Slot(2), v(2));
        log.insert_chosen(Slot(4), v(4));
        assert_eq!(log.chosen_from(Slot(1), 10).len(), 2);
        assert_eq!(log.chosen_from(Slot(1), 1).len(), 1);
    }

    #[test]
    fn compaction_keeps_retained_tail_and_install_drops_all_below() {
        let mut log = Log::default();
        for s in 1..=10 {
            log.insert_chosen(Slot(s), v(s as u8));
        }
        log.compact(Slot(8), Bytes::from_static(b"s"), 3);
        assert_eq!(log.first_held(), Slot(6));
        assert!(log.is_chosen(Slot(2)));
        log.install(Slot(9), Bytes::from_static(b"t"));
        assert_eq!(log.first_held(), Slot(10));
        assert_eq!(log.snapshot_through(), Slot(9));
    }
}
