//! The HTTP/JSON API (hyper): `GET/PUT/DELETE /v1/kv/{key}`, `GET /v1/kv?prefix=..&limit=..`,
//! `POST /v1/txn`, `GET /v1/cluster/rtt`. Values travel raw (metadata in `x-meridian-*`
//! headers) unless `?format=json`.
use crate::api::{self, bad, ApiError, MAX_VALUE};
use crate::logic::ServiceError;
use crate::reads::{Consistency, Mode};
use crate::Proxy;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use meridian_replica::kv::{Compare, CompareTarget, KeyValue, KvResult, Op, Outcome, Txn, TxnOp};
use meridian_replica::trace::{self, TraceContext};
use serde_json::{json, Value};
use std::sync::Arc;

pub type Body = Full<Bytes>;

fn error(e: ApiError) -> Response<Body> {
    let mut r = Response::new(Full::from(json!({"error": e.message}).to_string()));
    *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    if e.status == 503 {
        r.headers_mut()
            .insert("retry-after", "1".parse().expect("header"));
    }
    if e.status == 401 {
        r.headers_mut().insert(
            "www-authenticate",
            "Bearer realm=\"meridian\"".parse().expect("header"),
        );
    }
    r
}

/// The one place the service's typed error becomes an HTTP status.
pub(crate) fn api_error(e: ServiceError) -> ApiError {
    let status = match &e {
        ServiceError::BadRequest(_) | ServiceError::Refused(_) => 400,
        ServiceError::TooLarge(_) => 413,
        ServiceError::Overloaded | ServiceError::NoLease(_) => 503,
        ServiceError::Timeout(_) => 504,
        ServiceError::Unauthenticated(_) => 401,
        ServiceError::Forbidden(_) => 403,
    };
    ApiError {
        status,
        message: e.to_string(),
    }
}

fn kv_json(kv: &KeyValue) -> Value {
    json!({"key": String::from_utf8_lossy(&kv.key), "value": String::from_utf8_lossy(&kv.value),
           "create_revision": kv.create_revision, "mod_revision": kv.mod_revision, "version": kv.version})
}

/// One request, in its trace context: a child of its `traceparent` header, or a new root; the
/// response carries `x-meridian-trace-id` so a client can find the trace.
/// `cert_client`: the client name of the connection's certificate, if it presented one.
pub async fn handle(
    p: Arc<Proxy>,
    req: Request<hyper::body::Incoming>,
    cert_client: Option<&str>,
) -> Response<Body> {
    let ctx = TraceContext::incoming(
        req.headers()
            .get(trace::TRACEPARENT)
            .and_then(|v| v.to_str().ok()),
    );
    let (r, ctx) = trace::scope_reporting(ctx, route(&p, req, cert_client)).await;
    let mut r = r.unwrap_or_else(error);
    r.headers_mut().insert(
        "x-meridian-trace-id",
        ctx.trace_hex().parse().expect("hex is a header value"),
    );
    r
}

async fn route(
    p: &Arc<Proxy>,
    req: Request<hyper::body::Incoming>,
    cert_client: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    // Health checks need no credential; everything else does when [auth] is on.
    let who = if req.uri().path() == "/healthz" {
        None
    } else {
        let authz = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("invalid"));
        p.identify(authz, cert_client).map_err(api_error)?
    };
    let who = who.as_ref();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let q = query.as_deref();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/kv") => list(p, who, q).await,
        (Method::POST, "/v1/txn") => txn(p, who, q, req).await,
        (Method::GET, "/v1/cluster/rtt") => rtt(p),
        (Method::GET, "/healthz") => Ok(json_response(StatusCode::OK, json!({"ok": true}))),
        (m, k) if k.starts_with("/v1/kv/") => {
            let key = api::key_from_path(&k["/v1/kv/".len()..])?;
            match m {
                Method::GET => get(p, who, key, q).await,
                Method::PUT => put(p, who, key, q, req).await,
                Method::DELETE => delete(p, who, key, q).await,
                _ => Err(ApiError {
                    status: 405,
                    message: format!("method {m} not allowed on /v1/kv/{{key}}"),
                }),
            }
        }
        _ => Err(ApiError {
            status: 404,
            message: format!("no such endpoint: {path}"),
        }),
    }
}

fn json_response(status: StatusCode, v: Value) -> Response<Body> {
    let mut r = Response::new(Full::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    r
}

fn meta(r: &mut Response<Body>, shard: u32, revision: u64, path: Option<&str>) {
    let h = r.headers_mut();
    h.insert("x-meridian-shard", shard.into());
    h.insert("x-meridian-revision", revision.into());
    if let Some(path) = path {
        h.insert("x-meridian-read-path", path.parse().expect("header"));
    }
}

/// Reads a body of at most `limit` bytes. A larger one is refused with 413; up to 16 MiB of it
/// is still read and discarded first, so that an HTTP/1.1 client that sends the whole body
/// before reading can see the answer.
async fn body(
    req: Request<hyper::body::Incoming>,
    limit: usize,
    within: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let deadline = tokio::time::Instant::now() + within;
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let too_big = |n: usize| ApiError {
        status: 413,
        message: format!("body of {n} bytes exceeds the limit of {limit}"),
    };
    let mut b = req.into_body();
    let mut out = Vec::new();
    let mut seen = 0usize;
    loop {
        let Ok(frame) = tokio::time::timeout_at(deadline, b.frame()).await else {
            return Err(ApiError {
                status: 408,
                message: format!(
                    "the request body did not arrive within {} ms",
                    within.as_millis()
                ),
            });
        };
        let Some(frame) = frame else { break };
        let Ok(frame) = frame else {
            return Err(bad("request body could not be read"));
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                out.extend_from_slice(&data);
            } else if seen > 16 << 20 {
                return Err(too_big(declared.unwrap_or(seen)));
            }
        }
    }
    if seen > limit {
        return Err(too_big(seen));
    }
    Ok(Bytes::from(out))
}

async fn write(p: &Proxy, who: Who<'_>, shard: u32, op: Op) -> Result<KvResult, ApiError> {
    p.write(who, shard, op).await.map_err(api_error)
}

type Who<'a> = Option<&'a crate::auth::Identity>;

async fn put(
    p: &Arc<Proxy>,
    who: Who<'_>,
    key: Vec<u8>,
    q: Option<&str>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    let params = api::params(q, &["format"])?;
    let as_json = api::json_format(&params)?;
    let value = body(req, MAX_VALUE, p.body_timeout).await?;
    let shard = p.placement.shard(&key);
    let r = write(
        p,
        who,
        shard,
        Op::Put {
            key: key.clone(),
            value: value.to_vec(),
        },
    )
    .await?;
    let mut resp = if as_json {
        json_response(
            StatusCode::OK,
            json!({"key": String::from_utf8_lossy(&key), "revision": r.revision, "shard": shard}),
        )
    } else {
        Response::new(Full::from(Bytes::new()))
    };
    meta(&mut resp, shard, r.revision, None);
    Ok(resp)
}

async fn delete(
    p: &Arc<Proxy>,
    who: Who<'_>,
    key: Vec<u8>,
    q: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let params = api::params(q, &["format"])?;
    let as_json = api::json_format(&params)?;
    let shard = p.placement.shard(&key);
    let r = write(p, who, shard, Op::Delete { key: key.clone() }).await?;
    let deleted = matches!(r.outcome, Outcome::Delete { deleted: Some(_) });
    let mut resp = if as_json {
        json_response(
            StatusCode::OK,
            json!({"key": String::from_utf8_lossy(&key), "deleted": deleted, "revision": r.revision}),
        )
    } else {
        Response::new(Full::from(Bytes::new()))
    };
    meta(&mut resp, shard, r.revision, None);
    resp.headers_mut().insert(
        "x-meridian-deleted",
        deleted.to_string().parse().expect("header"),
    );
    Ok(resp)
}

async fn get(
    p: &Arc<Proxy>,
    who: Who<'_>,
    key: Vec<u8>,
    q: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let params = api::params(q, &["consistency", "read_mode", "format", "revision"])?;
    if let Some(r) = params.get("revision") {
        if params.contains_key("consistency") || params.contains_key("read_mode") {
            return Err(bad(
                "revision reads the key as it was at that shard revision (any replica that reached it answers): consistency and read_mode do not apply",
            ));
        }
        let revision: u64 = r
            .parse()
            .map_err(|_| bad("revision must be a shard revision (an unsigned integer)"))?;
        return get_at(p, who, key, revision, api::json_format(&params)?).await;
    }
    let (c, mode, as_json) = (
        api::consistency(&params)?,
        api::read_mode(&params)?,
        api::json_format(&params)?,
    );
    if c != Consistency::Linearizable && !matches!(mode, Mode::Auto) {
        return Err(bad("read_mode applies to linearizable reads only"));
    }
    let (shard, o) = p.get(who, key.clone(), c, mode).await.map_err(api_error)?;
    let Outcome::Get { kv } = &o.result.outcome else {
        return Err(ApiError {
            status: 500,
            message: "unexpected reply".into(),
        });
    };
    let mut resp = match (kv, as_json) {
        (Some(kv), false) => Response::new(Full::from(Bytes::from(kv.value.clone()))),
        (None, false) => {
            let mut r = Response::new(Full::from(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
        (kv, true) => json_response(
            if kv.is_some() {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            },
            json!({"key": String::from_utf8_lossy(&key), "found": kv.is_some(), "kv": kv.as_ref().map(kv_json),
                   "revision": o.result.revision, "shard": shard, "read_path": o.path}),
        ),
    };
    meta(&mut resp, shard, o.result.revision, Some(o.path));
    if let Some(kv) = kv {
        resp.headers_mut()
            .insert("x-meridian-mod-revision", kv.mod_revision.into());
        resp.headers_mut()
            .insert("x-meridian-version", kv.version.into());
    }
    Ok(resp)
}

/// `GET /v1/kv/{key}?revision=N`: the key as it was at its shard's revision `N`
/// (`Proxy::scan_at`). 404 if it did not exist then; 410 below the history the replica keeps;
/// 400 above the shard's revision.
async fn get_at(
    p: &Arc<Proxy>,
    who: Who<'_>,
    key: Vec<u8>,
    revision: u64,
    as_json: bool,
) -> Result<Response<Body>, ApiError> {
    let shard = p.placement.shard(&key);
    let mut end = key.clone();
    end.push(0);
    let at = p
        .scan_at(who, shard, key.clone(), end, 1, revision)
        .await
        .map_err(api_error)?;
    let (kv, current) = match at {
        crate::service::AtRevision::Keys { kvs, revision, .. } => (kvs.into_iter().next(), revision),
        crate::service::AtRevision::Compacted(horizon) => {
            return Err(ApiError {
                status: 410,
                message: format!(
                    "revision {revision} of shard {shard} is no longer kept (the lowest readable is {})",
                    horizon.saturating_sub(1)
                ),
            })
        }
        crate::service::AtRevision::Future(current) => {
            return Err(bad(format!(
                "revision {revision} is above shard {shard}'s revision {current}"
            )))
        }
    };
    let status = if kv.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let mut resp = if as_json {
        json_response(
            status,
            json!({"key": String::from_utf8_lossy(&key), "found": kv.is_some(), "kv": kv.as_ref().map(kv_json),
                   "revision": current, "at_revision": revision, "shard": shard, "read_path": "revision"}),
        )
    } else {
        let mut r = Response::new(Full::from(Bytes::from(
            kv.as_ref().map(|kv| kv.value.clone()).unwrap_or_default(),
        )));
        *r.status_mut() = status;
        r
    };
    meta(&mut resp, shard, current, Some("revision"));
    if let Some(kv) = &kv {
        resp.headers_mut()
            .insert("x-meridian-mod-revision", kv.mod_revision.into());
        resp.headers_mut()
            .insert("x-meridian-version", kv.version.into());
    }
    Ok(resp)
}

/// Range over every shard (each read on the chosen path), merged in key order.
async fn list(p: &Arc<Proxy>, who: Who<'_>, q: Option<&str>) -> Result<Response<Body>, ApiError> {
    let params = api::params(
        q,
        &["prefix", "limit", "consistency", "read_mode", "format"],
    )?;
    let (c, mode) = (api::consistency(&params)?, api::read_mode(&params)?);
    let prefix = params
        .get("prefix")
        .cloned()
        .unwrap_or_default()
        .into_bytes();
    if prefix.len() > api::MAX_KEY {
        return Err(bad("prefix exceeds the key limit"));
    }
    let limit: usize = match params.get("limit") {
        None => 100,
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| (1..=10_000).contains(l))
            .ok_or_else(|| bad("limit must be 1..=10000"))?,
    };
    let crate::service::RangeAnswer { kvs, more, paths } = p
        .range(who, prefix, limit, c, mode)
        .await
        .map_err(api_error)?;
    let mut r = json_response(
        StatusCode::OK,
        json!({"kvs": kvs.iter().map(kv_json).collect::<Vec<_>>(), "more": more, "read_paths": paths}),
    );
    r.headers_mut().insert(
        "x-meridian-read-path",
        paths
            .first()
            .copied()
            .unwrap_or("none")
            .parse()
            .expect("header"),
    );
    Ok(r)
}

fn parse_txn_ops(v: Option<&Value>) -> Result<Vec<TxnOp>, ApiError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let arr = v
        .as_array()
        .ok_or_else(|| bad("success/failure must be arrays"))?;
    arr.iter()
        .map(|o| {
            let key = |x: &Value| -> Result<Vec<u8>, ApiError> {
                let k = x
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("every operation needs a string 'key'"))?;
                if k.is_empty() || k.len() > api::MAX_KEY {
                    return Err(bad("txn key empty or over 4096 bytes"));
                }
                Ok(k.as_bytes().to_vec())
            };
            if let Some(x) = o.get("put") {
                let value = x
                    .get("value")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("put needs a string 'value'"))?;
                if value.len() > MAX_VALUE {
                    return Err(ApiError {
                        status: 413,
                        message: "txn value exceeds 1 MiB".into(),
                    });
                }
                Ok(TxnOp::Put {
                    key: key(x)?,
                    value: value.as_bytes().to_vec(),
                })
            } else if let Some(x) = o.get("append") {
                let value = x
                    .get("value")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("append needs a string 'value'"))?;
                if value.len() > MAX_VALUE {
                    return Err(ApiError {
                        status: 413,
                        message: "txn value exceeds 1 MiB".into(),
                    });
                }
                Ok(TxnOp::Append {
                    key: key(x)?,
                    value: value.as_bytes().to_vec(),
                })
            } else if let Some(x) = o.get("delete") {
                Ok(TxnOp::Delete { key: key(x)? })
            } else if let Some(x) = o.get("get") {
                Ok(TxnOp::Get { key: key(x)? })
            } else {
                Err(bad(
                    "each operation is {\"put\": ..}, {\"append\": ..}, {\"delete\": ..} or {\"get\": ..}",
                ))
            }
        })
        .collect()
}

pub(crate) fn parse_txn(v: &Value) -> Result<Txn, ApiError> {
    let compares = v
        .get("compare")
        .map(|c| c.as_array().ok_or_else(|| bad("compare must be an array")))
        .transpose()?
        .map(|a| a.to_vec())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let key = c
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("every compare needs a string 'key'"))?
                .as_bytes()
                .to_vec();
            let target = if let Some(val) = c.get("value") {
                CompareTarget::Value(if val.is_null() {
                    None
                } else {
                    Some(
                        val.as_str()
                            .ok_or_else(|| bad("compare value must be a string or null"))?
                            .as_bytes()
                            .to_vec(),
                    )
                })
            } else if let Some(n) = c.get("version") {
                CompareTarget::Version(n.as_u64().ok_or_else(|| bad("version must be a number"))?)
            } else if let Some(n) = c.get("mod_revision") {
                CompareTarget::ModRevision(
                    n.as_u64()
                        .ok_or_else(|| bad("mod_revision must be a number"))?,
                )
            } else {
                return Err(bad("a compare names 'value', 'version' or 'mod_revision'"));
            };
            Ok(Compare { key, target })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Txn {
        compares,
        success: parse_txn_ops(v.get("success"))?,
        failure: parse_txn_ops(v.get("failure"))?,
    })
}

async fn txn(
    p: &Arc<Proxy>,
    who: Who<'_>,
    q: Option<&str>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    api::params(q, &[])?;
    let raw = body(req, MAX_VALUE + 64 * 1024, p.body_timeout).await?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| bad(format!("malformed JSON: {e}")))?;
    let t = parse_txn(&v)?;
    let (shard, r) = p.txn(who, t).await.map_err(api_error)?;
    let Outcome::Txn { succeeded, gets } = &r.outcome else {
        return Err(ApiError {
            status: 500,
            message: "unexpected reply".into(),
        });
    };
    let mut resp = json_response(
        StatusCode::OK,
        json!({"succeeded": succeeded, "revision": r.revision, "shard": shard,
               "gets": gets.iter().map(|g| g.as_ref().map(kv_json)).collect::<Vec<_>>()}),
    );
    meta(&mut resp, shard, r.revision, None);
    Ok(resp)
}

/// The live RTT matrix (`{"regions", "ms"}`, the form `meridian plan --rtt-from` reads), plus
/// this proxy's own measurements and the leader and auto path of each shard.
fn rtt(p: &Proxy) -> Result<Response<Body>, ApiError> {
    let m = crate::sites::live_matrix(&p.sites, &p.region).map_err(|e| ApiError {
        status: 503,
        message: e,
    })?;
    let sites: Vec<Value> = p
        .sites
        .sites
        .iter()
        .map(|s| {
            let r = *s.rtt.lock().expect("rtt lock");
            json!({"site": s.name, "region": s.region, "ewma_ms": r.ewma_ms, "max_recent_ms": r.max_recent_ms, "samples": r.samples})
        })
        .collect();
    let leaders: Vec<Value> = (0..p.shards)
        .map(|s| {
            let l = p.sites.leader(s);
            json!({"shard": s, "leader": l.site.map(|i| p.sites.sites[i].name.clone()), "lease": l.lease, "auto_path": p.reader.auto_path(s).name()})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({"regions": m.regions, "ms": m.ms, "proxy_region": p.region, "proxy_to_sites": sites, "shards": leaders}),
    ))
}

#[cfg(test)]
mod future_size {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn returned<A, B, C, F: std::future::Future>(_: &impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request's future is boxed by the connection's service (`client_conn`), so its
    /// size is copied per request: it was 8,720 bytes, three times the routing future it
    /// wraps, when the trace scope's wrappers were `async fn`s (each keeps its argument beside
    /// the future it awaits). The bound leaves room for the handlers to grow, not to nest.
    #[test]
    fn a_request_future_is_not_a_nest_of_copies() {
        type Req = Request<hyper::body::Incoming>;
        let handle_ = |p: Arc<Proxy>, r: Req, c: Option<&'static str>| handle(p, r, c);
        let route_ = |p: &'static Arc<Proxy>, r: Req, c: Option<&'static str>| route(p, r, c);
        let (h, r) = (returned(&handle_), returned(&route_));
        assert!(h <= r + 1024, "handle {h} bytes around route {r}");
        assert!(h <= 4096, "handle {h} bytes");
    }
}
