//! etcd's KV service over the proxy's service layer: Range through the same read paths as the
//! native API (linearizable reads through the chooser, `serializable` a local read), Put,
//! DeleteRange and Txn through the write path with exactly-once identities.
use super::{decode_for, encode, Edge};
use crate::api::MAX_VALUE;
use crate::grpc::{caller, check_key, service_status};
use crate::reads::{Consistency, Mode};
use crate::route::Placement;
use etcd_client::proto::{PbCompactionRequest, PbCompactionResponse, PbRangeRequest};
use etcd_client::proto::{
    PbCompare, PbDeleteRequest, PbDeleteResponse, PbKeyValue, PbKvService, PbPutRequest,
    PbPutResponse, PbRangeResponse, PbRangeStreamResponse, PbResponseOp, PbTargetUnion,
    PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnResponse,
};
use meridian_replica::kv::{
    Compare, CompareField, CompareTarget, KeyValue, Op, Order, Outcome, Txn, TxnOp, KEEP_LEASE,
};
use tonic::{Request, Response, Status};

pub struct KvService(pub Edge);

fn pb_kv(kv: &KeyValue, pl: &Placement, keys_only: bool) -> PbKeyValue {
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

fn txn_put(key: Vec<u8>, value: Vec<u8>, lease: i64, ignore_lease: bool) -> Result<TxnOp, Status> {
    Ok(match put_op(key, value, lease, ignore_lease)? {
        Op::LeasePut { key, value, lease } => TxnOp::PutLease { key, value, lease },
        Op::Put { key, value } => TxnOp::Put { key, value },
        _ => unreachable!("put_op makes puts"),
    })
}

/// `[key, range_end)` in etcd's terms as a span: `range_end` "\0" means every key from `key`
/// (and `key` "\0" with it: every key).
fn span(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if range_end == [0] {
        (key.to_vec(), Vec::new())
    } else {
        (key.to_vec(), range_end.to_vec())
    }
}

/// The largest etcd revision among (shard, revision) pairs.
fn top(revisions: &[(u32, u64)], shards: u32) -> i64 {
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
    async fn range_at(
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

    async fn txn_(&self, req: Request<PbTxnRequest>) -> Result<PbTxnResponse, Status> {
        let who = caller(&self.0.proxy, &req)?;
        let r = req.into_inner();
        let shards = self.0.shards();
        let compares = r
            .compare
            .iter()
            .map(|c| compare(c, self.0.placement()))
            .collect::<Result<Vec<_>, _>>()?;
        let (success, s_plan) = ops(&r.success, self.0.placement(), 0)?;
        let (failure, f_plan) = ops(&r.failure, self.0.placement(), 0)?;
        if compares.is_empty() && success.is_empty() && failure.is_empty() {
            return Ok(PbTxnResponse {
                header: self.0.header(0),
                succeeded: true,
                responses: Vec::new(),
            });
        }
        let t = Txn {
            compares,
            success,
            failure,
        };
        let (shard, res) = self
            .0
            .proxy
            .txn(who.as_ref(), t)
            .await
            .map_err(service_status)?;
        let (branches, gets, ranges) = match res.outcome {
            Outcome::Txn { succeeded, gets } => (vec![succeeded], gets, Vec::new()),
            Outcome::TxnRanges {
                succeeded,
                gets,
                ranges,
            } => (vec![succeeded], gets, ranges),
            Outcome::TxnTree {
                branches,
                gets,
                ranges,
            } => (branches, gets, ranges),
            Outcome::Lease(_) => return Err(lease_not_found()),
            _ => return Err(Status::internal("a transaction answered something else")),
        };
        let mut answers = Answers {
            edge: &self.0,
            header: encode(res.revision, shard, shards),
            branches: branches.into_iter(),
            gets: gets.into_iter(),
            ranges: ranges.into_iter(),
        };
        Ok(answers.txn(s_plan, f_plan))
    }
}

/// The state machine's answers to a transaction, handed out to its plan in the order its
/// operations ran.
struct Answers<'a> {
    edge: &'a Edge,
    header: i64,
    branches: std::vec::IntoIter<bool>,
    gets: std::vec::IntoIter<Option<KeyValue>>,
    ranges: std::vec::IntoIter<Vec<KeyValue>>,
}

impl Answers<'_> {
    /// A transaction's response: the branch it took (the next one in the list) and the
    /// responses of that branch's steps.
    fn txn(&mut self, s_plan: Vec<Step>, f_plan: Vec<Step>) -> PbTxnResponse {
        let succeeded = self.branches.next().unwrap_or(false);
        let plan = if succeeded { s_plan } else { f_plan };
        let responses = plan
            .into_iter()
            .map(|step| PbResponseOp {
                response: Some(self.step(step)),
            })
            .collect();
        PbTxnResponse {
            header: self.edge.header(self.header),
            succeeded,
            responses,
        }
    }

    fn step(&mut self, step: Step) -> PbTxnOpResponse {
        let pl = self.edge.placement();
        let h = self.edge.header(self.header);
        match step {
            Step::Span(r) => {
                let kvs = self.ranges.next().unwrap_or_default();
                let n = kvs.len() as u64;
                PbTxnOpResponse::ResponseRange(shape(self.edge, &r, kvs, n, self.header))
            }
            Step::DeleteSpan { prev_kv } => {
                let kvs = self.ranges.next().unwrap_or_default();
                PbTxnOpResponse::ResponseDeleteRange(PbDeleteResponse {
                    header: h,
                    deleted: kvs.len() as i64,
                    prev_kvs: if prev_kv {
                        kvs.iter().map(|k| pb_kv(k, pl, false)).collect()
                    } else {
                        Vec::new()
                    },
                })
            }
            Step::Txn { success, failure } => {
                PbTxnOpResponse::ResponseTxn(self.txn(success, failure))
            }
            Step::Range {
                keys_only,
                count_only,
            } => {
                let got = self.gets.next().flatten();
                PbTxnOpResponse::ResponseRange(PbRangeResponse {
                    header: h,
                    count: i64::from(got.is_some()),
                    kvs: if count_only {
                        Vec::new()
                    } else {
                        got.iter().map(|k| pb_kv(k, pl, keys_only)).collect()
                    },
                    more: false,
                })
            }
            Step::Put { prev_kv } => {
                let got = self.gets.next().flatten();
                PbTxnOpResponse::ResponsePut(PbPutResponse {
                    header: h,
                    prev_kv: got.filter(|_| prev_kv).map(|k| pb_kv(&k, pl, false)),
                })
            }
            Step::Delete { prev_kv } => {
                let got = self.gets.next().flatten();
                PbTxnOpResponse::ResponseDeleteRange(PbDeleteResponse {
                    header: h,
                    deleted: i64::from(got.is_some()),
                    prev_kvs: got
                        .iter()
                        .filter(|_| prev_kv)
                        .map(|k| pb_kv(k, pl, false))
                        .collect(),
                })
            }
        }
    }
}

/// How one etcd operation of a transaction's branch is answered: every step reads the key
/// first (a `Get` in the same transaction, so the answer is the state the step acted on).
enum Step {
    Range {
        keys_only: bool,
        count_only: bool,
    },
    /// A range over a span (answered from `TxnRanges`).
    Span(PbRangeRequest),
    Put {
        prev_kv: bool,
    },
    Delete {
        prev_kv: bool,
    },
    /// A delete of a span: a `Range` of the span in front of it tells what it deleted.
    DeleteSpan {
        prev_kv: bool,
    },
    /// A nested transaction: the plans of its two branches.
    Txn {
        success: Vec<Step>,
        failure: Vec<Step>,
    },
}

/// How deep etcd lets transactions nest (its server has no fixed bound; one here keeps a
/// request from recursing without end).
const MAX_TXN_DEPTH: usize = 8;

fn ops(
    reqs: &[etcd_client::proto::PbTxnRequestOp],
    pl: &Placement,
    depth: usize,
) -> Result<(Vec<TxnOp>, Vec<Step>), Status> {
    let mut out = Vec::new();
    let mut plan = Vec::new();
    for r in reqs {
        match &r.request {
            Some(PbTxnOpRequest::RequestRange(g)) => {
                if g.revision != 0 {
                    return Err(Status::unimplemented("a range inside a transaction reads the present: a revision is not supported there"));
                }
                check_key(&g.key)?;
                if !g.range_end.is_empty() {
                    // A span: the proxy refuses it unless it lies on the transaction's shard.
                    let (start, end) = span(&g.key, &g.range_end);
                    out.push(TxnOp::Range { start, end });
                    plan.push(Step::Span(g.clone()));
                    continue;
                }
                out.push(TxnOp::Get { key: g.key.clone() });
                plan.push(Step::Range {
                    keys_only: g.keys_only,
                    count_only: g.count_only,
                });
            }
            Some(PbTxnOpRequest::RequestPut(p)) => {
                check_key(&p.key)?;
                if p.ignore_value {
                    return Err(Status::invalid_argument(
                        "ignore_value inside a transaction is not supported",
                    ));
                }
                out.push(TxnOp::Get { key: p.key.clone() });
                out.push(txn_put(
                    p.key.clone(),
                    p.value.clone(),
                    p.lease,
                    p.ignore_lease,
                )?);
                plan.push(Step::Put { prev_kv: p.prev_kv });
            }
            Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                check_key(&d.key)?;
                if !d.range_end.is_empty() {
                    // A span: like a span range, it must lie on the transaction's shard.
                    let (start, end) = span(&d.key, &d.range_end);
                    out.push(TxnOp::Range {
                        start: start.clone(),
                        end: end.clone(),
                    });
                    out.push(TxnOp::DeleteRange { start, end });
                    plan.push(Step::DeleteSpan { prev_kv: d.prev_kv });
                    continue;
                }
                out.push(TxnOp::Get { key: d.key.clone() });
                out.push(TxnOp::Delete { key: d.key.clone() });
                plan.push(Step::Delete { prev_kv: d.prev_kv });
            }
            Some(PbTxnOpRequest::RequestTxn(t)) => {
                if depth + 1 >= MAX_TXN_DEPTH {
                    return Err(Status::invalid_argument(format!(
                        "transactions nest at most {MAX_TXN_DEPTH} deep"
                    )));
                }
                let compares = t
                    .compare
                    .iter()
                    .map(|c| compare(c, pl))
                    .collect::<Result<Vec<_>, _>>()?;
                let (success, s_plan) = ops(&t.success, pl, depth + 1)?;
                let (failure, f_plan) = ops(&t.failure, pl, depth + 1)?;
                out.push(TxnOp::Txn(Txn {
                    compares,
                    success,
                    failure,
                }));
                plan.push(Step::Txn {
                    success: s_plan,
                    failure: f_plan,
                });
            }
            None => return Err(Status::invalid_argument("an empty request operation")),
        }
    }
    Ok((out, plan))
}

/// etcd's Compare as the state machine's: result EQUAL 0, GREATER 1, LESS 2, NOT_EQUAL 3;
/// target VERSION 0, CREATE 1, MOD 2, VALUE 3, LEASE 4.
fn compare(c: &PbCompare, pl: &Placement) -> Result<Compare, Status> {
    if !c.range_end.is_empty() {
        return Err(Status::invalid_argument(
            "a compare over a key range is not supported (range_end must be empty)",
        ));
    }
    check_key(&c.key)?;
    let order = match c.result {
        0 => Order::Equal,
        1 => Order::Greater,
        2 => Order::Less,
        3 => Order::NotEqual,
        n => {
            return Err(Status::invalid_argument(format!(
                "unknown compare result {n}"
            )))
        }
    };
    let (shard, shards) = (pl.shard(&c.key), pl.shards());
    let number = |n: i64| -> Result<u64, Status> {
        u64::try_from(n).map_err(|_| Status::invalid_argument(format!("{n} is negative")))
    };
    let field = match (c.target, &c.target_union) {
        (0, Some(PbTargetUnion::Version(v))) => CompareField::Version(number(*v)?),
        (1, Some(PbTargetUnion::CreateRevision(r))) => {
            CompareField::CreateRevision(decode_for(*r, shard, shards)?)
        }
        (2, Some(PbTargetUnion::ModRevision(r))) => {
            CompareField::ModRevision(decode_for(*r, shard, shards)?)
        }
        (3, Some(PbTargetUnion::Value(v))) => CompareField::Value(v.clone()),
        (4, Some(PbTargetUnion::Lease(l))) => CompareField::Lease(number(*l)?),
        // proto3 leaves a zero number out: the target alone says which.
        (0, None) => CompareField::Version(0),
        (1, None) => CompareField::CreateRevision(0),
        (2, None) => CompareField::ModRevision(0),
        (3, None) => CompareField::Value(Vec::new()),
        (4, None) => CompareField::Lease(0),
        (t, _) => {
            return Err(Status::invalid_argument(format!(
                "compare target {t} does not match its value"
            )))
        }
    };
    Ok(Compare {
        key: c.key.clone(),
        target: CompareTarget::Ordered(field, order),
    })
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
fn shape(
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
    use super::*;

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
