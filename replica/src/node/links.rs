//! Outgoing peer traffic: one link per peer site, shared by every shard group. The link holds
//! each message for the emulated one-way delay (rtt/2 from the WAN matrix; FIFO per link) and
//! then hands it, batched, to whichever connection to that peer is currently up.
use crate::wire::pb::{Envelope, PeerFrame};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The current connection to one peer, if any: connection tasks install and clear it.
pub type Sink = Arc<Mutex<Option<mpsc::Sender<PeerFrame>>>>;

pub struct PeerLinks {
    me: u32,
    queues: Vec<Option<mpsc::UnboundedSender<Envelope>>>,
    pub sinks: Vec<Sink>,
}

impl PeerLinks {
    /// `delays[j]`: one-way delay to site j.
    pub fn start(me: usize, delays: Vec<Duration>) -> Arc<PeerLinks> {
        let n = delays.len();
        let sinks: Vec<Sink> = (0..n).map(|_| Arc::new(Mutex::new(None))).collect();
        let mut queues = Vec::new();
        for (j, delay) in delays.into_iter().enumerate() {
            if j == me {
                queues.push(None);
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_link(me as u32, delay, rx, sinks[j].clone()));
            queues.push(Some(tx));
        }
        Arc::new(PeerLinks { me: me as u32, queues, sinks })
    }

    pub fn me(&self) -> u32 {
        self.me
    }

    /// Queues a message; it leaves after the link's delay. Lost if no connection is up then
    /// (the protocol retransmits).
    pub fn send(&self, to: usize, shard: u32, msg: Vec<u8>) {
        if let Some(Some(q)) = self.queues.get(to) {
            let _ = q.send(Envelope { shard, msg });
        }
    }
}

async fn run_link(me: u32, delay: Duration, mut rx: mpsc::UnboundedReceiver<Envelope>, sink: Sink) {
    let mut held: std::collections::VecDeque<(Instant, Envelope)> = Default::default();
    loop {
        let next = held.front().map(|(t, _)| *t);
        tokio::select! {
            biased;
            env = rx.recv() => match env {
                Some(env) => held.push_back((Instant::now() + delay, env)),
                None => return,
            },
            _ = sleep_until(next), if next.is_some() => {
                let now = Instant::now();
                let mut msgs = Vec::new();
                while held.front().is_some_and(|(t, _)| *t <= now) {
                    msgs.push(held.pop_front().expect("front").1);
                }
                let tx = sink.lock().expect("sink lock").clone();
                if let Some(tx) = tx {
                    if tx.try_send(PeerFrame { from_site: me, msgs }).is_err() {
                        tracing::debug!("peer link congested or closed; frame dropped");
                    }
                }
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t).await
    }
}
