//! Watches at the proxy: the changes of a span of one shard, streamed from the nearest replica
//! that keeps up, shared by every watcher of the same `(shard, span)` (one upstream stream per
//! `(shard, span)`, however many watchers). A watcher sees every change of its span from its
//! start revision on, in revision order, exactly once:
//! - each replica reply covers a contiguous revision range `[from, through]`; an upstream
//!   accepts a reply only if it starts at or before the next revision it lacks, and drops the
//!   changes it already had (after a reconnect to another site);
//! - a watcher that falls behind the shared stream (its buffer overflowed) continues on a
//!   private upstream from its own next revision instead of losing changes;
//! - an upstream moves to another site when its replica fails or stays behind the revision the
//!   proxy's probes saw elsewhere for [`STALL`]; a replica whose history no longer reaches back
//!   far enough answers `compacted`, and only when every site does is the watcher told so.
use crate::sites::Sites;
use meridian_replica::delay::DelayLine;
use meridian_replica::wire::pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Replies a shared upstream buffers per watcher before a slow one moves to a private one.
const FANOUT_BUFFER: usize = 1024;
/// How long an upstream may stay behind the shard's known revision (or silent) before it moves.
pub const STALL: Duration = Duration::from_secs(3);

/// A contiguous piece of a span's history: every change with a revision in `[from, through]`.
#[derive(Debug)]
pub struct Batch {
    pub from: u64,
    pub through: u64,
    pub events: Vec<pb::WatchEvent>,
}

/// What one watcher receives: the part of a shared `Batch` from revision `from` on — the batch
/// itself, shared with every other watcher of the upstream, not a copy of its events.
#[derive(Debug)]
pub struct Delivery {
    batch: Arc<Batch>,
    pub from: u64,
}

impl Delivery {
    /// All of `batch`.
    pub fn whole(batch: Arc<Batch>) -> Delivery {
        let from = batch.from;
        Delivery { batch, from }
    }

    pub fn through(&self) -> u64 {
        self.batch.through
    }

    /// The changes with revisions in `[from, through]`, in order.
    pub fn events(&self) -> impl Iterator<Item = &pb::WatchEvent> + '_ {
        let from = self.from;
        self.batch
            .events
            .iter()
            .filter(move |e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= from))
    }
}

#[derive(Clone, Debug)]
enum Item {
    Batch(Arc<Batch>),
    /// No site keeps the history from the revision needed: the lowest they keep.
    Compacted(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Span {
    shard: u32,
    start: Vec<u8>,
    end: Vec<u8>,
    prev_kv: bool,
}

struct State {
    /// The next revision this upstream lacks (0: not started yet).
    next: u64,
    tx: broadcast::Sender<Item>,
    /// Set once the upstream ended with `compacted`.
    compacted: Option<u64>,
}

struct Upstream {
    state: Mutex<State>,
    /// Signalled whenever `next` first becomes known.
    started: tokio::sync::Notify,
}

/// Every upstream watch of one proxy.
pub struct Hub {
    sites: Arc<Sites>,
    shared: Mutex<HashMap<Span, Weak<Upstream>>>,
    metrics: Option<(
        prometheus_client::metrics::gauge::Gauge,
        prometheus_client::metrics::counter::Counter,
        prometheus_client::metrics::counter::Counter,
    )>,
}

/// Why a watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchError {
    /// The shard's history below this revision is gone (etcd's `compacted`).
    Compacted(u64),
}

/// One watcher's view of a span of one shard.
pub struct Subscription {
    hub: Arc<Hub>,
    span: Span,
    up: Arc<Upstream>,
    rx: broadcast::Receiver<Item>,
    /// The next revision this watcher has not seen (0: not known yet).
    next: u64,
}

impl Hub {
    pub fn new(sites: Arc<Sites>) -> Hub {
        Hub {
            sites,
            shared: Mutex::new(HashMap::new()),
            metrics: None,
        }
    }

    /// Counts upstream streams open (gauge), replica replies received and moves (upstreams to
    /// another site, watchers to a private upstream) (counters).
    pub fn counting(
        mut self,
        upstreams: prometheus_client::metrics::gauge::Gauge,
        replies: prometheus_client::metrics::counter::Counter,
        moves: prometheus_client::metrics::counter::Counter,
    ) -> Hub {
        self.metrics = Some((upstreams, replies, moves));
        self
    }

    /// Upstream streams open now (shared and private).
    pub fn upstreams(&self) -> i64 {
        self.metrics.as_ref().map_or(0, |m| m.0.get())
    }

    /// Watches `[start, end)` of `shard` from revision `from` (0: from the next one). Watchers
    /// from "now" share one upstream per span; one from an older revision gets its own.
    pub fn subscribe(
        self: &Arc<Self>,
        shard: u32,
        start: Vec<u8>,
        end: Vec<u8>,
        from: u64,
        prev_kv: bool,
    ) -> Subscription {
        let span = Span {
            shard,
            start,
            end,
            prev_kv,
        };
        if from != 0 {
            return self.private(span, from);
        }
        let mut shared = self.shared.lock().expect("hub lock");
        if let Some(up) = shared.get(&span).and_then(Weak::upgrade) {
            let st = up.state.lock().expect("upstream lock");
            if st.compacted.is_none() {
                let rx = st.tx.subscribe();
                let next = st.next;
                drop(st);
                return Subscription {
                    hub: self.clone(),
                    span,
                    up,
                    rx,
                    next,
                };
            }
        }
        let (up, rx) = self.start(span.clone(), 0);
        if shared.len() >= 64 && shared.len().is_power_of_two() {
            shared.retain(|_, w| w.strong_count() > 0);
        }
        shared.insert(span.clone(), Arc::downgrade(&up));
        Subscription {
            hub: self.clone(),
            span,
            up,
            rx,
            next: 0,
        }
    }

    fn private(self: &Arc<Self>, span: Span, from: u64) -> Subscription {
        let (up, rx) = self.start(span.clone(), from);
        Subscription {
            hub: self.clone(),
            span,
            up,
            rx,
            next: from,
        }
    }

    fn start(
        self: &Arc<Self>,
        span: Span,
        from: u64,
    ) -> (Arc<Upstream>, broadcast::Receiver<Item>) {
        let (tx, rx) = broadcast::channel(FANOUT_BUFFER);
        let up = Arc::new(Upstream {
            state: Mutex::new(State {
                next: from,
                tx,
                compacted: None,
            }),
            started: tokio::sync::Notify::new(),
        });
        if let Some(m) = &self.metrics {
            m.0.inc();
        }
        let hub = self.clone();
        let weak = Arc::downgrade(&up);
        tokio::spawn(async move {
            hub.run(span, weak).await;
            if let Some(m) = &hub.metrics {
                m.0.dec();
            }
        });
        (up, rx)
    }

    /// Feeds one upstream until no watcher is left or the history is gone everywhere.
    async fn run(&self, span: Span, up: Weak<Upstream>) {
        let n = self.sites.sites.len();
        // Per site: the horizon it answered `compacted` with; and the sites that failed in
        // this round (each site is tried once per round, nearest first).
        let mut compacted: Vec<Option<u64>> = vec![None; n];
        let mut failed = vec![false; n];
        let mut empty_rounds = 0;
        loop {
            let Some(u) = up.upgrade() else { return };
            let (next, idle) = {
                let st = u.state.lock().expect("upstream lock");
                (st.next, st.tx.receiver_count() == 0)
            };
            drop(u);
            if idle {
                return;
            }
            let site = self
                .sites
                .nearest_first()
                .into_iter()
                .find(|&i| !failed[i] && compacted[i].is_none());
            let Some(site) = site else {
                // A round without a usable site. Once the history is gone at some site and
                // every other keeps failing, the watch cannot resume without a gap: say so.
                empty_rounds += 1;
                if compacted.iter().any(Option::is_some) && empty_rounds >= 3 {
                    let horizon = compacted.iter().flatten().max().copied().unwrap_or(next);
                    if let Some(u) = up.upgrade() {
                        let mut st = u.state.lock().expect("upstream lock");
                        st.compacted = Some(horizon);
                        let _ = st.tx.send(Item::Compacted(horizon));
                    }
                    return;
                }
                failed.iter_mut().for_each(|f| *f = false);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            match self.follow(site, &span, &up, next).await {
                Ended::Gone => return,
                Ended::Compacted(h) => compacted[site] = Some(h),
                Ended::Failed { why, progressed } => {
                    tracing::debug!(site, shard = span.shard, %why, "watch upstream moves");
                    if let Some(m) = &self.metrics {
                        m.2.inc();
                    }
                    failed[site] = true;
                    if progressed {
                        empty_rounds = 0;
                    }
                }
            }
        }
    }

    /// Streams from `site` from revision `next` until it fails, falls behind or is not needed.
    async fn follow(&self, site: usize, span: &Span, up: &Weak<Upstream>, next: u64) -> Ended {
        let fail = |why: String, progressed: bool| Ended::Failed { why, progressed };
        let Some(mut conn) = self.sites.conn(site).await else {
            return fail("no connection".into(), false);
        };
        self.sites.wan(site).await;
        let stream = match conn
            .watch(span.shard, &span.start, &span.end, next, span.prev_kv)
            .await
        {
            Ok(s) => s,
            Err(e) => return fail(e.to_string(), false),
        };
        // The replies cross the emulated WAN in order, each after the one-way delay.
        let (dtx, mut drx) = tokio::sync::mpsc::unbounded_channel();
        let one_way = self.sites.sites[site].one_way;
        let reader = tokio::spawn(async move {
            use futures::StreamExt;
            let mut stream = stream;
            loop {
                let item = stream.next().await;
                let end = !matches!(item, Some(Ok(_)));
                if one_way.is_zero() {
                    // The replica of the proxy's own region: no hop through the delay thread.
                    let _ = dtx.send(item);
                } else {
                    let tx = dtx.clone();
                    DelayLine::global().schedule(Instant::now() + one_way, move || {
                        let _ = tx.send(item);
                    });
                }
                if end {
                    return;
                }
            }
        });
        let _reader = AbortOnDrop(reader);
        // A revision a probe saw elsewhere that this replica has not yet reported, and since
        // when. Replicas report a quiet span's progress only about once a second, so the test
        // is whether the replica reaches that revision within STALL, not whether every reply
        // is current.
        let mut behind: Option<(u64, Instant)> = None;
        let mut progressed = false;
        loop {
            let got = tokio::time::timeout(STALL, drx.recv()).await;
            let reply = match got {
                Err(_) => return fail("silent".into(), progressed),
                Ok(None) | Ok(Some(None)) => return fail("stream ended".into(), progressed),
                Ok(Some(Some(Err(e)))) => return fail(e.to_string(), progressed),
                Ok(Some(Some(Ok(r)))) => r,
            };
            if let Some(m) = &self.metrics {
                m.1.inc();
            }
            if reply.compacted != 0 {
                return Ended::Compacted(reply.compacted);
            }
            let Some(u) = up.upgrade() else {
                return Ended::Gone;
            };
            let mut st = u.state.lock().expect("upstream lock");
            if st.tx.receiver_count() == 0 {
                return Ended::Gone;
            }
            if st.next != 0 && reply.from > st.next {
                return fail(
                    format!(
                        "reply from revision {} leaves a gap after {}",
                        reply.from, st.next
                    ),
                    progressed,
                );
            }
            let first = st.next == 0;
            let floor = if first { reply.from } else { st.next };
            let events: Vec<pb::WatchEvent> = reply
                .events
                .into_iter()
                .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= floor))
                .collect();
            let through = reply.through.max(floor.saturating_sub(1));
            let advanced = through + 1 > st.next;
            if advanced || first {
                progressed = true;
                st.next = through + 1;
                let _ = st.tx.send(Item::Batch(Arc::new(Batch {
                    from: floor,
                    through,
                    events,
                })));
            }
            drop(st);
            if first {
                u.started.notify_waiters();
            }
            // A replica that stays behind what another site already applied is cut off
            // (partitioned, or slow to apply): another site serves the watch.
            match behind {
                Some((target, _)) if through >= target => behind = None,
                Some((target, since)) if since.elapsed() >= STALL => {
                    return fail(
                        format!(
                            "behind: through revision {through}, a probe saw {target} {:?} ago",
                            since.elapsed()
                        ),
                        progressed,
                    );
                }
                _ => {}
            }
            let known = self.sites.revision(span.shard);
            if behind.is_none() && through < known {
                behind = Some((known, Instant::now()));
            }
        }
    }
}

enum Ended {
    /// No watcher left.
    Gone,
    Compacted(u64),
    /// The stream broke or fell behind (`progressed`: after it delivered something).
    Failed {
        why: String,
        progressed: bool,
    },
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Subscription {
    pub fn shard(&self) -> u32 {
        self.span.shard
    }

    /// Waits until the watch knows its start: the next revision it will deliver.
    pub async fn started(&mut self) -> Result<u64, WatchError> {
        while self.next == 0 {
            let notified = self.up.started.notified();
            {
                let st = self.up.state.lock().expect("upstream lock");
                if let Some(h) = st.compacted {
                    return Err(WatchError::Compacted(h));
                }
                if st.next != 0 {
                    // Everything it sends from now on continues from here; earlier items
                    // in our receiver are skipped by `recv` (they end before `next`).
                    self.next = st.next;
                    break;
                }
            }
            notified.await;
        }
        Ok(self.next)
    }

    /// The next piece of the watcher's history (revisions `[from, through]`, possibly with no
    /// event: progress), in order, with no gap and no duplicate.
    pub async fn recv(&mut self) -> Result<Delivery, WatchError> {
        loop {
            match self.rx.recv().await {
                Ok(Item::Batch(b)) => {
                    if self.next == 0 {
                        self.next = b.from;
                    }
                    if b.through < self.next {
                        continue; // Already seen (from before this watcher's start).
                    }
                    if b.from > self.next {
                        // Cannot happen on one upstream (it forwards contiguous pieces);
                        // recover on a private upstream rather than skip.
                        tracing::warn!(shard = self.span.shard, "watch gap: resuming privately");
                        self.resume();
                        continue;
                    }
                    let from = self.next;
                    self.next = b.through + 1;
                    return Ok(Delivery { batch: b, from });
                }
                Ok(Item::Compacted(h)) => return Err(WatchError::Compacted(h)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(
                        shard = self.span.shard,
                        missed = n,
                        "slow watcher: resuming on a private upstream"
                    );
                    self.resume();
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // The upstream ended without a verdict: resume where we are.
                    self.resume();
                }
            }
        }
    }

    /// The deliveries as a stream, ending after an error.
    pub fn into_stream(self) -> futures::stream::BoxStream<'static, Result<Delivery, WatchError>> {
        use futures::StreamExt;
        futures::stream::unfold(Some(self), |sub| async move {
            let mut sub = sub?;
            let got = sub.recv().await;
            let more = got.is_ok();
            Some((got, more.then_some(sub)))
        })
        .boxed()
    }

    fn resume(&mut self) {
        let fresh = if self.next == 0 {
            self.hub.subscribe(
                self.span.shard,
                self.span.start.clone(),
                self.span.end.clone(),
                0,
                self.span.prev_kv,
            )
        } else {
            if let Some(m) = &self.hub.metrics {
                m.2.inc();
            }
            self.hub.private(self.span.clone(), self.next)
        };
        self.up = fresh.up;
        self.rx = fresh.rx;
    }
}
