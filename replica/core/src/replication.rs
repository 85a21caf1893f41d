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
    /// Sends `batch` for `slot` in our ballot to every acceptor, ourselves included.
    pub(crate) fn propose_at(&mut self, slot: Slot, batch: Batch) {
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
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(c) = l.queue.front() {
                if !batch.is_empty() && (batch.len() >= max_cmds || bytes + c.len() > max_bytes) {
                    break;
                }
                bytes += c.len();
                batch.push(l.queue.pop_front().expect("front exists"));
            }
            let slot = l.next_slot;
            self.propose_at(slot, Batch(batch));
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
        self.send_durable(
            from,
            Message::Accepted {
                ballot,
                slot,
                t_send,
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
    ) {
        let planted = self.cfg.planted_bug == Some(PlantedBug::AcceptLowerBallot);
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
            },
        );
        self.learn_commit(from, ballot, commit);
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
        if !self.cfg.quorum.is_phase2_quorum(inf.accepted) {
            return;
        }
        let inf = l.inflight.remove(&slot).expect("in flight");
        if !self.log.mark_chosen_if(slot, ballot) {
            self.log.insert_chosen(slot, inf.batch);
        }
        self.advance_commit();
        self.try_propose();
    }

    pub(crate) fn on_heartbeat_ack(
        &mut self,
        from: SiteId,
        ballot: Ballot,
        t_send: Duration,
        commit: Slot,
    ) {
        if !self.lease_ack(from, ballot, t_send) {
            return;
        }
        if let Role::Leader(l) = &mut self.role {
            let c = &mut l.peer_commit[from.0 as usize];
            *c = (*c).max(commit);
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
        if lost_quorum || transfer_failed {
            if transfer_failed {
                self.transfer_backoff_until = now + self.cfg.election_timeout * 10;
            }
            self.step_down();
            return;
        }
        let ballot = l.ballot;
        let commit = self.commit;
        if now >= l.last_heartbeat + self.cfg.heartbeat_interval {
            l.last_heartbeat = now;
            let relinquish = l.transfer.is_some();
            self.broadcast(Message::Heartbeat {
                ballot,
                commit,
                t_send: now,
                relinquish,
            });
        }
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let mut resend = Vec::new();
        for (slot, inf) in l.inflight.iter_mut() {
            if inf.sent_at + self.cfg.retransmit_interval <= now {
                inf.sent_at = now;
                for s in 0..self.n {
                    let s = SiteId(s as u8);
                    if !inf.accepted.contains(s) {
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
