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
///
/// While an operation has exactly one call in flight and no other waiting (a read answered by
/// one replica, a write batch to a known leader: nearly every request), that call is awaited in
/// place; the set of concurrent calls (`FuturesUnordered`: two allocations to create, one per
/// call, and a wake-up through its queue per result) is built only once a second call is
/// wanted.
pub async fn drive<T>(
    sites: &Arc<Sites>,
    shard: u32,
    read: Option<&KvCommand>,
    first: Vec<Step<T>>,
    mut on_result: impl FnMut(Duration, u32, usize, CallResult) -> Vec<Step<T>>,
) -> Result<T, ServiceError> {
    let mut inflight = None;
    let initial = first.iter().filter(|s| matches!(s, Step::Call(_))).count();
    let mut calls = 0usize;
    // Calls carry the current span's trace context (the request's, or its batch's).
    let trace = meridian_replica::trace::current();
    let mut steps = first;
    loop {
        if inflight.as_ref().is_none_or(FuturesUnordered::is_empty) {
            if let Some(c) = single_immediate_call(&mut steps) {
                calls += 1;
                // Boxed: the call's future is large, and inline it would grow every request's
                // future, which the connection's service boxes and moves per request.
                let (id, site, r) = Box::pin(perform_ref(sites, shard, read, c, trace)).await;
                steps = on_result(sites.now(), id, site, r);
                continue;
            }
        }
        for s in steps.drain(..) {
            match s {
                Step::Done(r) => {
                    let span = tracing::Span::current();
                    span.record("calls", calls);
                    span.record("retries", calls.saturating_sub(initial));
                    if let Some(mut rest) = inflight.take().filter(|f| !f.is_empty()) {
                        tokio::spawn(async move { while rest.next().await.is_some() {} });
                    }
                    return r;
                }
                Step::Call(c) => {
                    calls += 1;
                    inflight
                        .get_or_insert_with(FuturesUnordered::new)
                        .push(perform(sites.clone(), shard, read.cloned(), c, trace))
                }
            }
        }
        match inflight.as_mut() {
            Some(f) => match f.next().await {
                Some((id, site, r)) => steps = on_result(sites.now(), id, site, r),
                None => return Err(ServiceError::Timeout(crate::logic::READ_TIMEOUT)),
            },
            None => return Err(ServiceError::Timeout(crate::logic::READ_TIMEOUT)),
        }
    }
}

/// The one call of `steps` when they are exactly one call to start now (taken out of them).
fn single_immediate_call<T>(steps: &mut Vec<Step<T>>) -> Option<Call> {
    match steps.as_slice() {
        [Step::Call(c)] if c.delay.is_zero() => match steps.pop() {
            Some(Step::Call(c)) => Some(c),
            _ => None,
        },
        _ => None,
    }
}

/// A call that owns what it needs, for the set of concurrent calls (which may outlive the
/// request: see `drive`).
async fn perform(
    sites: Arc<Sites>,
    shard: u32,
    read: Option<KvCommand>,
    c: Call,
    trace: Option<meridian_replica::trace::TraceContext>,
) -> (u32, usize, CallResult) {
    perform_ref(&sites, shard, read.as_ref(), c, trace).await
}

async fn perform_ref(
    sites: &Arc<Sites>,
    shard: u32,
    read: Option<&KvCommand>,
    c: Call,
    trace: Option<meridian_replica::trace::TraceContext>,
) -> (u32, usize, CallResult) {
    if !c.delay.is_zero() {
        tokio::time::sleep(c.delay).await;
    }
    let r = tokio::time::timeout(c.timeout, call(sites, shard, read, c.site, c.kind, trace)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: u32, delay_ms: u64) -> Step<()> {
        Step::Call(Call {
            id,
            site: 0,
            kind: CallKind::Read {
                mode: ReadMode::Local,
                min_applied: 0,
                wait: Duration::ZERO,
            },
            delay: Duration::from_millis(delay_ms),
            timeout: Duration::from_secs(1),
        })
    }

    /// Only a lone call to start now is awaited in place; anything else (a hedge, two calls,
    /// a result) goes through the set of concurrent calls, untouched.
    #[test]
    fn only_a_lone_immediate_call_takes_the_fast_path() {
        let mut one = vec![call(7, 0)];
        assert_eq!(single_immediate_call(&mut one).map(|c| c.id), Some(7));
        assert!(one.is_empty());
        for mut steps in [
            vec![call(1, 5)],
            vec![call(1, 0), call(2, 0)],
            vec![call(1, 0), call(2, 30)],
            vec![Step::Done(Ok(()))],
            vec![],
        ] {
            let n = steps.len();
            assert!(single_immediate_call(&mut steps).is_none());
            assert_eq!(steps.len(), n, "steps left as they were");
        }
    }
}
