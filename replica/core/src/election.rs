//! Phase 1 and leader election: candidacy with randomized, backed-off timeouts, promises
//! (withheld while a lease promise to another ballot is active), recovery of accepted values,
//! and leadership transfer to the preferred site.
use crate::core::{Candidate, Core, Leader, LeasePromise, Role};
use crate::lease::LeaseTracker;
use crate::message::Message;
use crate::quorum::{QuorumSystem, SiteSet};
use crate::types::{Ballot, Batch, LogEntry, SiteId, Slot};
use std::collections::{BTreeMap, VecDeque};

impl Core {
    /// Campaigns for a new ballot, unless a hold we placed for another site still forbids it.
    /// A leader re-preparing at a higher ballot keeps its queued commands.
    pub(crate) fn start_election(&mut self) {
        if let Some(LeasePromise { until, ballot }) = self.lease_promise {
            if self.now < until && ballot.map(|b| b.site) != Some(self.cfg.me) {
                self.election_deadline = until;
                return;
            }
        }
        let carried = match std::mem::replace(&mut self.role, Role::Follower) {
            Role::Leader(l) => l.queue,
            Role::Candidate(c) => c.carried,
            Role::Follower => VecDeque::new(),
        };
        let round = self.promised.round.max(self.highest_seen.round) + 1;
        let ballot = Ballot {
            round,
            site: self.cfg.me,
        };
        self.role = Role::Candidate(Candidate {
            ballot,
            promised_by: SiteSet::default(),
            merged: BTreeMap::new(),
            max_snapshot: (Slot::ZERO, self.cfg.me),
            carried,
        });
        self.leader_hint = None;
        self.failed_elections = (self.failed_elections + 1).min(16);
        self.reset_election_timer();
        self.broadcast(Message::Prepare {
            ballot,
            from_slot: self.commit.next(),
        });
    }

    pub(crate) fn on_prepare(&mut self, from: SiteId, ballot: Ballot, from_slot: Slot) {
        self.highest_seen = self.highest_seen.max(ballot);
        if ballot < self.promised {
            self.send(
                from,
                Message::Nack {
                    promised: self.promised,
                },
            );
            return;
        }
        if let Some(p) = self.lease_promise {
            if self.now < p.until && p.ballot.map(|b| b.site) != Some(ballot.site) {
                // Withheld: we hold for another site (its lease, or its candidacy). The
                // candidate retries after its timeout.
                return;
            }
        }
        self.raise_promise(ballot);
        self.hold_for(ballot, self.cfg.election_timeout / 2);
        if from != self.cfg.me {
            self.reset_election_timer();
        }
        let msg = Message::Promise {
            ballot,
            entries: self.log.entries_from(from_slot),
            snapshot_through: self.log.snapshot_through(),
        };
        self.send_durable(from, msg);
    }

    pub(crate) fn on_promise(
        &mut self,
        from: SiteId,
        ballot: Ballot,
        entries: Vec<(Slot, LogEntry)>,
        snapshot_through: Slot,
    ) {
        let commit = self.commit;
        let Role::Candidate(c) = &mut self.role else {
            return;
        };
        if c.ballot != ballot || c.promised_by.contains(from) {
            return;
        }
        c.promised_by.insert(from);
        for (slot, e) in entries {
            if slot <= commit {
                continue;
            }
            match c.merged.get(&slot) {
                Some(old) if old.chosen => {}
                Some(old) if !e.chosen && old.ballot >= e.ballot => {}
                _ => {
                    c.merged.insert(slot, e);
                }
            }
        }
        if snapshot_through > c.max_snapshot.0 {
            c.max_snapshot = (snapshot_through, from);
        }
        self.try_finish_phase1();
    }

    /// Becomes leader once a phase-1 quorum promised and we hold every slot that a promiser
    /// compacted away (else we fetch its snapshot first).
    pub(crate) fn try_finish_phase1(&mut self) {
        let Role::Candidate(c) = &self.role else {
            return;
        };
        if !self.cfg.quorum.is_phase1_quorum(c.promised_by) {
            return;
        }
        let (snap, holder) = c.max_snapshot;
        if snap > self.commit {
            self.request_catchup(holder);
            return;
        }
        let Role::Candidate(c) = std::mem::replace(&mut self.role, Role::Follower) else {
            unreachable!()
        };
        self.become_leader(c);
    }

    fn become_leader(&mut self, c: Candidate) {
        let n = self.n;
        let first = self.commit.next();
        let last = c
            .merged
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.commit)
            .max(self.commit);
        self.role = Role::Leader(Box::new(Leader {
            ballot: c.ballot,
            next_slot: first,
            inflight: BTreeMap::new(),
            queue: VecDeque::new(),
            ready_slot: last.next(),
            lease: LeaseTracker::new(n),
            last_contact: vec![self.now; n],
            peer_commit: vec![Slot::ZERO; n],
            peer_echo: vec![None; n],
            last_heartbeat: self.now,
            transfer: None,
            bump: false,
        }));
        self.leader_hint = Some(self.cfg.me);
        self.failed_elections = 0;
        // Re-propose every slot a promiser reported (gaps become no-ops), then one no-op of our
        // own ballot: once it commits we know the commit index and may serve lease reads.
        let mut slot = first;
        while slot <= last {
            let batch = c
                .merged
                .get(&slot)
                .map(|e| e.batch.clone())
                .unwrap_or_else(Batch::noop);
            self.propose_at(slot, batch, Vec::new());
            slot = slot.next();
        }
        self.propose_at(last.next(), Batch::noop(), Vec::new());
        if let Role::Leader(l) = &mut self.role {
            l.queue = c.carried;
        }
        self.try_propose();
    }

    pub(crate) fn on_nack(&mut self, promised: Ballot) {
        self.highest_seen = self.highest_seen.max(promised);
        match &mut self.role {
            Role::Leader(l) if l.ballot < promised => l.bump = true,
            Role::Candidate(c) if c.ballot < promised => self.step_down(),
            _ => {}
        }
    }

    /// Places (or extends) a hold for `ballot`'s site until `now + d`, unless a hold for
    /// another site is still active.
    pub(crate) fn hold_for(&mut self, ballot: Ballot, d: std::time::Duration) {
        let mut until = self.now + d;
        if let Some(p) = self.lease_promise {
            if self.now < p.until {
                if p.ballot.map(|b| b.site) != Some(ballot.site) {
                    return;
                }
                until = until.max(p.until);
            }
        }
        self.lease_promise = Some(LeasePromise {
            ballot: Some(ballot),
            until,
        });
    }

    /// The leader asks us to campaign now (it gave up its lease for this transfer).
    pub(crate) fn on_timeout_now(&mut self, from: SiteId, ballot: Ballot) {
        if ballot != self.promised || ballot.site != from || self.own_ballot().is_some() {
            return;
        }
        if self.lease_promise.is_some_and(|p| p.ballot == Some(ballot)) {
            self.lease_promise = None;
        }
        self.start_election();
    }

    /// Leader side: hand leadership to the preferred site when it is healthy and caught up.
    pub(crate) fn maybe_transfer(&mut self) {
        let Some(p) = self.cfg.preferred_leader else {
            return;
        };
        let now = self.now;
        let recent = self.cfg.election_timeout / 2;
        let commit = self.commit;
        if p == self.cfg.me || now < self.transfer_backoff_until || (p.0 as usize) >= self.n {
            return;
        }
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let healthy =
            l.last_contact[p.0 as usize] + recent >= now && l.peer_commit[p.0 as usize] >= commit;
        if l.transfer.is_some() || !healthy || !l.inflight.is_empty() || commit < l.ready_slot {
            return;
        }
        l.lease.relinquish();
        l.transfer = Some(now + self.cfg.election_timeout);
        let ballot = l.ballot;
        self.send_heartbeats(true);
        self.send(p, Message::TimeoutNow { ballot });
    }
}
