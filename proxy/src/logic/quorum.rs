//! The Paxos Quorum Read combine (Charapko, Ailijiang, Demirbas, HotStorage 2019): given the
//! replies so far, wait, answer, or rinse.
use super::SiteRead;
use meridian_core::{Quorum, QuorumSystem, SiteId, SiteSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No read quorum yet.
    Wait,
    /// Answer with `replies[i]`.
    Answer(usize),
    /// A write may be pending: answer from a replica once it has applied `barrier`.
    Rinse { barrier: u64 },
}

/// The barrier is the highest accepted-but-unapplied slot touching the key among a read quorum;
/// any read quorum meets the quorum of every committed write, so it covers every write
/// committed before the read began. If the most advanced replier applied it, its value is the
/// answer. `ignore_barrier` is the planted `pqr-ignore-barrier` bug.
pub fn combine(quorum: &Quorum, replies: &[(usize, SiteRead)], ignore_barrier: bool) -> Decision {
    let mut answered = SiteSet::default();
    for (site, _) in replies {
        answered.insert(SiteId(*site as u8));
    }
    if !quorum.is_phase2_quorum(answered) {
        return Decision::Wait;
    }
    let barrier = replies.iter().map(|(_, r)| r.barrier).max().unwrap_or(0);
    let (best, r) = replies
        .iter()
        .enumerate()
        .max_by(|(a, x), (b, y)| x.1.applied.cmp(&y.1.applied).then(b.cmp(a)))
        .map(|(i, (_, r))| (i, r))
        .expect("a quorum replied");
    if r.applied >= barrier || ignore_barrier {
        Decision::Answer(best)
    } else {
        Decision::Rinse { barrier }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_replica::kv::{KvResult, Outcome};

    fn r(applied: u64, barrier: u64) -> SiteRead {
        SiteRead {
            result: KvResult {
                revision: applied,
                outcome: Outcome::Get { kv: None },
            },
            path: "quorum".into(),
            applied,
            barrier,
            staleness_ms: 0,
        }
    }

    #[test]
    fn waits_for_a_read_quorum() {
        let q = Quorum::Majority(5);
        assert_eq!(
            combine(&q, &[(0, r(5, 0)), (1, r(5, 0))], false),
            Decision::Wait
        );
        let three = [(0, r(5, 0)), (1, r(5, 0)), (4, r(5, 0))];
        assert_eq!(combine(&q, &three, false), Decision::Answer(0));
    }

    #[test]
    fn answers_from_the_most_advanced_replier_when_it_covers_the_barrier() {
        let q = Quorum::Majority(5);
        // Site 1 saw slot 9 accepted but not applied; site 2 already applied it.
        let rs = [(0, r(7, 0)), (1, r(8, 9)), (2, r(9, 0))];
        assert_eq!(combine(&q, &rs, false), Decision::Answer(2));
    }

    #[test]
    fn rinses_when_no_replier_applied_the_barrier() {
        let q = Quorum::Majority(5);
        let rs = [(0, r(7, 0)), (1, r(8, 9)), (2, r(8, 0))];
        assert_eq!(combine(&q, &rs, false), Decision::Rinse { barrier: 9 });
        // The planted bug answers anyway, possibly missing the pending write.
        assert_eq!(combine(&q, &rs, true), Decision::Answer(1));
    }

    #[test]
    fn hierarchical_needs_a_majority_of_groups() {
        let q = Quorum::three_by_three();
        let two_groups = [(0, r(1, 0)), (1, r(1, 0)), (3, r(1, 0)), (4, r(1, 0))];
        assert_eq!(combine(&q, &two_groups, false), Decision::Answer(0));
        let one_group = [(0, r(1, 0)), (1, r(1, 0)), (2, r(1, 0)), (3, r(1, 0))];
        assert_eq!(combine(&q, &one_group, false), Decision::Wait);
    }
}
