//! A client of replicas' client service over mutual TLS (for tools, the demo and tests).
use crate::kv::{KvCommand, KvResult};
use crate::tls::TlsFiles;
use crate::wire::pb;
use crate::wire::pb::replica_client::ReplicaClient as Grpc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("rpc: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("not leader (hint: {hint:?})")]
    NotLeader { hint: Option<usize> },
    #[error("bad reply: {0}")]
    Decode(String),
}

/// Calls larger than this (encoded) leave unary even on a piped client.
pub const PIPE_MAX_CALL: usize = 64 << 10;

#[derive(Clone)]
pub struct ReplicaClient {
    inner: Grpc<Channel>,
    /// Sent with every request: the caller's own site + 1 (0: none).
    origin_site: u32,
    /// Sent with every request as `traceparent` metadata.
    trace: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// Submit, Read and ReadBatch over one persistent stream (`with_pipe`), else unary.
    pipe: Option<std::sync::Arc<crate::client_pipe::PipeSlot>>,
}

pub enum Outcome<T> {
    Ok(T),
    NotLeader(Option<usize>),
}

impl ReplicaClient {
    /// `addr`: `ip:port` or `dns-name:port`.
    pub async fn connect(
        addr: impl std::fmt::Display,
        tls: &TlsFiles,
    ) -> Result<ReplicaClient, ClientError> {
        let err = |message: String| ClientError::Connect {
            addr: addr.to_string(),
            message,
        };
        let ep = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| err(e.to_string()))?
            .tls_config(tls.client_config().map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(3));
        let ch = ep.connect().await.map_err(|e| err(format!("{e:?}")))?;
        Ok(ReplicaClient {
            inner: Grpc::new(ch)
                .max_decoding_message_size(8 << 20)
                .max_encoding_message_size(8 << 20),
            origin_site: 0,
            trace: None,
            pipe: None,
        })
    }

    /// Requests carry `ctx` as their `traceparent` (the caller's span: the replica's span for
    /// the request becomes its child).
    pub fn with_trace(mut self, ctx: Option<crate::trace::TraceContext>) -> ReplicaClient {
        self.trace = ctx.and_then(|c| c.traceparent().parse().ok());
        self
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.trace {
            r.metadata_mut()
                .insert(crate::trace::TRACEPARENT, t.clone());
        }
        r
    }

    /// Submit, Read and ReadBatch travel over one persistent `Pipe` stream shared by this
    /// client's clones (one message each way per call instead of an HTTP/2 stream each);
    /// unary if the replica does not serve pipes.
    pub fn with_pipe(mut self) -> ReplicaClient {
        self.pipe = Some(Default::default());
        self
    }

    /// Whether this client's calls travel on an open pipe now (false before the first call,
    /// while it is broken, and when the replica serves none).
    pub fn pipe_open(&self) -> bool {
        self.pipe.as_ref().is_some_and(|p| p.is_open())
    }

    /// `call` over the pipe; the call back when there is none (call it unary).
    async fn piped(
        &self,
        call: pb::pipe_request::Call,
    ) -> Result<Result<pb::pipe_reply::Reply, ClientError>, pb::pipe_request::Call> {
        use prost::Message;
        let Some(slot) = self.pipe.as_ref() else {
            return Err(call);
        };
        let len = match &call {
            pb::pipe_request::Call::Submit(r) => r.encoded_len(),
            pb::pipe_request::Call::Read(r) => r.encoded_len(),
            pb::pipe_request::Call::ReadBatch(r) => r.encoded_len(),
        };
        if len > PIPE_MAX_CALL {
            // Its own HTTP/2 stream: the frames of other calls interleave with a large one's,
            // where on the pipe they would wait behind all of it.
            return Err(call);
        }
        let trace = self
            .trace
            .as_ref()
            .and_then(|t| t.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(slot
            .call(&self.inner, call, trace)
            .await?
            .map_err(ClientError::Rpc))
    }

    /// Requests say they come from `site` (a proxy's own site), so the replicas can count
    /// where reads come from (`[leases] mode = "auto"`).
    pub fn with_origin(mut self, site: Option<usize>) -> ReplicaClient {
        self.origin_site = site.map_or(0, |s| s as u32 + 1);
        self
    }

    /// A watch stream over `[start, end)` of `shard` from `from` (0: the next revision).
    pub async fn watch(
        &mut self,
        shard: u32,
        start: &[u8],
        end: &[u8],
        from: u64,
        prev_kv: bool,
    ) -> Result<tonic::Streaming<pb::WatchReply>, ClientError> {
        let req = pb::WatchRequest {
            shard,
            start: start.to_vec(),
            end: end.to_vec(),
            start_revision: from,
            prev_kv,
        };
        Ok(self.inner.watch(self.request(req)).await?.into_inner())
    }

    pub async fn status(&mut self) -> Result<pb::StatusReply, ClientError> {
        Ok(self.inner.status(pb::StatusRequest {}).await?.into_inner())
    }

    pub async fn submit(
        &mut self,
        shard: u32,
        cmds: &[KvCommand],
    ) -> Result<Outcome<Vec<KvResult>>, ClientError> {
        let req = pb::SubmitRequest {
            shard,
            commands: cmds.iter().map(|c| c.encode()).collect(),
            origin_site: self.origin_site,
        };
        let r = match self.piped(pb::pipe_request::Call::Submit(req)).await {
            Ok(Ok(pb::pipe_reply::Reply::Submit(r))) => r,
            Ok(Ok(_)) => return Err(mismatched()),
            Ok(Err(e)) => return Err(e),
            Err(pb::pipe_request::Call::Submit(req)) => {
                self.inner.submit(self.request(req)).await?.into_inner()
            }
            Err(_) => return Err(mismatched()),
        };
        if r.not_leader {
            return Ok(Outcome::NotLeader(
                (r.leader_hint >= 0).then_some(r.leader_hint as usize),
            ));
        }
        let results = r
            .results
            .iter()
            .map(|b| bincode::deserialize(b).map_err(|e| ClientError::Decode(e.to_string())))
            .collect::<Result<Vec<KvResult>, _>>()?;
        Ok(Outcome::Ok(results))
    }

    pub async fn read(
        &mut self,
        shard: u32,
        cmd: &KvCommand,
        mode: pb::ReadMode,
    ) -> Result<Outcome<(KvResult, String)>, ClientError> {
        match self.read_full(shard, cmd, mode, 0).await? {
            Outcome::Ok(r) => {
                let res = bincode::deserialize(&r.result)
                    .map_err(|e| ClientError::Decode(e.to_string()))?;
                Ok(Outcome::Ok((res, r.path)))
            }
            Outcome::NotLeader(h) => Ok(Outcome::NotLeader(h)),
        }
    }

    /// A read with every field of the reply (barrier, applied index, staleness).
    pub async fn read_full(
        &mut self,
        shard: u32,
        cmd: &KvCommand,
        mode: pb::ReadMode,
        min_applied: u64,
    ) -> Result<Outcome<pb::ReadReply>, ClientError> {
        self.read_waiting(shard, cmd, mode, min_applied, Duration::ZERO)
            .await
    }

    /// `read_full` that waits at most `wait` for `min_applied` (zero: the replica's deadline).
    pub async fn read_waiting(
        &mut self,
        shard: u32,
        cmd: &KvCommand,
        mode: pb::ReadMode,
        min_applied: u64,
        wait: Duration,
    ) -> Result<Outcome<pb::ReadReply>, ClientError> {
        let req = pb::ReadRequest {
            shard,
            command: cmd.encode(),
            mode: mode as i32,
            min_applied,
            wait_ms: wait.as_millis().min(u32::MAX as u128) as u32,
            origin_site: self.origin_site,
        };
        let r = match self.piped(pb::pipe_request::Call::Read(req)).await {
            Ok(Ok(pb::pipe_reply::Reply::Read(r))) => r,
            Ok(Ok(_)) => return Err(mismatched()),
            Ok(Err(e)) => return Err(e),
            Err(pb::pipe_request::Call::Read(req)) => {
                self.inner.read(self.request(req)).await?.into_inner()
            }
            Err(_) => return Err(mismatched()),
        };
        Ok(read_outcome(r))
    }

    /// Several reads in one call (`ReadBatch`), each `(shard, command, mode)` answered as
    /// `read_full` would answer it, in order. The outer error is the call's; each inner one a
    /// read's own.
    pub async fn read_batch(
        &mut self,
        reads: &[(u32, &KvCommand, pb::ReadMode)],
    ) -> Result<Vec<Result<Outcome<pb::ReadReply>, ClientError>>, ClientError> {
        let req = pb::ReadBatchRequest {
            reads: reads
                .iter()
                .map(|(shard, cmd, mode)| pb::ReadRequest {
                    shard: *shard,
                    command: cmd.encode(),
                    mode: *mode as i32,
                    min_applied: 0,
                    wait_ms: 0,
                    origin_site: self.origin_site,
                })
                .collect(),
        };
        let r = match self.piped(pb::pipe_request::Call::ReadBatch(req)).await {
            Ok(Ok(pb::pipe_reply::Reply::ReadBatch(r))) => r,
            Ok(Ok(_)) => return Err(mismatched()),
            Ok(Err(e)) => return Err(e),
            Err(pb::pipe_request::Call::ReadBatch(req)) => {
                self.inner.read_batch(self.request(req)).await?.into_inner()
            }
            Err(_) => return Err(mismatched()),
        };
        if r.items.len() != reads.len() {
            return Err(ClientError::Decode(format!(
                "{} answers to {} reads",
                r.items.len(),
                reads.len()
            )));
        }
        Ok(r.items
            .into_iter()
            .map(|it| match it.reply {
                Some(reply) if it.code == 0 => Ok(read_outcome(reply)),
                _ => Err(ClientError::Rpc(tonic::Status::new(
                    tonic::Code::from(it.code),
                    it.message,
                ))),
            })
            .collect())
    }
}

fn mismatched() -> ClientError {
    ClientError::Decode("a pipe reply of another kind than its call".into())
}

fn read_outcome(r: pb::ReadReply) -> Outcome<pb::ReadReply> {
    if r.not_leader {
        return Outcome::NotLeader((r.leader_hint >= 0).then_some(r.leader_hint as usize));
    }
    Outcome::Ok(r)
}
