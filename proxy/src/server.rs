//! The proxy process: connections to every site, probes, batchers, and the HTTPS server.
use crate::batcher::Batcher;
use crate::reads::Reader;
use crate::sessions::Sessions;
use crate::sites::{RttStat, Site, Sites};
use crate::Proxy;
use meridian_replica::config::ClusterConfig;
use meridian_replica::tls::{load_certs, load_key, TlsFiles};
use meridian_topology::model::QuorumShape;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy '{0}' is not in the cluster config")]
    Unknown(String),
    #[error(transparent)]
    Tls(#[from] meridian_replica::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Config(String),
}

pub struct Options {
    pub batching: bool,
    pub deadline: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            batching: true,
            deadline: Duration::from_secs(5),
        }
    }
}

/// Decrements the open-connections gauge when the connection's task ends.
struct OpenGuard<'a>(&'a crate::Proxy);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.metrics.connections_open.dec();
    }
}

fn scopeguard(p: &crate::Proxy) -> OpenGuard<'_> {
    OpenGuard(p)
}

pub async fn run(
    cfg: ClusterConfig,
    name: &str,
    opts: Options,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ProxyError> {
    let me = cfg
        .proxies
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| ProxyError::Unknown(name.into()))?;
    let limit = me
        .max_outstanding
        .unwrap_or(crate::batcher::OUTSTANDING)
        .max(1);
    let tls = TlsFiles::new(
        cfg.resolve(&cfg.tls.ca),
        &cfg.resolve(&cfg.tls.cert_dir),
        name,
    );
    tls.verify_own()?;
    let matrix = cfg.rtt_matrix().map_err(ProxyError::Config)?;
    let sites = cfg
        .sites
        .iter()
        .map(|s| Site {
            name: s.name.clone(),
            region: s.region.clone(),
            conn: Mutex::new(None),
            addr: s.addr.clone(),
            one_way: matrix
                .as_ref()
                .and_then(|m| m.rtt_by_name(&me.region, &s.region).ok())
                .map_or(Duration::ZERO, |ms| Duration::from_secs_f64(ms / 2000.0)),
            rtt: Mutex::new(RttStat::default()),
            peer_rtt: Mutex::new(Vec::new()),
        })
        .collect();
    // The proxy's own site: the one in its region, else the nearest by the matrix.
    let origin = cfg.site_index_in_region(&me.region).or_else(|| {
        let m = matrix.as_ref()?;
        (0..cfg.sites.len()).min_by(|&a, &b| {
            let d = |i: usize| {
                m.rtt_by_name(&me.region, &cfg.sites[i].region)
                    .unwrap_or(f64::MAX)
            };
            d(a).total_cmp(&d(b))
        })
    });
    let metrics = crate::metrics::ProxyMetrics::new();
    let sites = Arc::new(
        Sites::new(sites, cfg.cluster.shards, tls.clone())
            .with_origin(origin)
            .with_read_counters(metrics.read_calls.clone(), metrics.batched_reads.clone()),
    );
    for i in 0..cfg.sites.len() {
        tokio::spawn(sites.clone().probe(i, Duration::from_millis(250)));
    }
    let shape = if cfg.cluster.quorum == "hierarchical" {
        QuorumShape::three_by_three()
    } else {
        QuorumShape::Majority
    };
    // Client ids unique per proxy incarnation: its name and start time, low 13 bits free for
    // the pool's 8192 ids.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let base = ((crate::route::shard_for_key(name.as_bytes(), u32::MAX) as u64) << 32)
        ^ (nanos.rotate_left(13) & !0x1FFF);
    let proxy = Arc::new(Proxy {
        region: me.region.clone(),
        shards: cfg.cluster.shards,
        placement: crate::route::Placement::new(cfg.cluster.shards, &cfg.cluster.colocate)
            .map_err(ProxyError::Config)?,
        reader: Reader {
            quorum_leases: cfg.leases.mode != "off",
            sites: sites.clone(),
            quorum: cfg.quorum(),
            shape,
        },
        batcher: Batcher::start(
            sites.clone(),
            cfg.cluster.shards,
            opts.batching,
            limit,
            metrics.writes.clone(),
        ),
        reads: Arc::new(tokio::sync::Semaphore::new(limit)),
        sessions: Sessions::new(base, 8192),
        sites,
        deadline: opts.deadline,
        metrics,
        auth: crate::auth::Auth::from_config(&cfg.auth).map_err(ProxyError::Config)?,
        body_timeout: Duration::from_millis(cfg.limits.body_timeout_ms),
    });
    let limits = cfg.limits.clone();
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    if proxy.auth.enabled() {
        tracing::info!(
            proxy = name,
            "authentication on: bearer tokens and client certificates"
        );
    } else {
        tracing::warn!(
            proxy = name,
            "AUTHENTICATION IS OFF: any client that trusts the CA may read and write every key ([auth] enabled = true turns it on)"
        );
    }
    if let Some(maddr) = me.metrics_addr {
        let p = proxy.clone();
        meridian_replica::metrics::serve(maddr, Arc::new(move || p.metrics.render(&p, limit)))
            .await
            .map_err(|source| ProxyError::Bind {
                addr: maddr,
                source,
            })?;
        tracing::info!(%maddr, "metrics at http://{maddr}/metrics");
    }
    let server_tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ProxyError::Config(e.to_string()))?;
    // With [auth] on, a client may present a certificate of the cluster CA (its identity); one
    // from any other CA fails the handshake. Without a certificate it needs a token.
    let server_tls = if proxy.auth.enabled() {
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(&tls.ca)? {
            roots
                .add(c)
                .map_err(|e| ProxyError::Config(format!("{}: {e}", tls.ca.display())))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| ProxyError::Config(e.to_string()))?;
        server_tls.with_client_cert_verifier(verifier)
    } else {
        server_tls.with_no_client_auth()
    };
    let mut server_tls = server_tls
        .with_single_cert(load_certs(&tls.cert)?, load_key(&tls.key)?)
        .map_err(|e| ProxyError::Config(e.to_string()))?;
    server_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
    if let Some(addr) = me.grpc_addr {
        let cert = std::fs::read_to_string(&tls.cert)
            .map_err(|e| ProxyError::Config(format!("{}: {e}", tls.cert.display())))?;
        let key = std::fs::read_to_string(&tls.key)
            .map_err(|e| ProxyError::Config(format!("{}: {e}", tls.key.display())))?;
        let edge = crate::etcd::Edge {
            proxy: proxy.clone(),
            members: std::sync::Arc::new(
                cfg.proxies
                    .iter()
                    .filter_map(|p| {
                        Some(crate::etcd::Member {
                            name: p.name.clone(),
                            url: format!("https://{}", p.grpc_addr?),
                        })
                    })
                    .collect(),
            ),
            me: cfg
                .proxies
                .iter()
                .filter(|p| p.grpc_addr.is_some())
                .position(|p| p.name == name)
                .unwrap_or(0),
            cluster_id: crate::etcd::id_of(&cfg.resolve(&cfg.tls.ca).to_string_lossy()),
            watches: std::sync::Arc::new(crate::watch::Hub::new(proxy.sites.clone()).counting(
                proxy.metrics.watch_upstreams.clone(),
                proxy.metrics.watch_replies.clone(),
                proxy.metrics.watch_moves.clone(),
            )),
        };
        let grpc_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        let server = tonic::transport::Server::builder()
            .tls_config({
                let t = tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(cert, key));
                if proxy.auth.enabled() {
                    let ca = std::fs::read_to_string(&tls.ca)
                        .map_err(|e| ProxyError::Config(format!("{}: {e}", tls.ca.display())))?;
                    t.client_ca_root(tonic::transport::Certificate::from_pem(ca))
                        .client_auth_optional(true)
                } else {
                    t
                }
            })
            .map_err(|e| ProxyError::Config(e.to_string()))?
            .add_service(
                meridian_replica::wire::pb::kv_server::KvServer::new(crate::grpc::KvService(
                    proxy.clone(),
                ))
                .max_decoding_message_size(2 << 20),
            )
            // The etcd v3 edge on the same port: etcd's KV, Cluster and Maintenance.
            .add_service(
                etcd_client::proto::PbKvServer::new(crate::etcd::KvService(edge.clone()))
                    .max_decoding_message_size(2 << 20),
            )
            .add_service(etcd_client::proto::PbClusterServer::new(
                crate::etcd::ClusterService(edge.clone()),
            ))
            .add_service(etcd_client::proto::PbMaintenanceServer::new(
                crate::etcd::MaintenanceService(edge.clone()),
            ))
            .add_service(etcd_client::proto::PbWatchServer::new(
                crate::etcd::WatchService(edge.clone()),
            ))
            .add_service(etcd_client::proto::PbLeaseServer::new(
                crate::etcd::LeaseService(edge.clone()),
            ))
            .serve_with_incoming(incoming);
        tokio::spawn(server);
        tracing::info!(proxy = name, %addr, "proxy serving gRPC");
    }
    let listener = tokio::net::TcpListener::bind(me.http_addr)
        .await
        .map_err(|source| ProxyError::Bind {
            addr: me.http_addr,
            source,
        })?;
    tracing::info!(proxy = name, addr = %me.http_addr, "proxy serving HTTPS");
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            acc = listener.accept() => {
                let (tcp, peer) = match acc {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors (or another accept failure): spinning on it would
                        // burn a core while nobody is served; count it, say so, back off.
                        proxy.metrics.accept_errors.inc();
                        tracing::warn!(error = %e, "accepting a client connection failed; backing off 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    proxy.metrics.closed("max_connections");
                    tracing::debug!(%peer, "connection refused: limits.max_connections open");
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let proxy = proxy.clone();
                let limits = limits.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    proxy.metrics.connections_open.inc();
                    let _open = scopeguard(&proxy);
                    let handshake = Duration::from_millis(limits.handshake_timeout_ms);
                    // Boxed: the task stays small once the handshake is over.
                    let tls = match Box::pin(tokio::time::timeout(handshake, acceptor.accept(tcp))).await {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "client TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            proxy.metrics.closed("handshake_timeout");
                            tracing::debug!(%peer, "client TLS handshake timed out");
                            return;
                        }
                    };
                    let cert_client: Option<Arc<str>> = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| match meridian_replica::tls::identity(c.as_ref())? {
                            meridian_replica::tls::Identity::Client(n) => Some(Arc::from(n)),
                            _ => None,
                        });
                    let client = crate::client_conn::Client { proxy: proxy.clone(), cert_client, limits, peer };
                    crate::client_conn::serve(tls, client).await;
                });
            }
        }
    }
    tracing::info!(proxy = name, "proxy stopped");
    Ok(())
}
