//! The caller's side of `Replica.Pipe` (see `node::pipe`): one persistent stream to a replica
//! over the client's channel, shared by every clone of the client. Calls are tagged with ids
//! and their replies matched by id; when the stream breaks every waiting call fails with
//! `UNAVAILABLE` (as a unary call on a broken connection does) and the next call opens a new
//! stream. A replica without the RPC (`UNIMPLEMENTED`) is called unary from then on.
use crate::wire::pb;
use crate::wire::pb::replica_client::ReplicaClient as Grpc;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::Status;

type Waiter = oneshot::Sender<Result<pb::pipe_reply::Reply, Status>>;

/// Calls sent and not yet answered, or why the stream ended.
struct Pending {
    next_id: u64,
    waiting: HashMap<u64, Waiter>,
    closed: Option<String>,
}

/// One open stream.
struct Pipe {
    tx: mpsc::UnboundedSender<pb::PipeRequest>,
    pending: Arc<Mutex<Pending>>,
}

#[derive(Default)]
enum State {
    #[default]
    Closed,
    Open(Arc<Pipe>),
    /// The replica does not serve pipes: unary calls.
    Unsupported,
}

/// The pipe of one client and its clones.
#[derive(Default)]
pub struct PipeSlot {
    state: Mutex<State>,
    /// Serializes opening, so concurrent first calls share one stream.
    opening: tokio::sync::Mutex<()>,
}

impl PipeSlot {
    /// Sends `call` on the pipe (opened if needed) and waits for its reply. `Err(call)`: the
    /// replica has no pipe; call it unary.
    pub async fn call(
        &self,
        grpc: &Grpc<Channel>,
        call: pb::pipe_request::Call,
        traceparent: String,
    ) -> Result<Result<pb::pipe_reply::Reply, Status>, pb::pipe_request::Call> {
        let pipe = match self.open(grpc).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(call),
            Err(e) => return Ok(Err(e)),
        };
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut p = pipe.pending.lock().expect("pipe lock");
            if let Some(why) = &p.closed {
                return Ok(Err(Status::unavailable(why.clone())));
            }
            let id = p.next_id;
            p.next_id += 1;
            p.waiting.insert(id, tx);
            id
        };
        let req = pb::PipeRequest {
            id,
            traceparent,
            call: Some(call),
        };
        if pipe.tx.send(req).is_err() {
            pipe.pending.lock().expect("pipe lock").waiting.remove(&id);
            return Ok(Err(Status::unavailable("the pipe to the replica closed")));
        }
        Ok(rx.await.unwrap_or_else(|_| {
            Err(Status::unavailable(
                "the pipe to the replica closed before the reply",
            ))
        }))
    }

    /// Whether a stream is open now.
    pub fn is_open(&self) -> bool {
        matches!(self.current(), Ok(Some(_)))
    }

    fn current(&self) -> Result<Option<Arc<Pipe>>, ()> {
        match &*self.state.lock().expect("pipe state") {
            State::Open(p) if p.pending.lock().expect("pipe lock").closed.is_none() => {
                Ok(Some(p.clone()))
            }
            State::Unsupported => Err(()),
            _ => Ok(None),
        }
    }

    /// The open pipe, opening one if there is none. `Ok(None)`: unsupported.
    async fn open(&self, grpc: &Grpc<Channel>) -> Result<Option<Arc<Pipe>>, Status> {
        match self.current() {
            Ok(Some(p)) => return Ok(Some(p)),
            Err(()) => return Ok(None),
            Ok(None) => {}
        }
        let _one = self.opening.lock().await;
        match self.current() {
            Ok(Some(p)) => return Ok(Some(p)),
            Err(()) => return Ok(None),
            Ok(None) => {}
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let replies = match grpc
            .clone()
            .pipe(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::info!("the replica serves no pipe: unary calls");
                *self.state.lock().expect("pipe state") = State::Unsupported;
                return Ok(None);
            }
            Err(s) => return Err(s),
        };
        let pending = Arc::new(Mutex::new(Pending {
            next_id: 0,
            waiting: HashMap::new(),
            closed: None,
        }));
        tokio::spawn(read_replies(replies, pending.clone()));
        let pipe = Arc::new(Pipe { tx, pending });
        *self.state.lock().expect("pipe state") = State::Open(pipe.clone());
        Ok(Some(pipe))
    }
}

/// Hands each reply to its caller until the stream ends, then fails the calls still waiting.
async fn read_replies(mut replies: tonic::Streaming<pb::PipeReply>, pending: Arc<Mutex<Pending>>) {
    let why = loop {
        match replies.message().await {
            Ok(Some(r)) => {
                let waiter = pending.lock().expect("pipe lock").waiting.remove(&r.id);
                let Some(waiter) = waiter else {
                    // Its caller gave up (a timeout dropped it): nobody to tell.
                    continue;
                };
                let answer = match r.reply {
                    Some(reply) if r.code == 0 => Ok(reply),
                    _ => Err(Status::new(tonic::Code::from(r.code), r.message)),
                };
                let _ = waiter.send(answer);
            }
            Ok(None) => break "the replica ended the pipe".to_string(),
            Err(s) => break format!("the pipe to the replica broke: {}", s.message()),
        }
    };
    tracing::debug!(%why, "pipe closed");
    let waiting = {
        let mut p = pending.lock().expect("pipe lock");
        p.closed = Some(why.clone());
        std::mem::take(&mut p.waiting)
    };
    for (_, w) in waiting {
        let _ = w.send(Err(Status::unavailable(why.clone())));
    }
}
