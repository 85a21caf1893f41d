//! The server side of `Replica.Pipe`: one persistent stream per caller (a proxy opens one per
//! site) carrying Submit, Read and ReadBatch calls. Each call is answered exactly as its unary
//! RPC answers it (the same functions of `service`), tagged with the call's id, in completion
//! order: a read behind a slow write does not wait for it. One task per pipe reads the calls
//! and runs them concurrently; a caller that stops reading its replies stops the pipe's
//! intake (backpressure, nothing dropped).
use super::service::ReplicaService;
use crate::wire::pb;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tonic::Status;

/// Replies queued for the caller before the pipe stops taking calls.
const REPLY_QUEUE: usize = 1024;

/// Starts serving `calls`; the returned stream carries the replies.
pub fn serve(
    svc: ReplicaService,
    mut calls: tonic::Streaming<pb::PipeRequest>,
) -> tokio_stream::wrappers::ReceiverStream<Result<pb::PipeReply, Status>> {
    let (tx, rx) = mpsc::channel(REPLY_QUEUE);
    tokio::spawn(async move {
        let mut running = FuturesUnordered::new();
        let mut open = true;
        loop {
            tokio::select! {
                m = calls.message(), if open => match m {
                    Ok(Some(req)) => running.push(answer(&svc, req)),
                    Ok(None) => open = false,
                    Err(e) => {
                        tracing::debug!(error = %e, "pipe closed by its caller");
                        open = false;
                    }
                },
                Some(reply) = running.next(), if !running.is_empty() => {
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
                else => return,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// One call, answered as its unary RPC would answer it.
async fn answer(svc: &ReplicaService, req: pb::PipeRequest) -> pb::PipeReply {
    use pb::pipe_reply::Reply;
    use pb::pipe_request::Call;
    let trace = (!req.traceparent.is_empty()).then_some(req.traceparent.as_str());
    let r = match req.call {
        Some(Call::Submit(s)) => svc.submit_traced(s, trace).await.map(Reply::Submit),
        Some(Call::Read(r)) => svc.read_traced(r, trace).await.map(Reply::Read),
        Some(Call::ReadBatch(b)) => svc.read_batch_inner(b.reads).await.map(Reply::ReadBatch),
        None => Err(Status::invalid_argument(
            "a pipe call carries a submit, a read or a read batch",
        )),
    };
    match r {
        Ok(reply) => pb::PipeReply {
            id: req.id,
            code: 0,
            message: String::new(),
            reply: Some(reply),
        },
        Err(s) => pb::PipeReply {
            id: req.id,
            code: s.code() as i32,
            message: s.message().to_string(),
            reply: None,
        },
    }
}
