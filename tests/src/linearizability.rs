//! Linearizability checking of key-value histories: Wing & Gong's search with Lowe's
//! memoisation (as in porcupine), run per key (linearizability is compositional, Herlihy & Wing
//! 1990). Each key is a register: put, get, delete, compare-and-set; a key with appends is a
//! list, judged by the list-append checker (`sim::invariants::list_append`).
//!
//! An operation with outcome `unknown` never returned: it may take effect at any point after
//! its invocation or not at all. It gets an infinite return time and accepts any result, so the
//! search may place it last, where it is invisible.
use crate::history::{HistoryOp, OpKind, Outcome};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVerdict {
    pub key: String,
    pub ops: usize,
    pub linearizable: bool,
    /// For a list key (one with appends): what the list-append checker found.
    pub anomalies: Vec<String>,
}

/// Checks every key; returns the verdict per key (in key order).
pub fn check(history: &[HistoryOp]) -> Vec<KeyVerdict> {
    let mut by_key: BTreeMap<&str, Vec<&HistoryOp>> = BTreeMap::new();
    for op in history {
        // A write that definitely failed had no effect and observed nothing: drop it.
        if op.outcome == Outcome::Fail && op.op != OpKind::Cas {
            continue;
        }
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    by_key
        .into_iter()
        .map(|(key, ops)| {
            let (linearizable, anomalies) = if ops.iter().any(|o| o.op == OpKind::Append) {
                let a = crate::sim::invariants::list_append::check_ops(&ops);
                (a.is_empty(), a)
            } else {
                (check_key(&ops), Vec::new())
            };
            KeyVerdict {
                key: key.to_string(),
                ops: ops.len(),
                linearizable,
                anomalies,
            }
        })
        .collect()
}

pub fn is_linearizable(history: &[HistoryOp]) -> bool {
    check(history).iter().all(|v| v.linearizable)
}

/// A register operation with values interned to integers (-1 = absent).
#[derive(Clone, Copy, Debug)]
struct RegOp {
    kind: Kind,
    unknown: bool,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Put(i64),
    Delete,
    Get(i64),
    Cas { expect: i64, new: i64, ok: bool },
}

impl RegOp {
    /// The register state after this op from `state`, or None if the op's observed result is
    /// impossible from `state`.
    fn step(&self, state: i64) -> Option<i64> {
        match self.kind {
            Kind::Put(v) => Some(v),
            Kind::Delete => Some(-1),
            Kind::Get(v) => (self.unknown || v == state).then_some(state),
            Kind::Cas { expect, new, ok } => {
                let holds = state == expect;
                // An unknown outcome may be either; a known one must match the compare.
                (self.unknown || ok == holds).then_some(if holds { new } else { state })
            }
        }
    }
}

struct Entry {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

fn check_key(ops: &[&HistoryOp]) -> bool {
    let mut interned: HashMap<String, i64> = HashMap::new();
    let mut intern = |v: &Option<String>| -> i64 {
        match v {
            None => -1,
            Some(s) => {
                let next = interned.len() as i64;
                *interned.entry(s.clone()).or_insert(next)
            }
        }
    };
    let reg: Vec<RegOp> = ops
        .iter()
        .map(|o| {
            let unknown = o.outcome == Outcome::Unknown;
            let kind = match o.op {
                OpKind::Put => Kind::Put(intern(&o.value)),
                OpKind::Delete => Kind::Delete,
                OpKind::Get => Kind::Get(intern(&o.read)),
                OpKind::Cas => Kind::Cas {
                    expect: intern(&o.expect),
                    new: intern(&o.value),
                    ok: o.outcome == Outcome::Ok,
                },
                OpKind::Append => unreachable!("list keys go to the list-append checker"),
            };
            RegOp { kind, unknown }
        })
        .collect();
    // Events: calls at invoke, returns at complete (unknown: never). At equal times calls come
    // first, which treats touching operations as concurrent.
    let mut events: Vec<(u64, u8, usize)> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        events.push((o.invoke_ns, 0, i));
        let ret = if o.outcome == Outcome::Unknown {
            u64::MAX
        } else {
            o.complete_ns.max(o.invoke_ns)
        };
        events.push((ret, 1, i));
    }
    events.sort();
    // Doubly linked list with a head sentinel at index 0.
    let mut list: Vec<Entry> = vec![Entry {
        op: usize::MAX,
        is_call: false,
        prev: 0,
        next: 1,
    }];
    let mut call_of = vec![0usize; ops.len()];
    let mut ret_of = vec![0usize; ops.len()];
    for (k, (_, r, i)) in events.iter().enumerate() {
        let idx = k + 1;
        list.push(Entry {
            op: *i,
            is_call: *r == 0,
            prev: idx - 1,
            next: idx + 1,
        });
        if *r == 0 {
            call_of[*i] = idx;
        } else {
            ret_of[*i] = idx;
        }
    }
    let end = list.len();
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, i64)> = HashSet::new();
    let mut stack: Vec<(usize, i64)> = Vec::new();
    let mut state: i64 = -1;
    let mut cur = list[0].next;

    let unlink = |list: &mut Vec<Entry>, e: usize| {
        let (p, n) = (list[e].prev, list[e].next);
        list[p].next = n;
        if n < end {
            list[n].prev = p;
        }
    };
    let relink = |list: &mut Vec<Entry>, e: usize| {
        let (p, n) = (list[e].prev, list[e].next);
        list[p].next = e;
        if n < end {
            list[n].prev = e;
        }
    };

    while list[0].next != end {
        if cur != end && list[cur].is_call {
            let op = list[cur].op;
            if let Some(next_state) = reg[op].step(state) {
                let mut lin = linearized.clone();
                lin[op / 64] |= 1 << (op % 64);
                if cache.insert((lin.clone(), next_state)) {
                    stack.push((op, state));
                    state = next_state;
                    linearized = lin;
                    unlink(&mut list, call_of[op]);
                    unlink(&mut list, ret_of[op]);
                    cur = list[0].next;
                    continue;
                }
            }
            cur = list[cur].next;
            continue;
        }
        // Reached a pending operation's return (everything before it must be linearized
        // first) or the end of this level: undo the last choice and try the next one.
        let Some((op, prev_state)) = stack.pop() else {
            return false;
        };
        state = prev_state;
        linearized[op / 64] &= !(1 << (op % 64));
        relink(&mut list, ret_of[op]);
        relink(&mut list, call_of[op]);
        cur = list[call_of[op]].next;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        p: u64,
        kind: OpKind,
        val: Option<&str>,
        read: Option<&str>,
        t: (u64, u64),
        outcome: Outcome,
    ) -> HistoryOp {
        HistoryOp {
            process: p,
            op: kind,
            key: "k".into(),
            value: val.map(String::from),
            expect: None,
            invoke_ns: t.0,
            complete_ns: t.1,
            outcome,
            read: read.map(String::from),
            path: None,
        }
    }
    fn put(p: u64, v: &str, t: (u64, u64)) -> HistoryOp {
        op(p, OpKind::Put, Some(v), None, t, Outcome::Ok)
    }
    fn get(p: u64, r: Option<&str>, t: (u64, u64)) -> HistoryOp {
        op(p, OpKind::Get, None, r, t, Outcome::Ok)
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            put(1, "a", (0, 1)),
            get(2, Some("a"), (2, 3)),
            put(1, "b", (4, 5)),
            get(2, Some("b"), (6, 7)),
        ];
        assert!(is_linearizable(&h));
    }

    #[test]
    fn stale_read_after_completed_write_is_caught() {
        let h = vec![
            put(1, "a", (0, 1)),
            put(1, "b", (2, 3)),
            get(2, Some("a"), (4, 5)),
        ];
        assert!(!is_linearizable(&h));
    }

    #[test]
    fn read_of_never_written_value_is_caught() {
        assert!(!is_linearizable(&[get(1, Some("zzz"), (0, 1))]));
    }

    #[test]
    fn initial_absent_read_then_value() {
        let h = vec![
            get(1, None, (0, 1)),
            put(2, "a", (2, 3)),
            get(1, Some("a"), (4, 5)),
        ];
        assert!(is_linearizable(&h));
        let h = vec![put(2, "a", (0, 1)), get(1, None, (2, 3))];
        assert!(!is_linearizable(&h));
    }

    #[test]
    fn concurrent_ops_may_order_either_way() {
        let h = vec![
            put(1, "a", (0, 10)),
            get(2, Some("a"), (1, 2)),
            get(3, None, (1, 2)),
        ];
        assert!(
            is_linearizable(&h),
            "the read of None linearizes before the put, the read of a after"
        );
        // But two reads that both follow in real time cannot disagree with the order.
        let h = vec![
            put(1, "a", (0, 10)),
            get(2, Some("a"), (1, 2)),
            get(3, None, (3, 4)),
        ];
        assert!(!is_linearizable(&h));
    }

    #[test]
    fn unknown_write_may_or_may_not_happen() {
        let lost = op(1, OpKind::Put, Some("x"), None, (0, 1), Outcome::Unknown);
        assert!(is_linearizable(&[lost.clone(), get(2, None, (5, 6))]));
        assert!(is_linearizable(&[lost.clone(), get(2, Some("x"), (5, 6))]));
        // ... but it cannot take effect before it was invoked.
        let late = op(1, OpKind::Put, Some("x"), None, (10, 11), Outcome::Unknown);
        assert!(!is_linearizable(&[late, get(2, Some("x"), (5, 6))]));
    }

    #[test]
    fn failed_cas_is_an_observation() {
        let mut cas = op(2, OpKind::Cas, Some("b"), None, (2, 3), Outcome::Fail);
        cas.expect = Some("a".into());
        // The register holds "a" when the cas runs, so its compare cannot fail.
        assert!(!is_linearizable(&[put(1, "a", (0, 1)), cas.clone()]));
        cas.outcome = Outcome::Ok;
        assert!(is_linearizable(&[
            put(1, "a", (0, 1)),
            cas,
            get(3, Some("b"), (4, 5))
        ]));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = put(1, "a", (0, 1));
        other.key = "other".into();
        let v = check(&[
            other,
            put(1, "a", (0, 1)),
            put(1, "b", (2, 3)),
            get(2, Some("a"), (4, 5)),
        ]);
        assert_eq!(v.len(), 2);
        assert!(v.iter().any(|k| k.key == "other" && k.linearizable));
        assert!(v.iter().any(|k| k.key == "k" && !k.linearizable));
    }

    #[test]
    fn a_thousand_concurrent_ops_check_quickly() {
        // Five processes, overlapping windows, values readable only after they were written.
        let mut h = Vec::new();
        let mut last = None::<String>;
        for i in 0..1000u64 {
            let t = i * 10;
            if i % 2 == 0 {
                let v = format!("v{i}");
                h.push(put(i % 5, &v, (t, t + 15)));
                last = Some(v);
            } else {
                h.push(get(i % 5, last.as_deref(), (t, t + 15)));
            }
        }
        assert!(is_linearizable(&h));
    }
}
