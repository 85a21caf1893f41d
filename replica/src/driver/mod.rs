//! The shard driver (DESIGN.md §2 "Three layers"): one shard group's consensus core, its KV state
//! machine, the request table, parked reads, the quorum-read barrier, the lease/log fallback and
//! bounded-staleness freshness, as one synchronous, IO-free state machine:
//! `handle(now, Event) -> Vec<Effect>`.
//!
//! Whatever decides an answer a client sees lives here, so that `meridian replica` (a tokio task
//! that performs the effects) and the simulator run the very same code. Replies are matched to
//! requests by the opaque tokens the core hands back with each applied command — never by
//! decoding a command's `(client, seq)`, which is for exactly-once deduplication only.
mod compaction;
pub mod demand;
mod holders;
mod reads;
mod requests;
#[cfg(test)]
mod tests;
mod ttl;

use crate::kv::{EncodedCommand, History, KvCommand, KvResult, KvStore, Op, Outcome, Since};
use bytes::Bytes;
use demand::{AutoLeases, Demands};
use meridian_core::{
    Batch, Core, Input, Message, Output, PlantedBug, Proposal, Record, Rejection, SiteId, Slot,
};
use requests::Requests;
use std::time::Duration;

/// How a read is served at this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Leader under its lease; through the log when the lease is not valid.
    Leader,
    /// Through the log.
    Log,
    /// This replica's applied state (serializable / bounded staleness / a rinse).
    Local,
    /// One reply of a Paxos Quorum Read: local value plus barrier.
    Quorum,
    /// A quorum-lease holder answers alone (DESIGN.md §2 "Quorum leases").
    Lease,
}

/// A client's request to this shard. `id` is the caller's: replies carry it back.
#[derive(Clone, Debug)]
pub enum Request {
    Submit {
        /// Encoded once, by the client; carried to the log as they are.
        commands: Vec<EncodedCommand>,
    },
    Read {
        command: KvCommand,
        mode: ReadMode,
        /// Local and quorum reads wait until this slot is applied (bounded by `wait`).
        min_applied: u64,
        /// How long a parked read may wait for `min_applied` before it is answered `Timeout`.
        wait: Duration,
    },
}

#[derive(Clone, Debug)]
pub enum Event {
    Peer {
        from: SiteId,
        msg: Message,
    },
    /// Every `Persist` up to `token` is durable; the log now has `log_size` (storage units:
    /// bytes for the WAL, records for the in-memory log).
    Persisted {
        token: u64,
        log_size: u64,
    },
    Tick,
    /// The snapshot an `Effect::Snapshot` asked for, serialized (and, on a real replica,
    /// already in its durable snapshot file).
    SnapshotTaken {
        through: Slot,
        data: Bytes,
    },
    Client {
        id: u64,
        request: Request,
        /// The site of the proxy that sent it (its demand, for `[leases] mode = "auto"`).
        origin: Option<u8>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Send {
        to: SiteId,
        msg: Message,
    },
    /// Make `records` durable (write + fsync), then report `Event::Persisted { token }`.
    Persist {
        records: Vec<Record>,
        token: u64,
    },
    /// Replace the log with this equivalent, shorter state, ordered after every earlier
    /// `Persist`.
    Compact {
        records: Vec<Record>,
    },
    /// Serialize `state` (the state machine right after applying `through`: a persistent
    /// copy, O(1) to take) off the shard task and report `Event::SnapshotTaken`. Nothing
    /// waits for it; a crash before it is reported loses nothing but the snapshot.
    Snapshot {
        through: Slot,
        state: KvStore,
    },
    Reply {
        id: u64,
        reply: Reply,
    },
    /// A slot was applied (emitted only with `DriverConfig::observe_applies`, for checkers).
    Applied {
        slot: Slot,
        batch: Batch,
        /// `KvStore::digest` right after this slot: replicas that agree on the log agree on it.
        digest: u64,
    },
    /// The replica cannot go on (e.g. a snapshot that does not decode): stop the process.
    Fatal {
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Done {
        results: Vec<KvResult>,
        /// `lease` (leader read under its lease) or `log`.
        path: &'static str,
        applied: u64,
    },
    /// Not the leader, or the proposal's outcome is unknown here: retry (same identities).
    NotLeader { hint: Option<usize> },
    /// Too many reads already waiting here: retry later.
    Overloaded,
    /// A local or quorum-read reply.
    Local {
        result: KvResult,
        /// `local` or `quorum`.
        path: &'static str,
        applied: u64,
        barrier: u64,
        /// Upper bound on how stale this state is, in ms (`u64::MAX`: unknown).
        staleness_ms: u64,
    },
    /// A parked read's slot was not applied within its wait.
    Timeout,
    /// A lease read at a replica that holds no valid quorum lease.
    NotHolder,
}

#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub snapshot_every: u64,
    /// Compact the log once storage reports more than this (its own units).
    pub compact_at: u64,
    /// Storage counts bytes: the log must also have grown by the last snapshot's size before
    /// it is compacted again (each compaction serializes the whole state: writing the state
    /// out at most once per state's worth of log bounds that cost to 2x the bytes written).
    pub compact_scales_with_snapshot: bool,
    /// Clock drift rate bound ε (staleness is padded by it).
    pub drift_bound: f64,
    pub max_parked: usize,
    pub observe_applies: bool,
    pub planted_bug: Option<PlantedBug>,
    /// The quorum-lease holders this shard should have (pinned); a leader whose log says
    /// otherwise proposes the configuration. `None`: leave the log's configuration alone.
    pub lease_holders: Option<Vec<u8>>,
    /// `[leases] mode = "auto"`: the leader chooses the holders from the demand it sees.
    pub auto_leases: Option<AutoLeases>,
    /// Without auto leases, how often the leader folds the per-origin counts into its demand
    /// (which `meridian status` compares with the leader placement).
    pub demand_every: Duration,
    /// Bound on the watch history kept in memory (bytes of keys and values, roughly).
    pub history_bytes: usize,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            snapshot_every: 10_000,
            compact_at: 64 << 20,
            compact_scales_with_snapshot: true,
            drift_bound: 0.01,
            max_parked: 4096,
            observe_applies: false,
            planted_bug: None,
            lease_holders: None,
            auto_leases: None,
            demand_every: Duration::from_secs(5),
            history_bytes: 64 << 20,
        }
    }
}

/// What `meridian status` shows of a shard.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    pub is_leader: bool,
    pub leader_hint: Option<usize>,
    pub ballot_round: u64,
    pub ballot_site: u32,
    pub commit: u64,
    pub applied: u64,
    pub holds_lease: bool,
    pub revision: u64,
    /// `KvStore::digest` after `applied`.
    pub state_digest: u64,
    pub holds_quorum_lease: bool,
    pub lease_holders: Vec<u8>,
    /// The leader's decayed demand per origin site (reads, writes); empty at followers.
    pub demand_reads: Vec<f64>,
    pub demand_writes: Vec<f64>,
    /// The log growth (since its last rewrite) at which this replica compacts it.
    pub compact_threshold: u64,
}

struct Parked {
    min_applied: u64,
    id: u64,
    command: KvCommand,
    mode: ReadMode,
    until: Duration,
}

pub struct ShardDriver {
    core: Core,
    kv: KvStore,
    /// Recent changes for watches (`kv::history`).
    history: History,
    /// This replica's timer of each TTL lease: (keep-alives applied, deadline on our clock),
    /// restarted whenever a grant or keep-alive applies here. The leader proposes the expiry
    /// of a lease whose timer ran out; every replica keeps its own so a new leader goes on
    /// from its own (never earlier than the old leader's) deadline.
    ttl_timers: std::collections::BTreeMap<i64, (u64, Duration)>,
    /// When this replica last proposed each lease's expiry (at most once a second each).
    expiry_proposed: std::collections::BTreeMap<i64, Duration>,
    cfg: DriverConfig,
    requests: Requests,
    parked: Vec<Parked>,
    last_snapshot: u64,
    /// A snapshot is being serialized (at most one at a time).
    snapshotting: bool,
    /// The last slot the state machine reflects.
    applied_slot: Slot,
    /// Bytes of the last snapshot taken or installed.
    snapshot_bytes: u64,
    compacting: bool,
    /// Snapshots installed from peers (catch-up across a compacted log).
    installs: u64,
    /// When this replica last proposed the lease configuration (at most once per second).
    config_proposed: Option<Duration>,
    /// Per-origin operation counts (auto leases only).
    demands: Option<Demands>,
    now: Duration,
    /// Client proposals of this `handle_all` call not yet given to the core: requests that
    /// arrive together are proposed together (one slot instead of one each).
    pending: Vec<Proposal>,
    out: Vec<Effect>,
}

impl ShardDriver {
    /// Builds the driver from a recovered core; `restore` are the outputs of `Core::recover`.
    pub fn new(core: Core, restore: Vec<Output>, cfg: DriverConfig, now: Duration) -> ShardDriver {
        let recovered = restore
            .iter()
            .any(|o| matches!(o, Output::InstallSnapshot { .. }));
        let mut kv = KvStore::default();
        kv.record_changes();
        let mut d = ShardDriver {
            last_snapshot: core.snapshot_through().0,
            core,
            kv,
            history: History::new(0, cfg.history_bytes),
            ttl_timers: Default::default(),
            expiry_proposed: Default::default(),
            cfg,
            requests: Requests::default(),
            parked: Vec::new(),
            snapshotting: false,
            applied_slot: Slot::ZERO,
            snapshot_bytes: 0,
            compacting: false,
            installs: 0,
            config_proposed: None,
            demands: None,
            now,
            pending: Vec::new(),
            out: Vec::new(),
        };
        let every = d
            .cfg
            .auto_leases
            .as_ref()
            .map_or(d.cfg.demand_every, |a| a.every);
        d.demands = Some(Demands::new(d.core.sites(), now, every));
        d.execute(restore);
        d.installs -= u64::from(recovered);
        d.sync_holders();
        d
    }

    /// The leader's decayed per-origin demand (`(site, reads, writes)`; the auto-lease rule's
    /// input, and what `meridian status` compares the leader placement with).
    pub fn demand(&self) -> Vec<(usize, f64, f64)> {
        self.demands
            .as_ref()
            .map(Demands::demand)
            .unwrap_or_default()
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// A watch's next changes: those from revision `from` within `[start, end)` (at most about
    /// `max`), or `Compacted` when `from` is below the history horizon.
    pub fn watch_since(&self, from: u64, start: &[u8], end: &[u8], max: usize) -> Since {
        self.history
            .since(from, start, end, max, self.kv.revision())
    }

    /// Answers a read from this replica's state, and a read at a revision (`Op::ScanAt`) from
    /// its state and watch history: the same answer at every replica that has applied the
    /// revision, so any of them may serve it.
    fn read_now(&self, op: &Op) -> KvResult {
        let Op::ScanAt {
            start,
            end,
            limit,
            revision,
        } = op
        else {
            return self.kv.read(op);
        };
        let current = self.kv.revision();
        let outcome = if *revision > current {
            Outcome::FutureRevision
        } else if self.cfg.planted_bug == Some(PlantedBug::ScanAtPresent) {
            let kvs = self.kv.span_kvs(start, end);
            Outcome::Scan {
                more: false,
                count: kvs.len() as u64,
                kvs,
            }
        } else {
            match self
                .history
                .at(*revision, start, end, self.kv.span_kvs(start, end))
            {
                Ok(mut kvs) => {
                    let count = kvs.len() as u64;
                    if *limit > 0 {
                        kvs.truncate(*limit);
                    }
                    Outcome::Scan {
                        more: (kvs.len() as u64) < count,
                        kvs,
                        count,
                    }
                }
                Err(horizon) => Outcome::Compacted { horizon },
            }
        };
        KvResult {
            revision: current,
            outcome,
        }
    }

    /// The lowest revision a watch can start from.
    pub fn history_horizon(&self) -> u64 {
        self.history.horizon()
    }
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }
    /// Snapshots this incarnation installed from a peer (not counting its own recovery).
    pub fn snapshots_installed(&self) -> u64 {
        self.installs
    }
    /// Requests waiting for an answer (proposals, leader reads, parked reads).
    pub fn waiting(&self) -> usize {
        self.requests.len() + self.parked.len()
    }

    pub fn status(&self, now: Duration) -> StatusInfo {
        let b = self.core.leader_ballot().unwrap_or(self.core.promised());
        StatusInfo {
            is_leader: self.core.is_leader(),
            leader_hint: self.core.leader_hint().map(|h| h.0 as usize),
            ballot_round: b.round,
            ballot_site: b.site.0 as u32,
            commit: self.core.commit_index().0,
            applied: self.core.applied_index().0,
            holds_lease: self.core.holds_lease(now),
            revision: self.kv.revision(),
            state_digest: self.kv.digest(),
            holds_quorum_lease: self.core.holds_quorum_lease(now),
            lease_holders: self.kv.lease_holders().to_vec(),
            demand_reads: self.demand_vec(|d| d.1),
            demand_writes: self.demand_vec(|d| d.2),
            compact_threshold: self.compact_threshold(),
        }
    }

    fn demand_vec(&self, f: impl Fn(&(usize, f64, f64)) -> f64) -> Vec<f64> {
        if !self.core.is_leader() {
            return Vec::new();
        }
        let mut v = vec![0.0; self.core.sites()];
        for d in self.demand() {
            v[d.0] = f(&d);
        }
        v
    }

    /// Advances the driver. `now` is this replica's local monotonic clock.
    pub fn handle(&mut self, now: Duration, ev: Event) -> Vec<Effect> {
        self.handle_all(now, std::iter::once(ev))
    }

    /// Handles events that arrived together. Client requests among them that need the log
    /// are proposed together, as one batch (the core packs them into as few slots as its
    /// limits allow): under load a replica's inbox holds many Submits at each wake-up, and
    /// a slot each would cost every replica a WAL append, a message and an apply each.
    /// Any other event first proposes what is pending, so that events keep their order.
    pub fn handle_all(
        &mut self,
        now: Duration,
        evs: impl IntoIterator<Item = Event>,
    ) -> Vec<Effect> {
        self.now = self.now.max(now);
        for ev in evs {
            if !matches!(ev, Event::Client { .. }) {
                self.flush_proposals();
            }
            self.on_event(ev);
        }
        self.flush_proposals();
        if !self.parked.is_empty() {
            self.unpark();
        }
        std::mem::take(&mut self.out)
    }

    fn flush_proposals(&mut self) {
        if !self.pending.is_empty() {
            let proposals = std::mem::take(&mut self.pending);
            self.step(Input::Propose(proposals));
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Peer {
                msg: Message::ReadLoad { milli_reads },
                ..
            } => {
                if let (true, Some(d)) = (self.core.is_leader(), self.demands.as_mut()) {
                    d.add_report(&milli_reads);
                }
            }
            Event::Peer { from, msg } => self.step(Input::Message { from, msg }),
            Event::Persisted { token, log_size } => {
                self.step(Input::Persisted { token });
                self.maybe_compact(log_size);
            }
            Event::SnapshotTaken { through, data } => self.snapshot_taken(through, data),
            Event::Tick => {
                self.step(Input::Tick);
                self.expire_parked();
                self.expire_ttl_leases();
                self.maybe_configure();
                self.auto_leases();
            }
            Event::Client {
                id,
                request,
                origin,
            } => {
                self.count(origin, &request);
                self.on_client(id, request)
            }
        }
    }

    fn step(&mut self, input: Input) {
        let outs = self.core.step(self.now, input);
        self.execute(outs);
    }

    fn execute(&mut self, outs: Vec<Output>) {
        let mut follow_up = Vec::new();
        for o in outs {
            match o {
                Output::Send { to, msg } => self.out.push(Effect::Send { to, msg }),
                Output::Persist { records, token } => {
                    self.out.push(Effect::Persist { records, token })
                }
                Output::Apply {
                    slot,
                    batch,
                    tokens,
                } => {
                    if self.apply(&batch, &tokens) {
                        follow_up.push(self.holders_input());
                    }
                    self.applied_slot = slot;
                    if !self.snapshotting && slot.0 >= self.last_snapshot + self.cfg.snapshot_every
                    {
                        self.take_snapshot(slot);
                    }
                    if self.cfg.observe_applies {
                        let digest = self.kv.digest();
                        self.out.push(Effect::Applied {
                            slot,
                            batch,
                            digest,
                        });
                    }
                }
                Output::InstallSnapshot { through, data } => match KvStore::restore(&data) {
                    Ok(mut kv) => {
                        self.snapshot_bytes = data.len() as u64;
                        kv.record_changes();
                        self.history.reset(kv.revision());
                        self.kv = kv;
                        // Every lease's timer restarts now: later than anywhere else, never
                        // earlier.
                        let now = self.now;
                        self.ttl_timers = self
                            .kv
                            .ttl_leases()
                            .map(|(id, ttl, refresh)| (id, (refresh, now + self.ttl_span(ttl))))
                            .collect();
                        self.last_snapshot = through.0;
                        self.applied_slot = self.applied_slot.max(through);
                        self.installs += 1;
                        follow_up.push(self.holders_input());
                    }
                    Err(e) => self.out.push(Effect::Fatal {
                        message: format!(
                            "snapshot through slot {} does not decode: {e}",
                            through.0
                        ),
                    }),
                },
                Output::ReadReady { id } => {
                    if let Some((req, cmd)) = self.requests.take_lease_read(id) {
                        let result = self.with_ttl_timer(self.read_now(&cmd.op));
                        self.reply_done(req, vec![result], "lease");
                    }
                }
                Output::ReadRejected { id, reason } => {
                    let Some((req, cmd)) = self.requests.take_lease_read(id) else {
                        continue;
                    };
                    match reason {
                        // No valid lease (yet): the read goes through the log.
                        Rejection::LeaseExpired => follow_up.push(self.propose(req, &cmd)),
                        Rejection::NotLeader { hint } => self.reply(
                            req,
                            Reply::NotLeader {
                                hint: hint.map(|h| h.0 as usize),
                            },
                        ),
                    }
                }
                Output::NotLeader { tokens, hint } => {
                    let hint = hint.or(self.core.leader_hint()).map(|h| h.0 as usize);
                    for req in self.requests.fail_tokens(&tokens) {
                        self.reply(req, Reply::NotLeader { hint });
                    }
                }
                Output::Abandoned { tokens } => {
                    let hint = self.core.leader_hint().map(|h| h.0 as usize);
                    for req in self.requests.fail_tokens(&tokens) {
                        self.reply(req, Reply::NotLeader { hint });
                    }
                }
            }
        }
        for i in follow_up {
            self.step(i);
        }
    }

    /// Applies a chosen batch; commands with a token of ours fill their request's results.
    /// Returns whether the lease configuration changed.
    fn apply(&mut self, batch: &Batch, tokens: &[u64]) -> bool {
        let mut configured = false;
        for (k, raw) in batch.0.iter().enumerate() {
            let Ok(cmd) = KvCommand::decode(raw) else {
                // Every replica skips the same undecodable command: state stays identical.
                tracing::warn!("skipping an undecodable command");
                continue;
            };
            configured |= matches!(cmd.op, Op::SetLeaseHolders { .. });
            // A follower's commands (and a replay's) have no token: nobody reads the result,
            // so it is not copied out of the session table.
            let token = tokens.get(k).copied();
            let result = if token.is_some() {
                Some(self.kv.apply(&cmd))
            } else {
                self.kv.apply_unanswered(&cmd);
                None
            };
            self.history.push(self.kv.take_changes());
            match cmd.op {
                Op::Compact { revision } => {
                    self.history.compact(revision.min(self.kv.revision() + 1));
                }
                Op::LeaseGrant { id, .. }
                | Op::LeaseKeepAlive { id }
                | Op::LeaseRevoke { id }
                | Op::LeaseExpire { id, .. } => self.sync_ttl_timer(id),
                _ => {}
            }
            let (Some(token), Some(result)) = (token, result) else {
                continue;
            };
            let result = self.with_ttl_timer(result);
            if self.cfg.planted_bug == Some(PlantedBug::LogReadSharedToken) && cmd.is_read_only() {
                // The defect this bug plants back: every log read waiting in the shard takes
                // the first applied read's answer.
                for (req, _) in self.requests.take_all_log_reads() {
                    self.reply_done(req, vec![result.clone()], "log");
                }
                continue;
            }
            if let Some((req, results)) = self.requests.fill(token, result) {
                self.reply_done(req, results, "log");
            }
        }
        configured
    }

    /// Proposes `command` for request `req` (a read through the log).
    fn propose(&mut self, req: u64, command: &KvCommand) -> Input {
        Input::Propose(self.proposals(req, vec![EncodedCommand::from(command)]))
    }

    /// The proposals of `commands` for request `req` (one token each), their bytes as they
    /// came.
    fn proposals(&mut self, req: u64, commands: Vec<EncodedCommand>) -> Vec<Proposal> {
        let read_only = commands.iter().all(EncodedCommand::is_read_only);
        let tokens = self.requests.register(req, commands.len(), read_only);
        commands
            .into_iter()
            .zip(tokens)
            .map(|(c, token)| Proposal {
                token,
                writes: !c.is_read_only(),
                command: c.bytes().clone(),
            })
            .collect()
    }

    fn reply(&mut self, id: u64, reply: Reply) {
        self.out.push(Effect::Reply { id, reply });
    }

    fn reply_done(&mut self, id: u64, results: Vec<KvResult>, path: &'static str) {
        let applied = self.core.applied_index().0;
        self.reply(
            id,
            Reply::Done {
                results,
                path,
                applied,
            },
        );
    }

    /// Counts a linearizable operation this replica serves by its origin (demand).
    fn count(&mut self, origin: Option<u8>, request: &Request) {
        let Some(d) = self.demands.as_mut() else {
            return;
        };
        let leader = self.core.is_leader();
        match request {
            Request::Submit { commands } if leader => d.write(origin, commands.len()),
            Request::Read { mode, .. } => match mode {
                ReadMode::Leader | ReadMode::Log if leader => d.read(origin, 1.0),
                ReadMode::Lease if self.core.quorum_lease_valid(self.now) => d.read(origin, 1.0),
                // The proxy asks every site; each counts its share.
                ReadMode::Quorum => d.read(origin, 1.0 / d.sites() as f64),
                _ => {}
            },
            _ => {}
        }
    }

    fn on_client(&mut self, id: u64, request: Request) {
        match request {
            Request::Read {
                command,
                mode: ReadMode::Lease,
                wait,
                ..
            } => {
                let until = self.now + wait;
                self.lease_read(id, command, until);
            }
            Request::Read {
                command,
                mode: mode @ (ReadMode::Local | ReadMode::Quorum),
                min_applied,
                wait,
            } => {
                if min_applied <= self.core.applied_index().0 {
                    self.answer_local(id, &command, mode);
                } else if self.parked.len() >= self.cfg.max_parked {
                    self.reply(id, Reply::Overloaded);
                } else {
                    self.parked.push(Parked {
                        min_applied,
                        id,
                        command,
                        mode,
                        until: self.now + wait,
                    });
                }
            }
            _ if !self.core.is_leader() => {
                let hint = self.core.leader_hint().map(|h| h.0 as usize);
                self.reply(id, Reply::NotLeader { hint });
            }
            Request::Submit { commands } => {
                let proposals = self.proposals(id, commands);
                self.pending.extend(proposals);
            }
            Request::Read {
                command,
                mode: ReadMode::Log,
                ..
            } => {
                let proposals = self.proposals(id, vec![EncodedCommand::from(&command)]);
                self.pending.extend(proposals);
            }
            Request::Read {
                command,
                mode: ReadMode::Leader,
                ..
            } => {
                let read = self.requests.lease_read(id, command);
                self.step(Input::Read { id: read });
            }
        }
    }
}
