//! Phase 2: batching, pipelining, acceptance, commit notification, heartbeats and the
//! acceptor side of leader leases.
use crate::config::PlantedBug;
use crate::core::{Core, InFlight, LeasePromise, Role};
use crate::io::Record;
use crate::message::Message;
use crate::quorum::{QuorumSystem, SiteSet};
use crate::types::{Ballot, Batch, SiteId, Slot};
use std::time::Duration;

impl Core {
    /// Sends `batch` for `slot` in our ballot to every acceptor, ourselves included. `tokens`
    /// (aligned with the batch, or empty for no-ops and recovered values) come back on apply.
    pub(crate) fn propose_at(&mut self, slot: Slot, batch: Batch, tokens: Vec<u64>) {
        // No-ops write nothing; a recovered value may (we cannot tell): it waits for holders.
        let writes = !batch.0.is_empty();
        self.propose_batch(slot, batch, tokens, writes);
    }

    pub(crate) fn propose_batch(
        &mut self,
        slot: Slot,
        batch: Batch,
        tokens: Vec<u64>,
        writes: bool,
    ) {
        if !tokens.is_empty() {
            self.proposed.insert(slot, (batch.clone(), tokens));
        }
        let (now, commit) = (self.now, self.commit);
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let ballot = l.ballot;
        l.next_slot = l.next_slot.max(slot.next());
        l.inflight.insert(
            slot,
            InFlight {
                batch: batch.clone(),
                accepted: SiteSet::default(),
                grants: vec![SiteSet::default(); self.n],
                writes,
                sent_at: now,
            },
        );
        self.broadcast(Message::Accept {
            ballot,
            slot,
            batch,
            commit,
            t_send: now,
        });
    }

    /// Packs queued commands into batches while the window has room.
    pub(crate) fn try_propose(&mut self) {
        loop {
            let (max_cmds, max_bytes, window) = (
                self.cfg.max_batch_commands,
                self.cfg.max_batch_bytes,
                self.cfg.window,
            );
            let Role::Leader(l) = &mut self.role else {
                return;
            };
            if l.queue.is_empty() || l.inflight.len() >= window || l.transfer.is_some() {
                return;
            }
            // Our last write is still being made durable: what queues meanwhile leaves in one
            // slot when it is (`on_persisted` calls back here), or once it has taken too long
            // (the next tick does).
            if let (Some(max), Some(since)) = (self.cfg.batch_behind_fsync, self.awaiting_since) {
                if self.now < since + max {
                    return;
                }
            }
            let mut batch = Vec::new();
            let mut tokens = Vec::new();
            let mut writes = false;
            let mut bytes = 0;
            while let Some(p) = l.queue.front() {
                let len = p.command.len();
                if !batch.is_empty() && (batch.len() >= max_cmds || bytes + len > max_bytes) {
                    break;
                }
                bytes += len;
                let p = l.queue.pop_front().expect("front exists");
                writes |= p.writes;
                batch.push(p.command);
                tokens.push(p.token);
            }
            let slot = l.next_slot;
            self.propose_batch(slot, Batch(batch), tokens, writes);
        }
    }

    /// Acceptor side of messages from a leader of `ballot` (>= promised): remember the leader,
    /// hold off elections and, unless the leader gave its lease up, promise it the lease.
    fn follow(&mut self, ballot: Ballot, from: SiteId, relinquish: bool) {
        self.raise_promise(ballot);
        if ballot < self.promised {
            return;
        }
        self.leader_hint = Some(from);
        if from != self.cfg.me {
            self.failed_elections = 0;
            self.reset_election_timer();
        }
        if relinquish {
            if self.lease_promise.is_some_and(|p| p.ballot == Some(ballot)) {
                self.lease_promise = None;
            }
            return;
        }
        // The leader-lease promise; without leases, still stickiness, so that a live leader is
        // not unseated by a rival that merely timed out.
        let hold = match self.cfg.lease {
            Some(lease) => lease.mul_f64(1.0 + self.cfg.drift_bound),
            None => self.cfg.election_timeout / 2,
        };
        let until = self.now + hold;
        let until = self.lease_promise.map_or(until, |p| p.until.max(until));
        self.lease_promise = Some(LeasePromise {
            ballot: Some(ballot),
            until,
        });
    }

    pub(crate) fn on_accept(
        &mut self,
        from: SiteId,
        ballot: Ballot,
        slot: Slot,
        batch: Batch,
        commit: Slot,
        t_send: Duration,
    ) {
        let planted = self.cfg.planted_bug == Some(PlantedBug::AcceptLowerBallot);
        self.planted_fresh_on_receipt();
        if ballot < self.promised && !planted {
            self.send(
                from,
                Message::Nack {
                    promised: self.promised,
                },
            );
            return;
        }
        self.follow(ballot, from, false);
        if self.log.accept(slot, ballot, batch) {
            let batch = self.log.get(slot).expect("just accepted").batch.clone();
            self.stage(Record::Accept {
                slot,
                ballot,
                batch,
            });
        }
        let grants = self.grant_set();
        self.send_durable(
            from,
            Message::Accepted {
                ballot,
                slot,
                t_send,
                f_send: self.now,
                grants,
            },
        );
        self.learn_commit(from, ballot, commit);
    }

    pub(crate) fn on_heartbeat(
        &mut self,
        from: SiteId,
        ballot: Ballot,
        commit: Slot,
        t_send: Duration,
        relinquish: bool,
        echo: Option<Duration>,
    ) {
        let planted = self.cfg.planted_bug == Some(PlantedBug::AcceptLowerBallot);
        self.planted_fresh_on_receipt();
        if ballot < self.promised && !planted {
            self.send(
                from,
                Message::Nack {
                    promised: self.promised,
                },
            );
            return;
        }
        self.follow(ballot, from, relinquish);
        self.send_durable(
            from,
            Message::HeartbeatAck {
                ballot,
                t_send,
                commit: self.commit,
                f_send: self.now,
                max_accepted: self.log.last_slot(),
            },
        );
        self.learn_commit(from, ballot, commit);
        // Bounded staleness (DESIGN.md §4): the leader held its lease when it sent `commit`
        // after hearing our `echo`, so once we applied `commit` our state includes every write
        // acknowledged before `echo` (our own clock). Only a message the core accepted counts.
        if let Some(e) = echo.filter(|_| ballot == self.promised) {
            if self.fresh_pending.len() >= 64 {
                self.fresh_pending.pop_front();
            }
            self.fresh_pending.push_back((commit, e));
            self.advance_commit();
        }
    }

    /// `PlantedBug::BoundedFromReceiveTime`: freshness from the receipt of any leader message.
    fn planted_fresh_on_receipt(&mut self) {
        if self.cfg.planted_bug == Some(PlantedBug::BoundedFromReceiveTime)
            && self.applied >= self.leader_commit_seen
        {
            self.fresh_as_of = Some(self.now);
        }
    }

    /// Heartbeats to every site (ourselves included), each echoing that site's own latest
    /// timestamp while we hold the lease.
    pub(crate) fn send_heartbeats(&mut self, relinquish: bool) {
        let (now, commit, me) = (self.now, self.commit, self.cfg.me);
        let lease = self.holds_lease(now);
        let Role::Leader(l) = &self.role else {
            return;
        };
        let ballot = l.ballot;
        let echoes: Vec<Option<Duration>> = (0..self.n)
            .map(|s| {
                if !lease {
                    None
                } else if s == me.0 as usize {
                    Some(now)
                } else {
                    l.peer_echo[s]
                }
            })
            .collect();
        for (s, echo) in echoes.into_iter().enumerate() {
            self.send(
                SiteId(s as u8),
                Message::Heartbeat {
                    ballot,
                    commit,
                    t_send: now,
                    relinquish,
                    echo,
                },
            );
        }
    }

    /// The leader of `ballot` says every slot up to `leader_commit` is chosen. Entries we
    /// accepted in that same ballot carry the leader's (hence the chosen) value; the rest we
    /// fetch.
    fn learn_commit(&mut self, leader: SiteId, ballot: Ballot, leader_commit: Slot) {
        if ballot != self.promised {
            return;
        }
        self.leader_commit_seen = self.leader_commit_seen.max(leader_commit);
        let mut slot = self.commit.next();
        while slot <= leader_commit {
            if !self.log.is_chosen(slot) && !self.log.mark_chosen_if(slot, ballot) {
                break;
            }
            slot = slot.next();
        }
        self.advance_commit();
        if self.commit < leader_commit && leader != self.cfg.me {
            self.request_catchup(leader);
        }
    }

    fn lease_ack(&mut self, from: SiteId, ballot: Ballot, t_send: Duration) -> bool {
        let (lease, drift, now) = (self.cfg.lease, self.cfg.drift_bound, self.now);
        let Role::Leader(l) = &mut self.role else {
            return false;
        };
        if l.ballot != ballot {
            return false;
        }
        if let Some(lease) = lease {
            l.lease.record(from, t_send, lease, drift);
        }
        l.last_contact[from.0 as usize] = now;
        true
    }

    pub(crate) fn on_accepted(
        &mut self,
        from: SiteId,
        ballot: Ballot,
        slot: Slot,
        t_send: Duration,
        grants: SiteSet,
    ) {
        if !self.lease_ack(from, ballot, t_send) {
            return;
        }
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let Some(inf) = l.inflight.get_mut(&slot) else {
            return;
        };
        inf.accepted.insert(from);
        // Any acknowledgement of this slot reports a grant set from after the acceptance.
        inf.grants[from.0 as usize] = grants;
        if self.commit_ready(slot) {
            self.choose(slot, ballot);
        }
    }

    /// Marks an in-flight slot chosen (its commit condition holds) and applies what it can.
    fn choose(&mut self, slot: Slot, ballot: Ballot) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let Some(inf) = l.inflight.remove(&slot) else {
            return;
        };
        if !self.log.mark_chosen_if(slot, ballot) {
            self.log.insert_chosen(slot, inf.batch);
        }
        let before = self.commit;
        self.advance_commit();
        let next = l_next_slot(&self.role);
        self.try_propose();
        if self.commit > before && l_next_slot(&self.role) == next {
            // No new accept carries the commit index: tell the followers now.
            let commit = self.commit;
            for s in 0..self.n {
                if s != self.cfg.me.0 as usize {
                    self.send(SiteId(s as u8), Message::Commit { ballot, commit });
                }
            }
        }
    }

    /// A leader's commit notice: like a heartbeat's commit index, without lease or liveness
    /// meaning (it renews no promise and is not acknowledged).
    pub(crate) fn on_commit_notice(&mut self, from: SiteId, ballot: Ballot, commit: Slot) {
        if ballot == self.promised {
            self.learn_commit(from, ballot, commit);
        }
    }

    pub(crate) fn on_heartbeat_ack(
        &mut self,
        from: SiteId,
        ballot: Ballot,
        t_send: Duration,
        commit: Slot,
        f_send: Duration,
        max_accepted: Slot,
    ) {
        if !self.lease_ack(from, ballot, t_send) {
            return;
        }
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let i = from.0 as usize;
        l.peer_commit[i] = l.peer_commit[i].max(commit);
        l.peer_echo[i] = Some(l.peer_echo[i].map_or(f_send, |e| e.max(f_send)));
        // Orphans: a deposed leader's proposals that no promiser reported sit accepted above our
        // log at this follower. Nothing we propose would reach those slots while the shard is
        // idle, and quorum reads would wait on them: close them with no-ops of our ballot.
        if l.transfer.is_some() || max_accepted < l.next_slot {
            return;
        }
        let (first, last) = (l.next_slot, max_accepted.min(Slot(l.next_slot.0 + 1024)));
        let mut slot = first;
        while slot <= last {
            self.propose_at(slot, Batch::noop(), Vec::new());
            slot = slot.next();
        }
    }

    /// Leader timers: quorum contact, transfer deadline, heartbeats, retransmission, transfer.
    pub(crate) fn leader_tick(&mut self) {
        let now = self.now;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let mut contact = SiteSet::default();
        for (i, t) in l.last_contact.iter().enumerate() {
            if *t + self.cfg.election_timeout >= now || i == self.cfg.me.0 as usize {
                contact.insert(SiteId(i as u8));
            }
        }
        let lost_quorum = !self.cfg.quorum.is_phase2_quorum(contact);
        if l.bump && !lost_quorum && l.transfer.is_none() {
            self.start_election();
            return;
        }
        let transfer_failed = l.transfer.is_some_and(|t| now >= t);
        if lost_quorum {
            self.step_down();
            return;
        }
        if transfer_failed {
            // The target never took over (its TimeoutNow may be lost): lead again at a higher
            // ballot, keeping the queue, and try the transfer later.
            self.transfer_backoff_until = now + self.cfg.election_timeout * 10;
            self.start_election();
            return;
        }
        let ballot = l.ballot;
        let commit = self.commit;
        if now >= l.last_heartbeat + self.cfg.heartbeat_interval {
            l.last_heartbeat = now;
            let relinquish = l.transfer.is_some();
            self.send_heartbeats(relinquish);
        }
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let mut resend = Vec::new();
        let quorum = &self.cfg.quorum;
        for (slot, inf) in l.inflight.iter_mut() {
            if inf.sent_at + self.cfg.retransmit_interval <= now {
                inf.sent_at = now;
                // A slot that a quorum accepted but that waits on lease holders asks everyone
                // again: fresh acknowledgements report fresh grant sets, which no longer name a
                // holder whose promises expired.
                let refresh = quorum.is_phase2_quorum(inf.accepted);
                for s in 0..self.n {
                    let s = SiteId(s as u8);
                    if refresh || !inf.accepted.contains(s) {
                        resend.push((s, *slot, inf.batch.clone()));
                    }
                }
            }
        }
        for (to, slot, batch) in resend {
            self.send(
                to,
                Message::Accept {
                    ballot,
                    slot,
                    batch,
                    commit,
                    t_send: now,
                },
            );
        }
        self.maybe_transfer();
    }
}

/// The leader's next slot (None when not leading).
fn l_next_slot(role: &Role) -> Option<Slot> {
    match role {
        Role::Leader(l) => Some(l.next_slot),
        _ => None,
    }
}
