//! Read batching (DESIGN.md §4, Batcher): concurrent point reads to one site that the replica
//! answers at once — leader reads under the lease, local reads, a quorum read's first phase —
//! leave as one `ReadBatch` call instead of one call each. At most [`CALLS_PER_SITE`] calls are
//! in flight per site; reads arriving while they are busy queue and leave together (at most
//! [`READS_PER_CALL`]) when one returns. There is no timer: an idle proxy sends a read at once,
//! alone, as a plain `Read`. Reads that may wait at the replica (a rinse, a quorum-lease read
//! behind a write, ranges) never join a batch, so nobody waits behind them.
use crate::sites::Sites;
use meridian_replica::client::{ClientError, Outcome};
use meridian_replica::kv::KvCommand;
use meridian_replica::wire::pb;
use prometheus_client::metrics::counter::Counter;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Calls in flight per site before reads queue.
pub const CALLS_PER_SITE: usize = 4;
/// Reads in one call.
pub const READS_PER_CALL: usize = 64;

type Answer = Result<Outcome<pb::ReadReply>, ClientError>;

struct Pending {
    shard: u32,
    cmd: KvCommand,
    mode: pb::ReadMode,
    trace: Option<meridian_replica::trace::TraceContext>,
    tx: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Pending>,
    in_flight: usize,
}

/// One queue per site, and what was sent.
pub struct ReadBatcher {
    queues: Vec<Mutex<Queue>>,
    /// Calls made (plain reads and batches) and reads carried by batches of two or more
    /// (`meridian_proxy_read_calls_total`, `meridian_proxy_batched_reads_total`).
    pub calls: Counter,
    pub batched: Counter,
}

impl ReadBatcher {
    pub fn new(sites: usize) -> ReadBatcher {
        ReadBatcher {
            queues: (0..sites).map(|_| Mutex::new(Queue::default())).collect(),
            calls: Counter::default(),
            batched: Counter::default(),
        }
    }

    /// Counts into these counters (the proxy's registered ones).
    pub fn counting(mut self, calls: Counter, batched: Counter) -> ReadBatcher {
        self.calls = calls;
        self.batched = batched;
        self
    }
}

/// Reads `cmd` at `site` through the site's batch queue (the emulated WAN around the call).
pub async fn read(
    sites: &Arc<Sites>,
    site: usize,
    shard: u32,
    cmd: &KvCommand,
    mode: pb::ReadMode,
    trace: Option<meridian_replica::trace::TraceContext>,
) -> Answer {
    let (tx, rx) = oneshot::channel();
    let start = {
        let mut q = sites.reads.queues[site].lock().unwrap();
        q.waiting.push(Pending {
            shard,
            cmd: cmd.clone(),
            mode,
            trace,
            tx,
        });
        let free = q.in_flight < CALLS_PER_SITE;
        if free {
            q.in_flight += 1;
        }
        free
    };
    if start {
        tokio::spawn(dispatch(sites.clone(), site));
    }
    rx.await
        .unwrap_or_else(|_| Err(ClientError::Decode("the read's call was dropped".into())))
}

/// One call slot of a site: sends what is queued, then what queued meanwhile, until the queue
/// is empty.
async fn dispatch(sites: Arc<Sites>, site: usize) {
    loop {
        let batch: Vec<Pending> = {
            let mut q = sites.reads.queues[site].lock().unwrap();
            if q.waiting.is_empty() {
                q.in_flight -= 1;
                return;
            }
            let n = q.waiting.len().min(READS_PER_CALL);
            q.waiting.drain(..n).collect()
        };
        send(&sites, site, batch).await;
    }
}

async fn send(sites: &Sites, site: usize, batch: Vec<Pending>) {
    sites.reads.calls.inc();
    let Some(conn) = sites.conn(site).await else {
        for p in batch {
            let _ = p.tx.send(Err(ClientError::Connect {
                addr: sites.sites[site].name.clone(),
                message: "no connection".into(),
            }));
        }
        return;
    };
    let mut conn = conn.with_trace(batch[0].trace);
    sites.wan(site).await;
    if batch.len() == 1 {
        let p = batch.into_iter().next().expect("one read");
        let r = conn
            .read_waiting(p.shard, &p.cmd, p.mode, 0, std::time::Duration::ZERO)
            .await;
        sites.wan(site).await;
        let _ = p.tx.send(r);
        return;
    }
    sites.reads.batched.inc_by(batch.len() as u64);
    let reads: Vec<(u32, &KvCommand, pb::ReadMode)> =
        batch.iter().map(|p| (p.shard, &p.cmd, p.mode)).collect();
    let r = conn.read_batch(&reads).await;
    sites.wan(site).await;
    match r {
        Ok(answers) => {
            for (p, a) in batch.into_iter().zip(answers) {
                let _ = p.tx.send(a);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for p in batch {
                let _ = p.tx.send(Err(match &e {
                    ClientError::Rpc(s) => {
                        ClientError::Rpc(tonic::Status::new(s.code(), msg.clone()))
                    }
                    _ => ClientError::Decode(msg.clone()),
                }));
            }
        }
    }
}
