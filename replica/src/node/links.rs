//! Outgoing peer traffic: one link per peer site, shared by every shard group. Each message is
//! held for the emulated one-way delay (rtt/2 from the WAN matrix, on the precise delay line;
//! FIFO per link) and then handed, batched, to whichever connection to that peer is up. Without
//! an emulated delay, a message whose link has nothing queued goes straight into the
//! connection's channel from the sending shard task (one task hop fewer).
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
    /// Messages in each link's queue not yet handed to a connection: while there are none, a
    /// message without delay goes straight to the connection (one task hop fewer).
    queued: Vec<Arc<std::sync::atomic::AtomicUsize>>,
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
        let queued: Vec<Arc<std::sync::atomic::AtomicUsize>> =
            (0..n).map(|_| Arc::new(Default::default())).collect();
        for (j, delay) in delays.into_iter().enumerate() {
            if j == me {
                queues.push(None);
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_link(me as u32, rx, sinks[j].clone(), queued[j].clone()));
            queues.push(Some((tx, delay)));
        }
        Arc::new(PeerLinks {
            me: me as u32,
            queues,
            queued,
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
        use std::sync::atomic::Ordering;
        if let Some(Some((q, delay))) = self.queues.get(to) {
            let mut env = Envelope { shard, msg };
            let queued = self.queued[to].clone();
            if delay.is_zero() {
                // Nothing of this link waits: straight into the connection's channel (FIFO
                // with what the link task handed over before). Otherwise behind the queue.
                if queued.load(Ordering::Acquire) == 0 {
                    let tx = self.sinks[to].lock().expect("sink lock").clone();
                    if let Some(tx) = tx {
                        match tx.try_send(PeerFrame {
                            from_site: self.me,
                            msgs: vec![env],
                            ping: 0,
                            pong: false,
                        }) {
                            Ok(()) => return,
                            Err(
                                mpsc::error::TrySendError::Full(mut f)
                                | mpsc::error::TrySendError::Closed(mut f),
                            ) => env = f.msgs.pop().expect("the message"),
                        }
                    }
                }
                queued.fetch_add(1, Ordering::AcqRel);
                let _ = q.send(env);
            } else {
                let q = q.clone();
                DelayLine::global().schedule(std::time::Instant::now() + *delay, move || {
                    queued.fetch_add(1, Ordering::AcqRel);
                    let _ = q.send(env);
                });
            }
        }
    }
}

/// A frame carries at most this many message bytes (the rest leaves in the next frame).
const FRAME_BYTES: usize = 8 << 20;
/// How long a congested connection is waited for before a message is given up (the protocol
/// retransmits).
const CONGESTION_WAIT: Duration = Duration::from_secs(2);

/// Forwards released envelopes to the current connection, batching whatever is queued. A
/// congested connection applies backpressure: the link waits for room (what queues meanwhile
/// leaves in the same frame) instead of dropping the frame; a message is lost only when no
/// connection is up or none had room for [`CONGESTION_WAIT`].
async fn run_link(
    me: u32,
    mut rx: mpsc::UnboundedReceiver<Envelope>,
    sink: Sink,
    queued: Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    while let Some(env) = rx.recv().await {
        let tx = sink.lock().expect("sink lock").clone();
        let Some(tx) = tx else {
            tracing::debug!("no connection to the peer; message dropped");
            queued.fetch_sub(1, Ordering::AcqRel);
            continue;
        };
        let permit = match tokio::time::timeout(CONGESTION_WAIT, tx.reserve()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                tracing::debug!("peer connection closed; message dropped");
                queued.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            Err(_) => {
                tracing::debug!("peer link congested for 2 s; message dropped");
                queued.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
        };
        let mut bytes = env.msg.len();
        let mut msgs = vec![env];
        while bytes < FRAME_BYTES {
            match rx.try_recv() {
                Ok(more) => {
                    bytes += more.msg.len();
                    msgs.push(more);
                }
                Err(_) => break,
            }
        }
        let n = msgs.len();
        permit.send(PeerFrame {
            from_site: me,
            msgs,
            ping: 0,
            pong: false,
        });
        // Only now may a later message skip the queue: it lands behind these.
        queued.fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_congested_connection_slows_the_link_and_loses_nothing() {
        let links = PeerLinks::start(0, vec![Duration::ZERO, Duration::ZERO]);
        let (tx, mut rx) = mpsc::channel(1);
        *links.sinks[1].lock().unwrap() = Some(tx);
        for i in 0..2000u32 {
            links.send(1, 0, i.to_be_bytes().to_vec());
        }
        let mut got = Vec::new();
        while got.len() < 2000 {
            let f = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("frames keep coming")
                .expect("open");
            got.extend(
                f.msgs
                    .iter()
                    .map(|e| u32::from_be_bytes(e.msg[..4].try_into().unwrap())),
            );
            // A slow reader: the link must wait for it, not drop.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(got, (0..2000).collect::<Vec<_>>(), "all, in order");
    }

    /// A message goes straight to the connection only while nothing of its link waits in the
    /// queue: one sent after a queued one never overtakes it, although the connection has room
    /// before the link task ran (single-threaded: the link task runs only when this awaits).
    #[tokio::test]
    async fn a_message_never_overtakes_one_waiting_in_the_queue() {
        let links = PeerLinks::start(0, vec![Duration::ZERO, Duration::ZERO]);
        let (tx, mut rx) = mpsc::channel(1);
        *links.sinks[1].lock().unwrap() = Some(tx);
        let id = |f: &PeerFrame| -> Vec<u8> { f.msgs.iter().map(|e| e.msg[0]).collect() };
        links.send(1, 0, vec![0]); // straight in: the channel is now full
        links.send(1, 0, vec![1]); // no room: queued
        let first = rx.try_recv().expect("the direct one");
        assert_eq!(id(&first), vec![0]);
        // Room now, but message 1 still waits in the queue: 2 must go behind it.
        links.send(1, 0, vec![2]);
        let mut got = Vec::new();
        while got.len() < 2 {
            let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("frames keep coming")
                .expect("open");
            got.extend(id(&f));
        }
        assert_eq!(got, vec![1, 2], "in order");
        assert_eq!(
            links.queued[1].load(std::sync::atomic::Ordering::Acquire),
            0,
            "nothing left counted as queued"
        );
        // With the queue empty again, a message goes straight in.
        links.send(1, 0, vec![3]);
        assert_eq!(id(&rx.try_recv().expect("direct")), vec![3]);
    }

    #[tokio::test]
    async fn without_a_connection_messages_are_dropped_not_queued_forever() {
        let links = PeerLinks::start(0, vec![Duration::ZERO, Duration::ZERO]);
        for i in 0..10u32 {
            links.send(1, 0, i.to_be_bytes().to_vec());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (tx, mut rx) = mpsc::channel(4);
        *links.sinks[1].lock().unwrap() = Some(tx);
        links.send(1, 0, 99u32.to_be_bytes().to_vec());
        let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.msgs.len(), 1, "only what was sent with a connection up");
    }
}
