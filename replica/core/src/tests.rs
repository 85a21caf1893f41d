//! Handler-level tests of the core over the instant in-memory group.
use crate::harness::LocalGroup;
use crate::{CoreConfig, Input, Message, Output, Quorum, Record, SiteId, Slot};
use bytes::Bytes;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(10);

fn cmd(x: u32) -> Bytes {
    Bytes::from(x.to_le_bytes().to_vec())
}

fn elected(n: usize) -> (LocalGroup, SiteId) {
    let mut g = LocalGroup::majority(n);
    g.advance(Duration::from_secs(4), TICK);
    let l = g.leader().expect("a leader within the election bound");
    (g, l)
}

#[test]
fn one_leader_is_elected_and_everyone_follows_it() {
    let (g, l) = elected(5);
    let leaders = g.cores.iter().filter(|c| c.is_leader()).count();
    assert_eq!(leaders, 1);
    for c in &g.cores {
        assert_eq!(c.leader_hint(), Some(l));
        assert_eq!(c.promised(), g.cores[l.0 as usize].leader_ballot().unwrap());
    }
}

#[test]
fn proposals_are_batched_committed_and_applied_in_order_everywhere() {
    let (mut g, l) = elected(5);
    g.propose(l, (0..10).map(cmd).collect());
    g.advance(Duration::from_millis(500), TICK);
    let reference = g.applied[l.0 as usize].clone();
    let cmds: Vec<_> = reference.iter().flat_map(|(_, b)| b.0.clone()).collect();
    assert_eq!(cmds, (0..10).map(cmd).collect::<Vec<_>>());
    // The ten commands went out in one slot's batch (batching), not ten slots.
    assert_eq!(reference.iter().filter(|(_, b)| !b.0.is_empty()).count(), 1);
    for a in &g.applied {
        assert_eq!(a, &reference);
    }
}

#[test]
fn followers_refuse_proposals_with_a_hint() {
    let (mut g, l) = elected(3);
    let f = SiteId((l.0 + 1) % 3);
    let p = crate::Proposal {
        token: 9,
        command: cmd(1),
        writes: true,
    };
    let out = g.cores[f.0 as usize].step(g.now, Input::Propose(vec![p]));
    assert_eq!(
        out,
        vec![Output::NotLeader {
            tokens: vec![9],
            hint: Some(l)
        }]
    );
}

#[test]
fn promise_is_released_only_after_persisted() {
    let mut c = crate::Core::new(
        CoreConfig::wan(SiteId(1), Quorum::Majority(3), 1),
        Duration::ZERO,
    );
    let b = crate::Ballot {
        round: 1,
        site: SiteId(0),
    };
    let out = c.step(
        Duration::ZERO,
        Input::Message {
            from: SiteId(0),
            msg: Message::Prepare {
                ballot: b,
                from_slot: Slot(1),
            },
        },
    );
    assert_eq!(out.len(), 1, "only the write, no promise yet: {out:?}");
    let Output::Persist { records, token } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(records, &vec![Record::Promise(b)]);
    let out = c.step(Duration::ZERO, Input::Persisted { token: *token });
    assert!(
        matches!(
            &out[..],
            [Output::Send {
                to: SiteId(0),
                msg: Message::Promise { .. }
            }]
        ),
        "{out:?}"
    );
}

#[test]
fn accepted_is_released_only_after_persisted() {
    let mut c = crate::Core::new(
        CoreConfig::wan(SiteId(1), Quorum::Majority(3), 1),
        Duration::ZERO,
    );
    let b = crate::Ballot {
        round: 1,
        site: SiteId(0),
    };
    let accept = Message::Accept {
        ballot: b,
        slot: Slot(1),
        batch: crate::Batch(vec![cmd(9)]),
        commit: Slot(0),
        t_send: Duration::ZERO,
    };
    let out = c.step(
        Duration::ZERO,
        Input::Message {
            from: SiteId(0),
            msg: accept,
        },
    );
    assert!(
        out.iter().all(|o| matches!(o, Output::Persist { .. })),
        "{out:?}"
    );
    let token = out
        .iter()
        .find_map(|o| {
            if let Output::Persist { token, .. } = o {
                Some(*token)
            } else {
                None
            }
        })
        .unwrap();
    let out = c.step(Duration::ZERO, Input::Persisted { token });
    assert!(
        matches!(
            &out[..],
            [Output::Send {
                msg: Message::Accepted { .. },
                ..
            }]
        ),
        "{out:?}"
    );
}

#[test]
fn acceptor_rejects_lower_ballot_with_nack() {
    let mut c = crate::Core::new(
        CoreConfig::wan(SiteId(1), Quorum::Majority(3), 1),
        Duration::ZERO,
    );
    let hi = crate::Ballot {
        round: 5,
        site: SiteId(2),
    };
    let lo = crate::Ballot {
        round: 4,
        site: SiteId(0),
    };
    c.step(
        Duration::ZERO,
        Input::Message {
            from: SiteId(2),
            msg: Message::Prepare {
                ballot: hi,
                from_slot: Slot(1),
            },
        },
    );
    let accept = Message::Accept {
        ballot: lo,
        slot: Slot(1),
        batch: crate::Batch::noop(),
        commit: Slot(0),
        t_send: Duration::ZERO,
    };
    let out = c.step(
        Duration::ZERO,
        Input::Message {
            from: SiteId(0),
            msg: accept,
        },
    );
    assert_eq!(
        out,
        vec![Output::Send {
            to: SiteId(0),
            msg: Message::Nack { promised: hi }
        }]
    );
}

#[test]
fn leader_crash_elects_another_and_restarted_replica_catches_up() {
    let (mut g, l) = elected(5);
    g.propose(l, vec![cmd(1)]);
    g.advance(Duration::from_millis(200), TICK);
    g.down[l.0 as usize] = true;
    g.advance(Duration::from_secs(6), TICK);
    let l2 = g.leader().expect("new leader");
    assert_ne!(l2, l);
    g.propose(l2, vec![cmd(2)]);
    g.advance(Duration::from_millis(300), TICK);
    g.restart(l, CoreConfig::wan(l, Quorum::Majority(5), 7));
    g.advance(Duration::from_secs(3), TICK);
    let cmds =
        |a: &Vec<(Slot, crate::Batch)>| a.iter().flat_map(|(_, b)| b.0.clone()).collect::<Vec<_>>();
    assert_eq!(cmds(&g.applied[l.0 as usize]), vec![cmd(1), cmd(2)]);
}

#[test]
fn lease_reads_served_by_leader_only() {
    let (mut g, l) = elected(5);
    g.advance(Duration::from_millis(300), TICK);
    let out = g.cores[l.0 as usize].step(g.now, Input::Read { id: 1 });
    assert_eq!(out, vec![Output::ReadReady { id: 1 }]);
    let f = SiteId((l.0 + 1) % 5);
    let out = g.cores[f.0 as usize].step(g.now, Input::Read { id: 2 });
    assert!(matches!(out[0], Output::ReadRejected { id: 2, .. }));
}

#[test]
fn isolated_leader_loses_its_lease_before_a_rival_can_be_elected() {
    let (mut g, l) = elected(5);
    g.advance(Duration::from_millis(300), TICK);
    // Cut the leader off: it keeps believing it leads but the lease runs out after ~1 s.
    let li = l.0 as usize;
    let lease_end = (0..200)
        .map(|k| g.now + TICK * k)
        .find(|t| !g.cores[li].holds_lease(*t))
        .unwrap();
    assert!(lease_end <= g.now + Duration::from_millis(1000));
    for (i, d) in g.down.iter_mut().enumerate() {
        *d = i == li;
    }
    g.advance(Duration::from_secs(6), TICK);
    let l2 = g.leader().unwrap();
    assert_ne!(l2, l);
}

#[test]
fn preferred_leader_takes_leadership_back() {
    let preferred = SiteId(3);
    let cfg = move |me| CoreConfig {
        preferred_leader: Some(preferred),
        ..CoreConfig::wan(me, Quorum::Majority(5), 3)
    };
    let mut g = LocalGroup::new(5, cfg);
    g.advance(Duration::from_secs(3), TICK);
    assert_eq!(g.leader(), Some(preferred), "preferred campaigns first");
    g.down[3] = true;
    g.advance(Duration::from_secs(6), TICK);
    assert_ne!(g.leader(), Some(preferred));
    g.restart(preferred, cfg(preferred));
    g.advance(Duration::from_secs(6), TICK);
    assert_eq!(g.leader(), Some(preferred), "leadership transferred back");
}

#[test]
fn snapshot_is_installed_on_a_replica_that_missed_compacted_entries() {
    let (mut g, l) = elected(3);
    let f = SiteId((l.0 + 1) % 3);
    g.down[f.0 as usize] = true;
    for i in 0..200 {
        g.propose(l, vec![cmd(i)]);
        g.advance(TICK, TICK);
    }
    let applied = g.cores[l.0 as usize].applied_index();
    g.input(
        l,
        Input::Snapshot {
            through: applied,
            data: Bytes::from_static(b"state"),
        },
    );
    g.down[f.0 as usize] = false;
    g.advance(Duration::from_secs(2), TICK);
    assert_eq!(g.cores[f.0 as usize].snapshot_through(), applied);
    assert!(g.cores[f.0 as usize].commit_index() >= applied);
}

/// Issue "One system under test", defect 3: a deposed leader's pipelined proposals that no
/// promiser reported stay accepted above the new leader's log at the old leader. The new leader
/// learns of them from heartbeat acknowledgements and closes them with no-ops, so nothing stays
/// accepted-but-unapplied (a quorum read's barrier) while the shard is idle.
#[test]
fn orphaned_accepted_slots_are_closed_by_the_new_leader() {
    let (mut g, l) = elected(5);
    let li = l.0 as usize;
    for j in 0..5 {
        g.down[j] = j != li;
    }
    for k in 0..5 {
        g.propose(l, vec![cmd(100 + k)]);
    }
    let orphans: Vec<Slot> = g.cores[li].unapplied().map(|(s, _)| s).collect();
    assert_eq!(orphans.len(), 5, "accepted only by the leader itself");
    let top = *orphans.last().unwrap();
    for j in 0..5 {
        g.down[j] = j == li;
    }
    g.advance(Duration::from_secs(6), TICK);
    let l2 = g.leader().expect("a new leader");
    assert_ne!(l2, l);
    g.down[li] = false;
    g.advance(Duration::from_secs(2), TICK);
    assert!(
        g.cores[li].applied_index() >= top,
        "old leader applied {:?}, orphans up to {top:?}",
        g.cores[li].applied_index()
    );
    assert_eq!(g.cores[li].unapplied().count(), 0);
    // None of the orphaned commands was chosen: the new leader never saw them.
    let chosen: Vec<_> = g.applied[l2.0 as usize]
        .iter()
        .flat_map(|(_, b)| b.0.clone())
        .collect();
    assert!((100..105).all(|k| !chosen.contains(&cmd(k))));
}

/// Tokens come back with the commands they were proposed with, at the leader only.
#[test]
fn apply_hands_tokens_back_to_the_proposer() {
    let (mut g, l) = elected(3);
    let tokens = g.propose(l, vec![cmd(1), cmd(2)]);
    g.advance(Duration::from_millis(300), TICK);
    assert_eq!(g.tokens[l.0 as usize], tokens);
    for (i, t) in g.tokens.iter().enumerate() {
        if i != l.0 as usize {
            assert!(t.is_empty(), "a follower got tokens");
        }
    }
}

/// A leadership transfer whose `TimeoutNow` is lost: the leader leads on at a higher ballot
/// as soon as the transfer times out, instead of stepping down into a leaderless backoff.
#[test]
fn a_failed_transfer_re_prepares_instead_of_stepping_down() {
    let preferred = SiteId(2);
    let mut g = LocalGroup::new(5, |me| {
        let mut c = CoreConfig::wan(me, Quorum::Majority(5), 7);
        c.preferred_leader = Some(preferred);
        c
    });
    g.down[2] = true;
    g.advance(Duration::from_secs(5), TICK);
    let l = g
        .leader()
        .expect("a leader while the preferred site is down");
    let b0 = g.cores[l.0 as usize].leader_ballot().unwrap();
    g.drop = Some(|m| matches!(m, Message::TimeoutNow { .. }));
    g.down[2] = false;
    // Time for the preferred site to catch up and the transfer to start and time out (1.5 s).
    let mut leaderless = Duration::ZERO;
    for _ in 0..300 {
        g.advance(TICK, TICK);
        if g.leader().is_none() {
            leaderless += TICK;
        }
    }
    assert_eq!(g.leader(), Some(l), "the old leader leads on");
    assert!(
        g.cores[l.0 as usize].leader_ballot().unwrap() > b0,
        "at a higher ballot"
    );
    assert!(
        leaderless <= Duration::from_millis(50),
        "leaderless for {leaderless:?}"
    );
}

fn qlease_group(n: usize, holders: &[u8]) -> LocalGroup {
    let mut g = LocalGroup::new(n, |me| {
        let mut c = CoreConfig::wan(me, Quorum::Majority(n), 7);
        c.quorum_lease = Some(Duration::from_secs(1));
        c.preferred_leader = Some(SiteId(0));
        c
    });
    let mut set = crate::SiteSet::default();
    for h in holders {
        set.insert(SiteId(*h));
    }
    for i in 0..n {
        g.input(SiteId(i as u8), Input::LeaseHolders(set));
    }
    g.advance(Duration::from_secs(4), TICK);
    g
}

/// Quorum leases (DESIGN.md §2): holders hold leases granted by a quorum of grantors; a write
/// commits only once every holder accepted it, or once its promises expired at the grantors.
#[test]
fn writes_wait_for_every_holder_until_its_promises_expire() {
    let mut g = qlease_group(5, &[3, 4]);
    let now = g.now;
    assert!(g.cores[3].holds_quorum_lease(now) && g.cores[4].holds_quorum_lease(now));
    assert!(!g.cores[2].holds_quorum_lease(now), "not a holder");
    // With both holders up, a write commits at once.
    g.propose(SiteId(0), vec![cmd(1)]);
    g.advance(Duration::from_millis(50), TICK);
    let applied = |g: &LocalGroup| g.applied[0].iter().flat_map(|(_, b)| b.0.clone()).count();
    assert_eq!(applied(&g), 1);
    // Holder 4 goes silent: the next write waits for it ...
    g.down[4] = true;
    g.propose(SiteId(0), vec![cmd(2)]);
    g.advance(Duration::from_millis(500), TICK);
    assert_eq!(
        applied(&g),
        1,
        "committed without a holder that still held promises"
    );
    // ... until its promises expired at the grantors (1 s x (1 + ε)) and a retransmission
    // refreshed the acceptors' grant sets.
    g.advance(Duration::from_millis(2000), TICK);
    assert_eq!(applied(&g), 2);
}

/// Grants come from a quorum of grantors, not from the leader: losing the leader causes no gap
/// in a holder's lease.
#[test]
fn a_holder_keeps_its_lease_through_a_leader_failure() {
    let mut g = qlease_group(5, &[3]);
    assert_eq!(g.leader(), Some(SiteId(0)));
    g.down[0] = true;
    for _ in 0..400 {
        g.advance(TICK, TICK);
        assert!(g.cores[3].holds_quorum_lease(g.now), "gap at {:?}", g.now);
    }
    assert!(
        g.leader().is_some_and(|l| l != SiteId(0)),
        "a new leader took over"
    );
}

/// A grantor that restarts forgot whom it promised: it reports every site for a full promise
/// period, so writes wait for every site in that window.
#[test]
fn a_restarted_grantor_reports_every_site_for_a_lease_period() {
    let mut g = qlease_group(3, &[2]);
    let cfg = {
        let mut c = CoreConfig::wan(SiteId(1), Quorum::Majority(3), 7);
        c.quorum_lease = Some(Duration::from_secs(1));
        c
    };
    g.restart(SiteId(1), cfg);
    let all = g.cores[1].grant_set();
    assert_eq!(all.len(), 3, "{all:?}");
    g.advance(Duration::from_millis(1100), TICK);
    assert!(
        !g.cores[1].grant_set().contains(SiteId(0)),
        "expired for non-holders"
    );
}

/// Accept slots sent by the leader's outputs, with the commands each carries.
fn accepts_sent(out: &[Output]) -> Vec<(Slot, usize)> {
    let mut v: Vec<(Slot, usize)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                msg: Message::Accept { slot, batch, .. },
                ..
            } => Some((*slot, batch.0.len())),
            _ => None,
        })
        .collect();
    v.dedup();
    v
}

fn proposals(from: u32, n: u32) -> Input {
    Input::Propose(
        (from..from + n)
            .map(|x| crate::Proposal {
                token: u64::from(x) + 1,
                command: cmd(x),
                writes: true,
            })
            .collect(),
    )
}

#[test]
fn arrivals_during_the_leaders_fsync_share_the_next_slot() {
    let (mut g, l) = elected(5);
    let now = g.now;
    let leader = &mut g.cores[l.0 as usize];
    let out = leader.step(now, proposals(0, 1));
    let first = accepts_sent(&out);
    assert_eq!(first.len(), 1, "an idle leader proposes at once: {out:?}");
    let token = out
        .iter()
        .find_map(|o| match o {
            Output::Persist { token, .. } => Some(*token),
            _ => None,
        })
        .expect("the leader logs its own acceptance");
    // Three more requests arrive while that write is being made durable: no slot yet.
    for k in 1..4 {
        let out = leader.step(now, proposals(k, 1));
        assert!(accepts_sent(&out).is_empty(), "{out:?}");
    }
    // Durable: the three leave together, in the next slot.
    let out = leader.step(now, Input::Persisted { token });
    assert_eq!(accepts_sent(&out), vec![(first[0].0.next(), 3)], "{out:?}");
}

#[test]
fn without_fsync_batching_each_arrival_takes_a_slot_of_its_own() {
    let mut g = LocalGroup::new(5, |me| CoreConfig {
        batch_behind_fsync: None,
        ..CoreConfig::wan(me, Quorum::Majority(5), 7)
    });
    g.advance(Duration::from_secs(4), TICK);
    let l = g.leader().expect("a leader");
    let now = g.now;
    let leader = &mut g.cores[l.0 as usize];
    let sent: usize = (0..4)
        .map(|k| accepts_sent(&leader.step(now, proposals(k, 1))).len())
        .sum();
    assert_eq!(sent, 4, "one slot per arrival");
}

#[test]
fn a_leader_whose_disk_stalls_stops_holding_proposals_back() {
    let (mut g, l) = elected(5);
    let now = g.now;
    let leader = &mut g.cores[l.0 as usize];
    let out = leader.step(now, proposals(0, 1));
    assert_eq!(accepts_sent(&out).len(), 1);
    // Its fsync never returns: a request arriving is held for the bound, no longer.
    let out = leader.step(now + Duration::from_millis(1), proposals(1, 2));
    assert!(accepts_sent(&out).is_empty(), "{out:?}");
    let out = leader.step(now + Duration::from_millis(2), Input::Tick);
    assert!(accepts_sent(&out).is_empty(), "within the bound: {out:?}");
    let out = leader.step(now + Duration::from_millis(6), Input::Tick);
    let sent = accepts_sent(&out);
    assert_eq!(
        sent.len(),
        1,
        "past the bound the held requests go: {out:?}"
    );
    assert_eq!(sent[0].1, 2);
}
