//! The tokio task of one shard group: it feeds events to the `ShardDriver` and performs the
//! effects that come out (WAL thread, peer links, replies). Every decision is the driver's.
use super::links::PeerLinks;
use super::wal_writer::{Durable, WalOp};
pub use crate::driver::ReadMode;
pub use crate::driver::Reply;
use crate::driver::{DriverConfig, Effect, Event, Request, ShardDriver, StatusInfo};
use crate::kv::KvCommand;
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
}

pub struct ShardOptions {
    pub snapshot_every: u64,
    pub compact_bytes: u64,
    pub drift_bound: f64,
    pub lease_holders: Option<Vec<u8>>,
    pub auto_leases: Option<crate::driver::demand::AutoLeases>,
}

pub struct Shard {
    id: u32,
    driver: ShardDriver,
    epoch: Instant,
    wal: std::sync::mpsc::Sender<WalOp>,
    links: Arc<PeerLinks>,
    replies: BTreeMap<u64, oneshot::Sender<Reply>>,
    next_id: u64,
    wal_bytes: u64,
    fsync_us_last: u64,
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
        let cfg = DriverConfig {
            snapshot_every: opts.snapshot_every,
            compact_at: opts.compact_bytes,
            drift_bound: opts.drift_bound,
            lease_holders: opts.lease_holders,
            auto_leases: opts.auto_leases,
            ..DriverConfig::default()
        };
        let driver = ShardDriver::new(core, restore, cfg, epoch.elapsed());
        Shard {
            id,
            driver,
            epoch,
            wal,
            links,
            replies: BTreeMap::new(),
            next_id: 0,
            wal_bytes: 0,
            fsync_us_last: 0,
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
                        self.handle(Event::Persisted { token: d.token, log_size: d.bytes });
                    }
                },
                Some(c) = clients.recv() => self.on_client(c),
                _ = tick.tick() => {
                    // Requests whose caller hung up need no answer (their slots stay bounded
                    // by the driver's own limits and waits).
                    self.replies.retain(|_, r| !r.is_closed());
                    self.handle(Event::Tick)
                }
            }
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    fn on_client(&mut self, c: ClientInput) {
        let (request, origin, reply) = match c {
            ClientInput::Status { reply } => {
                let _ = reply.send(ShardStatus {
                    info: self.driver.status(self.epoch.elapsed()),
                    wal_bytes: self.wal_bytes,
                    fsync_us_last: self.fsync_us_last,
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
        self.handle(Event::Client {
            id,
            request,
            origin,
        });
    }

    fn handle(&mut self, ev: Event) {
        let effects = self.driver.handle(self.epoch.elapsed(), ev);
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
}
