//! etcd's KV service over the proxy's service layer: Range through the same read paths as the
//! native API (linearizable reads through the chooser, `serializable` a local read), Put,
//! DeleteRange and Txn through the write path with exactly-once identities.
use super::{encode, Edge};
use crate::api::MAX_VALUE;
use crate::grpc::{caller, check_key, service_status};
use crate::reads::{Consistency, Mode};
use crate::route::Placement;
use etcd_client::proto::{PbCompactionRequest, PbCompactionResponse, PbRangeRequest};
use etcd_client::proto::{
    PbDeleteRequest, PbDeleteResponse, PbKeyValue, PbKvService, PbPutRequest, PbPutResponse,
    PbRangeResponse, PbRangeStreamResponse, PbTxnRequest, PbTxnResponse,
};
use meridian_replica::kv::{Compare, CompareTarget, KeyValue, Op, Outcome, Txn, TxnOp, KEEP_LEASE};
use tonic::{Request, Response, Status};

pub struct KvService(pub Edge);

pub(super) fn pb_kv(kv: &KeyValue, pl: &Placement, keys_only: bool) -> PbKeyValue {
    let (shard, shards) = (pl.shard(&kv.key), pl.shards());
    PbKeyValue {
        key: kv.key.clone(),
        create_revision: encode(kv.create_revision, shard, shards),
        mod_revision: encode(kv.mod_revision, shard, shards),
        version: kv.version as i64,
        value: if keys_only {
            Vec::new()
        } else {
            kv.value.clone()
        },
        lease: kv.lease,
    }
}

/// etcd's answer to a put naming a lease that does not exist.
pub fn lease_not_found() -> Status {
    Status::not_found("etcdserver: requested lease not found")
}

/// A put's write: plain, attached to a TTL lease, or keeping the key's current lease.
fn put_op(key: Vec<u8>, value: Vec<u8>, lease: i64, ignore_lease: bool) -> Result<Op, Status> {
    if lease < 0 {
        return Err(lease_not_found());
    }
    Ok(if ignore_lease {
        Op::LeasePut {
            key,
            value,
            lease: KEEP_LEASE,
        }
    } else if lease != 0 {
        Op::LeasePut { key, value, lease }
    } else {
        Op::Put { key, value }
    })
}

pub(super) fn txn_put(
    key: Vec<u8>,
    value: Vec<u8>,
    lease: i64,
    ignore_lease: bool,
) -> Result<TxnOp, Status> {
    Ok(match put_op(key, value, lease, ignore_lease)? {
        Op::LeasePut { key, value, lease } => TxnOp::PutLease { key, value, lease },
        Op::Put { key, value } => TxnOp::Put { key, value },
        _ => unreachable!("put_op makes puts"),
    })
}

/// `[key, range_end)` in etcd's terms as a span: `range_end` "\0" means every key from `key`
/// (and `key` "\0" with it: every key).
pub(super) fn span(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if range_end == [0] {
        (key.to_vec(), Vec::new())
    } else {
        (key.to_vec(), range_end.to_vec())
    }
}

/// The largest etcd revision among (shard, revision) pairs.
pub(super) fn top(revisions: &[(u32, u64)], shards: u32) -> i64 {
    revisions
        .iter()
        .map(|&(s, r)| encode(r, s, shards))
        .max()
        .unwrap_or(0)
}

impl KvService {
    async fn range_(&self, req: Request<PbRangeRequest>) -> Result<PbRangeResponse, Status> {
        let who = caller(&self.0.proxy, &req)?;
        let r = req.into_inner();
        let p = &self.0.proxy;
        let shards = self.0.shards();
        if r.key.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        if r.revision != 0 {
            return self.range_at(who.as_ref(), &r).await;
        }
        let filters = [
            r.min_mod_revision,
            r.max_mod_revision,
            r.min_create_revision,
            r.max_create_revision,
        ];
        let c = if r.serializable {
            Consistency::Serializable
        } else {
            Consistency::Linearizable
        };
        let (kvs, count, header) = if r.range_end.is_empty() {
            check_key(&r.key)?;
            let (shard, o) = p
                .get(who.as_ref(), r.key.clone(), c, Mode::Auto)
                .await
                .map_err(service_status)?;
            let kv = match o.result.outcome {
                Outcome::Get { kv } => kv,
                other => return Err(Status::internal(format!("a get answered {other:?}"))),
            };
            let n = u64::from(kv.is_some());
            (
                kv.into_iter().collect::<Vec<_>>(),
                n,
                encode(o.result.revision, shard, shards),
            )
        } else {
            let (start, end) = span(&r.key, &r.range_end);
            let by_revision = matches!(r.sort_target, 2 | 3);
            if self.0.placement().span_shard(&start, &end).is_none()
                && (filters.iter().any(|f| *f != 0) || by_revision)
            {
                return Err(Status::invalid_argument(
                    "revision filters and sorting by revision need a range on one shard: revisions of different shards are not ordered (co-locate the prefix with cluster.colocate, or use a one-shard cluster)",
                ));
            }
            // Sorting on anything but ascending keys needs the whole span before the limit.
            let by_key = r.sort_target == 0 && r.sort_order != 2;
            let limit = if by_key { r.limit.max(0) as usize } else { 0 };
            let a = p
                .scan(who.as_ref(), start, end, limit, c, Mode::Auto)
                .await
                .map_err(service_status)?;
            (a.kvs, a.count, top(&a.revisions, shards))
        };
        Ok(shape(&self.0, &r, kvs, count, header))
    }

    /// A Range at a revision: the keys as they were then, from the watch history of the one
    /// shard the range lies on (the shard's revision at etcd revision `R` is its last one whose
    /// etcd revision is at most `R`).
    pub(super) async fn range_at(
        &self,
        who: Option<&crate::auth::Identity>,
        r: &PbRangeRequest,
    ) -> Result<PbRangeResponse, Status> {
        if r.revision < 0 {
            return Err(Status::invalid_argument(format!(
                "meridian: revision {} is negative",
                r.revision
            )));
        }
        let shards = self.0.shards();
        let (start, end) = if r.range_end.is_empty() {
            check_key(&r.key)?;
            let mut end = r.key.clone();
            end.push(0);
            (r.key.clone(), end)
        } else {
            span(&r.key, &r.range_end)
        };
        let Some(shard) = self.0.placement().span_shard(&start, &end) else {
            return Err(Status::invalid_argument(
                "a read at a revision needs a range on one shard: revisions of different shards are not ordered (co-locate the prefix with cluster.colocate, or use a one-shard cluster)",
            ));
        };
        let at = super::shard_from(r.revision.saturating_add(1), shard, shards) - 1;
        let by_key = r.sort_target == 0 && r.sort_order != 2;
        let limit = if by_key { r.limit.max(0) as usize } else { 0 };
        let a = self
            .0
            .proxy
            .scan_at(who, shard, start, end, limit, at)
            .await
            .map_err(service_status)?;
        match a {
            crate::service::AtRevision::Keys {
                kvs,
                count,
                revision,
            } => Ok(shape(
                &self.0,
                r,
                kvs,
                count,
                encode(revision, shard, shards),
            )),
            crate::service::AtRevision::Compacted(_) => Err(Status::out_of_range(
                "etcdserver: mvcc: required revision has been compacted",
            )),
            crate::service::AtRevision::Future(_) => Err(Status::out_of_range(
                "etcdserver: mvcc: required revision is a future revision",
            )),
        }
    }

    async fn put_(&self, req: Request<PbPutRequest>) -> Result<PbPutResponse, Status> {
        let who = caller(&self.0.proxy, &req)?;
        let r = req.into_inner();
        let p = &self.0.proxy;
        let shards = self.0.shards();
        check_key(&r.key)?;
        if r.value.len() > MAX_VALUE {
            return Err(Status::invalid_argument(
                "etcdserver: request is too large (values are at most 1 MiB)",
            ));
        }
        let shard = self.0.placement().shard(&r.key);
        if r.ignore_value {
            return self.put_keeping_value(who.as_ref(), r).await;
        }
        let op = put_op(r.key, r.value, r.lease, r.ignore_lease)?;
        let res = p
            .write(who.as_ref(), shard, op)
            .await
            .map_err(service_status)?;
        let prev = match res.outcome {
            Outcome::Put { prev } => prev,
            Outcome::Lease(_) => return Err(lease_not_found()),
            other => return Err(Status::internal(format!("a put answered {other:?}"))),
        };
        Ok(PbPutResponse {
            header: self.0.header(encode(res.revision, shard, shards)),
            prev_kv: prev
                .filter(|_| r.prev_kv)
                .map(|k| pb_kv(&k, self.0.placement(), false)),
        })
    }

    /// `ignore_value`: a put of the key's current value, as a compare-and-set on its mod
    /// revision (retried if another write got in between).
    async fn put_keeping_value(
        &self,
        who: Option<&crate::auth::Identity>,
        r: PbPutRequest,
    ) -> Result<PbPutResponse, Status> {
        let p = &self.0.proxy;
        let shards = self.0.shards();
        for _ in 0..8 {
            let (shard, o) = p
                .get(who, r.key.clone(), Consistency::Linearizable, Mode::Auto)
                .await
                .map_err(service_status)?;
            let Outcome::Get { kv: Some(cur) } = o.result.outcome else {
                return Err(Status::invalid_argument("etcdserver: key not found"));
            };
            let t = Txn {
                compares: vec![Compare {
                    key: r.key.clone(),
                    target: CompareTarget::ModRevision(cur.mod_revision),
                }],
                success: vec![txn_put(
                    r.key.clone(),
                    cur.value.clone(),
                    r.lease,
                    r.ignore_lease,
                )?],
                failure: vec![],
            };
            let (_, res) = p.txn(who, t).await.map_err(service_status)?;
            if let Outcome::Lease(_) = res.outcome {
                return Err(lease_not_found());
            }
            if let Outcome::Txn {
                succeeded: true, ..
            } = res.outcome
            {
                return Ok(PbPutResponse {
                    header: self.0.header(encode(res.revision, shard, shards)),
                    prev_kv: r.prev_kv.then(|| pb_kv(&cur, self.0.placement(), false)),
                });
            }
        }
        Err(Status::aborted(
            "the key kept changing: ignore_value could not keep its value",
        ))
    }

    async fn delete_(&self, req: Request<PbDeleteRequest>) -> Result<PbDeleteResponse, Status> {
        let who = caller(&self.0.proxy, &req)?;
        let r = req.into_inner();
        let p = &self.0.proxy;
        let shards = self.0.shards();
        if r.key.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        let (deleted, header) = if r.range_end.is_empty() {
            check_key(&r.key)?;
            let shard = self.0.placement().shard(&r.key);
            let res = p
                .write(who.as_ref(), shard, Op::Delete { key: r.key })
                .await
                .map_err(service_status)?;
            let d = match res.outcome {
                Outcome::Delete { deleted } => deleted.into_iter().collect::<Vec<_>>(),
                other => return Err(Status::internal(format!("a delete answered {other:?}"))),
            };
            (d, encode(res.revision, shard, shards))
        } else {
            let (start, end) = span(&r.key, &r.range_end);
            let (d, revs) = p
                .delete_span(who.as_ref(), start, end)
                .await
                .map_err(service_status)?;
            (d, top(&revs, shards))
        };
        Ok(PbDeleteResponse {
            header: self.0.header(header),
            deleted: deleted.len() as i64,
            prev_kvs: if r.prev_kv {
                deleted
                    .iter()
                    .map(|k| pb_kv(k, self.0.placement(), false))
                    .collect()
            } else {
                Vec::new()
            },
        })
    }
}

type RangeStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<PbRangeStreamResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        self.range_(request).await.map(Response::new)
    }

    type RangeStreamStream = RangeStream;

    async fn range_stream(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<RangeStream>, Status> {
        // One chunk: the whole answer.
        let r = self.range_(request).await?;
        let s = futures::stream::once(async move {
            Ok(PbRangeStreamResponse {
                range_response: Some(r),
            })
        });
        Ok(Response::new(Box::pin(s)))
    }

    async fn put(&self, request: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        self.put_(request).await.map(Response::new)
    }

    async fn delete_range(
        &self,
        request: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        self.delete_(request).await.map(Response::new)
    }

    async fn txn(&self, request: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        self.txn_(request).await.map(Response::new)
    }

    /// Trims the watch history of every shard below `revision` (through each shard's log, so
    /// every replica trims at the same point); a later watch from below it is told
    /// `compacted`. Meridian keeps no older versions for Range, so reads are unaffected.
    async fn compact(
        &self,
        request: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let who = caller(&self.0.proxy, &request)?;
        let r = request.into_inner();
        if r.revision <= 0 {
            return Err(Status::invalid_argument(
                "etcdserver: mvcc: required revision has been compacted",
            ));
        }
        let shards = self.0.shards();
        let mut top_rev = 0;
        let writes = (0..shards).map(|s| {
            let op = Op::Compact {
                revision: super::shard_from(r.revision, s, shards),
            };
            let who = who.clone();
            async move {
                self.0
                    .proxy
                    .write(who.as_ref(), s, op)
                    .await
                    .map(|res| encode(res.revision, s, shards))
            }
        });
        for res in futures::future::join_all(writes).await {
            top_rev = top_rev.max(res.map_err(service_status)?);
        }
        Ok(Response::new(PbCompactionResponse {
            header: self.0.header(top_rev),
        }))
    }
}

/// A Range's answer from the keys of its span (`count` of them in all): revision filters, sort,
/// limit, keys/count only.
pub(super) fn shape(
    edge: &Edge,
    r: &PbRangeRequest,
    mut kvs: Vec<KeyValue>,
    count: u64,
    header: i64,
) -> PbRangeResponse {
    let shards = edge.shards();
    let filters = [
        r.min_mod_revision,
        r.max_mod_revision,
        r.min_create_revision,
        r.max_create_revision,
    ];
    let rev_of = |kv: &KeyValue, f: fn(&KeyValue) -> u64| {
        encode(f(kv), edge.placement().shard(&kv.key), shards)
    };
    kvs.retain(|kv| {
        let m = rev_of(kv, |k| k.mod_revision);
        let cr = rev_of(kv, |k| k.create_revision);
        (r.min_mod_revision == 0 || m >= r.min_mod_revision)
            && (r.max_mod_revision == 0 || m <= r.max_mod_revision)
            && (r.min_create_revision == 0 || cr >= r.min_create_revision)
            && (r.max_create_revision == 0 || cr <= r.max_create_revision)
    });
    // sort_target: KEY 0, VERSION 1, CREATE 2, MOD 3, VALUE 4; sort_order: NONE 0, ASCEND 1,
    // DESCEND 2.
    match r.sort_target {
        1 => kvs.sort_by_key(|k| k.version),
        2 => kvs.sort_by_key(|k| rev_of(k, |k| k.create_revision)),
        3 => kvs.sort_by_key(|k| rev_of(k, |k| k.mod_revision)),
        4 => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
        _ => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
    }
    if r.sort_order == 2 {
        kvs.reverse();
    }
    if r.limit > 0 {
        kvs.truncate(r.limit as usize);
    }
    let more = (kvs.len() as u64) < count && filters.iter().all(|f| *f == 0);
    PbRangeResponse {
        header: edge.header(header),
        kvs: if r.count_only {
            Vec::new()
        } else {
            kvs.iter()
                .map(|k| pb_kv(k, edge.placement(), r.keys_only))
                .collect()
        },
        more,
        count: count as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::super::txn::compare;
    use super::*;
    use etcd_client::proto::{PbCompare, PbTargetUnion};
    use meridian_replica::kv::{CompareField, Order};

    #[test]
    fn compares_map_to_the_state_machine_and_refuse_foreign_revisions() {
        let c = |result, target, u| PbCompare {
            result,
            target,
            key: b"k".to_vec(),
            range_end: vec![],
            target_union: u,
        };
        let t = compare(
            &c(1, 0, Some(PbTargetUnion::Version(3))),
            &Placement::hashed(1),
        )
        .unwrap();
        assert_eq!(
            t.target,
            CompareTarget::Ordered(CompareField::Version(3), Order::Greater)
        );
        let t = compare(&c(0, 2, None), &Placement::hashed(4)).unwrap();
        assert_eq!(
            t.target,
            CompareTarget::Ordered(CompareField::ModRevision(0), Order::Equal)
        );
        let shard = Placement::hashed(4).shard(b"k");
        let mine = encode(9, shard, 4);
        let t = compare(
            &c(2, 1, Some(PbTargetUnion::CreateRevision(mine))),
            &Placement::hashed(4),
        )
        .unwrap();
        assert_eq!(
            t.target,
            CompareTarget::Ordered(CompareField::CreateRevision(9), Order::Less)
        );
        let theirs = encode(9, (shard + 1) % 4, 4);
        assert!(compare(
            &c(2, 1, Some(PbTargetUnion::CreateRevision(theirs))),
            &Placement::hashed(4)
        )
        .is_err());
        assert!(compare(&c(7, 0, None), &Placement::hashed(1)).is_err());
        let mut ranged = c(0, 0, None);
        ranged.range_end = b"z".to_vec();
        assert!(compare(&ranged, &Placement::hashed(1)).is_err());
    }

    #[test]
    fn spans_follow_etcds_range_end() {
        assert_eq!(span(b"a", b"b"), (b"a".to_vec(), b"b".to_vec()));
        assert_eq!(span(b"a", b"\0"), (b"a".to_vec(), vec![]));
        assert_eq!(span(b"\0", b"\0"), (b"\0".to_vec(), vec![]));
    }
}
