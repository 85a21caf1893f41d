//! The tokio task of one shard group: it feeds events to the `ShardDriver` and performs the
//! effects that come out (WAL thread, peer links, replies). Every decision is the driver's.
use super::links::PeerLinks;
use super::wal_writer::{Durable, WalOp};
pub use crate::driver::ReadMode;
pub use crate::driver::Reply;
use crate::driver::{DriverConfig, Effect, Event, Request, ShardDriver, StatusInfo};
use crate::kv::KvCommand;
use crate::metrics::{ReplicaMetrics, ShardLabel, ShardPath, ShardReason};
use meridian_core::{Core, Message, Output, SiteId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub enum ShardInput {
    Peer { from: usize, msg: Message },
    Durable(Durable),
}

pub enum ClientInput {
    Submit {
        commands: Vec<KvCommand>,
        origin: Option<u8>,
        reply: oneshot::Sender<Reply>,
    },
    Read {
        command: KvCommand,
        origin: Option<u8>,
        mode: ReadMode,
        min_applied: u64,
        wait: Duration,
        reply: oneshot::Sender<Reply>,
    },
    Status {
        reply: oneshot::Sender<ShardStatus>,
    },
}

#[derive(Debug, Clone)]
pub struct ShardStatus {
    pub info: StatusInfo,
    pub wal_bytes: u64,
    pub fsync_us_last: u64,
    /// Recent leadership and lease changes seen here, newest first, with their ages.
    pub churn: Vec<(Duration, super::churn::ChurnKind)>,
}

pub struct ShardOptions {
    pub snapshot_every: u64,
    pub compact_bytes: u64,
    pub drift_bound: f64,
    pub lease_holders: Option<Vec<u8>>,
    pub auto_leases: Option<crate::driver::demand::AutoLeases>,
    pub metrics: Arc<ReplicaMetrics>,
    pub demand_every: Duration,
}

pub struct Shard {
    id: u32,
    driver: ShardDriver,
    clock: super::clock::Clock,
    wal: std::sync::mpsc::Sender<WalOp>,
    links: Arc<PeerLinks>,
    replies: BTreeMap<u64, oneshot::Sender<Reply>>,
    /// Arrival of each client batch, for the commit-latency histogram.
    submits: BTreeMap<u64, Instant>,
    next_id: u64,
    wal_bytes: u64,
    fsync_us_last: u64,
    metrics: Arc<ReplicaMetrics>,
    label: ShardLabel,
    /// The leader ballot last seen (leader changes) and whether we were campaigning.
    seen_leader: Option<(u64, u32)>,
    campaigning: bool,
    churn: super::churn::Churn,
}

impl Shard {
    /// Builds the shard from its recovered core; `restore` are the outputs of `Core::recover`.
    pub fn new(
        id: u32,
        core: Core,
        restore: Vec<Output>,
        clock: super::clock::Clock,
        wal: std::sync::mpsc::Sender<WalOp>,
        links: Arc<PeerLinks>,
        opts: ShardOptions,
    ) -> Shard {
        let cfg = DriverConfig {
            snapshot_every: opts.snapshot_every,
            compact_at: opts.compact_bytes,
            drift_bound: opts.drift_bound,
            lease_holders: opts.lease_holders,
            auto_leases: opts.auto_leases,
            demand_every: opts.demand_every,
            ..DriverConfig::default()
        };
        let driver = ShardDriver::new(core, restore, cfg, clock.now());
        Shard {
            id,
            driver,
            clock,
            wal,
            links,
            replies: BTreeMap::new(),
            submits: BTreeMap::new(),
            next_id: 0,
            wal_bytes: 0,
            fsync_us_last: 0,
            label: ShardLabel { shard: id },
            metrics: opts.metrics,
            seen_leader: None,
            campaigning: false,
            churn: Default::default(),
        }
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
                        self.handle(Event::Peer { from: SiteId(from as u8), msg })
                    }
                    ShardInput::Durable(d) => {
                        self.wal_bytes = d.bytes;
                        self.fsync_us_last = d.fsync_us;
                        self.metrics
                            .fsync_seconds
                            .get_or_create(&self.label)
                            .observe(d.fsync_us as f64 / 1e6);
                        self.handle(Event::Persisted { token: d.token, log_size: d.bytes });
                    }
                },
                Some(c) = clients.recv() => self.on_client(c),
                _ = tick.tick() => {
                    // Requests whose caller hung up need no answer (their slots stay bounded
                    // by the driver's own limits and waits).
                    self.replies.retain(|_, r| !r.is_closed());
                    let replies = &self.replies;
                    self.submits.retain(|id, _| replies.contains_key(id));
                    self.handle(Event::Tick);
                    self.gauges(clients.len());
                }
            }
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    fn on_client(&mut self, c: ClientInput) {
        let (request, origin, reply) = match c {
            ClientInput::Status { reply } => {
                let _ = reply.send(ShardStatus {
                    info: self.driver.status(self.clock.now()),
                    wal_bytes: self.wal_bytes,
                    fsync_us_last: self.fsync_us_last,
                    churn: self.churn.recent(self.clock.now()),
                });
                return;
            }
            ClientInput::Submit {
                commands,
                origin,
                reply,
            } => (Request::Submit { commands }, origin, reply),
            ClientInput::Read {
                command,
                origin,
                mode,
                min_applied,
                wait,
                reply,
            } => (
                Request::Read {
                    command,
                    mode,
                    min_applied,
                    wait,
                },
                origin,
                reply,
            ),
        };
        self.next_id += 1;
        let id = self.next_id;
        self.replies.insert(id, reply);
        if let Request::Submit { commands } = &request {
            if self.driver.core().is_leader() {
                self.submits.insert(id, Instant::now());
                self.metrics
                    .commands_accepted
                    .get_or_create(&self.label)
                    .inc_by(commands.len() as u64);
                let bytes: usize = commands.iter().map(|c| c.encoded_len()).sum();
                self.metrics
                    .bytes_accepted
                    .get_or_create(&self.label)
                    .inc_by(bytes as u64);
            }
        }
        self.handle(Event::Client {
            id,
            request,
            origin,
        });
    }

    fn handle(&mut self, ev: Event) {
        let effects = self.driver.handle(self.clock.now(), ev);
        for e in effects {
            match e {
                Effect::Send { to, msg } => {
                    let bytes = bincode::serialize(&msg).expect("messages serialize");
                    self.links.send(to.0 as usize, self.id, bytes);
                }
                Effect::Persist { records, token } => {
                    if self.wal.send(WalOp::Append { token, records }).is_err() {
                        tracing::error!(shard = self.id, "WAL thread gone");
                    }
                }
                Effect::Compact { records } => {
                    // The rewrite is ordered after every append already queued.
                    let _ = self.wal.send(WalOp::Rewrite(records));
                }
                Effect::Reply { id, reply } => {
                    self.count_reply(id, &reply);
                    if let Some(tx) = self.replies.remove(&id) {
                        let _ = tx.send(reply);
                    }
                }
                Effect::Applied { .. } => {}
                Effect::Fatal { message } => {
                    tracing::error!(shard = self.id, %message, "stopping");
                    std::process::exit(3);
                }
            }
        }
    }

    /// Reply-side series: commit latency, reads by path, rejections by reason.
    fn count_reply(&mut self, id: u64, reply: &Reply) {
        let m = &self.metrics;
        let shard = self.id;
        let reason = |r: &str| ShardReason {
            shard,
            reason: r.to_string(),
        };
        let path = |p: &str| ShardPath {
            shard,
            path: p.to_string(),
        };
        let submitted = self.submits.remove(&id);
        match reply {
            Reply::Done { path: p, .. } => match submitted {
                Some(t0) => m
                    .commit_seconds
                    .get_or_create(&self.label)
                    .observe(t0.elapsed().as_secs_f64()),
                None => {
                    m.reads.get_or_create(&path(p)).inc();
                }
            },
            Reply::Local { path: p, .. } => {
                m.reads.get_or_create(&path(p)).inc();
            }
            Reply::NotLeader { .. } => {
                m.rejections.get_or_create(&reason("not_leader")).inc();
            }
            Reply::Overloaded => {
                m.rejections.get_or_create(&reason("overloaded")).inc();
            }
            Reply::Timeout => {
                m.rejections.get_or_create(&reason("timeout")).inc();
            }
            Reply::NotHolder => {
                m.rejections.get_or_create(&reason("not_holder")).inc();
            }
        }
    }

    /// Gauges and the leader/election counters, every tick.
    fn gauges(&mut self, queued: usize) {
        let now = self.clock.now();
        let st = self.driver.status(now);
        let m = &self.metrics;
        let l = &self.label;
        m.is_leader.get_or_create(l).set(i64::from(st.is_leader));
        m.lease_valid
            .get_or_create(l)
            .set(i64::from(st.holds_lease));
        m.quorum_lease_valid
            .get_or_create(l)
            .set(i64::from(st.holds_quorum_lease));
        m.lease_holders
            .get_or_create(l)
            .set(st.lease_holders.len() as i64);
        m.commit_index.get_or_create(l).set(st.commit as i64);
        m.apply_lag
            .get_or_create(l)
            .set(st.commit.saturating_sub(st.applied) as i64);
        m.waiting.get_or_create(l).set(self.driver.waiting() as i64);
        m.queue_depth.get_or_create(l).set(queued as i64);
        m.wal_bytes.get_or_create(l).set(self.wal_bytes as i64);
        let core = self.driver.core();
        let leader = core
            .leader_hint()
            .map(|_| (core.promised().round, core.promised().site.0 as u32));
        if leader.is_some() && leader != self.seen_leader {
            if self.seen_leader.is_some() {
                m.leader_changes.get_or_create(l).inc();
            }
            self.seen_leader = leader;
        }
        self.churn.observe(
            now,
            super::churn::Observed {
                leader,
                holds_lease: st.holds_lease,
                holds_quorum_lease: st.holds_quorum_lease,
                holders: st.lease_holders.clone(),
                is_holder: st.lease_holders.contains(&core.me().0),
            },
        );
        let campaigning = core.is_candidate();
        if campaigning && !self.campaigning {
            m.elections.get_or_create(l).inc();
        }
        self.campaigning = campaigning;
    }
}
