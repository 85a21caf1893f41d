//! etcd's Watch service over the proxy's watch hub (`crate::watch`): one client stream carries
//! any number of watches; each watch is one subscription per shard its range touches (a single
//! key: one shard; a prefix or span: every shard). Events of one key are in revision order
//! with no gap and no duplicate; events of keys on different shards are not ordered with each
//! other (revisions of different shards are not comparable, module `etcd` docs).
//!
//! Resuming: a watch with `start_revision` gets every change from that revision on. Over one
//! shard (a single key, or any range with one shard) that is exact, so etcd clients resume
//! after a proxy restart from their last revision + 1 without gap or duplicate. A range over
//! several shards cannot be resumed from one revision (another shard's unseen changes may carry
//! lower revisions): such a create with `start_revision` is refused with a `cancel_reason`.
use super::feed::{Command, Feed, Shared, Source, Spec, Stamp};
use super::{encode, shard_from, Edge};
use crate::auth::Access;
use crate::watch::WatchError;
use etcd_client::proto::{
    PbEvent, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse, PbWatchService,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

pub struct WatchService(pub Edge);

/// How often a watch created with `progress_notify` gets a progress response while idle.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Control responses and watch hand-overs queued per client stream (the request loop waits
/// when the client does not read).
const OUT_BUFFER: usize = 256;
/// Events of one response (bytes, about): larger batches are split at revision boundaries
/// (within one revision too when the client asked for `fragment`).
const RESPONSE_BYTES: usize = 1 << 20;

type Out = mpsc::Sender<Command>;

/// `[key, range_end)` as a span: empty `range_end`: the key alone; "\0": every key from `key`.
fn watch_span(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if range_end.is_empty() {
        let mut end = key.to_vec();
        end.push(0);
        (key.to_vec(), end)
    } else if range_end == [0] {
        (key.to_vec(), Vec::new())
    } else {
        (key.to_vec(), range_end.to_vec())
    }
}

fn stamp(edge: &Edge) -> Stamp {
    Stamp {
        cluster_id: edge.cluster_id,
        member_id: edge.member_id(),
        shards: edge.shards(),
    }
}

#[tonic::async_trait]
impl PbWatchService for WatchService {
    type WatchStream = Feed;

    /// The request loop runs in its own task; the responses (and every watch's events) are
    /// produced by the response stream, `Feed`.
    async fn watch(
        &self,
        req: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let who = crate::grpc::caller(&self.0.proxy, &req)?;
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        let edge = self.0.clone();
        let stamp = stamp(&edge);
        tokio::spawn(async move {
            // Per watch id: the task creating it (done once the watch is handed over) and
            // what the feed shares of it.
            let mut watches: HashMap<i64, (tokio::task::AbortHandle, Arc<Shared>)> = HashMap::new();
            let mut next_id = 0i64;
            loop {
                let msg = match incoming.message().await {
                    Ok(Some(m)) => m,
                    // The client went away: its watches end with it.
                    Ok(None) | Err(_) => break,
                };
                watches.retain(|_, (_, s)| !s.ended.load(Ordering::Acquire));
                match msg.request_union {
                    Some(PbWatchRequestUnion::CreateRequest(c)) => {
                        let id = if c.watch_id != 0 {
                            c.watch_id
                        } else {
                            while watches.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id
                        };
                        if watches.contains_key(&id) {
                            let r = canceled(stamp, id, "etcdserver: duplicate watch ID");
                            let _ = tx.send(Command::Send(r)).await;
                            continue;
                        }
                        let spec = Spec {
                            id,
                            no_put: c.filters.contains(&0),
                            no_delete: c.filters.contains(&1),
                            prev_kv: c.prev_kv,
                            fragment: c.fragment,
                            progress_notify: c.progress_notify,
                        };
                        let (start, end) = watch_span(&c.key, &c.range_end);
                        let refusal = if c.key.is_empty() {
                            Some("etcdserver: key is not provided".to_string())
                        } else if let Err(e) =
                            crate::auth::allow_span(who.as_ref(), &start, &end, Access::Read)
                        {
                            Some(e.to_string())
                        } else {
                            None
                        };
                        if let Some(reason) = refusal {
                            let _ = tx.send(Command::Send(canceled(stamp, id, &reason))).await;
                            continue;
                        }
                        let shared = Arc::new(Shared::default());
                        let task = tokio::spawn(create(
                            edge.clone(),
                            spec,
                            start,
                            end,
                            c.start_revision,
                            c.range_end.is_empty(),
                            tx.clone(),
                            shared.clone(),
                        ));
                        watches.insert(id, (task.abort_handle(), shared));
                    }
                    Some(PbWatchRequestUnion::CancelRequest(c)) => {
                        if let Some((task, shared)) = watches.remove(&c.watch_id) {
                            // Ended first: a hand-over still on its way is then ignored.
                            shared.ended.store(true, Ordering::Release);
                            task.abort();
                            let _ = tx.send(Command::Detach(c.watch_id)).await;
                            let mut r = stamp.response(c.watch_id, 0);
                            r.canceled = true;
                            let _ = tx.send(Command::Send(r)).await;
                        }
                    }
                    Some(PbWatchRequestUnion::ProgressRequest(_)) => {
                        // One response for the stream (watch id -1, as etcd): the revision
                        // every watch of it has delivered through.
                        let rev = watches
                            .values()
                            .map(|(_, s)| s.delivered.load(Ordering::Relaxed))
                            .min()
                            .unwrap_or(0);
                        let _ = tx.send(Command::Send(stamp.response(-1, rev))).await;
                    }
                    None => {}
                }
            }
            for (t, s) in watches.values() {
                s.ended.store(true, Ordering::Release);
                t.abort();
            }
        });
        Ok(Response::new(Feed::new(stamp, rx)))
    }
}

fn canceled(stamp: Stamp, id: i64, reason: &str) -> PbWatchResponse {
    PbWatchResponse {
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..stamp.response(id, 0)
    }
}

/// Creates one watch: a subscription per shard it covers, the created response once every
/// shard's start is known, then the subscriptions handed to the feed. A refusal ends the watch.
#[allow(clippy::too_many_arguments)]
async fn create(
    edge: Edge,
    spec: Spec,
    start: Vec<u8>,
    end: Vec<u8>,
    start_revision: i64,
    one_key: bool,
    tx: Out,
    shared: Arc<Shared>,
) {
    let stamp = stamp(&edge);
    let refuse = |why: &str| {
        shared.ended.store(true, Ordering::Release);
        Command::Send(canceled(stamp, spec.id, why))
    };
    let shards = edge.shards();
    let covered: Vec<u32> = if one_key {
        vec![edge.placement().shard(&start)]
    } else {
        edge.placement().span_shards(&start, &end)
    };
    if start_revision < 0 {
        let _ = tx.send(refuse("etcdserver: negative start revision")).await;
        return;
    }
    if start_revision > 0 && covered.len() > 1 {
        let why = format!(
            "meridian: a watch over several shards cannot start at a revision (revisions are per shard and not ordered across the {shards} shards); watch one key, a range inside a co-located prefix (cluster.colocate), or from now (start_revision 0)"
        );
        let _ = tx.send(refuse(&why)).await;
        return;
    }
    let hub = edge.watches.clone();
    let mut subs: Vec<_> = covered
        .iter()
        .map(|&s| {
            let from = if start_revision > 0 {
                shard_from(start_revision, s, shards)
            } else {
                0
            };
            hub.subscribe(s, start.clone(), end.clone(), from, spec.prev_kv)
        })
        .collect();
    // Created: once every shard's start is known (the header: the newest of them).
    let mut created_rev = 0;
    for s in &mut subs {
        match s.started().await {
            Ok(next) => {
                created_rev = created_rev.max(encode(next.saturating_sub(1), s.shard(), shards))
            }
            Err(WatchError::Compacted(h)) => {
                let mut r = canceled(
                    stamp,
                    spec.id,
                    "etcdserver: mvcc: required revision has been compacted",
                );
                r.compact_revision = encode(h, s.shard(), shards);
                shared.ended.store(true, Ordering::Release);
                let _ = tx.send(Command::Send(r)).await;
                return;
            }
        }
    }
    shared.delivered.store(created_rev, Ordering::Relaxed);
    let mut created = stamp.response(spec.id, created_rev);
    created.created = true;
    if tx.send(Command::Send(created)).await.is_err() {
        return;
    }
    let sources: Vec<(u32, Source)> = subs
        .into_iter()
        .map(|s| (s.shard(), s.into_stream()))
        .collect();
    let _ = tx
        .send(Command::Attach {
            spec,
            shared,
            sources,
        })
        .await;
}

/// Events as responses like `base` (watch id, header) of about `RESPONSE_BYTES`, split between
/// revisions (and, with `fragment`, within one: every piece but the last marked `fragment`).
/// Events that surely fit in one response (by `size_bound`, nearly always) are not measured one
/// by one.
pub(super) fn split(
    base: PbWatchResponse,
    fragment: bool,
    events: Vec<PbEvent>,
) -> Vec<PbWatchResponse> {
    use prost::Message;
    if events.iter().map(size_bound).sum::<usize>() <= RESPONSE_BYTES {
        return vec![PbWatchResponse { events, ..base }];
    }
    let mut out = Vec::new();
    let mut cur: Vec<PbEvent> = Vec::new();
    let mut bytes = 0;
    let mut cur_rev = None;
    for e in events {
        let n = e.encoded_len();
        let rev = e.kv.as_ref().map(|kv| kv.mod_revision);
        let new_rev = cur_rev != Some(rev);
        if !cur.is_empty() && bytes + n > RESPONSE_BYTES && (new_rev || fragment) {
            out.push(PbWatchResponse {
                fragment: !new_rev,
                events: std::mem::take(&mut cur),
                ..base.clone()
            });
            bytes = 0;
        }
        cur_rev = Some(rev);
        bytes += n;
        cur.push(e);
    }
    out.push(PbWatchResponse {
        events: cur,
        ..base
    });
    out
}

/// An upper bound of an event's encoded size: its keys and values and 64 bytes for each
/// key-value's other fields (revisions, version, lease, tags and lengths: at most ~50), 16 for
/// the event's own.
fn size_bound(e: &PbEvent) -> usize {
    [&e.kv, &e.prev_kv]
        .into_iter()
        .flatten()
        .map(|kv| kv.key.len() + kv.value.len() + 64)
        .sum::<usize>()
        + 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_revision_maps_to_each_shards_first_revision_at_or_above_it() {
        for shards in [1u32, 3, 4] {
            for shard in 0..shards {
                for r in 1..60i64 {
                    let from = shard_from(r, shard, shards);
                    assert!(encode(from, shard, shards) >= r, "from {from} reaches {r}");
                    assert!(
                        from == 1 || encode(from - 1, shard, shards) < r,
                        "nothing at or above {r} is skipped"
                    );
                }
            }
        }
    }

    fn event(rev: i64, key: usize, value: usize, prev: bool) -> PbEvent {
        let kv = |r: i64| etcd_client::proto::PbKeyValue {
            key: vec![b'k'; key],
            create_revision: r,
            mod_revision: r,
            version: r,
            value: vec![b'v'; value],
            lease: i64::MAX,
        };
        PbEvent {
            r#type: 1,
            kv: Some(kv(rev)),
            prev_kv: prev.then(|| kv(rev - 1)),
        }
    }

    /// The bound that lets `split` skip measuring is a bound: never below the encoded size.
    #[test]
    fn the_size_bound_is_never_below_the_encoded_size() {
        use prost::Message;
        for rev in [1, 300, 1 << 40, i64::MAX] {
            for (key, value) in [(1, 0), (0, 0), (100, 127), (128, 16_384), (4096, 1 << 20)] {
                for prev in [false, true] {
                    let e = event(rev, key, value, prev);
                    assert!(
                        size_bound(&e) >= e.encoded_len(),
                        "{rev} {key} {value} {prev}"
                    );
                }
            }
        }
    }

    /// Small batches go out whole; large ones split between revisions, and within one only
    /// with `fragment` (every piece but the last marked) — every event once, in order.
    #[test]
    fn responses_split_between_revisions_and_fragment_within_one() {
        let base = PbWatchResponse {
            watch_id: 7,
            ..Default::default()
        };
        let flat = |out: &[PbWatchResponse]| -> Vec<i64> {
            out.iter()
                .flat_map(|r| r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision))
                .collect()
        };
        let small: Vec<PbEvent> = (1..=100).map(|r| event(r, 8, 64, true)).collect();
        let out = split(base.clone(), false, small);
        assert_eq!(out.len(), 1);
        assert_eq!(flat(&out), (1..=100).collect::<Vec<_>>());
        // Ten revisions of 300 KiB each: about three per response.
        let big: Vec<PbEvent> = (1..=10).map(|r| event(r, 8, 300 << 10, false)).collect();
        let out = split(base.clone(), false, big);
        assert!(out.len() >= 3, "{} responses", out.len());
        assert_eq!(flat(&out), (1..=10).collect::<Vec<_>>());
        assert!(out.iter().all(|r| r.watch_id == 7 && !r.fragment));
        // One revision of five 300 KiB events (a transaction): whole without `fragment`,
        // in fragments with it.
        let txn = || {
            (0..5)
                .map(|_| event(4, 8, 300 << 10, false))
                .collect::<Vec<_>>()
        };
        assert_eq!(split(base.clone(), false, txn()).len(), 1);
        let out = split(base, true, txn());
        assert!(out.len() >= 2);
        assert_eq!(out.iter().map(|r| r.events.len()).sum::<usize>(), 5);
        let last = out.len() - 1;
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, r)| r.fragment == (i < last)));
    }

    #[test]
    fn spans_follow_etcd() {
        assert_eq!(watch_span(b"a", b""), (b"a".to_vec(), b"a\0".to_vec()));
        assert_eq!(watch_span(b"a", b"\0"), (b"a".to_vec(), Vec::new()));
        assert_eq!(watch_span(b"a", b"b"), (b"a".to_vec(), b"b".to_vec()));
    }
}
