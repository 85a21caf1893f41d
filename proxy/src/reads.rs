//! The read paths (DESIGN.md §4): leader read under the leader lease, Paxos Quorum Read with its
//! rinse, and serializable / bounded-staleness reads from the nearest fresh-enough replica.
use crate::chooser::{choose, estimates, ReadPath};
use crate::sites::Sites;
use meridian_core::{Quorum, QuorumSystem, SiteId, SiteSet};
use meridian_replica::client::Outcome;
use meridian_replica::kv::{KvCommand, KvResult};
use meridian_replica::wire::pb::{ReadMode, ReadReply};
use meridian_topology::model::QuorumShape;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Consistency {
    Linearizable,
    Serializable,
    /// Any replica whose applied state is at most this stale.
    Bounded(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Leader,
    Quorum,
    /// Quorum leases (a later issue): refused for now with a clear message.
    Lease,
}

#[derive(Debug)]
pub struct ReadOutcome {
    pub result: KvResult,
    /// `leader` (lease read), `log` (the leader had no lease), `quorum`, `local`.
    pub path: &'static str,
    pub site: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    Timeout,
    Unsupported(&'static str),
}

pub struct Reader {
    pub sites: Arc<Sites>,
    pub quorum: Quorum,
    pub shape: QuorumShape,
}

fn decode(r: &ReadReply) -> Option<KvResult> {
    bincode::deserialize(&r.result).ok()
}

impl Reader {
    /// The path `auto` would take for `shard` now.
    pub fn auto_path(&self, shard: u32) -> ReadPath {
        let l = self.sites.leader(shard);
        choose(&estimates(
            &self.sites.rtt_ms(),
            l.site,
            l.lease,
            &self.shape,
        ))
        .unwrap_or(ReadPath::Leader)
    }

    pub async fn read(
        &self,
        shard: u32,
        cmd: &KvCommand,
        c: Consistency,
        mode: Mode,
        deadline: Duration,
    ) -> Result<ReadOutcome, ReadError> {
        let end = Instant::now() + deadline;
        match c {
            Consistency::Serializable => self.local(shard, cmd, end).await,
            Consistency::Bounded(bound) => {
                // The nearest replica if its state is fresh enough, else a linearizable read.
                if let Some(&i) = self.sites.nearest_first().first() {
                    if let Some(Outcome::Ok(r)) = self
                        .sites
                        .read_at(i, shard, cmd, ReadMode::Local, 0, end)
                        .await
                    {
                        let age =
                            Duration::from_millis(r.staleness_ms) + self.sites.sites[i].one_way;
                        if r.staleness_ms != u64::MAX && age <= bound {
                            let result = decode(&r).ok_or(ReadError::Timeout)?;
                            return Ok(ReadOutcome {
                                result,
                                path: "local",
                                site: i,
                            });
                        }
                    }
                }
                self.linearizable(shard, cmd, mode, end).await
            }
            Consistency::Linearizable => self.linearizable(shard, cmd, mode, end).await,
        }
    }

    async fn linearizable(
        &self,
        shard: u32,
        cmd: &KvCommand,
        mode: Mode,
        end: Instant,
    ) -> Result<ReadOutcome, ReadError> {
        let path = match mode {
            Mode::Leader => ReadPath::Leader,
            Mode::Quorum => ReadPath::Quorum,
            Mode::Auto => self.auto_path(shard),
            Mode::Lease => return Err(ReadError::Unsupported("read_mode=lease needs quorum leases, which this cluster does not run yet; use auto, leader or quorum")),
        };
        match path {
            ReadPath::Leader => self.leader(shard, cmd, end).await,
            ReadPath::Quorum => self.quorum_read(shard, cmd, end).await,
        }
    }

    async fn leader(
        &self,
        shard: u32,
        cmd: &KvCommand,
        end: Instant,
    ) -> Result<ReadOutcome, ReadError> {
        let n = self.sites.sites.len();
        let mut target = self.sites.leader(shard).site.unwrap_or(0);
        let mut backoff = Duration::from_millis(20);
        while Instant::now() < end {
            match self
                .sites
                .read_at(target, shard, cmd, ReadMode::Leader, 0, end)
                .await
            {
                Some(Outcome::Ok(r)) => {
                    let result = decode(&r).ok_or(ReadError::Timeout)?;
                    let path = if r.path == "lease" { "leader" } else { "log" };
                    self.sites.set_leader(shard, target);
                    return Ok(ReadOutcome {
                        result,
                        path,
                        site: target,
                    });
                }
                Some(Outcome::NotLeader(Some(h))) if h != target && h < n => {
                    target = h;
                    continue;
                }
                _ => {}
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
            target = self.sites.retarget(shard, target);
        }
        Err(ReadError::Timeout)
    }

    /// Paxos Quorum Read (Charapko, Ailijiang, Demirbas, HotStorage 2019): ask every site, take
    /// the first read quorum of replies. The barrier is the highest accepted-but-unapplied slot
    /// touching the key among them; any read quorum meets the quorum of every committed write,
    /// so the barrier covers every write committed before the read began. If the most advanced
    /// replier has applied the barrier its value is the answer; otherwise "rinse": wait at the
    /// nearest replica until it has applied the barrier.
    async fn quorum_read(
        &self,
        shard: u32,
        cmd: &KvCommand,
        end: Instant,
    ) -> Result<ReadOutcome, ReadError> {
        let n = self.sites.sites.len();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let sites = self.sites.clone();
            let cmd = cmd.clone();
            set.spawn(async move {
                (
                    i,
                    sites
                        .read_at(i, shard, &cmd, ReadMode::Quorum, 0, end)
                        .await,
                )
            });
        }
        let mut answered = SiteSet::default();
        let mut replies: Vec<(usize, ReadReply)> = Vec::new();
        while let Some(j) = set.join_next().await {
            let Ok((i, Some(Outcome::Ok(r)))) = j else {
                continue;
            };
            answered.insert(SiteId(i as u8));
            replies.push((i, r));
            if self.quorum.is_phase2_quorum(answered) {
                break;
            }
        }
        set.abort_all();
        if !self.quorum.is_phase2_quorum(answered) {
            return Err(ReadError::Timeout);
        }
        let barrier = replies.iter().map(|(_, r)| r.barrier).max().unwrap_or(0);
        let (best_site, best) = replies
            .iter()
            .max_by_key(|(_, r)| r.applied_index)
            .expect("a quorum replied");
        if best.applied_index >= barrier {
            let result = decode(best).ok_or(ReadError::Timeout)?;
            return Ok(ReadOutcome {
                result,
                path: "quorum",
                site: *best_site,
            });
        }
        for i in self.sites.nearest_first() {
            if let Some(Outcome::Ok(r)) = self
                .sites
                .read_at(i, shard, cmd, ReadMode::Local, barrier, end)
                .await
            {
                if r.applied_index >= barrier {
                    let result = decode(&r).ok_or(ReadError::Timeout)?;
                    return Ok(ReadOutcome {
                        result,
                        path: "quorum",
                        site: i,
                    });
                }
            }
            if Instant::now() >= end {
                break;
            }
        }
        Err(ReadError::Timeout)
    }

    /// The nearest replica's applied state (serializable).
    async fn local(
        &self,
        shard: u32,
        cmd: &KvCommand,
        end: Instant,
    ) -> Result<ReadOutcome, ReadError> {
        for i in self.sites.nearest_first() {
            if let Some(Outcome::Ok(r)) = self
                .sites
                .read_at(i, shard, cmd, ReadMode::Local, 0, end)
                .await
            {
                let result = decode(&r).ok_or(ReadError::Timeout)?;
                return Ok(ReadOutcome {
                    result,
                    path: "local",
                    site: i,
                });
            }
        }
        Err(ReadError::Timeout)
    }
}
