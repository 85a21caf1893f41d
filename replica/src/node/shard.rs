//! One shard group's replica: the core, the KV state machine and their glue. A single task
//! owns them; it executes the core's outputs (the WAL thread makes writes durable before the
//! core releases the messages that depend on them).
use super::links::PeerLinks;
use super::wal_writer::{Durable, WalOp};
use crate::kv::{KvCommand, KvResult, KvStore, Op};
use bytes::Bytes;
use meridian_core::{Core, Input, Message, Output, Rejection, SiteId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub enum ShardInput {
    Peer { from: usize, msg: Message },
    Durable(Durable),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    Leader,
    Log,
    Local,
    /// One reply of a Paxos Quorum Read: local value plus barrier.
    Quorum,
}

pub enum ClientInput {
    Submit {
        commands: Vec<KvCommand>,
        reply: oneshot::Sender<Reply>,
    },
    Read {
        command: KvCommand,
        mode: ReadMode,
        /// Local and quorum reads wait until this slot is applied.
        min_applied: u64,
        reply: oneshot::Sender<Reply>,
    },
    Status {
        reply: oneshot::Sender<StatusInfo>,
    },
}

#[derive(Debug)]
pub enum Reply {
    Done {
        results: Vec<KvResult>,
        path: &'static str,
        applied: u64,
    },
    NotLeader {
        hint: Option<usize>,
    },
    /// Too many reads already waiting here: retry later.
    Overloaded,
    /// A local or quorum-read reply.
    Local {
        result: KvResult,
        path: &'static str,
        applied: u64,
        barrier: u64,
        staleness_ms: u64,
    },
}

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
    pub wal_bytes: u64,
    pub fsync_us_last: u64,
}

struct Pending {
    results: Vec<Option<KvResult>>,
    left: usize,
    path: &'static str,
    reply: oneshot::Sender<Reply>,
}

/// Local and quorum reads that may wait for `min_applied` at once.
const MAX_PARKED: usize = 4096;

pub struct ShardOptions {
    pub snapshot_every: u64,
    pub compact_bytes: u64,
}

pub struct Shard {
    id: u32,
    core: Core,
    kv: KvStore,
    epoch: Instant,
    wal: std::sync::mpsc::Sender<WalOp>,
    links: Arc<PeerLinks>,
    opts: ShardOptions,
    /// (client, seq) -> requests waiting for that command's apply (request id, position).
    waiting: BTreeMap<(u64, u64), Vec<(u64, usize)>>,
    pending: BTreeMap<u64, Pending>,
    reads: BTreeMap<u64, (KvCommand, oneshot::Sender<Reply>)>,
    next_id: u64,
    last_snapshot: u64,
    wal_bytes: u64,
    fsync_us_last: u64,
    compacting: bool,
    /// Local and quorum reads waiting for `min_applied`.
    parked: Vec<(u64, KvCommand, ReadMode, oneshot::Sender<Reply>)>,
    /// When this replica last knew it had applied everything its leader had committed.
    fresh_at: Option<Instant>,
}

impl Shard {
    /// Builds the shard from its recovered core; `restore` are the outputs of `Core::recover`.
    pub fn new(
        id: u32,
        core: Core,
        restore: Vec<Output>,
        epoch: Instant,
        wal: std::sync::mpsc::Sender<WalOp>,
        links: Arc<PeerLinks>,
        opts: ShardOptions,
    ) -> Shard {
        let mut s = Shard {
            id,
            core,
            kv: KvStore::default(),
            epoch,
            wal,
            links,
            opts,
            waiting: BTreeMap::new(),
            pending: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_id: 0,
            last_snapshot: 0,
            wal_bytes: 0,
            fsync_us_last: 0,
            compacting: false,
            parked: Vec::new(),
            fresh_at: None,
        };
        s.last_snapshot = s.core.snapshot_through().0;
        s.execute(restore);
        s
    }

    pub async fn run(
        mut self,
        mut peers: mpsc::UnboundedReceiver<ShardInput>,
        mut clients: mpsc::Receiver<ClientInput>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(i) = peers.recv() => match i {
                    ShardInput::Peer { from, msg } => {
                        let from_leader = matches!(msg, Message::Heartbeat { .. } | Message::Accept { .. });
                        self.step(Input::Message { from: SiteId(from as u8), msg });
                        if from_leader && self.core.applied_index() >= self.core.leader_commit_seen() {
                            self.fresh_at = Some(Instant::now());
                        }
                    }
                    ShardInput::Durable(d) => self.on_durable(d),
                },
                Some(c) = clients.recv() => self.on_client(c),
                _ = tick.tick() => self.step(Input::Tick),
            }
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn step(&mut self, input: Input) {
        let outs = self.core.step(self.now(), input);
        self.execute(outs);
        if !self.parked.is_empty() {
            self.unpark();
        }
    }

    /// Answers parked local/quorum reads whose slot is now applied; forgets abandoned ones.
    fn unpark(&mut self) {
        let applied = self.core.applied_index().0;
        let parked = std::mem::take(&mut self.parked);
        for (min, cmd, mode, reply) in parked {
            if reply.is_closed() {
                continue;
            }
            if min <= applied {
                self.answer_local(&cmd, mode, reply);
            } else {
                self.parked.push((min, cmd, mode, reply));
            }
        }
    }

    /// The highest accepted, unapplied slot whose batch touches `key` (0: none).
    fn barrier(&self, key: &[u8]) -> u64 {
        let mut b = 0;
        for (slot, batch) in self.core.unapplied() {
            if batch
                .0
                .iter()
                .any(|c| KvCommand::decode(c).is_ok_and(|c| c.touches(key)))
            {
                b = slot.0;
            }
        }
        b
    }

    fn answer_local(&mut self, cmd: &KvCommand, mode: ReadMode, reply: oneshot::Sender<Reply>) {
        let result = self.kv.read(&cmd.op);
        let barrier = match (&cmd.op, mode) {
            (Op::Get { key }, ReadMode::Quorum) => self.barrier(key),
            (Op::Range { .. }, ReadMode::Quorum) => {
                self.core.unapplied().map(|(s, _)| s.0).max().unwrap_or(0)
            }
            _ => 0,
        };
        let staleness_ms = if self.core.holds_lease(self.now()) {
            0
        } else {
            self.fresh_at
                .map_or(u64::MAX, |t| t.elapsed().as_millis() as u64)
        };
        let path = if mode == ReadMode::Quorum {
            "quorum"
        } else {
            "local"
        };
        let applied = self.core.applied_index().0;
        let _ = reply.send(Reply::Local {
            result,
            path,
            applied,
            barrier,
            staleness_ms,
        });
    }

    fn on_durable(&mut self, d: Durable) {
        self.wal_bytes = d.bytes;
        self.fsync_us_last = d.fsync_us;
        self.step(Input::Persisted { token: d.token });
        if self.wal_bytes > self.opts.compact_bytes && !self.compacting {
            // The rewrite is ordered after every append already queued.
            self.compacting = true;
            let _ = self
                .wal
                .send(WalOp::Rewrite(self.core.compaction_records()));
        } else if self.wal_bytes <= self.opts.compact_bytes {
            self.compacting = false;
        }
    }

    fn execute(&mut self, outs: Vec<Output>) {
        let mut follow_up = Vec::new();
        for o in outs {
            match o {
                Output::Send { to, msg } => {
                    let bytes = bincode::serialize(&msg).expect("messages serialize");
                    self.links.send(to.0 as usize, self.id, bytes);
                }
                Output::Persist { records, token } => {
                    if self.wal.send(WalOp::Append { token, records }).is_err() {
                        tracing::error!(shard = self.id, "WAL thread gone");
                    }
                }
                Output::Apply { slot, batch } => {
                    for c in &batch.0 {
                        self.apply(c);
                    }
                    if slot.0 >= self.last_snapshot + self.opts.snapshot_every {
                        self.last_snapshot = slot.0;
                        follow_up.push(Input::Snapshot {
                            through: slot,
                            data: self.kv.snapshot().into(),
                        });
                    }
                }
                Output::InstallSnapshot { through, data } => {
                    self.kv = KvStore::restore(&data).unwrap_or_else(|e| {
                        tracing::error!(shard = self.id, error = %e, "snapshot does not decode; stopping");
                        std::process::exit(3);
                    });
                    self.last_snapshot = through.0;
                }
                Output::ReadReady { id } => {
                    if let Some((cmd, reply)) = self.reads.remove(&id) {
                        let result = self.kv.read(&cmd.op);
                        let applied = self.core.applied_index().0;
                        let _ = reply.send(Reply::Done {
                            results: vec![result],
                            path: "lease",
                            applied,
                        });
                    }
                }
                Output::ReadRejected { id, reason } => {
                    let Some((cmd, reply)) = self.reads.remove(&id) else {
                        continue;
                    };
                    match reason {
                        Rejection::LeaseExpired => {
                            // No valid lease (yet): the read goes through the log.
                            let raw = Bytes::from(cmd.encode());
                            self.register(vec![cmd], "log", reply);
                            follow_up.push(Input::Propose(vec![raw]));
                        }
                        Rejection::NotLeader { hint } => {
                            let _ = reply.send(Reply::NotLeader {
                                hint: hint.map(|h| h.0 as usize),
                            });
                        }
                    }
                }
                Output::NotLeader { commands, hint } => {
                    for c in commands {
                        if let Ok(cmd) = KvCommand::decode(&c) {
                            for (id, _) in self
                                .waiting
                                .remove(&(cmd.client, cmd.seq))
                                .unwrap_or_default()
                            {
                                if let Some(p) = self.pending.remove(&id) {
                                    let _ = p.reply.send(Reply::NotLeader {
                                        hint: hint.map(|h| h.0 as usize),
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        for i in follow_up {
            self.step(i);
        }
    }

    fn apply(&mut self, raw: &[u8]) {
        let Ok(cmd) = KvCommand::decode(raw) else {
            // Every replica skips the same undecodable command: state stays identical.
            tracing::warn!(shard = self.id, "skipping an undecodable command");
            return;
        };
        let result = self.kv.apply(&cmd);
        for (id, pos) in self
            .waiting
            .remove(&(cmd.client, cmd.seq))
            .unwrap_or_default()
        {
            let done = match self.pending.get_mut(&id) {
                Some(p) => {
                    if p.results[pos].is_none() {
                        p.results[pos] = Some(result.clone());
                        p.left -= 1;
                    }
                    p.left == 0
                }
                None => false,
            };
            if done {
                let p = self.pending.remove(&id).expect("present");
                let results = p.results.into_iter().map(|r| r.expect("filled")).collect();
                let applied = self.core.applied_index().0;
                let _ = p.reply.send(Reply::Done {
                    results,
                    path: p.path,
                    applied,
                });
            }
        }
    }

    fn register(
        &mut self,
        commands: Vec<KvCommand>,
        path: &'static str,
        reply: oneshot::Sender<Reply>,
    ) {
        self.next_id += 1;
        let id = self.next_id;
        for (pos, c) in commands.iter().enumerate() {
            self.waiting
                .entry((c.client, c.seq))
                .or_default()
                .push((id, pos));
        }
        self.pending.insert(
            id,
            Pending {
                results: vec![None; commands.len()],
                left: commands.len(),
                path,
                reply,
            },
        );
    }

    fn on_client(&mut self, c: ClientInput) {
        let hint = self.core.leader_hint().map(|h| h.0 as usize);
        match c {
            ClientInput::Status { reply } => {
                let b = self.core.leader_ballot().unwrap_or(self.core.promised());
                let _ = reply.send(StatusInfo {
                    is_leader: self.core.is_leader(),
                    leader_hint: hint,
                    ballot_round: b.round,
                    ballot_site: b.site.0 as u32,
                    commit: self.core.commit_index().0,
                    applied: self.core.applied_index().0,
                    holds_lease: self.core.holds_lease(self.now()),
                    revision: self.kv.revision(),
                    wal_bytes: self.wal_bytes,
                    fsync_us_last: self.fsync_us_last,
                });
            }
            ClientInput::Read {
                command,
                mode: mode @ (ReadMode::Local | ReadMode::Quorum),
                min_applied,
                reply,
            } => {
                if min_applied <= self.core.applied_index().0 {
                    self.answer_local(&command, mode, reply);
                } else if self.parked.len() >= MAX_PARKED {
                    let _ = reply.send(Reply::Overloaded);
                } else {
                    self.parked.push((min_applied, command, mode, reply));
                }
            }
            _ if !self.core.is_leader() => {
                let reply = match c {
                    ClientInput::Submit { reply, .. } | ClientInput::Read { reply, .. } => reply,
                    ClientInput::Status { .. } => unreachable!(),
                };
                let _ = reply.send(Reply::NotLeader { hint });
            }
            ClientInput::Submit { commands, reply } => {
                let raw: Vec<Bytes> = commands.iter().map(|c| Bytes::from(c.encode())).collect();
                self.register(commands, "log", reply);
                self.step(Input::Propose(raw));
            }
            ClientInput::Read {
                command,
                mode: ReadMode::Log,
                reply,
                ..
            } => {
                let raw = Bytes::from(command.encode());
                self.register(vec![command], "log", reply);
                self.step(Input::Propose(vec![raw]));
            }
            ClientInput::Read {
                command,
                mode: ReadMode::Leader,
                reply,
                ..
            } => {
                debug_assert!(matches!(command.op, Op::Get { .. } | Op::Range { .. }));
                self.next_id += 1;
                let id = self.next_id;
                self.reads.insert(id, (command, reply));
                self.step(Input::Read { id });
            }
        }
    }
}
