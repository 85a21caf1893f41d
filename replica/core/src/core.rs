//! The core: one Multi-Paxos replica of one shard group, as a deterministic state machine.
//! `step(now, input) -> outputs`; see `io.rs` for the persistence contract.
use crate::config::{CoreConfig, PlantedBug};
use crate::io::{Input, Output, Record, Rejection};
use crate::lease::LeaseTracker;
use crate::log::Log;
use crate::message::Message;
use crate::quorum::{QuorumSystem, SiteSet};
use crate::rng::Rng;
use crate::types::{Ballot, Batch, LogEntry, Proposal, SiteId, Slot};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub(crate) enum Role {
    Follower,
    Candidate(Candidate),
    Leader(Box<Leader>),
}

pub(crate) struct Candidate {
    pub ballot: Ballot,
    pub promised_by: SiteSet,
    /// Per slot above our commit index: the value phase 2 must propose.
    pub merged: BTreeMap<Slot, LogEntry>,
    /// The highest snapshot point among the promises, and who holds it.
    pub max_snapshot: (Slot, SiteId),
    /// Commands a leader had queued when it re-prepared at a higher ballot.
    pub carried: VecDeque<Proposal>,
}

pub(crate) struct InFlight {
    pub batch: Batch,
    pub accepted: SiteSet,
    /// Per acceptor: the quorum-lease grant set it reported when it acknowledged this slot.
    pub grants: Vec<SiteSet>,
    /// Whether the batch may change what reads return (then holders must accept it).
    pub writes: bool,
    pub sent_at: Duration,
}

pub(crate) struct Leader {
    pub ballot: Ballot,
    pub next_slot: Slot,
    pub inflight: BTreeMap<Slot, InFlight>,
    pub queue: VecDeque<Proposal>,
    /// Lease reads wait until the commit index reaches this slot (the first slot proposed
    /// after recovery): then every write chosen under earlier ballots is applied here.
    pub ready_slot: Slot,
    pub lease: LeaseTracker,
    pub last_contact: Vec<Duration>,
    pub peer_commit: Vec<Slot>,
    /// Per peer: the latest follower timestamp (`f_send`) that reached us in this ballot.
    pub peer_echo: Vec<Option<Duration>>,
    pub last_heartbeat: Duration,
    /// Leadership transfer in progress, until this time.
    pub transfer: Option<Duration>,
    /// An acceptor refused us for a higher ballot: re-prepare above it (a lone stale
    /// candidate must not unseat a leader that still reaches a quorum).
    pub bump: bool,
}

/// A hold this acceptor placed: no prepare from a site other than `ballot.site` is answered
/// before `until` (own clock), and we do not campaign ourselves. It is set by a leader's
/// accept or heartbeat (the leader-lease promise, DESIGN.md §2) and, for a shorter time, by
/// promising a candidate (stickiness: no rival candidacy while one is under way).
/// `ballot: None` blocks every prepare (after a restart, when holds made before the crash are
/// forgotten).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeasePromise {
    pub ballot: Option<Ballot>,
    pub until: Duration,
}

pub struct Core {
    pub(crate) cfg: CoreConfig,
    pub(crate) rng: Rng,
    pub(crate) now: Duration,
    pub(crate) n: usize,
    // Durable acceptor state.
    pub(crate) promised: Ballot,
    pub(crate) log: Log,
    // Learner state.
    pub(crate) commit: Slot,
    pub(crate) applied: Slot,
    pub(crate) leader_commit_seen: Slot,
    // Role.
    pub(crate) role: Role,
    pub(crate) leader_hint: Option<SiteId>,
    pub(crate) highest_seen: Ballot,
    pub(crate) election_deadline: Duration,
    pub(crate) failed_elections: u32,
    pub(crate) transfer_backoff_until: Duration,
    pub(crate) lease_promise: Option<LeasePromise>,
    pub(crate) catchup_next_allowed: Duration,
    /// Slots this replica proposed in this incarnation with client tokens: the batch and the
    /// tokens aligned with it. Handed back by `Apply` when exactly that batch is chosen.
    pub(crate) proposed: BTreeMap<Slot, (Batch, Vec<u64>)>,
    /// (leader commit index, echoed own timestamp) pairs not yet applied (bounded-staleness).
    pub(crate) fresh_pending: VecDeque<(Slot, Duration)>,
    /// Local time as of which the applied state includes every acknowledged write.
    pub(crate) fresh_as_of: Option<Duration>,
    // Quorum leases (qlease.rs).
    pub(crate) holders: SiteSet,
    /// Grantor: per site, until when (own clock) it may hold a promise of ours.
    pub(crate) grants: Vec<Duration>,
    /// Holder: promises received, counted from our own send times.
    pub(crate) qlease: LeaseTracker,
    /// Holder: the highest slot a new grant guards.
    pub(crate) lease_guard: Slot,
    pub(crate) next_lease_request: Duration,
    /// Grantor: per site, no renewal before this (a leader revoked it).
    pub(crate) revoked_until: Vec<Duration>,
    /// Leader: when it last asked grantors to revoke silent holders.
    pub(crate) last_revoke: Duration,
    // Persistence plumbing.
    next_token: u64,
    staged_records: Vec<Record>,
    staged_sends: Vec<(SiteId, Message)>,
    pub(crate) awaiting: BTreeMap<u64, Vec<(SiteId, Message)>>,
    /// Since when a write of ours has been waiting to be durable (reset as writes complete;
    /// `None` when nothing waits).
    pub(crate) awaiting_since: Option<Duration>,
    loopback: VecDeque<(SiteId, Message)>,
    pub(crate) out: Vec<Output>,
}

impl Core {
    /// A fresh replica with an empty log.
    pub fn new(cfg: CoreConfig, now: Duration) -> Core {
        let n = cfg.quorum.size();
        assert!(
            (cfg.me.0 as usize) < n,
            "site {:?} outside a group of {n}",
            cfg.me
        );
        let rng = Rng::new(cfg.seed ^ (cfg.me.0 as u64).wrapping_mul(0x51_7CC1_B727_220A));
        let mut core = Core {
            cfg,
            rng,
            now,
            n,
            promised: Ballot::ZERO,
            log: Log::default(),
            commit: Slot::ZERO,
            applied: Slot::ZERO,
            leader_commit_seen: Slot::ZERO,
            role: Role::Follower,
            leader_hint: None,
            highest_seen: Ballot::ZERO,
            election_deadline: now,
            failed_elections: 0,
            transfer_backoff_until: now,
            lease_promise: None,
            catchup_next_allowed: now,
            proposed: BTreeMap::new(),
            fresh_pending: VecDeque::new(),
            fresh_as_of: None,
            holders: SiteSet::default(),
            grants: vec![Duration::ZERO; n],
            qlease: LeaseTracker::new(n),
            lease_guard: Slot::ZERO,
            next_lease_request: now,
            revoked_until: vec![Duration::ZERO; n],
            last_revoke: Duration::ZERO,
            next_token: 1,
            staged_records: Vec::new(),
            staged_sends: Vec::new(),
            awaiting: BTreeMap::new(),
            awaiting_since: None,
            loopback: VecDeque::new(),
            out: Vec::new(),
        };
        core.reset_election_timer();
        core
    }

    /// Rebuilds a replica from its durable records (in the order they were persisted). The
    /// returned outputs restore the state machine (`InstallSnapshot`, then `Apply`s).
    pub fn recover(
        cfg: CoreConfig,
        now: Duration,
        records: impl IntoIterator<Item = Record>,
    ) -> (Core, Vec<Output>) {
        let mut core = Core::new(cfg, now);
        for r in records {
            match r {
                Record::Promise(b) => core.promised = core.promised.max(b),
                Record::Accept {
                    slot,
                    ballot,
                    batch,
                } => {
                    core.log.accept(slot, ballot, batch);
                }
                Record::Chosen { slot, batch } => {
                    core.log.insert_chosen(slot, batch);
                }
                Record::Snapshot { through, data } => core.log.install(through, data),
            }
        }
        core.highest_seen = core.promised;
        if let Some((through, data)) = core.log.snapshot().cloned() {
            core.out.push(Output::InstallSnapshot { through, data });
            core.commit = through;
            core.applied = through;
        }
        core.advance_commit();
        // Quorum-lease promises made before the crash were not persisted: report every site as
        // granted for one full promise period.
        if let Some(t) = core.cfg.quorum_lease {
            let until = now + t.mul_f64(1.0 + core.cfg.drift_bound);
            core.grants = vec![until; core.n];
        }
        // Lease promises made before the crash were not persisted: honour them all by
        // answering no prepare for one full promise period.
        if let Some(lease) = core.cfg.lease {
            let until = now + lease.mul_f64(1.0 + core.cfg.drift_bound);
            core.lease_promise = Some(LeasePromise {
                ballot: None,
                until,
            });
        }
        let out = std::mem::take(&mut core.out);
        (core, out)
    }

    /// Advances the core. `now` is this replica's local clock (monotonic).
    pub fn step(&mut self, now: Duration, input: Input) -> Vec<Output> {
        self.now = self.now.max(now);
        match input {
            Input::Message { from, msg } => self.on_message(from, msg),
            Input::Tick => self.on_tick(),
            Input::Persisted { token } => self.on_persisted(token),
            Input::Propose(commands) => self.on_propose(commands),
            Input::Read { id } => self.on_read(id),
            Input::LeaseHolders(h) => self.set_holders(h),
            Input::Snapshot { through, data } => {
                assert!(
                    through <= self.applied,
                    "snapshot {through:?} beyond applied {:?}",
                    self.applied
                );
                if through > self.log.snapshot_through() {
                    self.log.compact(through, data.clone(), self.cfg.log_retain);
                    self.staged_records.push(Record::Snapshot { through, data });
                }
            }
        }
        self.settle();
        std::mem::take(&mut self.out)
    }

    // ----- accessors (for drivers, metrics and the simulator's checkers) -----

    pub fn me(&self) -> SiteId {
        self.cfg.me
    }
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }
    /// Number of sites in the group.
    pub fn sites(&self) -> usize {
        self.n
    }
    /// Campaigning (phase 1 of its own ballot under way).
    pub fn is_candidate(&self) -> bool {
        matches!(self.role, Role::Candidate(_))
    }
    /// The ballot this replica leads, if it leads.
    pub fn leader_ballot(&self) -> Option<Ballot> {
        match &self.role {
            Role::Leader(l) => Some(l.ballot),
            _ => None,
        }
    }
    pub fn leader_hint(&self) -> Option<SiteId> {
        self.leader_hint
    }
    pub fn promised(&self) -> Ballot {
        self.promised
    }
    pub fn commit_index(&self) -> Slot {
        self.commit
    }
    pub fn applied_index(&self) -> Slot {
        self.applied
    }
    pub fn snapshot_through(&self) -> Slot {
        self.log.snapshot_through()
    }
    /// Accepted entries above the applied index (slot, batch): writes that may be chosen but
    /// are not yet reflected in the state machine (the barrier of a quorum read).
    pub fn unapplied(&self) -> impl Iterator<Item = (Slot, &Batch)> + '_ {
        self.log
            .entries_above(self.applied)
            .map(|(s, e)| (s, &e.batch))
    }

    /// This replica's local time as of which its applied state includes every write acknowledged
    /// to any client (DESIGN.md §4 bounded staleness): the latest of its own timestamps that a
    /// lease-holding leader echoed with a commit index it has applied since. `None`: unknown.
    pub fn fresh_as_of(&self) -> Option<Duration> {
        self.fresh_as_of
    }

    /// The highest commit index a leader of our promised ballot has told us about.
    pub fn leader_commit_seen(&self) -> Slot {
        self.leader_commit_seen
    }

    /// The ballot at which this acceptor holds a value for `slot` (chosen entries report
    /// `Ballot::MAX`-like semantics through `is_chosen`).
    pub fn accepted_ballot(&self, slot: Slot) -> Option<Ballot> {
        self.log.get(slot).map(|e| e.ballot)
    }
    pub fn is_chosen(&self, slot: Slot) -> bool {
        self.log.is_chosen(slot)
    }
    /// Whether this replica currently believes it may serve lease reads.
    pub fn holds_lease(&self, now: Duration) -> bool {
        match &self.role {
            Role::Leader(_) if self.cfg.planted_bug == Some(PlantedBug::ReadWithoutLease) => true,
            Role::Leader(l) => {
                self.cfg.lease.is_some()
                    && l.transfer.is_none()
                    && self.commit >= l.ready_slot
                    && l.lease.valid(now, &self.cfg.quorum)
            }
            _ => false,
        }
    }
    /// The whole durable state as a short record list equivalent to everything persisted so
    /// far (promise, snapshot, held entries): storage may replace its log with it (compaction).
    /// It may include records whose own `Persist` is still in flight; making them durable
    /// early is harmless.
    pub fn compaction_records(&self) -> Vec<Record> {
        let mut out = vec![Record::Promise(self.promised)];
        if let Some((through, data)) = self.log.snapshot() {
            out.push(Record::Snapshot {
                through: *through,
                data: data.clone(),
            });
        }
        for (slot, e) in self.log.entries_from(Slot::ZERO) {
            if e.ballot != Ballot::ZERO {
                out.push(Record::Accept {
                    slot,
                    ballot: e.ballot,
                    batch: e.batch.clone(),
                });
            }
            if e.chosen {
                out.push(Record::Chosen {
                    slot,
                    batch: e.batch,
                });
            }
        }
        out
    }

    /// Commands queued or in flight at the leader (for admission control and metrics).
    pub fn pending(&self) -> usize {
        match &self.role {
            Role::Leader(l) => l.queue.len() + l.inflight.len(),
            _ => 0,
        }
    }

    // ----- plumbing -----

    pub(crate) fn send(&mut self, to: SiteId, msg: Message) {
        if to == self.cfg.me {
            self.loopback.push_back((to, msg));
        } else {
            self.out.push(Output::Send { to, msg });
        }
    }

    /// Sends `msg` once every record staged so far (and every earlier write) is durable.
    pub(crate) fn send_durable(&mut self, to: SiteId, msg: Message) {
        self.staged_sends.push((to, msg));
    }

    pub(crate) fn broadcast(&mut self, msg: Message) {
        for s in 0..self.n {
            self.send(SiteId(s as u8), msg.clone());
        }
    }

    /// Processes messages to self and turns staged records into one `Persist` output.
    fn settle(&mut self) {
        loop {
            while let Some((from, msg)) = self.loopback.pop_front() {
                self.on_message(from, msg);
            }
            if !self.staged_records.is_empty() {
                let token = self.next_token;
                self.next_token += 1;
                let records = std::mem::take(&mut self.staged_records);
                self.out.push(Output::Persist { records, token });
                let sends = std::mem::take(&mut self.staged_sends);
                if self.awaiting.is_empty() {
                    self.awaiting_since = Some(self.now);
                }
                self.awaiting.insert(token, sends);
            } else if !self.staged_sends.is_empty() {
                let sends = std::mem::take(&mut self.staged_sends);
                match self.awaiting.values_mut().next_back() {
                    Some(last) => last.extend(sends),
                    None => sends.into_iter().for_each(|(to, m)| self.send(to, m)),
                }
            }
            if self.loopback.is_empty()
                && self.staged_records.is_empty()
                && self.staged_sends.is_empty()
            {
                break;
            }
        }
    }

    fn on_persisted(&mut self, token: u64) {
        let later = self.awaiting.split_off(&(token + 1));
        let ready = std::mem::replace(&mut self.awaiting, later);
        for (_, sends) in ready {
            for (to, msg) in sends {
                self.send(to, msg);
            }
        }
        if self.awaiting.is_empty() {
            self.awaiting_since = None;
            if self.cfg.batch_behind_fsync.is_some() {
                self.try_propose();
            }
        } else {
            // Writes are completing: the rest are newer.
            self.awaiting_since = Some(self.now);
        }
    }

    pub(crate) fn reset_election_timer(&mut self) {
        let mut base = self.cfg.election_timeout;
        if self.cfg.preferred_leader == Some(self.cfg.me) {
            base /= 2;
        }
        let factor = (1u32 << self.failed_elections.min(16)).min(self.cfg.max_backoff.max(1));
        let jitter_ns = self.cfg.election_jitter.as_nanos() as u64;
        let jitter = Duration::from_nanos(if jitter_ns == 0 {
            0
        } else {
            self.rng.below(jitter_ns)
        });
        self.election_deadline = self.now + base * factor + jitter;
    }

    fn on_message(&mut self, from: SiteId, msg: Message) {
        if (from.0 as usize) >= self.n {
            return;
        }
        match msg {
            Message::Prepare { ballot, from_slot } => self.on_prepare(from, ballot, from_slot),
            Message::Promise {
                ballot,
                entries,
                snapshot_through,
            } => self.on_promise(from, ballot, entries, snapshot_through),
            Message::Accept {
                ballot,
                slot,
                batch,
                commit,
                t_send,
            } => self.on_accept(from, ballot, slot, batch, commit, t_send),
            Message::Accepted {
                ballot,
                slot,
                t_send,
                grants,
                ..
            } => self.on_accepted(from, ballot, slot, t_send, grants),
            Message::Heartbeat {
                ballot,
                commit,
                t_send,
                relinquish,
                echo,
            } => self.on_heartbeat(from, ballot, commit, t_send, relinquish, echo),
            Message::HeartbeatAck {
                ballot,
                t_send,
                commit,
                f_send,
                max_accepted,
            } => self.on_heartbeat_ack(from, ballot, t_send, commit, f_send, max_accepted),
            Message::Nack { promised } => self.on_nack(promised),
            Message::CatchUpRequest { from_slot } => self.on_catchup_request(from, from_slot),
            Message::CatchUpReply { entries, commit } => {
                self.on_catchup_reply(from, entries, commit)
            }
            Message::Snapshot { through, data } => self.on_snapshot(from, through, data),
            Message::TimeoutNow { ballot } => self.on_timeout_now(from, ballot),
            Message::LeaseRequest { t_send } => self.on_lease_request(from, t_send),
            Message::LeaseGrant { t_send, accept_bar } => {
                self.on_lease_grant(from, t_send, accept_bar)
            }
            Message::LeaseRevoke { site } => self.on_lease_revoke(site),
            // The driver's (demand for automatic lease holders).
            Message::ReadLoad { .. } => {}
            Message::Commit { ballot, commit } => self.on_commit_notice(from, ballot, commit),
        }
    }

    fn on_tick(&mut self) {
        self.lease_tick();
        if self.is_leader() {
            self.leader_tick();
            // Proposals held behind a write of ours that is taking too long go now.
            self.try_propose();
        } else if self.now >= self.election_deadline {
            self.start_election();
        }
    }

    fn on_propose(&mut self, proposals: Vec<Proposal>) {
        match &mut self.role {
            Role::Leader(l) => {
                l.queue.extend(proposals);
                self.try_propose();
            }
            _ => self.out.push(Output::NotLeader {
                tokens: proposals.into_iter().map(|p| p.token).collect(),
                hint: self.leader_hint,
            }),
        }
    }

    fn on_read(&mut self, id: u64) {
        let out = if self.holds_lease(self.now) {
            debug_assert_eq!(self.applied, self.commit);
            Output::ReadReady { id }
        } else if self.is_leader() {
            Output::ReadRejected {
                id,
                reason: Rejection::LeaseExpired,
            }
        } else {
            Output::ReadRejected {
                id,
                reason: Rejection::NotLeader {
                    hint: self.leader_hint,
                },
            }
        };
        self.out.push(out);
    }

    /// The ballot of our own candidacy or leadership, if any.
    pub(crate) fn own_ballot(&self) -> Option<Ballot> {
        match &self.role {
            Role::Leader(l) => Some(l.ballot),
            Role::Candidate(c) => Some(c.ballot),
            Role::Follower => None,
        }
    }

    /// Gives up candidacy or leadership; never-proposed commands are handed back.
    pub(crate) fn step_down(&mut self) {
        let old = std::mem::replace(&mut self.role, Role::Follower);
        let queued = match old {
            Role::Leader(l) => l.queue,
            Role::Candidate(c) => c.carried,
            Role::Follower => VecDeque::new(),
        };
        if !queued.is_empty() {
            let tokens = queued.into_iter().map(|p| p.token).collect();
            self.out.push(Output::NotLeader { tokens, hint: None });
        }
        if self.leader_hint == Some(self.cfg.me) {
            self.leader_hint = None;
        }
        self.reset_election_timer();
    }

    /// Raises the promised ballot (persisting it) and steps down if we campaigned or led lower.
    pub(crate) fn raise_promise(&mut self, ballot: Ballot) {
        self.highest_seen = self.highest_seen.max(ballot);
        if ballot > self.promised {
            self.promised = ballot;
            self.staged_records.push(Record::Promise(ballot));
        }
        if self.own_ballot().is_some_and(|b| b < ballot) {
            self.step_down();
        }
    }

    pub(crate) fn stage(&mut self, record: Record) {
        self.staged_records.push(record);
    }

    /// Moves the commit index over every consecutive chosen slot and applies them.
    pub(crate) fn advance_commit(&mut self) {
        while self.log.is_chosen(self.commit.next()) {
            self.commit = self.commit.next();
        }
        while self.applied < self.commit {
            self.applied = self.applied.next();
            if self.applied <= self.log.snapshot_through() {
                continue;
            }
            let batch = self
                .log
                .get(self.applied)
                .expect("chosen entry present")
                .batch
                .clone();
            let tokens = match self.proposed.remove(&self.applied) {
                Some((ours, tokens)) if ours == batch => tokens,
                Some((_, tokens)) => {
                    self.out.push(Output::Abandoned { tokens });
                    Vec::new()
                }
                None => Vec::new(),
            };
            self.out.push(Output::Apply {
                slot: self.applied,
                batch,
                tokens,
            });
        }
        self.abandon_through(self.applied);
        while self
            .fresh_pending
            .front()
            .is_some_and(|(c, _)| *c <= self.applied)
        {
            let (_, t) = self.fresh_pending.pop_front().expect("front exists");
            self.fresh_as_of = Some(self.fresh_as_of.map_or(t, |f| f.max(t)));
        }
    }

    /// Proposals of slots at or below `through` that were never applied here (a snapshot
    /// covered them): their outcome is unknown to this replica.
    pub(crate) fn abandon_through(&mut self, through: Slot) {
        while let Some(e) = self.proposed.first_entry() {
            if *e.key() > through {
                break;
            }
            let (_, tokens) = e.remove();
            self.out.push(Output::Abandoned { tokens });
        }
    }
}
