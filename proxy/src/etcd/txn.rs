//! etcd's Txn over the state machine's transaction: compares mapped to the shard's
//! revisions, each branch planned into state-machine operations (every step reads first, so
//! its answer is the state it acted on; nested transactions recursively), and the answers
//! handed back to the plan in the order the operations ran. A range at a revision reads
//! history, which no write changes: it is read before the transaction (`read_history`).
use super::decode_for;
use super::kv::{lease_not_found, pb_kv, shape, span, txn_put, KvService};
use super::{encode, Edge};
use crate::grpc::{caller, check_key, service_status};
use crate::route::Placement;
use etcd_client::proto::{
    PbCompare, PbDeleteResponse, PbPutResponse, PbRangeRequest, PbRangeResponse, PbResponseOp,
    PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnResponse,
};
use meridian_replica::kv::{
    Compare, CompareField, CompareTarget, KeyValue, Order, Outcome, Txn, TxnOp,
};
use tonic::{Request, Status};

impl KvService {
    pub(super) async fn txn_(&self, req: Request<PbTxnRequest>) -> Result<PbTxnResponse, Status> {
        let who = caller(&self.0.proxy, &req)?;
        let r = req.into_inner();
        super::txn_check::check(&r)?;
        let shards = self.0.shards();
        let compares = r
            .compare
            .iter()
            .map(|c| compare(c, self.0.placement()))
            .collect::<Result<Vec<_>, _>>()?;
        let (success, mut s_plan) = ops(&r.success, self.0.placement(), 0)?;
        let (failure, mut f_plan) = ops(&r.failure, self.0.placement(), 0)?;
        // Ranges at a revision read history, which no later write changes: they are read
        // before the transaction, and one that fails (compacted, future, not on one shard)
        // refuses the whole request with nothing written.
        let mut header = 0;
        for plan in [&mut s_plan, &mut f_plan] {
            header = header.max(self.read_history(who.as_ref(), plan).await?);
        }
        if compares.is_empty() && success.is_empty() && failure.is_empty() {
            // Nothing for the log: reads of history at most, on the success branch.
            let mut answers = Answers {
                edge: &self.0,
                header,
                branches: vec![true].into_iter(),
                gets: Vec::new().into_iter(),
                ranges: Vec::new().into_iter(),
            };
            return Ok(answers.txn(s_plan, f_plan));
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

impl KvService {
    /// Reads every range at a revision of `plan` (nested transactions' too) now, in place;
    /// returns the highest header revision among them (0 if none).
    fn read_history<'a>(
        &'a self,
        who: Option<&'a crate::auth::Identity>,
        plan: &'a mut [Step],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<i64, Status>> + Send + 'a>> {
        Box::pin(async move {
            let mut header = 0;
            for step in plan.iter_mut() {
                match step {
                    Step::RangeAt(r) => {
                        let got = self.range_at(who, r).await?;
                        header = header.max(got.header.as_ref().map_or(0, |h| h.revision));
                        *step = Step::Read(Box::new(got));
                    }
                    Step::Txn { success, failure } => {
                        header = header.max(self.read_history(who, success).await?);
                        header = header.max(self.read_history(who, failure).await?);
                    }
                    _ => {}
                }
            }
            Ok(header)
        })
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
            Step::Read(mut r) => {
                r.header = h;
                PbTxnOpResponse::ResponseRange(*r)
            }
            Step::RangeAt(_) => {
                unreachable!("ranges at a revision are read before the transaction")
            }
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
    /// A range at a revision: read from history before the transaction (`read_history`)...
    RangeAt(PbRangeRequest),
    /// ...which leaves its answer here.
    Read(Box<PbRangeResponse>),
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
                check_key(&g.key)?;
                if g.revision != 0 {
                    plan.push(Step::RangeAt(g.clone()));
                    continue;
                }
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
pub(super) fn compare(c: &PbCompare, pl: &Placement) -> Result<Compare, Status> {
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
