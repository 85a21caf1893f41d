//! List-append (as in Jepsen's Elle workloads): transactions append unique elements to per-key
//! lists and reads return the list, so lost updates and double applies show directly:
//! - no element appears twice in a list (a retried append applied twice);
//! - every append acknowledged before a read began is in that read (no lost update, no stale
//!   linearizable read);
//! - every two lists read of one key are prefix-ordered, and a read that began after another
//!   ended sees at least its list (one order, respecting real time);
//! - no element appears that was never appended.
use super::Findings;
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

#[cfg(test)]
mod tests {
    use super::*;

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
