//! Bounded staleness (DESIGN.md §4, §9): a `bounded:B` read reflects every write acknowledged
//! to any client more than B ms (true time) before the read was invoked. The shard's revision
//! orders states: a write acknowledged with revision R is reflected by every state whose
//! revision is at least R, so the read's state revision must be at least the highest revision
//! acknowledged before `invoke - B`.
use super::Findings;

#[derive(Default)]
pub struct Staleness {
    /// (acknowledged at, revision) of every write answered to a client.
    writes: Vec<(u64, u64)>,
    /// (invoked at, bound, revision of the state read, key) of every bounded read served locally.
    reads: Vec<(u64, u64, u64, String)>,
}

impl Staleness {
    pub fn write_acked(&mut self, at_ns: u64, revision: u64) {
        self.writes.push((at_ns, revision));
    }

    pub fn bounded_read(&mut self, invoke_ns: u64, bound_ns: u64, revision: u64, key: &str) {
        self.reads
            .push((invoke_ns, bound_ns, revision, key.to_string()));
    }

    /// Counts the stale reads (each also reported once as an example).
    pub fn check(mut self, f: &mut Findings) -> u64 {
        self.writes.sort_unstable();
        // Running maximum of revisions acknowledged up to each time.
        let mut best = Vec::with_capacity(self.writes.len());
        let mut m = 0;
        for (t, r) in &self.writes {
            m = m.max(*r);
            best.push((*t, m));
        }
        let mut stale = 0;
        for (invoke, bound, rev, key) in &self.reads {
            let Some(cut) = invoke.checked_sub(*bound) else {
                continue;
            };
            let k = best.partition_point(|(t, _)| *t < cut);
            if k == 0 {
                continue;
            }
            let need = best[k - 1].1;
            if *rev < need {
                stale += 1;
                f.violation(format!(
                    "staleness: bounded:{}ms read of {key} at t={}ms saw revision {rev}, but revision {need} was acknowledged before t={}ms",
                    bound / 1_000_000,
                    invoke / 1_000_000,
                    cut / 1_000_000
                ));
            }
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_missing_a_write_older_than_its_bound_is_stale() {
        let mut s = Staleness::default();
        s.write_acked(100, 5);
        s.write_acked(900, 6);
        // Bound 500: must reflect revision 5 (acked at 100 < 1000 - 500), not 6.
        s.bounded_read(1000, 500, 5, "k");
        s.bounded_read(1000, 500, 4, "k");
        let mut f = Findings::default();
        assert_eq!(s.check(&mut f), 1);
    }
}
