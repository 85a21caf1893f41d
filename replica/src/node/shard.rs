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
    Peer {
        from: usize,
        msg: Message,
    },
    Durable(Durable),
    /// A snapshot thread finished: the snapshot is serialized and in its durable file.
    SnapshotTaken {
        through: meridian_core::Slot,
        data: bytes::Bytes,
    },
}

pub enum ClientInput {
    Submit {
        commands: Vec<crate::kv::EncodedCommand>,
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
    /// Stream the changes of `[start, end)` from `from` (0: the next revision) into `tx`.
    Watch {
        start: Vec<u8>,
        end: Vec<u8>,
        from: u64,
        prev_kv: bool,
        tx: mpsc::Sender<Result<crate::wire::pb::WatchReply, tonic::Status>>,
    },
}

/// Client requests taken from the inbox at one wake-up (and proposed together).
const CLIENT_DRAIN: usize = 256;

/// How often a shard's driver is ticked (timeouts, heartbeats, expiries, gauges).
const TICK: Duration = Duration::from_millis(10);

/// The origin of the process's tick grid.
fn grid_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Ticks every `period` on a grid shared by the whole process, so that the ticks of its
/// shards fall due at the same instants and the runtime wakes once for all of them — not
/// once per shard at its own phase (with four shards an idle replica woke 400 times a
/// second instead of 100). Missed ticks are skipped, keeping to the grid.
fn grid_interval(period: Duration) -> tokio::time::Interval {
    let epoch = grid_epoch();
    let p = period.as_nanos().max(1);
    let since = Instant::now().saturating_duration_since(epoch).as_nanos();
    let first = epoch + Duration::from_nanos(((since / p + 1) * p) as u64);
    let mut tick = tokio::time::interval_at(first, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// Replies buffered per watch stream before the shard waits for it (it never drops one).
pub const WATCH_BUFFER: usize = 64;
/// Changes per watch reply (about: a revision is never split).
const WATCH_CHUNK: usize = 256;

/// One watch stream served by this shard.
struct Watcher {
    start: Vec<u8>,
    end: Vec<u8>,
    /// The next revision it has not been sent.
    next: u64,
    /// Every revision below this (and at or above `next`) holds no change of the span: the
    /// history is searched from here, and the empty stretch `[next, scanned)` is reported with
    /// the next change or the next progress reply, not as a reply of its own (a write to
    /// another key of the shard costs this watcher nothing).
    scanned: u64,
    prev_kv: bool,
    tx: mpsc::Sender<Result<crate::wire::pb::WatchReply, tonic::Status>>,
    last_sent: Instant,
}

#[derive(Debug, Clone)]
pub struct ShardStatus {
    pub info: StatusInfo,
    pub wal_bytes: u64,
    /// Of which written since the last compaction.
    pub wal_grown: u64,
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
    /// The shard's data directory (snapshot files go next to its WAL).
    pub data_dir: std::path::PathBuf,
    /// The shard's own inbox, for snapshot threads to report back.
    pub inbox: mpsc::UnboundedSender<ShardInput>,
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
    wal_grown: u64,
    fsync_us_last: u64,
    metrics: Arc<ReplicaMetrics>,
    label: ShardLabel,
    /// The leader ballot last seen (leader changes) and whether we were campaigning.
    seen_leader: Option<(u64, u32)>,
    campaigning: bool,
    churn: super::churn::Churn,
    watchers: Vec<Watcher>,
    /// The revision the watchers were last served at, and whether one waits for room.
    watched_rev: u64,
    watch_blocked: bool,
    data_dir: std::path::PathBuf,
    inbox: mpsc::UnboundedSender<ShardInput>,
}

fn pb_watch_kv(kv: &crate::kv::KeyValue) -> crate::wire::pb::WatchKv {
    crate::wire::pb::WatchKv {
        key: kv.key.clone(),
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
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
            wal_grown: 0,
            fsync_us_last: 0,
            label: ShardLabel { shard: id },
            metrics: opts.metrics,
            seen_leader: None,
            data_dir: opts.data_dir,
            inbox: opts.inbox,
            campaigning: false,
            churn: super::churn::Churn::with_grace(super::churn::STARTUP_GRACE),
            watchers: Vec::new(),
            watched_rev: 0,
            watch_blocked: false,
        }
    }

    /// Sends every watcher what it has not seen yet (never more than its buffer holds: a slow
    /// one is served again when it has room, or told `compacted` once it falls behind the
    /// history); with `progress`, a caught-up watcher idle for a second gets a progress reply.
    fn serve_watchers(&mut self, progress: bool) {
        use crate::kv::Since;
        use crate::wire::pb;
        let rev = self.driver.kv().revision();
        if !progress && !self.watch_blocked && rev == self.watched_rev {
            return;
        }
        self.watched_rev = rev;
        self.watch_blocked = false;
        let driver = &self.driver;
        let mut blocked = false;
        self.watchers.retain_mut(|w| {
            while w.scanned <= rev {
                let reply = match driver.watch_since(w.scanned, &w.start, &w.end, WATCH_CHUNK) {
                    Since::Compacted { horizon } => pb::WatchReply {
                        from: w.next,
                        through: 0,
                        events: Vec::new(),
                        compacted: horizon,
                    },
                    Since::Changes { changes, through } if changes.is_empty() => {
                        w.scanned = through + 1;
                        continue;
                    }
                    Since::Changes { changes, through } => pb::WatchReply {
                        from: w.next,
                        through,
                        events: changes
                            .iter()
                            .map(|c| pb::WatchEvent {
                                delete: c.delete,
                                kv: Some(pb_watch_kv(&c.kv)),
                                prev: c.prev.as_ref().filter(|_| w.prev_kv).map(pb_watch_kv),
                            })
                            .collect(),
                        compacted: 0,
                    },
                };
                let (compacted, through) = (reply.compacted, reply.through);
                match w.tx.try_send(Ok(reply)) {
                    Ok(()) if compacted != 0 => return false,
                    Ok(()) => {
                        w.next = through + 1;
                        w.scanned = w.next;
                        w.last_sent = Instant::now();
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        blocked = true;
                        return true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            if progress && w.last_sent.elapsed() >= Duration::from_secs(1) {
                let reply = pb::WatchReply {
                    from: w.next,
                    through: rev,
                    events: Vec::new(),
                    compacted: 0,
                };
                match w.tx.try_send(Ok(reply)) {
                    Ok(()) => {
                        // Everything through `rev` was searched (the loop above ran to it).
                        w.next = w.next.max(rev + 1);
                        w.last_sent = Instant::now();
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => blocked = true,
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            !w.tx.is_closed()
        });
        self.watch_blocked = blocked;
        self.metrics
            .watchers
            .get_or_create(&self.label)
            .set(self.watchers.len() as i64);
    }

    fn watch(
        &mut self,
        start: Vec<u8>,
        end: Vec<u8>,
        from: u64,
        prev_kv: bool,
        tx: mpsc::Sender<Result<crate::wire::pb::WatchReply, tonic::Status>>,
    ) {
        let rev = self.driver.kv().revision();
        let next = if from == 0 { rev + 1 } else { from };
        tracing::debug!(
            shard = self.id,
            from = next,
            revision = rev,
            horizon = self.driver.history_horizon(),
            "watch"
        );
        // The first reply says where the watch starts (and, from an old revision, is the
        // first batch of history or `compacted`).
        let created = crate::wire::pb::WatchReply {
            from: next,
            through: rev.min(next - 1),
            events: Vec::new(),
            compacted: 0,
        };
        if next > rev && tx.try_send(Ok(created)).is_err() {
            return;
        }
        self.watchers.push(Watcher {
            start,
            end,
            next,
            scanned: next,
            prev_kv,
            tx,
            last_sent: Instant::now(),
        });
        self.watch_blocked = true;
        self.serve_watchers(false);
    }

    pub async fn run(
        mut self,
        mut peers: mpsc::UnboundedReceiver<ShardInput>,
        mut clients: mpsc::Receiver<ClientInput>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = grid_interval(TICK);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(i) = peers.recv() => match i {
                    ShardInput::Peer { from, msg } => {
                        self.handle(Event::Peer { from: SiteId(from as u8), msg });
                        self.serve_watchers(false);
                    }
                    ShardInput::Durable(d) => {
                        self.wal_bytes = d.bytes;
                        self.wal_grown = d.grown;
                        self.fsync_us_last = d.fsync_us;
                        self.metrics
                            .fsync_seconds
                            .get_or_create(&self.label)
                            .observe(d.fsync_us as f64 / 1e6);
                        self.handle(Event::Persisted { token: d.token, log_size: d.grown });
                        self.serve_watchers(false);
                    }
                    ShardInput::SnapshotTaken { through, data } => {
                        self.handle(Event::SnapshotTaken { through, data });
                    }
                },
                Some(c) = clients.recv() => {
                    // Whatever else is queued is handled with it: the Submits among them are
                    // proposed together.
                    let mut events = Vec::new();
                    events.extend(self.on_client(c));
                    while events.len() < CLIENT_DRAIN {
                        let Ok(c) = clients.try_recv() else { break };
                        events.extend(self.on_client(c));
                    }
                    if !events.is_empty() {
                        self.handle_all(events);
                    }
                    self.serve_watchers(false);
                }
                _ = tick.tick() => {
                    // Requests whose caller hung up need no answer (their slots stay bounded
                    // by the driver's own limits and waits).
                    self.replies.retain(|_, r| !r.is_closed());
                    let replies = &self.replies;
                    self.submits.retain(|id, _| replies.contains_key(id));
                    self.handle(Event::Tick);
                    self.serve_watchers(true);
                    self.gauges(clients.len());
                }
            }
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    /// Answers what the shard task answers itself (status, watches); returns the driver's
    /// event for the rest.
    fn on_client(&mut self, c: ClientInput) -> Option<Event> {
        let (request, origin, reply) = match c {
            ClientInput::Status { reply } => {
                let _ = reply.send(ShardStatus {
                    info: self.driver.status(self.clock.now()),
                    wal_bytes: self.wal_bytes,
                    wal_grown: self.wal_grown,
                    fsync_us_last: self.fsync_us_last,
                    churn: self.churn.recent(self.clock.now()),
                });
                return None;
            }
            ClientInput::Watch {
                start,
                end,
                from,
                prev_kv,
                tx,
            } => {
                self.watch(start, end, from, prev_kv, tx);
                return None;
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
                let bytes: usize = commands.iter().map(|c| c.len()).sum();
                self.metrics
                    .bytes_accepted
                    .get_or_create(&self.label)
                    .inc_by(bytes as u64);
            }
        }
        Some(Event::Client {
            id,
            request,
            origin,
        })
    }

    fn handle(&mut self, ev: Event) {
        self.handle_all(vec![ev]);
    }

    fn handle_all(&mut self, evs: Vec<Event>) {
        let effects = self.driver.handle_all(self.clock.now(), evs);
        for e in effects {
            match e {
                Effect::Send { to, msg } => {
                    let bytes = bincode::serialize(&msg).expect("messages serialize");
                    self.links.send(to.0 as usize, self.id, bytes);
                }
                Effect::Persist { records, token } => {
                    let slots = records
                        .iter()
                        .filter(|r| matches!(r, meridian_core::Record::Accept { .. }))
                        .count();
                    if slots > 0 {
                        self.metrics
                            .slots_accepted
                            .get_or_create(&self.label)
                            .inc_by(slots as u64);
                    }
                    if self.wal.send(WalOp::Append { token, records }).is_err() {
                        // Nothing more would ever be durable: stop rather than serve
                        // without a log (the WAL thread said why before it ended).
                        tracing::error!(shard = self.id, "WAL thread gone; stopping the replica");
                        std::process::exit(3);
                    }
                }
                Effect::Compact { records } => {
                    // The rewrite is ordered after every append already queued.
                    let _ = self.wal.send(WalOp::Rewrite(records));
                }
                Effect::Snapshot { through, state } => self.snapshot(through, state),
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

    /// Serializes `state` and writes its snapshot file on a thread of its own (a large state
    /// takes seconds: the shard task goes on meanwhile), then reports back.
    fn snapshot(&self, through: meridian_core::Slot, state: crate::kv::KvStore) {
        let (dir, inbox, shard) = (self.data_dir.clone(), self.inbox.clone(), self.id);
        let spawned = std::thread::Builder::new()
            .name(format!("snap-{shard}"))
            .spawn(move || {
                let start = std::time::Instant::now();
                let data = bytes::Bytes::from(state.snapshot());
                drop(state);
                if let Err(e) = crate::storage::snapshot_file::ensure(&dir, through.0, &data) {
                    // The WAL shares this disk: it will not fare better. Stop.
                    tracing::error!(shard, error = %e, "snapshot write failed; stopping the replica");
                    std::process::exit(3);
                }
                tracing::debug!(
                    shard,
                    through = through.0,
                    bytes = data.len(),
                    ms = start.elapsed().as_millis() as u64,
                    "snapshot written"
                );
                let _ = inbox.send(ShardInput::SnapshotTaken { through, data });
            });
        if let Err(e) = spawned {
            tracing::error!(shard, error = %e, "cannot start a snapshot thread; stopping the replica");
            std::process::exit(3);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Shards started at different moments tick at the same instants (one wake-up for all):
    /// every tick of each lies on the process's grid, `TICK` apart (skipped ticks, on a busy
    /// machine, skip whole periods).
    #[tokio::test]
    async fn shards_started_apart_tick_together() {
        let mut shards = Vec::new();
        for pause in [3, 14, 0] {
            shards.push(grid_interval(TICK));
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let on_grid = |t: Instant| t.duration_since(grid_epoch()).as_nanos() % TICK.as_nanos();
        for tick in &mut shards {
            let mut last = tick.tick().await;
            assert_eq!(on_grid(last), 0, "a first tick off the grid");
            for _ in 0..3 {
                let t = tick.tick().await;
                assert_eq!(on_grid(t), 0, "a tick off the grid");
                assert!(t > last);
                last = t;
            }
        }
    }
}
