//! Reads at a revision (`Op::ScanAt`, etcd's Range with `revision`): any replica that has
//! applied revision R may answer, from its state and its watch history, so every answer must
//! be what the key was at R — whichever replica answered, before or after it restarted,
//! compacted or installed a snapshot. The reference applies every chosen slot once, in order,
//! as it is first applied anywhere, and keeps each key's values by revision.
use super::Findings;
use meridian_core::{Batch, Slot};
use meridian_replica::kv::{KeyValue, KvCommand, KvStore};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct AtRevision {
    reference: KvStore,
    /// The last slot the reference applied (`None`: none yet).
    last: Option<u64>,
    /// The reference missed a slot (never expected): nothing is judged from then on.
    broken: bool,
    /// Per key: (revision, the key-value from that revision on; `None` deleted), ascending.
    timeline: BTreeMap<Vec<u8>, Vec<(u64, Option<KeyValue>)>>,
    /// Answers judged.
    pub checked: u64,
}

impl AtRevision {
    /// A slot applied by some replica: the reference applies it if it is the next one.
    pub fn applied(&mut self, slot: Slot, batch: &Batch) {
        match self.last {
            Some(l) if slot.0 <= l => return,
            Some(l) if slot.0 != l + 1 => self.broken = true,
            _ => {}
        }
        self.last = Some(slot.0);
        if self.broken {
            return;
        }
        for c in &batch.0 {
            let Ok(cmd) = KvCommand::decode(c) else {
                continue;
            };
            let before = self.reference.revision();
            self.reference.apply(&cmd);
            let now = self.reference.revision();
            if now != before {
                self.record(now);
            }
        }
    }

    /// Every key whose key-value differs from its last timeline entry gets one at `revision`.
    fn record(&mut self, revision: u64) {
        let current: BTreeMap<Vec<u8>, KeyValue> = self
            .reference
            .span_kvs(b"", b"")
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        for (k, kv) in &current {
            let t = self.timeline.entry(k.clone()).or_default();
            if t.last().and_then(|(_, v)| v.as_ref()) != Some(kv) {
                t.push((revision, Some(kv.clone())));
            }
        }
        for (k, t) in self.timeline.iter_mut() {
            if !current.contains_key(k) && t.last().is_some_and(|(_, v)| v.is_some()) {
                t.push((revision, None));
            }
        }
    }

    /// What `key` was at `revision`, if the reference has reached it.
    pub fn expected(&self, key: &[u8], revision: u64) -> Option<Option<&KeyValue>> {
        if self.broken || revision > self.reference.revision() {
            return None;
        }
        Some(
            self.timeline
                .get(key)
                .and_then(|t| t.iter().rev().find(|(r, _)| *r <= revision))
                .and_then(|(_, v)| v.as_ref()),
        )
    }

    /// A replica's answer to a read of `key` at `revision`: the key-value it found.
    pub fn answered(
        &mut self,
        site: usize,
        key: &[u8],
        revision: u64,
        got: Option<&KeyValue>,
        f: &mut Findings,
    ) {
        if self.broken {
            return;
        }
        let Some(want) = self.expected(key, revision).map(|w| w.cloned()) else {
            f.violation(format!(
                "read at a revision: site {site} answered '{}' at revision {revision}, which no replica has applied",
                String::from_utf8_lossy(key)
            ));
            return;
        };
        self.checked += 1;
        let show = |kv: Option<&KeyValue>| {
            kv.map(|kv| {
                format!(
                    "'{}' (mod revision {})",
                    String::from_utf8_lossy(&kv.value),
                    kv.mod_revision
                )
            })
            .unwrap_or_else(|| "absent".into())
        };
        let same = match (&want, got) {
            (None, None) => true,
            (Some(w), Some(g)) => {
                (&w.value, w.mod_revision, w.create_revision, w.version)
                    == (&g.value, g.mod_revision, g.create_revision, g.version)
            }
            _ => false,
        };
        if !same {
            f.violation(format!(
                "read at a revision: site {site} answered '{}' at revision {revision} with {}, but it was {} then",
                String::from_utf8_lossy(key),
                show(got),
                show(want.as_ref())
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use meridian_replica::kv::Op;

    fn slot_of(cmds: &[(u64, Op)]) -> Batch {
        Batch(
            cmds.iter()
                .map(|(seq, op)| {
                    Bytes::from(
                        KvCommand {
                            client: 1,
                            seq: *seq,
                            op: op.clone(),
                        }
                        .encode(),
                    )
                })
                .collect(),
        )
    }
    fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn answers_are_judged_against_the_key_as_it_was() {
        let (mut a, mut f) = (AtRevision::default(), Findings::default());
        a.applied(Slot(1), &slot_of(&[(1, put("k", "1")), (2, put("j", "x"))]));
        a.applied(Slot(1), &slot_of(&[(1, put("k", "1"))]));
        a.applied(Slot(2), &slot_of(&[(3, put("k", "2"))]));
        a.applied(
            Slot(3),
            &slot_of(&[(4, Op::Delete { key: "k".into() }), (5, put("j", "y"))]),
        );
        let at = |a: &AtRevision, r| a.expected(b"k", r).unwrap().map(|kv| kv.value.clone());
        assert_eq!(at(&a, 1), Some(b"1".to_vec()));
        assert_eq!(at(&a, 2), Some(b"1".to_vec()), "j's put");
        assert_eq!(at(&a, 3), Some(b"2".to_vec()));
        assert_eq!(at(&a, 4), None, "deleted");
        assert!(a.expected(b"k", 6).is_none(), "not reached");
        let kv3 = a.expected(b"k", 3).unwrap().cloned();
        a.answered(0, b"k", 3, kv3.as_ref(), &mut f);
        a.answered(0, b"k", 4, None, &mut f);
        assert_eq!((f.other, a.checked), (0, 2));
        // The present instead of the past, an absent key, a revision nobody reached.
        let kv1 = a.expected(b"k", 1).unwrap().cloned();
        a.answered(1, b"k", 3, kv1.as_ref(), &mut f);
        a.answered(1, b"k", 2, None, &mut f);
        a.answered(1, b"k", 9, None, &mut f);
        assert_eq!(f.other, 3, "{:?}", f.examples);
    }

    #[test]
    fn a_missed_slot_stops_the_judging_instead_of_misjudging() {
        let (mut a, mut f) = (AtRevision::default(), Findings::default());
        a.applied(Slot(1), &slot_of(&[(1, put("k", "1"))]));
        a.applied(Slot(3), &slot_of(&[(2, put("k", "2"))]));
        a.answered(0, b"k", 1, None, &mut f);
        assert_eq!((f.other, a.checked), (0, 0));
    }
}
