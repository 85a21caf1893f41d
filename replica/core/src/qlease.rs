//! Quorum leases (Moraru, Andersen, Kaminsky, "Paxos Quorum Leases", SoCC 2014; DESIGN.md §2):
//! the sites of the lease configuration (`holders`, set through the log) hold read leases granted
//! by every replica, so a holder answers linearizable reads alone while its lease is valid.
//!
//! - A holder asks every grantor for a promise (`LeaseRequest`, its own send time); a grantor
//!   that knows it as a holder keeps it in its *grant set* until `t_recv + T·(1+ε)` on its own
//!   clock and answers `LeaseGrant`. The holder counts each promise until `t_send + T·(1−ε)` on
//!   its clock; its lease is valid while promises from a quorum of grantors are.
//! - Every grant carries the grantor's highest accepted slot, the *guard*; a grant that starts a
//!   new promise period at the holder (its previous promise from that grantor lapsed, or it
//!   restarted) makes the holder serve nothing before it has applied that slot, so a write the
//!   grantor accepted before granting cannot be missed.
//! - Every acceptor reports its grant set with its acknowledgement of a slot; the leader commits
//!   the slot only once a phase-2 quorum accepted it *and* every site in the grant set of every
//!   acceptor that accepted it did (`commit_ready`). A slot waiting on holders is re-sent to
//!   everyone each retransmit interval, so fresh acknowledgements drop expired holders. Any holder's lease quorum meets the accept
//!   quorum in a grantor that either reported the holder (so it accepted the write) or granted
//!   after accepting the write (so the guard makes the holder wait for it).
//! - Grants come from a quorum of grantors, not from the leader: a leader crash causes no read
//!   gap. A holder that stops renewing drops out of every grant set after `T·(1+ε)`, and writes
//!   stop waiting for it. A restarted grantor reports every site for `T·(1+ε)` (it forgot whom
//!   it promised).
use crate::config::PlantedBug;
use crate::core::{Core, Role};
use crate::message::Message;
use crate::quorum::{QuorumSystem, SiteSet};
use crate::types::{SiteId, Slot};

use std::time::Duration;

impl Core {
    /// Sites this replica currently promises a lease to (or might, after a restart).
    pub fn grant_set(&self) -> SiteSet {
        let mut s = SiteSet::default();
        for (i, until) in self.grants.iter().enumerate() {
            if *until > self.now {
                s.insert(SiteId(i as u8));
            }
        }
        s
    }

    /// The quorum-lease holders of this shard, as the log configured them.
    pub fn lease_holders(&self) -> SiteSet {
        self.holders
    }

    /// Whether this replica may answer reads alone as a quorum-lease holder at `now`: it is a
    /// configured holder, holds unexpired promises from a quorum of grantors, and has applied
    /// every slot its grants guard. (Per key, the driver also waits for accepted writes.)
    pub fn holds_quorum_lease(&self, now: Duration) -> bool {
        self.cfg.quorum_lease.is_some()
            && self.holders.contains(self.cfg.me)
            && self.qlease.valid(now, &self.cfg.quorum)
            && self.applied >= self.lease_guard
    }

    /// Whether this replica is a configured holder with unexpired promises from a quorum of
    /// grantors (it may still have to apply its guard before it answers).
    pub fn quorum_lease_valid(&self, now: Duration) -> bool {
        self.cfg.quorum_lease.is_some()
            && self.holders.contains(self.cfg.me)
            && self.qlease.valid(now, &self.cfg.quorum)
    }

    /// The slot a holder must apply before it serves lease reads.
    pub fn lease_guard(&self) -> Slot {
        self.lease_guard
    }

    pub(crate) fn set_holders(&mut self, holders: SiteSet) {
        self.holders = holders;
    }

    /// The configured quorum-lease length, if quorum leases run.
    pub fn quorum_lease(&self) -> Option<Duration> {
        self.cfg.quorum_lease
    }

    /// Leader only: how long since `site` last acknowledged anything of this ballot.
    pub fn silent_for(&self, site: SiteId) -> Option<Duration> {
        match &self.role {
            Role::Leader(l) => Some(self.now.saturating_sub(l.last_contact[site.0 as usize])),
            _ => None,
        }
    }

    /// Stops renewing `site` for two lease periods (only liveness is at stake: promises already
    /// given run to their end).
    pub(crate) fn on_lease_revoke(&mut self, site: SiteId) {
        let Some(t) = self.cfg.quorum_lease else {
            return;
        };
        if let Some(r) = self.revoked_until.get_mut(site.0 as usize) {
            *r = (*r).max(self.now + t * 2);
        }
    }

    /// Leader: a holder silent for five lease periods (it may still renew its promises with the
    /// grantors while the leader's accepts no longer reach it, which would stall every write) is
    /// revoked at every grantor, every half lease while it stays silent.
    fn revoke_silent_holders(&mut self, t: Duration) {
        if self.now < self.last_revoke + t / 2 {
            return;
        }
        let Role::Leader(l) = &self.role else {
            return;
        };
        let silent: Vec<SiteId> = self
            .holders
            .iter()
            .filter(|h| *h != self.cfg.me && (h.0 as usize) < self.n)
            .filter(|h| self.now.saturating_sub(l.last_contact[h.0 as usize]) >= t * 5)
            .collect();
        if silent.is_empty() {
            return;
        }
        self.last_revoke = self.now;
        for site in silent {
            self.broadcast(Message::LeaseRevoke { site });
        }
    }

    /// Holders renew their promises every quarter lease.
    pub(crate) fn lease_tick(&mut self) {
        let Some(t) = self.cfg.quorum_lease else {
            return;
        };
        if self.is_leader() {
            self.revoke_silent_holders(t);
        }
        if !self.holders.contains(self.cfg.me) || self.now < self.next_lease_request {
            return;
        }
        self.next_lease_request = self.now + t / 4;
        let t_send = self.now;
        for s in 0..self.n {
            self.send(SiteId(s as u8), Message::LeaseRequest { t_send });
        }
    }

    pub(crate) fn on_lease_request(&mut self, from: SiteId, t_send: Duration) {
        let Some(t) = self.cfg.quorum_lease else {
            return;
        };
        if !self.holders.contains(from) || self.now < self.revoked_until[from.0 as usize] {
            return;
        }
        let i = from.0 as usize;
        let until = self.now + t.mul_f64(1.0 + self.cfg.drift_bound);
        self.grants[i] = self.grants[i].max(until);
        // The guard travels with every grant; the holder applies it when the grant starts a new
        // promise period at its end (see `on_lease_grant`).
        let accept_bar = self.log.last_slot();
        self.send(from, Message::LeaseGrant { t_send, accept_bar });
    }

    pub(crate) fn on_lease_grant(&mut self, from: SiteId, t_send: Duration, accept_bar: Slot) {
        let Some(t) = self.cfg.quorum_lease else {
            return;
        };
        // A grant that finds our promise from this grantor lapsed (or never held: after a
        // restart) starts a new period: writes the grantor accepted before it may have committed
        // without us, so we serve nothing before we applied them. The grantor's own promise can
        // only have lapsed after ours did (it counts from later, by T·(1+ε) against our
        // T·(1−ε)), so a period that is unbroken here was unbroken there too, and every write
        // it accepted meanwhile waited for our acknowledgement.
        if self.qlease.expiry_of(from) <= self.now {
            self.lease_guard = self.lease_guard.max(accept_bar);
        }
        self.qlease.record(from, t_send, t, self.cfg.drift_bound);
    }

    /// The commit condition of an in-flight slot: a phase-2 quorum accepted it, and so did
    /// every site in the grant set that any of its acceptors reported with its acknowledgement.
    pub(crate) fn commit_ready(&self, slot: Slot) -> bool {
        let Role::Leader(l) = &self.role else {
            return false;
        };
        let Some(inf) = l.inflight.get(&slot) else {
            return false;
        };
        if !self.cfg.quorum.is_phase2_quorum(inf.accepted) {
            return false;
        }
        if self.cfg.planted_bug == Some(PlantedBug::WriteSkipsHolder) || !inf.writes {
            return true;
        }
        let mut must = 0u32;
        for r in inf.accepted.iter() {
            must |= inf.grants[r.0 as usize].0;
        }
        must & !inf.accepted.0 == 0
    }
}
