//! The native gRPC API (`meridian.v1.Kv`): the same operations, limits and errors as the HTTP
//! API, mapped to gRPC status codes at this edge.
use crate::api::{self, ApiError, MAX_KEY, MAX_VALUE};
use crate::logic::ServiceError;
use crate::Proxy;
use meridian_replica::kv::{Compare, CompareTarget, KeyValue, Op, Outcome, Txn, TxnOp};
use meridian_replica::trace::{self, TraceContext};
use meridian_replica::wire::pb;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct KvService(pub Arc<Proxy>);

/// The one place the service's typed error becomes a gRPC status.
pub(crate) fn service_status(e: ServiceError) -> Status {
    let m = e.to_string();
    match e {
        ServiceError::BadRequest(_) | ServiceError::Refused(_) => Status::invalid_argument(m),
        ServiceError::TooLarge(_) => Status::invalid_argument(m),
        ServiceError::Overloaded => Status::resource_exhausted(m),
        ServiceError::NoLease(_) => Status::unavailable(m),
        ServiceError::Timeout(_) => Status::deadline_exceeded(m),
        ServiceError::Unauthenticated(_) => Status::unauthenticated(m),
        ServiceError::Forbidden(_) => Status::permission_denied(m),
    }
}

fn status(e: ApiError) -> Status {
    match e.status {
        400 | 405 => Status::invalid_argument(e.message),
        413 => Status::invalid_argument(e.message),
        503 => Status::resource_exhausted(e.message),
        504 => Status::deadline_exceeded(e.message),
        404 => Status::not_found(e.message),
        _ => Status::internal(e.message),
    }
}

pub(crate) fn check_key(k: &[u8]) -> Result<(), Status> {
    if k.is_empty() || k.len() > MAX_KEY {
        return Err(Status::invalid_argument(format!(
            "key of {} bytes: keys are 1..={MAX_KEY} bytes",
            k.len()
        )));
    }
    Ok(())
}

fn kv(k: &KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: k.key.clone(),
        value: k.value.clone(),
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
    }
}

/// Reuses the HTTP parameter parsing so both APIs accept exactly the same words.
fn modes(
    consistency: &str,
    read_mode: &str,
) -> Result<(crate::reads::Consistency, crate::reads::Mode), Status> {
    let mut p = BTreeMap::new();
    if !consistency.is_empty() {
        p.insert("consistency".to_string(), consistency.to_string());
    }
    if !read_mode.is_empty() {
        p.insert("read_mode".to_string(), read_mode.to_string());
    }
    Ok((
        api::consistency(&p).map_err(status)?,
        api::read_mode(&p).map_err(status)?,
    ))
}

fn with_meta<T>(msg: T, shard: u32, revision: u64, path: Option<&str>) -> Response<T> {
    let mut r = Response::new(msg);
    let m = r.metadata_mut();
    m.insert(
        "x-meridian-shard",
        shard.to_string().parse().expect("ascii"),
    );
    m.insert(
        "x-meridian-revision",
        revision.to_string().parse().expect("ascii"),
    );
    if let Some(p) = path {
        m.insert("x-meridian-read-path", p.parse().expect("ascii"));
    }
    r
}

/// The caller of a gRPC request (both gRPC edges): `authorization: Bearer <token>` metadata,
/// else the client certificate.
pub(crate) fn caller<T>(
    p: &Proxy,
    req: &Request<T>,
) -> Result<Option<crate::auth::Identity>, Status> {
    let authz = req
        .metadata()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("invalid"));
    let cert = req.peer_certs().and_then(|certs| {
        match meridian_replica::tls::identity(certs.first()?.as_ref())? {
            meridian_replica::tls::Identity::Client(name) => Some(name),
            _ => None,
        }
    });
    p.identify(authz, cert.as_deref()).map_err(service_status)
}

impl KvService {
    fn who<T>(&self, req: &Request<T>) -> Result<Option<crate::auth::Identity>, Status> {
        caller(&self.0, req)
    }

    async fn get_(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetReply>, Status> {
        let who = self.who(&req)?;
        let who = who.as_ref();
        let p = &self.0;
        let r = req.into_inner();
        check_key(&r.key)?;
        let (c, mode) = modes(&r.consistency, &r.read_mode)?;
        let (shard, o) = p.get(who, r.key, c, mode).await.map_err(service_status)?;
        let Outcome::Get { kv: found } = &o.result.outcome else {
            return Err(Status::internal("unexpected reply"));
        };
        let reply = pb::GetReply {
            found: found.is_some(),
            kv: found.as_ref().map(kv),
            revision: o.result.revision,
            shard,
            read_path: o.path.into(),
        };
        Ok(with_meta(reply, shard, o.result.revision, Some(o.path)))
    }

    async fn put_(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutReply>, Status> {
        let who = self.who(&req)?;
        let who = who.as_ref();
        let r = req.into_inner();
        check_key(&r.key)?;
        if r.value.len() > MAX_VALUE {
            return Err(Status::invalid_argument(format!(
                "value of {} bytes exceeds {MAX_VALUE}",
                r.value.len()
            )));
        }
        let shard = self.0.placement.shard(&r.key);
        let res = self
            .0
            .write(
                who,
                shard,
                Op::Put {
                    key: r.key,
                    value: r.value,
                },
            )
            .await
            .map_err(service_status)?;
        Ok(with_meta(
            pb::PutReply {
                revision: res.revision,
                shard,
            },
            shard,
            res.revision,
            None,
        ))
    }

    async fn delete_(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        let who = self.who(&req)?;
        let who = who.as_ref();
        let r = req.into_inner();
        check_key(&r.key)?;
        let shard = self.0.placement.shard(&r.key);
        let res = self
            .0
            .write(who, shard, Op::Delete { key: r.key })
            .await
            .map_err(service_status)?;
        let deleted = matches!(res.outcome, Outcome::Delete { deleted: Some(_) });
        Ok(with_meta(
            pb::DeleteReply {
                deleted,
                revision: res.revision,
                shard,
            },
            shard,
            res.revision,
            None,
        ))
    }

    async fn range_(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeReply>, Status> {
        let who = self.who(&req)?;
        let who = who.as_ref();
        let p = &self.0;
        let r = req.into_inner();
        let (c, mode) = modes(&r.consistency, &r.read_mode)?;
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        if limit > 10_000 || r.prefix.len() > MAX_KEY {
            return Err(Status::invalid_argument(
                "limit must be at most 10000 and the prefix at most 4096 bytes",
            ));
        }
        let crate::service::RangeAnswer { kvs, more, paths } = p
            .range(who, r.prefix, limit, c, mode)
            .await
            .map_err(service_status)?;
        let paths: Vec<String> = paths.into_iter().map(String::from).collect();
        Ok(Response::new(pb::RangeReply {
            kvs: kvs.iter().map(kv).collect(),
            more,
            read_paths: paths,
        }))
    }

    async fn txn_(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnReply>, Status> {
        let who = self.who(&req)?;
        let who = who.as_ref();
        let r = req.into_inner();
        let compares = r
            .compare
            .into_iter()
            .map(|c| {
                check_key(&c.key)?;
                let target = match c.target {
                    Some(pb::compare::Target::Value(v)) => CompareTarget::Value(Some(v)),
                    Some(pb::compare::Target::Absent(_)) => CompareTarget::Value(None),
                    Some(pb::compare::Target::Version(v)) => CompareTarget::Version(v),
                    Some(pb::compare::Target::ModRevision(v)) => CompareTarget::ModRevision(v),
                    None => return Err(Status::invalid_argument("a compare needs a target")),
                };
                Ok(Compare { key: c.key, target })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let ops = |v: Vec<pb::TxnOp>| -> Result<Vec<TxnOp>, Status> {
            v.into_iter()
                .map(|o| match o.op {
                    Some(pb::txn_op::Op::Put(k)) => {
                        check_key(&k.key)?;
                        if k.value.len() > MAX_VALUE {
                            return Err(Status::invalid_argument("txn value exceeds 1 MiB"));
                        }
                        Ok(TxnOp::Put {
                            key: k.key,
                            value: k.value,
                        })
                    }
                    Some(pb::txn_op::Op::Delete(k)) => {
                        check_key(&k).map(|_| TxnOp::Delete { key: k })
                    }
                    Some(pb::txn_op::Op::Get(k)) => check_key(&k).map(|_| TxnOp::Get { key: k }),
                    None => Err(Status::invalid_argument("an empty txn operation")),
                })
                .collect()
        };
        let t = Txn {
            compares,
            success: ops(r.success)?,
            failure: ops(r.failure)?,
        };
        let (shard, res) = self.0.txn(who, t).await.map_err(service_status)?;
        let Outcome::Txn { succeeded, gets } = res.outcome else {
            return Err(Status::internal("unexpected reply"));
        };
        let gets = gets
            .iter()
            .map(|g| pb::TxnGet {
                found: g.is_some(),
                kv: g.as_ref().map(kv),
            })
            .collect();
        Ok(with_meta(
            pb::TxnReply {
                succeeded,
                revision: res.revision,
                shard,
                gets,
            },
            shard,
            res.revision,
            None,
        ))
    }
}

/// Runs one RPC in its trace context: a child of the request's `traceparent` metadata, or a new
/// root; the reply (or the error) carries `x-meridian-trace-id` so a client can find the trace.
async fn traced<T, R, F>(
    req: Request<T>,
    f: impl FnOnce(Request<T>) -> F,
) -> Result<Response<R>, Status>
where
    F: std::future::Future<Output = Result<Response<R>, Status>>,
{
    let ctx = TraceContext::incoming(
        req.metadata()
            .get(trace::TRACEPARENT)
            .and_then(|v| v.to_str().ok()),
    );
    let (r, ctx) = trace::scope_reporting(ctx, f(req)).await;
    let id: tonic::metadata::MetadataValue<_> = ctx.trace_hex().parse().expect("hex is ascii");
    match r {
        Ok(mut r) => {
            r.metadata_mut().insert("x-meridian-trace-id", id);
            Ok(r)
        }
        Err(mut s) => {
            s.metadata_mut().insert("x-meridian-trace-id", id);
            Err(s)
        }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetReply>, Status> {
        traced(req, |r| self.get_(r)).await
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutReply>, Status> {
        traced(req, |r| self.put_(r)).await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        traced(req, |r| self.delete_(r)).await
    }

    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeReply>, Status> {
        traced(req, |r| self.range_(r)).await
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnReply>, Status> {
        traced(req, |r| self.txn_(r)).await
    }
}
