//! List-append (as in Jepsen's Elle workloads): transactions append unique elements to per-key
//! lists and reads return the list, so lost updates and double applies show directly:
//! - no element appears twice in a list (a retried append applied twice);
//! - every append acknowledged before a read began is in that read (no lost update, no stale
//!   linearizable read);
//! - every two lists read of one key are prefix-ordered, and a read that began after another
//!   ended sees at least its list (one order, respecting real time);
//! - no element appears that was never appended.
use super::Findings;
use crate::history::{HistoryOp, OpKind, Outcome};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
pub struct ListAppend {
    /// key -> (element, invoked, acknowledged-ok-at (None: unknown/failed)).
    appends: BTreeMap<String, Vec<(String, u64, Option<u64>)>>,
    /// key -> (invoked, completed, list).
    reads: BTreeMap<String, Vec<(u64, u64, Vec<String>)>>,
}

pub fn parse(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

impl ListAppend {
    pub fn append(&mut self, key: &str, elem: &str, invoke: u64, acked: Option<u64>) {
        self.appends
            .entry(key.to_string())
            .or_default()
            .push((elem.to_string(), invoke, acked));
    }

    pub fn read(&mut self, key: &str, invoke: u64, complete: u64, value: Option<&str>) {
        self.reads
            .entry(key.to_string())
            .or_default()
            .push((invoke, complete, parse(value)));
    }

    /// Returns the number of anomalies.
    pub fn check(&self, f: &mut Findings) -> u64 {
        let mut bad = 0;
        let mut report = |f: &mut Findings, m: String| {
            bad += 1;
            f.violation(format!("list-append: {m}"));
        };
        for (key, reads) in &self.reads {
            let appends = self.appends.get(key).map(Vec::as_slice).unwrap_or(&[]);
            let known: BTreeSet<&str> = appends.iter().map(|(e, _, _)| e.as_str()).collect();
            for (inv, _, list) in reads {
                let mut seen = BTreeSet::new();
                for e in list {
                    if !seen.insert(e) {
                        report(
                            f,
                            format!("{key}: element {e} appears twice (double apply)"),
                        );
                    }
                    if !known.contains(e.as_str()) {
                        report(f, format!("{key}: element {e} was never appended"));
                    }
                }
                for (e, _, acked) in appends {
                    if acked.is_some_and(|a| a < *inv) && !seen.contains(e) {
                        report(
                            f,
                            format!("{key}: append {e} acknowledged before a read at t={}ms is missing (lost update or stale read)", inv / 1_000_000),
                        );
                    }
                }
            }
            for (i, a) in reads.iter().enumerate() {
                for b in &reads[i + 1..] {
                    let (short, long) = if a.2.len() <= b.2.len() {
                        (a, b)
                    } else {
                        (b, a)
                    };
                    if long.2[..short.2.len()] != short.2[..] {
                        report(
                            f,
                            format!("{key}: lists {:?} and {:?} diverge", short.2, long.2),
                        );
                    } else if long.1 < short.0 && long.2.len() > short.2.len() {
                        report(
                            f,
                            format!("{key}: a later read saw fewer elements than an earlier one"),
                        );
                    }
                }
            }
        }
        bad
    }
}

/// Judges the recorded operations of one list key (appends and the reads of it; failed
/// appends dropped beforehand, or here): the anomalies found, none when it is consistent.
/// An append's `value` is `,element` (or `element`).
pub fn check_ops(ops: &[&HistoryOp]) -> Vec<String> {
    let mut l = ListAppend::default();
    for o in ops {
        match o.op {
            OpKind::Append if o.outcome != Outcome::Fail => {
                let elem = o.value.as_deref().unwrap_or("").trim_start_matches(',');
                let acked = (o.outcome == Outcome::Ok).then_some(o.complete_ns);
                l.append(&o.key, elem, o.invoke_ns, acked);
            }
            OpKind::Get if o.outcome == Outcome::Ok => {
                l.read(&o.key, o.invoke_ns, o.complete_ns, o.read.as_deref())
            }
            _ => {}
        }
    }
    let mut f = Findings::default();
    l.check(&mut f);
    f.examples
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, value: Option<&str>, read: Option<&str>, t: (u64, u64)) -> HistoryOp {
        HistoryOp {
            process: 1,
            op: kind,
            key: "l".into(),
            value: value.map(str::to_string),
            expect: None,
            invoke_ns: t.0,
            complete_ns: t.1,
            outcome: Outcome::Ok,
            read: read.map(str::to_string),
            path: None,
        }
    }

    #[test]
    fn recorded_histories_show_lost_and_phantom_appends() {
        let a = op(OpKind::Append, Some(",a"), None, (0, 10));
        let b = op(OpKind::Append, Some(",b"), None, (20, 30));
        let good = op(OpKind::Get, None, Some(",a,b"), (40, 50));
        assert!(check_ops(&[&a, &b, &good]).is_empty());
        // b was acknowledged before this read began, yet it is missing: a lost append.
        let lost = op(OpKind::Get, None, Some(",a"), (40, 50));
        let e = check_ops(&[&a, &b, &lost]);
        assert!(e.iter().any(|m| m.contains("missing")), "{e:?}");
        // c was never appended (or its append definitely failed).
        let mut c = op(OpKind::Append, Some(",c"), None, (20, 30));
        c.outcome = Outcome::Fail;
        let phantom = op(OpKind::Get, None, Some(",a,c"), (40, 50));
        let e = check_ops(&[&a, &c, &phantom]);
        assert!(e.iter().any(|m| m.contains("never appended")), "{e:?}");
        // An append that never answered may or may not be there.
        let mut u = op(OpKind::Append, Some(",u"), None, (20, 30));
        u.outcome = Outcome::Unknown;
        let without = op(OpKind::Get, None, Some(",a"), (40, 50));
        let with = op(OpKind::Get, None, Some(",a,u"), (60, 70));
        assert!(check_ops(&[&a, &u, &without, &with]).is_empty());
        // Through the register checker's entry point too (what `meridian check` runs).
        let v = crate::linearizability::check(&[a.clone(), b.clone(), lost]);
        assert_eq!(v.len(), 1);
        assert!(!v[0].linearizable);
        assert!(crate::linearizability::is_linearizable(&[a, b, good]));
    }

    #[test]
    fn double_applies_and_lost_updates_are_reported() {
        let mut l = ListAppend::default();
        l.append("l", "a", 0, Some(10));
        l.append("l", "b", 20, Some(30));
        l.read("l", 40, 50, Some(",a,b"));
        let mut f = Findings::default();
        assert_eq!(l.check(&mut f), 0);
        l.read("l", 60, 70, Some(",a,b,b"));
        l.read("l", 80, 90, Some(",a"));
        assert!(l.check(&mut f) >= 2);
    }
}
