//! The responses of one etcd Watch client stream, produced by the response stream itself: it
//! polls every watch of the client stream (each a subscription per shard to the proxy's shared
//! upstreams, `crate::watch`) and the control responses of the request loop (created, canceled,
//! progress), and turns deliveries into etcd responses as the transport asks for them.
//!
//! No task per watch stands between an upstream and the client: a commit wakes the response
//! stream's own task once, however many of its watches it touches (a task per watch, and a
//! channel to the stream's task, were a fifth of a 10,000-watcher proxy's CPU). A slow client
//! is not polled, its subscriptions fall behind their shared upstream and continue on private
//! ones (`crate::watch`): nothing is dropped.
//!
//! Bursts are gathered: when a response is ready after the stream went idle, the stream first
//! yields once to the runtime (its task goes to the back of the worker's queue), so that the
//! other upstreams woken by the same commits deliver before the encoder writes; the encoder
//! then sends the burst with one system call instead of one per response. Nothing is reordered,
//! dropped or held past that one yield.
use super::encode;
use super::watch::{split, PROGRESS_EVERY};
use crate::watch::{Delivery, WatchError};
use etcd_client::proto::{PbEvent, PbKeyValue, PbResponseHeader, PbWatchResponse};
use futures::future::{AbortHandle, Abortable};
use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use meridian_replica::wire::pb;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

/// What one watch of a client stream asked for.
#[derive(Clone, Debug)]
pub struct Spec {
    pub id: i64,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub fragment: bool,
    pub progress_notify: bool,
}

/// What the request loop and the response stream both know of a watch.
#[derive(Default, Debug)]
pub struct Shared {
    /// The etcd revision the watch has delivered through (for progress requests).
    pub delivered: AtomicI64,
    /// Canceled, refused or compacted: the watch id is free again and nothing more of it is
    /// delivered.
    pub ended: AtomicBool,
}

/// One shard's changes for a watch, in revision order (a subscription's deliveries).
pub type Source = BoxStream<'static, Result<Delivery, WatchError>>;

/// What the request loop (and a watch being created) hands the response stream, in order.
pub enum Command {
    /// A response to send as is (created, canceled, progress).
    Send(PbWatchResponse),
    /// A created watch's sources (one per shard it covers): their changes follow.
    Attach {
        spec: Spec,
        shared: Arc<Shared>,
        sources: Vec<(u32, Source)>,
    },
    /// A canceled watch: nothing more of it.
    Detach(i64),
}

/// The response header's fixed part.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub cluster_id: u64,
    pub member_id: u64,
    pub shards: u32,
}

impl Stamp {
    pub fn header(&self, revision: i64) -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: 0,
        })
    }

    pub fn response(&self, id: i64, revision: i64) -> PbWatchResponse {
        PbWatchResponse {
            header: self.header(revision),
            watch_id: id,
            ..Default::default()
        }
    }
}

/// A delivery tagged with its watch and which of the watch's shards it came from.
type Tagged = (i64, usize, Result<Delivery, WatchError>);

struct Watch {
    spec: Spec,
    shared: Arc<Shared>,
    shards: Vec<u32>,
    /// Per shard: when it last sent a response (progress notifications come after
    /// `PROGRESS_EVERY` without one).
    last_sent: Vec<Instant>,
    aborts: Vec<AbortHandle>,
}

/// The response stream of one Watch call.
pub struct Feed {
    stamp: Stamp,
    commands: mpsc::Receiver<Command>,
    /// The request loop ended (the client closed its side or left): what is queued is sent,
    /// then the stream ends.
    closed: bool,
    watches: HashMap<i64, Watch>,
    sources: SelectAll<Abortable<BoxStream<'static, Tagged>>>,
    out: VecDeque<PbWatchResponse>,
    /// The front of `out` ended an idle period and waits for one yield.
    held: bool,
    /// The last poll returned a response (a burst is under way).
    busy: bool,
}

impl Feed {
    pub fn new(stamp: Stamp, commands: mpsc::Receiver<Command>) -> Feed {
        Feed {
            stamp,
            commands,
            closed: false,
            watches: HashMap::new(),
            sources: SelectAll::new(),
            out: VecDeque::new(),
            held: false,
            busy: false,
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Send(r) => self.out.push_back(r),
            Command::Attach {
                spec,
                shared,
                sources,
            } => {
                // Canceled while it was being created: the cancel came first.
                if shared.ended.load(Ordering::Acquire) {
                    return;
                }
                let id = spec.id;
                let mut w = Watch {
                    spec,
                    shared,
                    shards: Vec::with_capacity(sources.len()),
                    last_sent: Vec::with_capacity(sources.len()),
                    aborts: Vec::with_capacity(sources.len()),
                };
                for (i, (shard, source)) in sources.into_iter().enumerate() {
                    let (abort, reg) = AbortHandle::new_pair();
                    let tagged = source.map(move |d| (id, i, d)).boxed();
                    self.sources.push(Abortable::new(tagged, reg));
                    w.shards.push(shard);
                    w.last_sent.push(Instant::now());
                    w.aborts.push(abort);
                }
                if let Some(old) = self.watches.insert(id, w) {
                    old.aborts.iter().for_each(AbortHandle::abort);
                }
            }
            Command::Detach(id) => self.end(id),
        }
    }

    fn end(&mut self, id: i64) {
        if let Some(w) = self.watches.remove(&id) {
            w.shared.ended.store(true, Ordering::Release);
            w.aborts.iter().for_each(AbortHandle::abort);
        }
    }

    /// A shard's delivery as the watch's responses (none for a delivery with no event the
    /// watch wants, unless a progress notification is due).
    fn deliver(&mut self, (id, i, got): Tagged) {
        let stamp = self.stamp;
        let Some(w) = self.watches.get_mut(&id) else {
            return; // Ended; its sources are aborted.
        };
        let shard = w.shards[i];
        let d = match got {
            Ok(d) => d,
            Err(WatchError::Compacted(h)) => {
                let mut r = stamp.response(id, 0);
                r.canceled = true;
                r.compact_revision = encode(h, shard, stamp.shards);
                r.cancel_reason = "etcdserver: mvcc: required revision has been compacted".into();
                self.out.push_back(r);
                self.end(id);
                return;
            }
        };
        let through = encode(d.through(), shard, stamp.shards);
        w.shared.delivered.fetch_max(through, Ordering::Relaxed);
        let spec = &w.spec;
        let events: Vec<PbEvent> = d
            .events()
            .filter(|e| !(e.delete && spec.no_delete || !e.delete && spec.no_put))
            .filter_map(|e| {
                Some(PbEvent {
                    r#type: i32::from(e.delete),
                    kv: Some(pb_kv(e.kv.as_ref()?, shard, stamp.shards)),
                    prev_kv: e
                        .prev
                        .as_ref()
                        .filter(|_| spec.prev_kv)
                        .map(|p| pb_kv(p, shard, stamp.shards)),
                })
            })
            .collect();
        if events.is_empty() {
            if spec.progress_notify && w.last_sent[i].elapsed() >= PROGRESS_EVERY {
                w.last_sent[i] = Instant::now();
                self.out.push_back(stamp.response(id, through));
            }
            return;
        }
        w.last_sent[i] = Instant::now();
        self.out
            .extend(split(stamp.response(id, through), spec.fragment, events));
    }

    /// Takes commands, then deliveries, until a response is queued or nothing is ready (then
    /// every source that can make one ready has this task's waker).
    fn fill(&mut self, cx: &mut Context<'_>) {
        while !self.closed {
            match self.commands.poll_recv(cx) {
                Poll::Ready(Some(c)) => {
                    self.command(c);
                    if !self.out.is_empty() {
                        return;
                    }
                }
                Poll::Ready(None) => {
                    self.closed = true;
                    let ids: Vec<i64> = self.watches.keys().copied().collect();
                    ids.into_iter().for_each(|id| self.end(id));
                    return;
                }
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(t)) = Pin::new(&mut self.sources).poll_next(cx) {
            self.deliver(t);
            if !self.out.is_empty() {
                return;
            }
        }
    }
}

impl Stream for Feed {
    type Item = Result<PbWatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if !this.held && this.out.is_empty() {
            this.fill(cx);
        }
        if this.out.is_empty() {
            this.busy = false;
            return if this.closed {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        }
        if !this.busy && !this.held {
            // The first response after idle: hand it over on the next poll, after the runtime
            // ran the tasks that are ready now.
            this.held = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.held = false;
        this.busy = true;
        Poll::Ready(this.out.pop_front().map(Ok))
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // The client is gone: its watches' ids must not look alive to anyone holding them.
        for w in self.watches.values() {
            w.shared.ended.store(true, Ordering::Release);
        }
    }
}

pub fn pb_kv(kv: &pb::WatchKv, shard: u32, shards: u32) -> PbKeyValue {
    PbKeyValue {
        key: kv.key.clone(),
        create_revision: encode(kv.create_revision, shard, shards),
        mod_revision: encode(kv.mod_revision, shard, shards),
        version: kv.version as i64,
        value: kv.value.clone(),
        lease: kv.lease,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::Batch;
    use futures::FutureExt;

    const STAMP: Stamp = Stamp {
        cluster_id: 1,
        member_id: 2,
        shards: 4,
    };

    fn spec(id: i64) -> Spec {
        Spec {
            id,
            no_put: false,
            no_delete: false,
            prev_kv: false,
            fragment: false,
            progress_notify: false,
        }
    }

    fn put(rev: u64, key: &str) -> pb::WatchEvent {
        pb::WatchEvent {
            delete: false,
            kv: Some(pb::WatchKv {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                lease: 0,
            }),
            prev: None,
        }
    }

    fn delivery(from: u64, through: u64, events: Vec<pb::WatchEvent>) -> Delivery {
        Delivery::whole(Arc::new(Batch {
            from,
            through,
            events,
        }))
    }

    type Feeder = mpsc::UnboundedSender<Result<Delivery, WatchError>>;

    /// A source fed by the test.
    fn source() -> (Feeder, Source) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            tx,
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed(),
        )
    }

    fn attach(id: i64, shards: &[u32]) -> (Command, Arc<Shared>, Vec<Feeder>) {
        let shared = Arc::new(Shared::default());
        let (feeders, sources): (Vec<_>, Vec<_>) = shards
            .iter()
            .map(|&s| {
                let (f, src) = source();
                (f, (s, src))
            })
            .unzip();
        let c = Command::Attach {
            spec: spec(id),
            shared: shared.clone(),
            sources,
        };
        (c, shared, feeders)
    }

    /// What the feed has ready now (after its one yield).
    fn ready(feed: &mut Feed) -> Vec<PbWatchResponse> {
        let mut got = Vec::new();
        for _ in 0..2 {
            while let Some(Some(r)) = feed.next().now_or_never() {
                got.push(r.unwrap());
            }
        }
        got
    }

    fn revisions(r: &PbWatchResponse) -> Vec<i64> {
        r.events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect()
    }

    /// Control responses and deliveries in order; revisions as etcd's (shard encoded); the
    /// watch's filters applied; a compaction cancels the whole watch and frees its id.
    #[tokio::test]
    async fn deliveries_become_responses_and_a_compaction_ends_the_watch() {
        let (tx, rx) = mpsc::channel(16);
        let mut feed = Feed::new(STAMP, rx);
        let (c, shared, feeders) = attach(5, &[1, 3]);
        let mut created = STAMP.response(5, 0);
        created.created = true;
        tx.send(Command::Send(created)).await.unwrap();
        tx.send(c).await.unwrap();
        let mut del = put(8, "a");
        del.delete = true;
        feeders[0]
            .send(Ok(delivery(7, 9, vec![put(7, "a"), del])))
            .unwrap();
        feeders[1]
            .send(Ok(delivery(2, 2, vec![put(2, "b")])))
            .unwrap();
        let got = ready(&mut feed);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].created && got[0].events.is_empty());
        let mut by_shard: Vec<(i64, Vec<i64>)> = got[1..]
            .iter()
            .map(|r| (r.header.unwrap().revision, revisions(r)))
            .collect();
        by_shard.sort();
        // Shard 1 of 4: revision r is 4r + 1; shard 3: 4r + 3.
        assert_eq!(by_shard, vec![(11, vec![11]), (37, vec![29, 33])]);
        assert!(got[1..].iter().all(|r| r.watch_id == 5));
        assert_eq!(shared.delivered.load(Ordering::Relaxed), 37);
        // Shard 3's history is gone: one canceled response, then nothing of the watch.
        feeders[1].send(Err(WatchError::Compacted(6))).unwrap();
        let got = ready(&mut feed);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].canceled);
        assert_eq!(got[0].compact_revision, 27);
        assert!(shared.ended.load(Ordering::Acquire));
        // Its sources were dropped (the upstreams are free): nothing more can come.
        assert!(ready(&mut feed).is_empty());
        assert!(feeders.iter().all(|f| f.is_closed()));
    }

    /// Filters, progress: a delivery without a wanted event sends nothing (no progress asked).
    #[tokio::test]
    async fn filtered_events_are_not_sent() {
        let (tx, rx) = mpsc::channel(16);
        let mut feed = Feed::new(STAMP, rx);
        let (mut c, _, feeders) = attach(1, &[0]);
        if let Command::Attach { spec, .. } = &mut c {
            spec.no_put = true;
        }
        tx.send(c).await.unwrap();
        feeders[0]
            .send(Ok(delivery(1, 3, vec![put(1, "a")])))
            .unwrap();
        assert!(ready(&mut feed).is_empty());
        let mut del = put(4, "a");
        del.delete = true;
        feeders[0].send(Ok(delivery(4, 4, vec![del]))).unwrap();
        let got = ready(&mut feed);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].events[0].r#type, 1);
    }

    /// A canceled watch sends nothing more and its sources are dropped; a hand-over of a
    /// watch canceled while it was being created is ignored; when the request loop ends the
    /// stream ends.
    #[tokio::test]
    async fn detached_and_late_watches_send_nothing() {
        let (tx, rx) = mpsc::channel(16);
        let mut feed = Feed::new(STAMP, rx);
        let (c, _, feeders) = attach(1, &[0]);
        tx.send(c).await.unwrap();
        assert!(ready(&mut feed).is_empty());
        tx.send(Command::Detach(1)).await.unwrap();
        assert!(ready(&mut feed).is_empty());
        assert!(
            feeders[0].is_closed(),
            "a detached watch's source is dropped"
        );
        let (late, shared, feeders) = attach(2, &[0]);
        shared.ended.store(true, Ordering::Release);
        tx.send(late).await.unwrap();
        assert!(ready(&mut feed).is_empty());
        assert!(feeders[0].is_closed(), "a late hand-over is dropped");
        // A live watch, then the request loop ends: what it queued is sent, then the stream
        // and the watch end.
        let (c, shared, feeders) = attach(3, &[0]);
        tx.send(c).await.unwrap();
        feeders[0]
            .send(Ok(delivery(1, 1, vec![put(1, "a")])))
            .unwrap();
        assert_eq!(ready(&mut feed).len(), 1);
        tx.send(Command::Send(STAMP.response(-1, 9))).await.unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Some(r) = feed.next().await {
            got.push(r.unwrap());
        }
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].watch_id, -1);
        assert!(shared.ended.load(Ordering::Acquire));
        drop(feed);
        assert!(feeders[0].is_closed());
    }

    /// A delivery of a watch not yet sent when the watch is canceled and its id taken again
    /// is not sent as the new watch's.
    #[tokio::test]
    async fn a_reused_id_gets_nothing_of_the_watch_before() {
        let (tx, rx) = mpsc::channel(16);
        let mut feed = Feed::new(STAMP, rx);
        let (old, _, feeders) = attach(5, &[0]);
        tx.send(old).await.unwrap();
        assert!(ready(&mut feed).is_empty());
        feeders[0]
            .send(Ok(delivery(1, 1, vec![put(1, "a")])))
            .unwrap();
        feeders[0]
            .send(Ok(delivery(2, 2, vec![put(2, "a")])))
            .unwrap();
        // One poll makes the first delivery a response (held for the yield).
        assert!(feed.next().now_or_never().is_none());
        tx.send(Command::Detach(5)).await.unwrap();
        let (new, _, _feeders) = attach(5, &[0]);
        tx.send(new).await.unwrap();
        let got = ready(&mut feed);
        assert_eq!(got.iter().map(revisions).collect::<Vec<_>>(), vec![vec![4]]);
    }

    /// Ten sources woken together by one event each deliver; a task consuming the feed takes
    /// the first response and then whatever is ready at once (what an encoder writes in one
    /// go): the whole burst, thanks to the one yield.
    #[test]
    fn a_burst_woken_together_is_handed_over_whole() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let (tx, rx) = mpsc::channel(64);
            let mut feed = Feed::new(STAMP, rx);
            let mut all = Vec::new();
            for id in 0..10 {
                let (c, _, feeders) = attach(id, &[0]);
                tx.send(c).await.unwrap();
                all.extend(feeders);
            }
            // On the one worker, in this order: the consumer (it takes the watches and
            // waits), the senders (they wait), the task that wakes every sender at once.
            let consumer = tokio::spawn(async move {
                let mut got = vec![feed.next().await.unwrap().unwrap().watch_id];
                while let Some(Some(r)) = feed.next().now_or_never() {
                    got.push(r.unwrap().watch_id);
                }
                drop(tx);
                got
            });
            let (go, ready) = tokio::sync::watch::channel(false);
            for f in all {
                let mut ready = ready.clone();
                tokio::spawn(async move {
                    ready.changed().await.unwrap();
                    f.send(Ok(delivery(1, 1, vec![put(1, "k")]))).unwrap();
                });
            }
            tokio::spawn(async move { go.send(true).unwrap() });
            consumer.await.unwrap()
        });
        let mut got = got;
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }
}
