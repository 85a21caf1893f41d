//! Lease churn as one site sees it: the recent moments a shard's leadership or leases changed
//! (a new leader, this site's leader lease or quorum lease lost, the holder set reconfigured),
//! kept so `meridian status` can alert when they come too often (its `lease_churn` alert).
use std::collections::VecDeque;
use std::time::Duration;

/// Events kept per shard (the newest).
pub const KEEP: usize = 32;

/// A replica records no churn in its first seconds: a fresh cluster's (or a restarted
/// replica's) first elections, on a busy machine several rounds of them, and the preferred
/// leader taking over are how a group starts, not leases lapsing in steady state; counted, they
/// fired `lease_churn` on clusters nobody had touched yet.
pub const STARTUP_GRACE: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChurnKind {
    LeaderChanged,
    LeaseLost,
    QuorumLeaseLost,
    HoldersChanged,
}

impl ChurnKind {
    /// Lapses and leader changes count toward the `lease_churn` alert; a holder set changed by
    /// the configuration (the operator, or `mode = "auto"` following the demand) is reported
    /// but is not churn.
    pub fn counts_as_churn(self) -> bool {
        !matches!(self, ChurnKind::HoldersChanged)
    }

    pub fn name(self) -> &'static str {
        match self {
            ChurnKind::LeaderChanged => "leader_changed",
            ChurnKind::LeaseLost => "lease_lost",
            ChurnKind::QuorumLeaseLost => "quorum_lease_lost",
            ChurnKind::HoldersChanged => "holders_changed",
        }
    }
}

/// What the tick observed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Observed {
    /// The leader's ballot, when one is known.
    pub leader: Option<(u64, u32)>,
    pub holds_lease: bool,
    pub holds_quorum_lease: bool,
    pub holders: Vec<u8>,
    /// This site is among `holders`.
    pub is_holder: bool,
}

#[derive(Default)]
pub struct Churn {
    last: Option<Observed>,
    events: VecDeque<(Duration, ChurnKind)>,
    /// Changes observed before this (on the replica's clock) are not recorded.
    grace: Duration,
}

impl Churn {
    /// A record that ignores what changes before `grace` (the replica's [`STARTUP_GRACE`]).
    pub fn with_grace(grace: Duration) -> Churn {
        Churn {
            grace,
            ..Churn::default()
        }
    }

    /// Compares with the previous observation and records what changed at `now`. A leader's
    /// lease that ends because it stepped down counts once, as the leader change.
    pub fn observe(&mut self, now: Duration, o: Observed) {
        if let Some(prev) = &self.last {
            let grace = now < self.grace;
            let mut push = |k| {
                if grace {
                    return;
                }
                if self.events.len() == KEEP {
                    self.events.pop_front();
                }
                self.events.push_back((now, k));
            };
            let leader_changed = o.leader.is_some() && o.leader != prev.leader;
            if leader_changed && prev.leader.is_some() {
                push(ChurnKind::LeaderChanged);
            }
            // While no leader is known (an election under way) a lease this site held is
            // judged once the next leader is: lost to a new leader it is that one change.
            let unknown = o.leader.is_none();
            if prev.holds_lease && !o.holds_lease && !leader_changed && !unknown {
                push(ChurnKind::LeaseLost);
            }
            // A holder dropped by reconfiguration gives its lease up on purpose.
            if prev.holds_quorum_lease && !o.holds_quorum_lease && o.is_holder {
                push(ChurnKind::QuorumLeaseLost);
            }
            if prev.holders != o.holders {
                push(ChurnKind::HoldersChanged);
            }
            // An unknown leader (an election under way) keeps the last known one, so the
            // change is counted once, when the next leader is known.
            let leader = o.leader.or(prev.leader);
            let holds_lease = if unknown {
                prev.holds_lease
            } else {
                o.holds_lease
            };
            self.last = Some(Observed {
                leader,
                holds_lease,
                ..o
            });
        } else {
            self.last = Some(o);
        }
    }

    /// Recent events, newest first, with their age at `now`.
    pub fn recent(&self, now: Duration) -> Vec<(Duration, ChurnKind)> {
        self.events
            .iter()
            .rev()
            .map(|(t, k)| (now.saturating_sub(*t), *k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(leader: u64, lease: bool, ql: bool, holders: &[u8]) -> Observed {
        Observed {
            leader: Some((leader, 0)),
            holds_lease: lease,
            holds_quorum_lease: ql,
            holders: holders.to_vec(),
            is_holder: true,
        }
    }

    #[test]
    fn records_each_kind_of_change_once() {
        let mut c = Churn::default();
        let s = Duration::from_secs;
        c.observe(s(0), obs(1, true, true, &[0, 1]));
        c.observe(s(1), obs(1, true, true, &[0, 1]));
        assert!(c.recent(s(1)).is_empty(), "a steady shard has no churn");
        c.observe(s(2), obs(1, false, true, &[0, 1]));
        c.observe(s(3), obs(1, false, false, &[0, 1]));
        c.observe(s(4), obs(1, false, false, &[0]));
        // An election: no leader known for a while, then a new one.
        c.observe(
            s(5),
            Observed {
                leader: None,
                ..obs(1, false, false, &[0])
            },
        );
        c.observe(s(6), obs(2, false, false, &[0]));
        let kinds: Vec<_> = c.recent(s(10)).into_iter().collect();
        assert_eq!(
            kinds,
            vec![
                (s(4), ChurnKind::LeaderChanged),
                (s(6), ChurnKind::HoldersChanged),
                (s(7), ChurnKind::QuorumLeaseLost),
                (s(8), ChurnKind::LeaseLost),
            ]
        );
    }

    #[test]
    fn a_leader_that_steps_down_counts_one_event_and_the_log_is_bounded() {
        let mut c = Churn::default();
        for i in 0..100u64 {
            c.observe(Duration::from_secs(i), obs(i / 2, i % 2 == 0, false, &[]));
        }
        let r = c.recent(Duration::from_secs(100));
        assert_eq!(r.len(), KEEP);
        // Odd ticks lose the lease (same leader), even ticks change the leader.
        assert!(r.iter().any(|(_, k)| *k == ChurnKind::LeaseLost));
        assert!(r.iter().any(|(_, k)| *k == ChurnKind::LeaderChanged));
        assert_eq!(r[0].0, Duration::from_secs(1));
    }

    /// A leader that steps down and learns its successor a tick later (no leader known in
    /// between) made one change, not a lapse and a change: startup elections and a preferred
    /// leader taking over counted twice and fired `lease_churn` on a fresh cluster.
    #[test]
    fn a_lease_lost_to_an_election_counts_once_when_the_next_leader_is_known() {
        let mut c = Churn::default();
        let s = Duration::from_secs;
        let unknown = |lease| Observed {
            leader: None,
            ..obs(1, lease, false, &[])
        };
        c.observe(s(0), obs(1, true, false, &[]));
        c.observe(s(1), unknown(false));
        c.observe(s(2), unknown(false));
        c.observe(s(3), obs(2, false, false, &[]));
        assert_eq!(c.recent(s(3)), vec![(s(0), ChurnKind::LeaderChanged)]);
        // The same leader known again, its lease gone: a lapse, counted then.
        c.observe(s(4), obs(2, true, false, &[]));
        c.observe(s(5), unknown(false));
        c.observe(s(6), obs(2, false, false, &[]));
        assert_eq!(c.recent(s(6))[0], (s(0), ChurnKind::LeaseLost));
        assert_eq!(c.recent(s(6)).len(), 2);
    }

    /// Start-up elections (several rounds of them, a lease lapsing, the preferred leader taking
    /// over) inside the grace are not churn; the same changes after it are.
    #[test]
    fn changes_during_the_start_up_grace_are_not_recorded() {
        let mut c = Churn::with_grace(STARTUP_GRACE);
        let s = Duration::from_secs;
        c.observe(s(0), obs(1, false, false, &[]));
        c.observe(s(1), obs(1, true, false, &[]));
        c.observe(s(2), obs(1, false, false, &[]));
        c.observe(s(3), obs(2, false, false, &[]));
        c.observe(s(4), obs(3, true, false, &[]));
        assert!(c.recent(s(5)).is_empty(), "{:?}", c.recent(s(5)));
        // After the grace, the state it ended in is the baseline: changes count again.
        c.observe(s(16), obs(3, true, false, &[]));
        assert!(c.recent(s(16)).is_empty());
        c.observe(s(17), obs(3, false, false, &[]));
        c.observe(s(18), obs(4, false, false, &[]));
        assert_eq!(
            c.recent(s(18)),
            vec![
                (s(0), ChurnKind::LeaderChanged),
                (s(1), ChurnKind::LeaseLost)
            ]
        );
    }

    #[test]
    fn a_holder_removed_by_the_configuration_did_not_lose_its_lease() {
        let mut c = Churn::default();
        let s = Duration::from_secs;
        c.observe(s(0), obs(1, false, true, &[0, 1]));
        c.observe(
            s(1),
            Observed {
                is_holder: false,
                ..obs(1, false, false, &[1])
            },
        );
        assert_eq!(c.recent(s(1)), vec![(s(0), ChurnKind::HoldersChanged)]);
        assert!(!ChurnKind::HoldersChanged.counts_as_churn());
        assert!(ChurnKind::QuorumLeaseLost.counts_as_churn());
    }
}
