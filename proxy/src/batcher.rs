//! Write batching: concurrent writes to the same shard are coalesced into one Submit RPC to its
//! leader (whatever is queued when the previous RPC is handed off — no added delay), bounded in
//! commands and in bytes below the replica's message limit. Each batch is a `logic::WriteOp`
//! (redirects, retries with the same identities, no retry of a permanent refusal). Each shard
//! has a bounded queue; when it is full the proxy sheds load at once.
use crate::logic::batch::{WriteQueue, MAX_BATCH_BYTES};
use crate::logic::{ServiceError, WriteOp};
use crate::sites::Sites;
use meridian_replica::kv::{KvCommand, KvResult};
use meridian_replica::trace::TraceContext;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

pub const MAX_BATCH: usize = 256;
/// Batches in flight per shard: they keep the leader's pipeline busy.
pub const BATCHES_IN_FLIGHT: usize = 8;
/// Default bound on writes outstanding per shard (queued plus in flight).
pub const OUTSTANDING: usize = 4096;

pub type WriteReply = Result<KvResult, ServiceError>;
struct Job {
    cmd: KvCommand,
    bytes: usize,
    reply: oneshot::Sender<WriteReply>,
    deadline: Duration,
    /// The request span's trace context.
    trace: Option<TraceContext>,
}

/// Counters of the calls writes leave in (`meridian_proxy_write_calls_total`,
/// `meridian_proxy_writes_submitted_total`: their ratio is the mean batch).
#[derive(Clone, Default)]
pub struct WriteCounters {
    pub calls: prometheus_client::metrics::counter::Counter,
    pub commands: prometheus_client::metrics::counter::Counter,
}

#[derive(Clone)]
pub struct Batcher {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    /// Admission: a write holds a permit from arrival until its answer.
    admitted: Vec<Arc<tokio::sync::Semaphore>>,
    limit: usize,
    sites: Arc<Sites>,
}

impl Batcher {
    pub fn start(
        sites: Arc<Sites>,
        shards: u32,
        batching: bool,
        limit: usize,
        counters: WriteCounters,
    ) -> Batcher {
        let queues = (0..shards)
            .map(|shard| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(
                    sites.clone(),
                    shard,
                    rx,
                    if batching { MAX_BATCH } else { 1 },
                    counters.clone(),
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
            sites,
        }
    }

    /// `bytes`: the command's encoded size (checked against the replica's limit by the caller).
    pub async fn write(
        &self,
        shard: u32,
        cmd: KvCommand,
        bytes: usize,
        deadline: Duration,
    ) -> WriteReply {
        let _permit = self.admitted[shard as usize]
            .clone()
            .try_acquire_owned()
            .map_err(|_| ServiceError::Overloaded)?;
        let (tx, rx) = oneshot::channel();
        let job = Job {
            cmd,
            bytes,
            reply: tx,
            deadline: self.sites.now() + deadline,
            trace: meridian_replica::trace::current(),
        };
        self.queues[shard as usize]
            .send(job)
            .map_err(|_| ServiceError::Overloaded)?;
        rx.await
            .unwrap_or(Err(ServiceError::Timeout(crate::logic::WRITE_TIMEOUT)))
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
    counters: WriteCounters,
) {
    let mut q = WriteQueue::new(BATCHES_IN_FLIGHT, max, MAX_BATCH_BYTES);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    loop {
        tokio::select! {
            biased;
            Some(()) = done_rx.recv() => q.finished(),
            j = rx.recv() => match j {
                Some(j) => q.push(j),
                None => return,
            },
        }
        while let Ok(j) = rx.try_recv() {
            q.push(j);
        }
        while let Some(jobs) = q.next_batch(|j| j.bytes) {
            counters.calls.inc();
            counters.commands.inc_by(jobs.len() as u64);
            let (sites, done) = (sites.clone(), done_tx.clone());
            tokio::spawn(async move {
                submit(&sites, shard, jobs).await;
                let _ = done.send(());
            });
        }
    }
}

/// Sends one batch as a `WriteOp` and answers every job of it, in a `batch` span: a child of
/// its first request's span (one trace end to end for a write that travels alone); the span
/// ids of every request it carries are listed in `request_spans`.
async fn submit(sites: &Arc<Sites>, shard: u32, jobs: Vec<Job>) {
    let ctx = jobs
        .first()
        .and_then(|j| j.trace)
        .map_or_else(TraceContext::root, |t| t.child());
    let span = tracing::debug_span!(
        "batch",
        shard,
        commands = jobs.len(),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span = tracing::field::Empty,
        // Evaluated only when the span is enabled (tracing's macros are lazy): no string per
        // batch when debug spans are off.
        request_spans = %jobs
            .iter()
            .filter_map(|j| j.trace.map(|t| t.span_hex()))
            .collect::<Vec<_>>()
            .join(","),
        calls = tracing::field::Empty,
        retries = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let ctx = meridian_replica::trace::enter(ctx, &span);
    meridian_replica::trace::scope(ctx, submit_batch(sites, shard, jobs))
        .instrument(span)
        .await
}

async fn submit_batch(sites: &Arc<Sites>, shard: u32, jobs: Vec<Job>) {
    let deadline = jobs.iter().map(|j| j.deadline).max().unwrap_or_default();
    // The commands move into the call; only the reply channels stay with this task.
    let (cmds, replies): (Vec<KvCommand>, Vec<_>) =
        jobs.into_iter().map(|j| (j.cmd, j.reply)).unzip();
    let n = sites.sites.len();
    let mut op = WriteOp::new(cmds, n, sites.leader(shard).site, deadline, false);
    let first = op.start(sites.now());
    let r = crate::drive::drive(sites, shard, None, first, |now, id, _site, r| {
        op.on_result(now, id, r)
    })
    .await;
    if let Some(l) = op.leader_guess() {
        sites.set_leader(shard, l);
    }
    tracing::Span::current().record(
        "outcome",
        r.as_ref().map_or_else(crate::metrics::outcome, |_| "ok"),
    );
    match r {
        Ok(results) => {
            for (reply, res) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(res));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
