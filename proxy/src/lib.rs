//! The regional proxy (DESIGN.md §4). Apps connect to the nearest proxy; it holds exactly one
//! persistent mTLS connection per replica site, routes keys to shards and shards to leaders,
//! batches writes, picks the cheapest valid read path from live RTTs, and sheds load it cannot
//! queue. Routing and path choice are pure functions (`route`, `chooser`, `api`).
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod batcher;
pub mod chooser;
pub mod client_conn;
pub mod conn_limits;
mod drive;
pub mod etcd;
pub mod fuzzing;
pub(crate) mod grpc;
mod http;
pub mod logic;
pub mod metrics;
pub mod read_batch;
pub mod reads;
pub mod route;
pub mod server;
pub mod service;
pub mod sessions;
pub mod sites;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

pub struct Proxy {
    pub region: String,
    pub shards: u32,
    /// Which shard holds which key (`cluster.shards`, `cluster.colocate`).
    pub placement: route::Placement,
    pub sites: Arc<sites::Sites>,
    pub reader: reads::Reader,
    pub batcher: batcher::Batcher,
    pub sessions: Arc<sessions::Sessions>,
    pub deadline: Duration,
    /// Admission for reads: one permit per read in flight.
    pub reads: Arc<tokio::sync::Semaphore>,
    pub metrics: metrics::ProxyMetrics,
    /// Who may call, on which keys (`[auth]`; off: everyone, everything).
    pub auth: auth::Auth,
    /// A request body must arrive within this (`limits.body_timeout_ms`).
    pub body_timeout: Duration,
}

impl Proxy {
    /// The caller of a request, from its `authorization` header or metadata and its client
    /// certificate's name; a refusal is counted and logged (never with the credential).
    pub fn identify(
        &self,
        authorization: Option<&str>,
        cert_client: Option<&str>,
    ) -> Result<Option<auth::Identity>, logic::ServiceError> {
        self.auth
            .identify(authorization, cert_client)
            .map_err(|e| self.refused(None, e))
    }

    /// Counts and logs an authorization refusal, as the service error the edges map.
    pub fn refused(&self, who: Option<&auth::Identity>, e: auth::AuthError) -> logic::ServiceError {
        self.metrics.auth_refused(e.reason());
        tracing::warn!(
            reason = e.reason(),
            client = who.map_or("-", |w| w.name.as_str()),
            detail = %e,
            "request refused"
        );
        match e {
            auth::AuthError::Unauthenticated(m) => logic::ServiceError::Unauthenticated(m),
            auth::AuthError::Forbidden(m) => logic::ServiceError::Forbidden(m),
        }
    }
}
