//! Outgoing peer traffic: one link per peer site, shared by every shard group. Each message is
//! held for the emulated one-way delay (rtt/2 from the WAN matrix, on the precise delay line;
//! FIFO per link) and then handed, batched, to whichever connection to that peer is up.
use crate::delay::DelayLine;
use crate::wire::pb::{Envelope, PeerFrame};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The current connection to one peer, if any: connection tasks install and clear it.
pub type Sink = Arc<Mutex<Option<mpsc::Sender<PeerFrame>>>>;

pub struct PeerLinks {
    me: u32,
    queues: Vec<Option<(mpsc::UnboundedSender<Envelope>, Duration)>>,
    pub sinks: Vec<Sink>,
    /// Measured round trip to each peer (EWMA, ms), from probes on the peer streams.
    rtt: Vec<Mutex<Option<f64>>>,
    epoch: std::time::Instant,
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
            tokio::spawn(run_link(me as u32, rx, sinks[j].clone()));
            queues.push(Some((tx, delay)));
        }
        Arc::new(PeerLinks {
            me: me as u32,
            queues,
            sinks,
            rtt: (0..n).map(|_| Mutex::new(None)).collect(),
            epoch: std::time::Instant::now(),
        })
    }

    pub fn me(&self) -> u32 {
        self.me
    }

    /// Sends an RTT probe (or its echo) to `to` through the same emulated delay as messages.
    pub fn probe(&self, to: usize, ping: Option<u64>) {
        let Some(Some((_, delay))) = self.queues.get(to) else {
            return;
        };
        let (ping, pong) = match ping {
            Some(p) => (p, true),
            None => ((self.epoch.elapsed().as_nanos() as u64).max(1), false),
        };
        let sink = self.sinks[to].clone();
        let me = self.me;
        DelayLine::global().schedule(std::time::Instant::now() + *delay, move || {
            let tx = sink.lock().expect("sink lock").clone();
            if let Some(tx) = tx {
                let _ = tx.try_send(PeerFrame {
                    from_site: me,
                    msgs: vec![],
                    ping,
                    pong,
                });
            }
        });
    }

    /// An echo of our probe sent at `ping` came back from `from`.
    pub fn probe_returned(&self, from: usize, ping: u64) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let ms = now.saturating_sub(ping) as f64 / 1e6;
        if let Some(slot) = self.rtt.get(from) {
            let mut r = slot.lock().expect("rtt lock");
            *r = Some(r.map_or(ms, |e| 0.8 * e + 0.2 * ms));
        }
    }

    /// Measured RTT per site index (ms; 0 for ourselves, -1 if not yet measured).
    pub fn rtt_ms(&self) -> Vec<f64> {
        self.rtt
            .iter()
            .enumerate()
            .map(|(j, r)| {
                if j == self.me as usize {
                    0.0
                } else {
                    r.lock().expect("rtt lock").unwrap_or(-1.0)
                }
            })
            .collect()
    }

    /// Queues a message; it leaves after the link's delay. Lost if no connection is up then
    /// (the protocol retransmits).
    pub fn send(&self, to: usize, shard: u32, msg: Vec<u8>) {
        if let Some(Some((q, delay))) = self.queues.get(to) {
            let env = Envelope { shard, msg };
            if delay.is_zero() {
                let _ = q.send(env);
            } else {
                let q = q.clone();
                DelayLine::global().schedule(std::time::Instant::now() + *delay, move || {
                    let _ = q.send(env);
                });
            }
        }
    }
}

/// Forwards released envelopes to the current connection, batching whatever is queued.
async fn run_link(me: u32, mut rx: mpsc::UnboundedReceiver<Envelope>, sink: Sink) {
    while let Some(env) = rx.recv().await {
        let mut msgs = vec![env];
        while let Ok(more) = rx.try_recv() {
            msgs.push(more);
        }
        forward(&sink, me, msgs);
    }
}

fn forward(sink: &Sink, me: u32, msgs: Vec<Envelope>) {
    let tx = sink.lock().expect("sink lock").clone();
    if let Some(tx) = tx {
        if tx
            .try_send(PeerFrame {
                from_site: me,
                msgs,
                ping: 0,
                pong: false,
            })
            .is_err()
        {
            tracing::debug!("peer link congested or closed; frame dropped");
        }
    }
}
