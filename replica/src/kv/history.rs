//! Recent changes of one shard, in revision order, for watches (etcd's Watch): every put and
//! delete the state machine applied since the compaction horizon. In memory and bounded; a
//! restarted replica rebuilds it from the log entries after its snapshot (they are applied
//! again), so its horizon is its snapshot's revision. A watch that asks for revisions below the
//! horizon is told `Compacted` (etcd's `compacted` error) instead of receiving a gap.
use super::command::KeyValue;
use std::collections::VecDeque;

/// One change of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The revision of the write (a transaction's changes share one).
    pub revision: u64,
    pub delete: bool,
    /// After the change; for a delete, the key with `mod_revision` = `revision`, the rest zero.
    pub kv: KeyValue,
    /// Before the change, if the key existed.
    pub prev: Option<KeyValue>,
}

impl Change {
    pub fn bytes(&self) -> usize {
        64 + self.kv.key.len()
            + self.kv.value.len()
            + self
                .prev
                .as_ref()
                .map_or(0, |p| p.key.len() + p.value.len() + 32)
    }
}

/// Changes with revisions `>= horizon`, oldest first.
#[derive(Clone, Debug)]
pub struct History {
    changes: VecDeque<Change>,
    /// Every change at or above this revision is kept (nothing below it is).
    horizon: u64,
    bytes: usize,
    max_bytes: usize,
}

/// What a watch from a revision gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// The changes in `[from, through]` within the span (at most `max` of them, whole
    /// revisions only unless one revision alone exceeds `max`), and `through`: the revision
    /// they are complete up to.
    Changes { changes: Vec<Change>, through: u64 },
    /// Revisions below `horizon` are no longer kept.
    Compacted { horizon: u64 },
}

impl History {
    /// An empty history for a store at `revision` (its next change is `revision + 1`).
    pub fn new(revision: u64, max_bytes: usize) -> History {
        History {
            changes: VecDeque::new(),
            horizon: revision + 1,
            bytes: 0,
            max_bytes,
        }
    }

    pub fn horizon(&self) -> u64 {
        self.horizon
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Forgets everything: the store was replaced (a snapshot) and now stands at `revision`.
    pub fn reset(&mut self, revision: u64) {
        self.changes.clear();
        self.bytes = 0;
        self.horizon = revision + 1;
    }

    /// Appends changes in revision order; the oldest revisions go when the bound is exceeded.
    pub fn push(&mut self, changes: impl IntoIterator<Item = Change>) {
        for c in changes {
            debug_assert!(self.changes.back().is_none_or(|b| b.revision <= c.revision));
            self.bytes += c.bytes();
            self.changes.push_back(c);
        }
        while self.bytes > self.max_bytes {
            let Some(rev) = self.changes.front().map(|c| c.revision) else {
                break;
            };
            // Whole revisions only: a horizon never splits a transaction.
            self.compact(rev + 1);
        }
    }

    /// Drops every change below `revision` (etcd's Compact).
    pub fn compact(&mut self, revision: u64) {
        while self.changes.front().is_some_and(|c| c.revision < revision) {
            let c = self.changes.pop_front().expect("front exists");
            self.bytes -= c.bytes();
        }
        self.horizon = self.horizon.max(revision);
    }

    /// The changes from revision `from` on within `[start, end)` (`end` empty: unbounded;
    /// `start` = `end` = empty: every key), when the store stands at `current`.
    pub fn since(&self, from: u64, start: &[u8], end: &[u8], max: usize, current: u64) -> Since {
        if from < self.horizon {
            return Since::Compacted {
                horizon: self.horizon,
            };
        }
        let first = self.changes.partition_point(|c| c.revision < from);
        let mut changes = Vec::new();
        let mut through = current;
        for c in self.changes.range(first..) {
            if changes.len() >= max
                && changes
                    .last()
                    .is_some_and(|l: &Change| l.revision != c.revision)
            {
                through = c.revision - 1;
                break;
            }
            if super::command::in_span(&c.kv.key, start, end) {
                changes.push(c.clone());
            }
        }
        Since::Changes { changes, through }
    }

    /// The keys of `[start, end)` as they were at `revision`, given `now`: the span's keys (in
    /// key order) at the store's current revision. Every kept change above `revision` within
    /// the span is undone, newest first. `Err(horizon)` when changes above `revision` are no
    /// longer all kept (`revision < horizon - 1`).
    pub fn at(
        &self,
        revision: u64,
        start: &[u8],
        end: &[u8],
        now: Vec<KeyValue>,
    ) -> Result<Vec<KeyValue>, u64> {
        if revision + 1 < self.horizon {
            return Err(self.horizon);
        }
        let mut keys: std::collections::BTreeMap<Vec<u8>, KeyValue> =
            now.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        let first = self.changes.partition_point(|c| c.revision <= revision);
        for c in self.changes.range(first..).rev() {
            if !super::command::in_span(&c.kv.key, start, end) {
                continue;
            }
            match &c.prev {
                Some(p) => keys.insert(p.key.clone(), p.clone()),
                None => keys.remove(&c.kv.key),
            };
        }
        Ok(keys.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: u64, key: &str) -> Change {
        Change {
            revision: rev,
            delete: false,
            kv: KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; 10],
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                lease: 0,
            },
            prev: None,
        }
    }

    fn revs(s: Since) -> (Vec<u64>, u64) {
        match s {
            Since::Changes { changes, through } => {
                (changes.iter().map(|c| c.revision).collect(), through)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serves_from_a_revision_within_a_span() {
        let mut h = History::new(0, 1 << 20);
        h.push([
            put(1, "a"),
            put(2, "b"),
            put(3, "a"),
            put(3, "c"),
            put(4, "ab"),
        ]);
        assert_eq!(revs(h.since(1, b"", b"", 100, 4)), (vec![1, 2, 3, 3, 4], 4));
        assert_eq!(revs(h.since(3, b"a", b"b", 100, 4)), (vec![3, 4], 4));
        assert_eq!(revs(h.since(5, b"", b"", 100, 4)), (vec![], 4));
        // At most `max`, but never half a revision; `through` says where it stopped.
        assert_eq!(revs(h.since(1, b"", b"", 3, 4)), (vec![1, 2, 3, 3], 3));
        assert_eq!(revs(h.since(1, b"", b"", 1, 4)), (vec![1], 1));
    }

    #[test]
    fn below_the_horizon_is_compacted_never_a_gap() {
        let mut h = History::new(0, 1 << 20);
        h.push((1..=10).map(|r| put(r, "k")));
        h.compact(6);
        assert_eq!(
            h.since(5, b"", b"", 100, 10),
            Since::Compacted { horizon: 6 }
        );
        assert_eq!(revs(h.since(6, b"", b"", 100, 10)).0, vec![6, 7, 8, 9, 10]);
        // The byte bound moves the horizon by whole revisions.
        let one = put(1, "k").bytes();
        let mut h = History::new(0, one * 3);
        h.push((1..=10).map(|r| put(r, "k")));
        assert_eq!(h.len(), 3);
        assert_eq!(h.horizon(), 8);
        assert_eq!(
            h.since(7, b"", b"", 10, 10),
            Since::Compacted { horizon: 8 }
        );
        // A snapshot restore forgets the past.
        h.reset(40);
        assert_eq!(
            h.since(40, b"", b"", 10, 40),
            Since::Compacted { horizon: 41 }
        );
        assert_eq!(revs(h.since(41, b"", b"", 10, 40)), (vec![], 40));
    }
}
