//! The tokio side of the sans-IO operations in `logic`: performs their calls on the persistent
//! site connections (with the emulated WAN around each) and feeds the results back.
use crate::logic::{Call, CallKind, CallResult, ServiceError, SiteRead, Step};
use crate::sites::Sites;
use futures::stream::{FuturesUnordered, StreamExt};
use meridian_replica::client::{ClientError, Outcome};
use meridian_replica::driver::ReadMode;
use meridian_replica::kv::{KvCommand, KvResult, Op};
use meridian_replica::wire::pb;
use std::sync::Arc;
use std::time::Duration;

/// Runs an operation to its end: `first` are its starting steps, `on_result(now, id, site, r)`
/// its reaction to each call result. Calls still in flight when it is done finish in the
/// background (each within its own timeout): cancelling them would reset their streams, and a
/// burst of resets (every quorum read leaves n − q laggards) makes an HTTP/2 server drop the
/// connection as a rapid-reset attack.
pub async fn drive<T>(
    sites: &Arc<Sites>,
    shard: u32,
    read: Option<&KvCommand>,
    first: Vec<Step<T>>,
    mut on_result: impl FnMut(Duration, u32, usize, CallResult) -> Vec<Step<T>>,
) -> Result<T, ServiceError> {
    let mut inflight = FuturesUnordered::new();
    let initial = first.iter().filter(|s| matches!(s, Step::Call(_))).count();
    let mut calls = 0usize;
    // Calls carry the current span's trace context (the request's, or its batch's).
    let trace = meridian_replica::trace::current();
    let mut steps = first;
    loop {
        for s in steps.drain(..) {
            match s {
                Step::Done(r) => {
                    let span = tracing::Span::current();
                    span.record("calls", calls);
                    span.record("retries", calls.saturating_sub(initial));
                    if !inflight.is_empty() {
                        tokio::spawn(async move { while inflight.next().await.is_some() {} });
                    }
                    return r;
                }
                Step::Call(c) => {
                    calls += 1;
                    inflight.push(perform(sites.clone(), shard, read.cloned(), c, trace))
                }
            }
        }
        match inflight.next().await {
            Some((id, site, r)) => steps = on_result(sites.now(), id, site, r),
            None => return Err(ServiceError::Timeout(crate::logic::READ_TIMEOUT)),
        }
    }
}

async fn perform(
    sites: Arc<Sites>,
    shard: u32,
    read: Option<KvCommand>,
    c: Call,
    trace: Option<meridian_replica::trace::TraceContext>,
) -> (u32, usize, CallResult) {
    if !c.delay.is_zero() {
        tokio::time::sleep(c.delay).await;
    }
    let r = tokio::time::timeout(
        c.timeout,
        call(&sites, shard, read.as_ref(), c.site, c.kind, trace),
    )
    .await;
    (c.id, c.site, r.unwrap_or(CallResult::Failed))
}

fn from_error(e: ClientError) -> CallResult {
    match e {
        ClientError::Rpc(s) if s.code() == tonic::Code::InvalidArgument => {
            CallResult::Refused(s.message().to_string())
        }
        _ => CallResult::Failed,
    }
}

fn wire_mode(mode: ReadMode) -> pb::ReadMode {
    match mode {
        ReadMode::Leader => pb::ReadMode::Leader,
        ReadMode::Log => pb::ReadMode::Log,
        ReadMode::Local => pb::ReadMode::Local,
        ReadMode::Quorum => pb::ReadMode::Quorum,
        ReadMode::Lease => pb::ReadMode::Lease,
    }
}

fn read_result(answer: Result<Outcome<pb::ReadReply>, ClientError>) -> CallResult {
    match answer {
        Ok(Outcome::Ok(r)) if r.not_holder => CallResult::NotHolder,
        Ok(Outcome::Ok(r)) => match bincode::deserialize::<KvResult>(&r.result) {
            Ok(result) => CallResult::Read(SiteRead {
                result,
                path: r.path,
                applied: r.applied_index,
                barrier: r.barrier,
                staleness_ms: r.staleness_ms,
            }),
            Err(_) => CallResult::Failed,
        },
        Ok(Outcome::NotLeader(h)) => CallResult::NotLeader(h),
        Err(e) => from_error(e),
    }
}

async fn call(
    sites: &Arc<Sites>,
    shard: u32,
    read: Option<&KvCommand>,
    site: usize,
    kind: CallKind,
    trace: Option<meridian_replica::trace::TraceContext>,
) -> CallResult {
    // Point reads the replica answers at once may share a call with others to the same site
    // (`read_batch`, which carries the emulated delay both ways).
    if let (
        CallKind::Read {
            mode: mode @ (ReadMode::Leader | ReadMode::Local | ReadMode::Quorum),
            min_applied: 0,
            wait,
        },
        Some(
            cmd @ KvCommand {
                op: Op::Get { .. }, ..
            },
        ),
    ) = (&kind, read)
    {
        if wait.is_zero() {
            let r = crate::read_batch::read(sites, site, shard, cmd, wire_mode(*mode), trace).await;
            return read_result(r);
        }
    }
    let Some(conn) = sites.conn(site).await else {
        return CallResult::Failed;
    };
    let mut conn = conn.with_trace(trace);
    sites.wan(site).await;
    let r = match kind {
        CallKind::Submit { commands } => match conn.submit(shard, &commands).await {
            Ok(Outcome::Ok(results)) => CallResult::Submit(results),
            Ok(Outcome::NotLeader(h)) => CallResult::NotLeader(h),
            Err(e) => from_error(e),
        },
        CallKind::Read {
            mode,
            min_applied,
            wait,
        } => {
            let cmd = read.expect("reads carry their command");
            read_result(
                conn.read_waiting(shard, cmd, wire_mode(mode), min_applied, wait)
                    .await,
            )
        }
    };
    sites.wan(site).await;
    r
}
