//! Replica-to-replica connections: one persistent bidirectional gRPC stream per pair of sites
//! (the lower-numbered site dials), shared by all shard groups, over mutual TLS. Each side's
//! certificate names its site; frames from anyone else are refused.
use super::links::{PeerLinks, Sink};
use super::shard::ShardInput;
use crate::tls::{identity, Identity, TlsFiles};
use crate::wire::pb::peer_client::PeerClient;
use crate::wire::pb::peer_server::Peer;
use crate::wire::pb::PeerFrame;
use meridian_core::{Message, Rng};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Where inbound peer messages go: one inbox per shard group.
#[derive(Clone)]
pub struct Inboxes {
    pub shards: Arc<Vec<mpsc::UnboundedSender<ShardInput>>>,
    pub site_names: Arc<Vec<String>>,
    pub links: Arc<PeerLinks>,
}

impl Inboxes {
    /// Decodes a frame's messages and hands them to their shards. Malformed messages are
    /// dropped with a warning; they never reach the core.
    fn dispatch(&self, from: usize, frame: PeerFrame) {
        if frame.ping != 0 {
            if frame.pong {
                self.links.probe_returned(from, frame.ping);
            } else {
                self.links.probe(from, Some(frame.ping));
            }
        }
        for env in frame.msgs {
            let Some(inbox) = self.shards.get(env.shard as usize) else {
                tracing::warn!(peer = %self.site_names[from], shard = env.shard, "message for an unknown shard dropped");
                continue;
            };
            match bincode::deserialize::<Message>(&env.msg) {
                Ok(msg) => {
                    let _ = inbox.send(ShardInput::Peer { from, msg });
                }
                Err(e) => {
                    tracing::warn!(peer = %self.site_names[from], error = %e, "undecodable peer message dropped")
                }
            }
        }
    }
}

/// Runs one connection's inbound half until it ends, then clears the sink if still ours.
async fn pump(
    inbox: Inboxes,
    from: usize,
    mut inbound: Streaming<PeerFrame>,
    sink: Sink,
    mine: mpsc::Sender<PeerFrame>,
) {
    loop {
        match inbound.next().await {
            Some(Ok(frame)) => {
                if frame.from_site as usize != from {
                    tracing::warn!(peer = %inbox.site_names[from], claimed = frame.from_site, "frame claims another site; connection dropped");
                    break;
                }
                inbox.dispatch(from, frame);
            }
            Some(Err(e)) => {
                tracing::info!(peer = %inbox.site_names[from], error = %e, "peer stream ended");
                break;
            }
            None => break,
        }
    }
    let mut s = sink.lock().expect("sink lock");
    if s.as_ref().is_some_and(|cur| cur.same_channel(&mine)) {
        *s = None;
    }
}

pub struct PeerService {
    pub inbox: Inboxes,
    pub links: Arc<PeerLinks>,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<PeerFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    type StreamStream = FrameStream;

    async fn stream(
        &self,
        req: Request<Streaming<PeerFrame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let who = certs.first().and_then(|c| identity(c));
        let from = match &who {
            Some(Identity::Site(name)) => self.inbox.site_names.iter().position(|n| n == name),
            _ => None,
        };
        let Some(from) = from else {
            tracing::warn!(identity = ?who, "peer stream refused: certificate does not name a site of this cluster");
            return Err(Status::permission_denied(
                "only sites of this cluster may open peer streams",
            ));
        };
        let (tx, rx) = mpsc::channel::<PeerFrame>(16384);
        let sink = self.links.sinks[from].clone();
        *sink.lock().expect("sink lock") = Some(tx.clone());
        tracing::info!(peer = %self.inbox.site_names[from], "peer connected (inbound)");
        tokio::spawn(pump(self.inbox.clone(), from, req.into_inner(), sink, tx));
        let out = ReceiverStream::new(rx).map(Ok::<_, Status>);
        Ok(Response::new(Box::pin(out)))
    }
}

/// Keeps a connection to a higher-numbered peer up, reconnecting with jittered backoff.
pub async fn dial(
    inbox: Inboxes,
    links: Arc<PeerLinks>,
    to: usize,
    addr: crate::config::HostPort,
    tls: TlsFiles,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = Rng::new(links.me() as u64 * 7919 + to as u64);
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .map_err(|e| e.to_string())?
                .tls_config(tls.client_config().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?
                .tcp_nodelay(true)
                .initial_stream_window_size(Some(8 << 20))
                .initial_connection_window_size(Some(32 << 20))
                .connect_timeout(Duration::from_secs(3))
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(10));
            let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
            let (tx, rx) = mpsc::channel::<PeerFrame>(16384);
            // A first frame tells the server who we are even before any protocol message.
            let _ = tx.try_send(PeerFrame {
                from_site: links.me(),
                msgs: vec![],
                ping: 0,
                pong: false,
            });
            let resp = PeerClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20)
                .stream(ReceiverStream::new(rx))
                .await
                .map_err(|e| e.to_string())?;
            *links.sinks[to].lock().expect("sink lock") = Some(tx.clone());
            tracing::info!(peer = %inbox.site_names[to], "peer connected (outbound)");
            Ok::<_, String>((resp.into_inner(), tx))
        };
        match attempt.await {
            Ok((inbound, tx)) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    _ = pump(inbox.clone(), to, inbound, links.sinks[to].clone(), tx) => {}
                    _ = stop.changed() => return,
                }
            }
            Err(e) => tracing::debug!(peer = %inbox.site_names[to], error = %e, "connect failed"),
        }
        let jitter = Duration::from_millis(rng.below(backoff.as_millis() as u64 / 2 + 1));
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
