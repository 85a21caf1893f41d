//! etcd's Lease service over the log (TTL leases: the basis of etcd locks and elections).
//!
//! A lease exists on every shard (its keys may live on any): a grant, keep-alive or revoke is
//! one log write per shard, in parallel; shard 0 is the lease's home (its answer says whether
//! the lease exists). Each shard expires the lease on its own leader's timer — restarted at
//! every applied grant or keep-alive at every replica, padded by the clock drift bound — so a
//! key is never deleted before the TTL has passed since the last keep-alive the client was
//! answered for, and is deleted within the TTL plus an election (plus one commit) after it.
//! A shard whose leader changes goes on from the new leader's own timer (never earlier).
use super::{encode, Edge};
use crate::grpc::{caller, service_status};
use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use meridian_replica::kv::{LeaseInfo, Op, Outcome};
use tonic::{Request, Response, Status, Streaming};

pub struct LeaseService(pub Edge);

/// The longest TTL granted (seconds; etcd's own maximum).
pub const MAX_TTL: i64 = 9_000_000_000;

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

fn not_found() -> Status {
    Status::not_found("etcdserver: requested lease not found")
}

/// A fresh positive lease id.
fn new_id() -> i64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system randomness");
    (i64::from_le_bytes(b) & i64::MAX).max(1)
}

impl LeaseService {
    /// `op(shard)` on every shard at once; each shard's lease answer and etcd revision, in
    /// shard order.
    async fn on_all(
        &self,
        who: Option<&crate::auth::Identity>,
        op: impl Fn(u32) -> Op,
    ) -> Result<Vec<(LeaseInfo, i64)>, Status> {
        let shards = self.0.shards();
        let p = &self.0.proxy;
        let one = |s: u32| {
            let op = op(s);
            async move {
                let r = p.write(who, s, op).await.map_err(service_status)?;
                match r.outcome {
                    Outcome::Lease(i) => Ok((i, encode(r.revision, s, shards))),
                    other => Err(Status::internal(format!(
                        "a lease operation answered {other:?}"
                    ))),
                }
            }
        };
        futures::future::join_all((0..shards).map(one))
            .await
            .into_iter()
            .collect()
    }

    fn top(answers: &[(LeaseInfo, i64)]) -> i64 {
        answers.iter().map(|a| a.1).max().unwrap_or(0)
    }

    async fn keep_alive_once(
        &self,
        who: Option<&crate::auth::Identity>,
        id: i64,
    ) -> Result<PbLeaseKeepAliveResponse, Status> {
        let a = self.on_all(who, |_| Op::LeaseKeepAlive { id }).await?;
        let ttl = if a[0].0.existed { a[0].0.ttl } else { 0 };
        Ok(PbLeaseKeepAliveResponse {
            header: self.0.header(Self::top(&a)),
            id,
            ttl,
        })
    }
}

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let who = caller(&self.0.proxy, &req)?;
        let r = req.into_inner();
        if r.ttl <= 0 || r.ttl > MAX_TTL {
            return Err(Status::out_of_range(format!(
                "etcdserver: too large lease TTL or not positive (1..={MAX_TTL} seconds)"
            )));
        }
        if r.id < 0 {
            return Err(Status::invalid_argument(
                "etcdserver: lease ID must be positive",
            ));
        }
        for _ in 0..4 {
            let id = if r.id != 0 { r.id } else { new_id() };
            let ttl = r.ttl;
            // A taken id changes nothing (it exists on every shard).
            let a = self
                .on_all(who.as_ref(), |_| Op::LeaseGrant { id, ttl })
                .await?;
            if a[0].0.existed {
                if r.id != 0 {
                    return Err(Status::failed_precondition(
                        "etcdserver: lease already exists",
                    ));
                }
                continue; // A random id collided: draw another.
            }
            return Ok(Response::new(PbLeaseGrantResponse {
                header: self.0.header(Self::top(&a)),
                id,
                ttl,
                error: String::new(),
            }));
        }
        Err(Status::unavailable("could not draw a free lease id"))
    }

    async fn lease_revoke(
        &self,
        req: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        let who = caller(&self.0.proxy, &req)?;
        let id = req.into_inner().id;
        let a = self
            .on_all(who.as_ref(), |_| Op::LeaseRevoke { id })
            .await?;
        if !a.iter().any(|x| x.0.existed) {
            return Err(not_found());
        }
        Ok(Response::new(PbLeaseRevokeResponse {
            header: self.0.header(Self::top(&a)),
        }))
    }

    type LeaseKeepAliveStream = Stream<PbLeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let who = caller(&self.0.proxy, &req)?;
        let mut incoming = req.into_inner();
        let me = LeaseService(self.0.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(k)) = incoming.message().await {
                let r = me.keep_alive_once(who.as_ref(), k.id).await;
                let end = r.is_err();
                if tx.send(r).await.is_err() || end {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let who = caller(&self.0.proxy, &req)?;
        let r = req.into_inner();
        let id = r.id;
        let a = self.on_all(who.as_ref(), |_| Op::LeaseInfo { id }).await?;
        let header = self.0.header(Self::top(&a));
        if !a[0].0.existed {
            // etcd: an expired or unknown lease has TTL -1.
            return Ok(Response::new(PbLeaseTimeToLiveResponse {
                header,
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        }
        // The least time any shard's leader has left, in whole seconds (etcd rounds down).
        let remaining_ms = a
            .iter()
            .filter(|x| x.0.existed)
            .map(|x| x.0.remaining_ms)
            .filter(|m| *m >= 0)
            .min()
            .unwrap_or(a[0].0.ttl * 1000);
        let keys = if r.keys {
            let mut k: Vec<Vec<u8>> = a.iter().flat_map(|x| x.0.keys.clone()).collect();
            k.sort();
            k
        } else {
            Vec::new()
        };
        Ok(Response::new(PbLeaseTimeToLiveResponse {
            header,
            id,
            ttl: (remaining_ms / 1000).min(a[0].0.ttl),
            granted_ttl: a[0].0.ttl,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        req: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        let who = caller(&self.0.proxy, &req)?;
        let r = self
            .0
            .proxy
            .write(who.as_ref(), 0, Op::LeaseList)
            .await
            .map_err(service_status)?;
        let Outcome::Leases { ids } = r.outcome else {
            return Err(Status::internal("a lease list answered something else"));
        };
        Ok(Response::new(PbLeaseLeasesResponse {
            header: self.0.header(encode(r.revision, 0, self.0.shards())),
            leases: ids.into_iter().map(|id| PbLeaseStatus { id }).collect(),
        }))
    }
}
