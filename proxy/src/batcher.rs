//! Write batching: concurrent writes to the same shard are coalesced into one Submit RPC to its
//! leader (whatever is queued when the previous RPC is handed off — no added delay, bounded
//! size). Each shard has a bounded queue; when it is full the proxy sheds load at once.
use crate::sites::Sites;
use meridian_replica::client::Outcome;
use meridian_replica::kv::{KvCommand, KvResult};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub const MAX_BATCH: usize = 256;
/// Default bound on writes outstanding per shard (queued plus in flight).
pub const OUTSTANDING: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// Queue full: retry later (503 / RESOURCE_EXHAUSTED).
    Overloaded,
    /// No leader acknowledged before the deadline: the outcome is unknown.
    Timeout,
}

pub type WriteReply = Result<KvResult, WriteError>;
type Job = (KvCommand, oneshot::Sender<WriteReply>, Instant);

#[derive(Clone)]
pub struct Batcher {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    /// Admission: a write holds a permit from arrival until its answer.
    admitted: Vec<Arc<tokio::sync::Semaphore>>,
    limit: usize,
}

impl Batcher {
    pub fn start(
        sites: Arc<Sites>,
        shards: u32,
        batching: bool,
        deadline: Duration,
        limit: usize,
    ) -> Batcher {
        let queues = (0..shards)
            .map(|shard| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(
                    sites.clone(),
                    shard,
                    rx,
                    if batching { MAX_BATCH } else { 1 },
                    deadline,
                ));
                tx
            })
            .collect();
        let admitted = (0..shards)
            .map(|_| Arc::new(tokio::sync::Semaphore::new(limit)))
            .collect();
        Batcher {
            queues,
            admitted,
            limit,
        }
    }

    pub async fn write(&self, shard: u32, cmd: KvCommand, deadline: Duration) -> WriteReply {
        let _permit = self.admitted[shard as usize]
            .clone()
            .try_acquire_owned()
            .map_err(|_| WriteError::Overloaded)?;
        let (tx, rx) = oneshot::channel();
        self.queues[shard as usize]
            .send((cmd, tx, Instant::now() + deadline))
            .map_err(|_| WriteError::Overloaded)?;
        rx.await.unwrap_or(Err(WriteError::Timeout))
    }

    /// Writes outstanding on a shard (for tests and metrics).
    pub fn outstanding(&self, shard: u32) -> usize {
        self.limit - self.admitted[shard as usize].available_permits()
    }
}

async fn run(
    sites: Arc<Sites>,
    shard: u32,
    mut rx: mpsc::UnboundedReceiver<Job>,
    max: usize,
    deadline: Duration,
) {
    // Several batches in flight per shard keep the leader's pipeline busy.
    let inflight = Arc::new(tokio::sync::Semaphore::new(8));
    while let Some(first) = rx.recv().await {
        let permit = inflight
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let mut jobs = vec![first];
        while jobs.len() < max {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let sites = sites.clone();
        tokio::spawn(async move {
            submit(&sites, shard, jobs, deadline).await;
            drop(permit);
        });
    }
}

/// Sends one batch to the shard's leader, following redirects and retrying on errors with the
/// same command identities until every job's deadline has passed.
async fn submit(sites: &Sites, shard: u32, jobs: Vec<Job>, deadline: Duration) {
    let cmds: Vec<KvCommand> = jobs.iter().map(|j| j.0.clone()).collect();
    let end = jobs
        .iter()
        .map(|j| j.2)
        .max()
        .unwrap_or_else(|| Instant::now() + deadline);
    let n = sites.sites.len();
    let mut target = sites.leader(shard).site.unwrap_or(0);
    let mut backoff = Duration::from_millis(20);
    while Instant::now() < end {
        if let Some(mut c) = sites.conn(target).await {
            sites.wan(target).await;
            let r = tokio::time::timeout(
                end.saturating_duration_since(Instant::now()),
                c.submit(shard, &cmds),
            )
            .await;
            sites.wan(target).await;
            match r {
                Ok(Ok(Outcome::Ok(results))) => {
                    sites.set_leader(shard, target);
                    for (job, res) in jobs.into_iter().zip(results) {
                        let _ = job.1.send(Ok(res));
                    }
                    return;
                }
                Ok(Ok(Outcome::NotLeader(Some(h)))) if h != target && h < n => {
                    target = h;
                    continue;
                }
                Ok(Ok(Outcome::NotLeader(_))) | Ok(Err(_)) | Err(_) => {}
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
        target = sites.retarget(shard, target);
    }
    for job in jobs {
        let _ = job.1.send(Err(WriteError::Timeout));
    }
}
