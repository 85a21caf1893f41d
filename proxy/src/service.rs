//! The service layer both client edges (HTTP/JSON and native gRPC) call: admission, identities,
//! size limits, routing, and the read and write paths, with one typed error (`ServiceError`)
//! that each edge maps to its status codes.
use crate::auth::{self, Access, Identity};
use crate::logic::{ReadOutcome, ServiceError};
use crate::reads::{Consistency, Mode};
use crate::Proxy;
use meridian_replica::kv::{KeyValue, KvCommand, KvResult, Op, Txn, TxnOp};
use meridian_replica::node::MAX_COMMAND_BYTES;
use meridian_replica::trace::{self, TraceContext};
use tracing::Instrument;

pub struct RangeAnswer {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    /// The path each shard's read took, in shard order.
    pub paths: Vec<&'static str>,
}

/// The path of a read over several shards: theirs when they all took the same, else `mixed`.
fn merged_path(paths: &[&'static str]) -> &'static str {
    match paths.first() {
        Some(p) if paths.iter().all(|q| q == p) => p,
        Some(_) => "mixed",
        None => "none",
    }
}

/// Every key a transaction touches.
pub fn txn_keys(t: &Txn) -> Vec<&[u8]> {
    let (ops, compares) = t.all_ops();
    let ops = ops.into_iter().map(|o| match o {
        TxnOp::Put { key, .. }
        | TxnOp::Append { key, .. }
        | TxnOp::PutLease { key, .. }
        | TxnOp::Delete { key }
        | TxnOp::Get { key }
        | TxnOp::Range { start: key, .. }
        | TxnOp::DeleteRange { start: key, .. } => key.as_slice(),
        TxnOp::Txn(_) => unreachable!("all_ops leaves nested transactions out"),
    });
    compares
        .into_iter()
        .map(|c| c.key.as_slice())
        .chain(ops)
        .collect()
}

/// The span of one client request at the proxy (see `meridian_replica::trace`): its ids are the
/// trace context the edge put in scope (a child of the client's `traceparent`), or a new root.
/// Returns the context too, for the calls made under it.
fn request_span(op: &'static str) -> (TraceContext, tracing::Span) {
    let ctx = trace::current().unwrap_or_else(TraceContext::root);
    let span = tracing::debug_span!(
        "request",
        op,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span = tracing::field::Empty,
        shard = tracing::field::Empty,
        path = tracing::field::Empty,
        calls = tracing::field::Empty,
        retries = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let ctx = trace::enter(ctx, &span);
    trace::replace_current(ctx);
    (ctx, span)
}

fn record_outcome<T>(span: &tracing::Span, r: &Result<T, ServiceError>, path: &str) {
    span.record("path", path);
    span.record(
        "outcome",
        r.as_ref().map_or_else(crate::metrics::outcome, |_| "ok"),
    );
}

impl Proxy {
    fn read_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ServiceError> {
        self.reads
            .clone()
            .try_acquire_owned()
            .map_err(|_| ServiceError::Overloaded)
    }

    /// A point read on the requested path.
    pub async fn get(
        &self,
        who: Option<&Identity>,
        key: Vec<u8>,
        c: Consistency,
        mode: Mode,
    ) -> Result<(u32, ReadOutcome), ServiceError> {
        auth::allow(who, &key, Access::Read).map_err(|e| self.refused(who, e))?;
        let t0 = std::time::Instant::now();
        let (ctx, span) = request_span("get");
        span.record("shard", self.placement.shard(&key));
        let r = trace::scope(ctx, self.get_inner(key, c, mode))
            .instrument(span.clone())
            .await;
        let path = r.as_ref().map_or("none", |(_, o)| o.path);
        record_outcome(&span, &r, path);
        self.metrics
            .finished("get", path, t0, r.as_ref().map(|_| ()));
        r
    }

    async fn get_inner(
        &self,
        key: Vec<u8>,
        c: Consistency,
        mode: Mode,
    ) -> Result<(u32, ReadOutcome), ServiceError> {
        let _permit = self.read_permit()?;
        let shard = self.placement.shard(&key);
        let cmd = KvCommand {
            client: 0,
            seq: 0,
            op: Op::Get { key },
        };
        let o = self
            .reader
            .read(shard, &cmd, c, mode, self.deadline)
            .await?;
        Ok((shard, o))
    }

    /// A prefix range over every shard (or the one shard of a co-located prefix), read in
    /// parallel, merged in key order.
    pub async fn range(
        &self,
        who: Option<&Identity>,
        prefix: Vec<u8>,
        limit: usize,
        c: Consistency,
        mode: Mode,
    ) -> Result<RangeAnswer, ServiceError> {
        auth::allow_range(who, &prefix).map_err(|e| self.refused(who, e))?;
        let t0 = std::time::Instant::now();
        let (ctx, span) = request_span("range");
        let r = trace::scope(ctx, self.range_inner(prefix, limit, c, mode))
            .instrument(span.clone())
            .await;
        let path = r.as_ref().map_or("none", |a| merged_path(&a.paths));
        record_outcome(&span, &r, path);
        self.metrics
            .finished("range", path, t0, r.as_ref().map(|_| ()));
        r
    }

    async fn range_inner(
        &self,
        prefix: Vec<u8>,
        limit: usize,
        c: Consistency,
        mode: Mode,
    ) -> Result<RangeAnswer, ServiceError> {
        let _permit = self.read_permit()?;
        let shards = self
            .placement
            .span_shards(&prefix, &crate::route::prefix_end(&prefix));
        let reads = shards.into_iter().map(|shard| {
            let cmd = KvCommand {
                client: 0,
                seq: 0,
                op: Op::Range {
                    prefix: prefix.clone(),
                    limit,
                },
            };
            async move { self.reader.read(shard, &cmd, c, mode, self.deadline).await }
        });
        let results = futures::future::join_all(reads).await;
        let mut answer = RangeAnswer {
            kvs: Vec::new(),
            more: false,
            paths: Vec::new(),
        };
        for r in results {
            let o = r?;
            match o.result.outcome {
                meridian_replica::kv::Outcome::Range { kvs, more } => {
                    answer.kvs.extend(kvs);
                    answer.more |= more;
                }
                other => {
                    return Err(ServiceError::Refused(format!(
                        "a range was answered with {other:?}"
                    )))
                }
            }
            answer.paths.push(o.path);
        }
        answer.kvs.sort_by(|a, b| a.key.cmp(&b.key));
        if answer.kvs.len() > limit {
            answer.kvs.truncate(limit);
            answer.more = true;
        }
        Ok(answer)
    }

    /// One write with an exactly-once identity from the pool. The identity returns to the pool
    /// whenever this future ends — completed, failed, or dropped because the client hung up.
    pub async fn write(
        &self,
        who: Option<&Identity>,
        shard: u32,
        op: Op,
    ) -> Result<KvResult, ServiceError> {
        match &op {
            Op::Put { key, .. } | Op::Delete { key } => auth::allow(who, key, Access::Write),
            Op::Txn(t) => auth::allow_txn(who, t),
            Op::Get { key } => auth::allow(who, key, Access::Read),
            Op::Range { prefix, .. } => auth::allow_range(who, prefix),
            Op::Scan { start, end, .. } | Op::ScanAt { start, end, .. } => {
                auth::allow_span(who, start, end, Access::Read)
            }
            Op::DeleteRange { start, end } => auth::allow_span(who, start, end, Access::Write),
            // Configuration: root only (an empty key no role's prefix can cover but root's).
            Op::SetLeaseHolders { .. } | Op::Compact { .. } | Op::LeaseExpire { .. } => {
                auth::allow(who, b"", Access::Write)
            }
            Op::LeasePut { key, .. } => auth::allow(who, key, Access::Write),
            Op::LeaseRevoke { .. } => auth::allow_lease_revoke(who),
            Op::LeaseGrant { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseInfo { .. }
            | Op::LeaseList => Ok(()),
        }
        .map_err(|e| self.refused(who, e))?;
        let t0 = std::time::Instant::now();
        let name = match &op {
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Txn(_) => "txn",
            Op::DeleteRange { .. } => "delete",
            _ => "write",
        };
        let (ctx, span) = request_span(name);
        span.record("shard", shard);
        let r = trace::scope(ctx, self.write_inner(shard, op))
            .instrument(span.clone())
            .await;
        record_outcome(&span, &r, "leader");
        self.metrics
            .finished(name, "leader", t0, r.as_ref().map(|_| ()));
        r
    }

    async fn write_inner(&self, shard: u32, op: Op) -> Result<KvResult, ServiceError> {
        let id = self.sessions.acquire().ok_or(ServiceError::Overloaded)?;
        let cmd = KvCommand {
            client: id.client,
            seq: id.seq,
            op,
        };
        let bytes = cmd.encoded_len();
        if bytes > MAX_COMMAND_BYTES {
            return Err(ServiceError::TooLarge(format!(
                "the request encodes to {bytes} bytes; one command is at most {MAX_COMMAND_BYTES}"
            )));
        }
        let r = self.batcher.write(shard, cmd, bytes, self.deadline).await;
        drop(id);
        r
    }

    /// A transaction: every key must live on one shard.
    pub async fn txn(
        &self,
        who: Option<&Identity>,
        t: Txn,
    ) -> Result<(u32, KvResult), ServiceError> {
        auth::allow_txn(who, &t).map_err(|e| self.refused(who, e))?;
        let keys = txn_keys(&t);
        let first = keys
            .first()
            .ok_or_else(|| ServiceError::BadRequest("an empty transaction".into()))?;
        let shard = self.placement.shard(first);
        for o in t.all_ops().0 {
            let (TxnOp::Range { start, end } | TxnOp::DeleteRange { start, end }) = o else {
                continue;
            };
            if self.placement.span_shard(start, end) != Some(shard) {
                return Err(ServiceError::BadRequest(format!(
                    "a range over several keys inside a transaction must lie on the transaction's shard: ['{}', '{}') may hold keys of any of the {} shards; co-locate its prefix (cluster.colocate) or use a one-shard cluster",
                    String::from_utf8_lossy(start),
                    String::from_utf8_lossy(end),
                    self.shards
                )));
            }
        }
        if let Some(k) = keys.iter().find(|k| self.placement.shard(k) != shard) {
            return Err(ServiceError::BadRequest(format!(
                "keys span shards {shard} and {} ('{}'); a transaction must stay within one shard",
                self.placement.shard(k),
                String::from_utf8_lossy(k)
            )));
        }
        let r = self.write(who, shard, Op::Txn(t)).await?;
        Ok((shard, r))
    }
}

/// What a read at a revision found (`Proxy::scan_at`).
#[derive(Debug)]
pub enum AtRevision {
    /// The span's keys at the revision (at most the limit), how many there were, and the
    /// shard's revision when they were read.
    Keys {
        kvs: Vec<KeyValue>,
        count: u64,
        revision: u64,
    },
    /// The history below `horizon` is gone.
    Compacted(u64),
    /// The shard's revision (below the one asked for).
    Future(u64),
}

/// The answer of a span read over every shard.
pub struct ScanAnswer {
    pub kvs: Vec<KeyValue>,
    /// Keys the span holds beyond `kvs` (the limit cut them).
    pub more: bool,
    /// How many keys the span holds.
    pub count: u64,
    /// Each shard read (`shard`, its revision at the read), in shard order: every shard, or
    /// the one a co-located span lies on.
    pub revisions: Vec<(u32, u64)>,
    /// The path each shard's read took, in shard order.
    pub paths: Vec<&'static str>,
}

impl Proxy {
    /// The keys in `[start, end)` (`end` empty: unbounded) over every shard, read in parallel
    /// on the requested path, merged in key order and cut at `limit` (0: all) — each shard
    /// returns its first `limit`, so the merge holds the span's first `limit`.
    pub async fn scan(
        &self,
        who: Option<&Identity>,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        c: Consistency,
        mode: Mode,
    ) -> Result<ScanAnswer, ServiceError> {
        auth::allow_span(who, &start, &end, Access::Read).map_err(|e| self.refused(who, e))?;
        let t0 = std::time::Instant::now();
        let (ctx, span) = request_span("range");
        let r = trace::scope(ctx, async {
            let _permit = self.read_permit()?;
            let shards = self.placement.span_shards(&start, &end);
            let reads = shards.iter().map(|&shard| {
                let cmd = KvCommand {
                    client: 0,
                    seq: 0,
                    op: Op::Scan {
                        start: start.clone(),
                        end: end.clone(),
                        limit,
                    },
                };
                async move { self.reader.read(shard, &cmd, c, mode, self.deadline).await }
            });
            let mut a = ScanAnswer {
                kvs: Vec::new(),
                more: false,
                count: 0,
                revisions: Vec::new(),
                paths: Vec::new(),
            };
            for (r, &shard) in futures::future::join_all(reads)
                .await
                .into_iter()
                .zip(&shards)
            {
                let o = r?;
                a.revisions.push((shard, o.result.revision));
                a.paths.push(o.path);
                match o.result.outcome {
                    meridian_replica::kv::Outcome::Scan { kvs, count, .. } => {
                        a.kvs.extend(kvs);
                        a.count += count;
                    }
                    other => {
                        return Err(ServiceError::Refused(format!(
                            "a scan was answered with {other:?}"
                        )))
                    }
                }
            }
            a.kvs.sort_by(|x, y| x.key.cmp(&y.key));
            if limit > 0 {
                a.kvs.truncate(limit);
            }
            a.more = (a.kvs.len() as u64) < a.count;
            Ok(a)
        })
        .instrument(span.clone())
        .await;
        let path = r.as_ref().map_or("none", |a| merged_path(&a.paths));
        record_outcome(&span, &r, path);
        self.metrics
            .finished("range", path, t0, r.as_ref().map(|_| ()));
        r
    }

    /// The keys of `[start, end)` on `shard` as they were at the shard's `revision` (etcd's
    /// Range with a revision), at most `limit` (0: all). The answer is the same at every
    /// replica that has applied the revision, so the nearest answers; one that has not yet is
    /// asked again until it has, once a linearizable read showed the revision exists (else
    /// `AtRevision::Future`, at once).
    pub async fn scan_at(
        &self,
        who: Option<&Identity>,
        shard: u32,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        revision: u64,
    ) -> Result<AtRevision, ServiceError> {
        auth::allow_span(who, &start, &end, Access::Read).map_err(|e| self.refused(who, e))?;
        let _permit = self.read_permit()?;
        let cmd = KvCommand {
            client: 0,
            seq: 0,
            op: Op::ScanAt {
                start: start.clone(),
                end,
                limit,
                revision,
            },
        };
        let until = std::time::Instant::now() + self.deadline;
        let mut exists = false;
        loop {
            let o = self
                .reader
                .read(
                    shard,
                    &cmd,
                    Consistency::Serializable,
                    Mode::Auto,
                    self.deadline,
                )
                .await?;
            match o.result.outcome {
                meridian_replica::kv::Outcome::Scan { kvs, count, .. } => {
                    return Ok(AtRevision::Keys {
                        kvs,
                        count,
                        revision: o.result.revision,
                    })
                }
                meridian_replica::kv::Outcome::Compacted { horizon } => {
                    return Ok(AtRevision::Compacted(horizon))
                }
                meridian_replica::kv::Outcome::FutureRevision if !exists => {
                    let probe = KvCommand {
                        client: 0,
                        seq: 0,
                        op: Op::Get { key: start.clone() },
                    };
                    let current = self
                        .reader
                        .read(
                            shard,
                            &probe,
                            Consistency::Linearizable,
                            Mode::Auto,
                            self.deadline,
                        )
                        .await?
                        .result
                        .revision;
                    if current < revision {
                        return Ok(AtRevision::Future(current));
                    }
                    exists = true;
                }
                meridian_replica::kv::Outcome::FutureRevision => {
                    if std::time::Instant::now() >= until {
                        return Err(ServiceError::Timeout(
                            "the nearest replica did not reach the revision in time",
                        ));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                other => {
                    return Err(ServiceError::Refused(format!(
                        "a read at a revision was answered with {other:?}"
                    )))
                }
            }
        }
    }

    /// Deletes every key in `[start, end)` (`end` empty: unbounded): one write per shard the
    /// span may hold keys of, each atomic in its shard (not across shards). Returns the deleted
    /// keys in key order and each shard written with its revision after the write.
    pub async fn delete_span(
        &self,
        who: Option<&Identity>,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> Result<(Vec<KeyValue>, Vec<(u32, u64)>), ServiceError> {
        auth::allow_span(who, &start, &end, Access::Write).map_err(|e| self.refused(who, e))?;
        let shards = self.placement.span_shards(&start, &end);
        let writes = shards.iter().map(|&shard| {
            let op = Op::DeleteRange {
                start: start.clone(),
                end: end.clone(),
            };
            async move { self.write(who, shard, op).await }
        });
        let (mut deleted, mut revisions) = (Vec::new(), Vec::new());
        for (r, &shard) in futures::future::join_all(writes)
            .await
            .into_iter()
            .zip(&shards)
        {
            let r = r?;
            revisions.push((shard, r.revision));
            if let meridian_replica::kv::Outcome::DeletedRange { deleted: d } = r.outcome {
                deleted.extend(d);
            }
        }
        deleted.sort_by(|x, y| x.key.cmp(&y.key));
        Ok((deleted, revisions))
    }
}
