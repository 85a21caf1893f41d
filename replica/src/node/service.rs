//! The replica's client service (used by proxies, tools and tests): submit commands to a shard,
//! read at a requested path, learn the leader. Bad input is refused before it reaches a shard.
use super::shard::{ClientInput, ReadMode, Reply};
use crate::kv::{KvCommand, Op};
use crate::wire::pb;
use crate::wire::pb::replica_server::Replica;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

/// Largest encoded command accepted (a 4 KiB key and a 1 MiB value, with room for framing).
pub const MAX_COMMAND_BYTES: usize = (1 << 20) + 8192;
/// Reads in one ReadBatch call.
pub const MAX_READ_BATCH: usize = 256;

pub const MAX_BATCH: usize = 4096;
/// Largest key of a watch span (the proxy's key limit).
pub const MAX_WATCH_KEY: usize = 4096;
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct ReplicaService {
    pub links: std::sync::Arc<super::links::PeerLinks>,
    pub site: String,
    pub site_index: u32,
    pub shards: Vec<mpsc::Sender<ClientInput>>,
    pub metrics: std::sync::Arc<crate::metrics::ReplicaMetrics>,
}

/// `origin_site` on the wire is the site index + 1 (0: unknown).
fn origin(site: u32) -> Option<u8> {
    site.checked_sub(1).and_then(|s| u8::try_from(s).ok())
}

fn hint(h: Option<usize>) -> i32 {
    h.map_or(-1, |h| h as i32)
}

impl ReplicaService {
    fn shard(&self, shard: u32) -> Result<&mpsc::Sender<ClientInput>, Status> {
        self.shards.get(shard as usize).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown shard {shard}: this cluster has shards 0..{}",
                self.shards.len()
            ))
        })
    }

    async fn call(
        &self,
        shard: u32,
        make: impl FnOnce(oneshot::Sender<Reply>) -> ClientInput,
    ) -> Result<Reply, Status> {
        let (tx, rx) = oneshot::channel();
        self.shard(shard)?.try_send(make(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.metrics
                    .rejections
                    .get_or_create(&crate::metrics::ShardReason {
                        shard,
                        reason: "queue_full".into(),
                    })
                    .inc();
                Status::resource_exhausted("shard queue full; retry later")
            }
            mpsc::error::TrySendError::Closed(_) => Status::unavailable("replica shutting down"),
        })?;
        match tokio::time::timeout(DEADLINE, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(Status::unavailable(
                "request dropped (leadership changed or shutting down); retry",
            )),
            Err(_) => Err(Status::deadline_exceeded(
                "no quorum answered in time; outcome unknown, retry with the same sequence number",
            )),
        }
    }
}

fn decode(bytes: &[u8]) -> Result<KvCommand, Status> {
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(Status::invalid_argument(format!(
            "command of {} bytes exceeds {MAX_COMMAND_BYTES}",
            bytes.len()
        )));
    }
    KvCommand::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed command: {e}")))
}

/// A submitted command: checked that it decodes, kept as the bytes it came as.
fn checked(bytes: Vec<u8>) -> Result<crate::kv::EncodedCommand, Status> {
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(Status::invalid_argument(format!(
            "command of {} bytes exceeds {MAX_COMMAND_BYTES}",
            bytes.len()
        )));
    }
    crate::kv::EncodedCommand::checked(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed command: {e}")))
}

/// The span of one client RPC at this replica: a child of the caller's span when the request
/// carries a `traceparent` (see `crate::trace`).
fn request_span(rpc: &'static str, shard: u32, traceparent: Option<&str>) -> tracing::Span {
    let ctx = crate::trace::TraceContext::incoming(traceparent);
    let span = tracing::debug_span!(
        "replica_request",
        rpc,
        shard,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    crate::trace::enter(ctx, &span);
    span
}

fn record_outcome<T>(span: &tracing::Span, r: &Result<Response<T>, Status>, refused: bool) {
    let outcome = match r {
        Ok(_) if refused => "not_leader",
        Ok(_) => "ok",
        Err(s) => match s.code() {
            tonic::Code::InvalidArgument => "invalid_argument",
            tonic::Code::ResourceExhausted => "overloaded",
            tonic::Code::DeadlineExceeded => "deadline_exceeded",
            tonic::Code::Unavailable => "unavailable",
            _ => "error",
        },
    };
    span.record("outcome", outcome);
}

impl ReplicaService {
    async fn submit_inner(
        &self,
        req: pb::SubmitRequest,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        if req.commands.is_empty() || req.commands.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "a submit carries 1..={MAX_BATCH} commands, got {}",
                req.commands.len()
            )));
        }
        // Decode everything first: a malformed batch changes nothing.
        let commands = req
            .commands
            .into_iter()
            .map(checked)
            .collect::<Result<Vec<_>, _>>()?;
        match self
            .call(req.shard, |reply| ClientInput::Submit {
                commands,
                origin: origin(req.origin_site),
                reply,
            })
            .await?
        {
            Reply::Done { results, .. } => Ok(Response::new(pb::SubmitReply {
                results: results
                    .iter()
                    .map(|r| bincode::serialize(r).expect("results serialize"))
                    .collect(),
                not_leader: false,
                leader_hint: self.site_index as i32,
            })),
            Reply::Local { .. } | Reply::Timeout | Reply::NotHolder => {
                Err(Status::internal("unexpected local reply to a submit"))
            }
            Reply::Overloaded => Err(Status::resource_exhausted(
                "too many requests waiting; retry later",
            )),
            Reply::NotLeader { hint: h } => Ok(Response::new(pb::SubmitReply {
                results: vec![],
                not_leader: true,
                leader_hint: hint(h),
            })),
        }
    }

    async fn read_inner(&self, req: pb::ReadRequest) -> Result<Response<pb::ReadReply>, Status> {
        let command = decode(&req.command)?;
        if !matches!(
            command.op,
            Op::Get { .. } | Op::Range { .. } | Op::Scan { .. } | Op::ScanAt { .. }
        ) {
            return Err(Status::invalid_argument(
                "a read carries a Get, a Range, a Scan or a ScanAt",
            ));
        }
        if matches!(command.op, Op::ScanAt { .. }) && req.mode != pb::ReadMode::Local as i32 {
            // Its answer is the same at every replica that reached the revision: it is read
            // locally (the log path would answer without the watch history).
            return Err(Status::invalid_argument(
                "a read at a revision (ScanAt) is served in mode Local",
            ));
        }
        let mode = match pb::ReadMode::try_from(req.mode) {
            Ok(pb::ReadMode::Leader) => ReadMode::Leader,
            Ok(pb::ReadMode::Log) => ReadMode::Log,
            Ok(pb::ReadMode::Local) => ReadMode::Local,
            Ok(pb::ReadMode::Quorum) => ReadMode::Quorum,
            Ok(pb::ReadMode::Lease) => ReadMode::Lease,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown read mode {}",
                    req.mode
                )))
            }
        };
        match self
            .call(req.shard, |reply| ClientInput::Read {
                origin: origin(req.origin_site),
                command,
                mode,
                min_applied: req.min_applied,
                wait: match req.wait_ms {
                    0 => DEADLINE - Duration::from_millis(500),
                    ms => Duration::from_millis(ms as u64).min(DEADLINE),
                },
                reply,
            })
            .await?
        {
            Reply::Done {
                results,
                path,
                applied,
            } => Ok(Response::new(pb::ReadReply {
                result: bincode::serialize(&results[0]).expect("results serialize"),
                not_leader: false,
                leader_hint: -1,
                path: path.to_string(),
                applied_index: applied,
                barrier: 0,
                staleness_ms: 0,
                not_holder: false,
            })),
            Reply::Overloaded => Err(Status::resource_exhausted(
                "too many reads waiting for their slot; retry later",
            )),
            Reply::Timeout => Err(Status::deadline_exceeded(
                "this replica has not applied the requested slot in time; try another replica",
            )),
            Reply::NotHolder => Ok(Response::new(pb::ReadReply {
                not_holder: true,
                leader_hint: -1,
                ..Default::default()
            })),
            Reply::NotLeader { hint: h } => Ok(Response::new(pb::ReadReply {
                result: vec![],
                not_leader: true,
                leader_hint: hint(h),
                path: String::new(),
                applied_index: 0,
                barrier: 0,
                staleness_ms: 0,
                not_holder: false,
            })),
            Reply::Local {
                result,
                path,
                applied,
                barrier,
                staleness_ms,
            } => Ok(Response::new(pb::ReadReply {
                result: bincode::serialize(&result).expect("results serialize"),
                not_leader: false,
                leader_hint: -1,
                path: path.to_string(),
                applied_index: applied,
                barrier,
                staleness_ms,
                not_holder: false,
            })),
        }
    }
}

fn traceparent<T>(req: &Request<T>) -> Option<&str> {
    req.metadata()
        .get(crate::trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
}

/// The calls both the unary RPCs and the pipe (`super::pipe`) answer.
impl ReplicaService {
    pub(super) async fn submit_traced(
        &self,
        req: pb::SubmitRequest,
        traceparent: Option<&str>,
    ) -> Result<pb::SubmitReply, Status> {
        use tracing::Instrument;
        let span = request_span("submit", req.shard, traceparent);
        let r = self.submit_inner(req).instrument(span.clone()).await;
        let refused = r.as_ref().is_ok_and(|x| x.get_ref().not_leader);
        record_outcome(&span, &r, refused);
        r.map(Response::into_inner)
    }

    pub(super) async fn read_traced(
        &self,
        req: pb::ReadRequest,
        traceparent: Option<&str>,
    ) -> Result<pb::ReadReply, Status> {
        use tracing::Instrument;
        let span = request_span("read", req.shard, traceparent);
        let r = self.read_inner(req).instrument(span.clone()).await;
        let refused = r
            .as_ref()
            .is_ok_and(|x| x.get_ref().not_leader || x.get_ref().not_holder);
        record_outcome(&span, &r, refused);
        r.map(Response::into_inner)
    }

    pub(super) async fn read_batch_inner(
        &self,
        reads: Vec<pb::ReadRequest>,
    ) -> Result<pb::ReadBatchReply, Status> {
        use tracing::Instrument;
        if reads.is_empty() || reads.len() > MAX_READ_BATCH {
            return Err(Status::invalid_argument(format!(
                "a read batch carries 1..={MAX_READ_BATCH} reads, got {}",
                reads.len()
            )));
        }
        let span = tracing::debug_span!("read_batch", reads = reads.len());
        let answers = futures::future::join_all(reads.into_iter().map(|r| self.read_inner(r)))
            .instrument(span)
            .await;
        Ok(pb::ReadBatchReply {
            items: answers
                .into_iter()
                .map(|a| match a {
                    Ok(r) => pb::ReadBatchItem {
                        reply: Some(r.into_inner()),
                        code: 0,
                        message: String::new(),
                    },
                    Err(s) => pb::ReadBatchItem {
                        reply: None,
                        code: s.code() as i32,
                        message: s.message().to_string(),
                    },
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl Replica for ReplicaService {
    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        let trace = traceparent(&req).map(str::to_string);
        self.submit_traced(req.into_inner(), trace.as_deref())
            .await
            .map(Response::new)
    }

    type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<pb::WatchReply, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        if r.start.len() > MAX_WATCH_KEY || r.end.len() > MAX_WATCH_KEY {
            return Err(Status::invalid_argument(format!(
                "a watch span's keys are at most {} bytes",
                MAX_WATCH_KEY
            )));
        }
        if !r.end.is_empty() && r.end <= r.start {
            return Err(Status::invalid_argument(
                "a watch span [start, end) needs start < end (or an empty end: unbounded)",
            ));
        }
        let (tx, rx) = mpsc::channel(super::shard::WATCH_BUFFER);
        self.shard(r.shard)?
            .send(ClientInput::Watch {
                start: r.start,
                end: r.end,
                from: r.start_revision,
                prev_kv: r.prev_kv,
                tx,
            })
            .await
            .map_err(|_| Status::unavailable("replica shutting down"))?;
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn read_batch(
        &self,
        req: Request<pb::ReadBatchRequest>,
    ) -> Result<Response<pb::ReadBatchReply>, Status> {
        self.read_batch_inner(req.into_inner().reads)
            .await
            .map(Response::new)
    }

    async fn read(&self, req: Request<pb::ReadRequest>) -> Result<Response<pb::ReadReply>, Status> {
        let trace = traceparent(&req).map(str::to_string);
        self.read_traced(req.into_inner(), trace.as_deref())
            .await
            .map(Response::new)
    }

    type PipeStream = tokio_stream::wrappers::ReceiverStream<Result<pb::PipeReply, Status>>;

    async fn pipe(
        &self,
        req: Request<tonic::Streaming<pb::PipeRequest>>,
    ) -> Result<Response<Self::PipeStream>, Status> {
        Ok(Response::new(super::pipe::serve(
            self.clone(),
            req.into_inner(),
        )))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let mut shards = Vec::new();
        for (i, s) in self.shards.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            if s.send(ClientInput::Status { reply: tx }).await.is_err() {
                return Err(Status::unavailable("replica shutting down"));
            }
            let full = rx
                .await
                .map_err(|_| Status::unavailable("replica shutting down"))?;
            let st = &full.info;
            shards.push(pb::ShardStatus {
                shard: i as u32,
                is_leader: st.is_leader,
                leader_hint: hint(st.leader_hint),
                ballot_round: st.ballot_round,
                ballot_site: st.ballot_site,
                commit_index: st.commit,
                applied_index: st.applied,
                holds_lease: st.holds_lease,
                revision: st.revision,
                state_digest: st.state_digest,
                digest_version: crate::kv::DIGEST_VERSION,
                wal_bytes: full.wal_bytes,
                wal_grown_bytes: full.wal_grown,
                compact_threshold_bytes: st.compact_threshold,
                fsync_us_last: full.fsync_us_last,
                holds_quorum_lease: st.holds_quorum_lease,
                lease_holders: st.lease_holders.iter().map(|s| *s as u32).collect(),
                demand_reads: st.demand_reads.clone(),
                demand_writes: st.demand_writes.clone(),
                churn: full
                    .churn
                    .iter()
                    .map(|(age, k)| pb::ChurnEvent {
                        age_ms: age.as_millis() as u64,
                        kind: k.name().to_string(),
                        counts: k.counts_as_churn(),
                    })
                    .collect(),
            });
        }
        Ok(Response::new(pb::StatusReply {
            site: self.site.clone(),
            site_index: self.site_index,
            shards,
            peer_rtt_ms: self.links.rtt_ms(),
        }))
    }
}
