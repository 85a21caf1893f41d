//! The replica process: every shard group of one site, its WAL threads, the peer links, and the
//! gRPC server (peer and client services) behind mutual TLS.
mod churn;
mod clock;
mod links;
mod listener;
mod peer;
mod pipe;
mod service;
mod shard;
mod wal_writer;

pub use service::{MAX_BATCH, MAX_COMMAND_BYTES, MAX_READ_BATCH};

use crate::config::ClusterConfig;
use crate::metrics::{PeerLabel, ReplicaMetrics};
use crate::storage::FileLog;
use crate::tls::TlsFiles;
use crate::wire::pb::peer_server::PeerServer;
use crate::wire::pb::replica_server::ReplicaServer;
use links::PeerLinks;
use meridian_core::Core;
use peer::{Inboxes, PeerService};
use service::ReplicaService;
use shard::{Shard, ShardInput, ShardOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("site '{site}' is not in the cluster config (sites: {known})")]
    UnknownSite { site: String, known: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("data directory {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error("config: {0}")]
    Config(String),
    #[error("server: {0}")]
    Server(String),
}

/// Claims `dir` for `site`, or refuses if it belongs to another site.
fn claim_data_dir(dir: &std::path::Path, site: &str) -> Result<(), ReplicaError> {
    let err = |message: String| ReplicaError::DataDir {
        path: dir.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let marker = dir.join("SITE");
    match std::fs::read_to_string(&marker) {
        Ok(owner) if owner.trim() == site => Ok(()),
        Ok(owner) => Err(err(format!(
            "belongs to site '{}', not '{site}'",
            owner.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&marker, format!("{site}\n")).map_err(|e| err(e.to_string()))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Runs the replica of `site` until `stop` resolves, then shuts down gracefully: the server
/// stops, shard tasks stop, and every queued WAL write is fsync'd before this returns.
pub async fn run(
    cfg: ClusterConfig,
    site: &str,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReplicaError> {
    let me = cfg
        .site_index(site)
        .ok_or_else(|| ReplicaError::UnknownSite {
            site: site.to_string(),
            known: cfg
                .sites
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let tls = TlsFiles::new(
        cfg.resolve(&cfg.tls.ca),
        &cfg.resolve(&cfg.tls.cert_dir),
        site,
    );
    tls.verify_own()?;
    let server_tls = tls.server_config()?;
    let data_dir = cfg.resolve(&cfg.sites[me].data_dir);
    claim_data_dir(&data_dir, site)?;
    let addr = cfg.sites[me].listen_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ReplicaError::Bind { addr, source })?;

    let matrix = cfg.rtt_matrix().map_err(ReplicaError::Config)?;
    let delays: Vec<Duration> = cfg
        .sites
        .iter()
        .map(|s| match &matrix {
            Some(m) => {
                let ms = m
                    .rtt_by_name(&cfg.sites[me].region, &s.region)
                    .unwrap_or(0.0);
                Duration::from_secs_f64(ms / 2000.0)
            }
            None => Duration::ZERO,
        })
        .collect();
    let links = PeerLinks::start(me, delays);
    let (stop_tx, stop_rx) = watch::channel(false);
    let skew = clock::from_env(me, site).map_err(ReplicaError::Config)?;
    let clock = clock::Clock::start(skew);
    let auto_leases = cfg.auto_leases().map_err(ReplicaError::Config)?;
    let metrics = ReplicaMetrics::new();
    if let Some(maddr) = cfg.sites[me].metrics_addr {
        let m = metrics.clone();
        crate::metrics::serve(maddr, Arc::new(move || m.render()))
            .await
            .map_err(|source| ReplicaError::Bind {
                addr: maddr,
                source,
            })?;
        tracing::info!(site, %maddr, "metrics at http://{maddr}/metrics");
    }
    let mut peer_inboxes = Vec::new();
    let mut client_inboxes = Vec::new();
    let mut wal_threads = Vec::new();
    let mut shard_tasks = Vec::new();
    for k in 0..cfg.cluster.shards {
        let dir = data_dir.join(format!("shard-{k}"));
        let (log, records, recovery) = FileLog::open(&dir)?;
        if let Some((file, offset, dropped)) = &recovery.truncated {
            tracing::warn!(file = %file.display(), offset, dropped, "torn final WAL record truncated");
        }
        let core_cfg = cfg.core_config(me, k, 0x4D45_5249 ^ me as u64);
        let drift_bound = core_cfg.drift_bound;
        let (core, restore) = Core::recover(core_cfg, clock.now(), records);
        let (peer_tx, peer_rx) = mpsc::unbounded_channel();
        let notify = peer_tx.clone();
        let (wal, handle) = wal_writer::spawn(format!("wal-{site}-{k}"), log, move |d| {
            notify.send(ShardInput::Durable(d)).is_ok()
        });
        wal_threads.push(handle);
        let (client_tx, client_rx) = mpsc::channel(1024);
        let opts = ShardOptions {
            snapshot_every: cfg.cluster.snapshot_every,
            compact_bytes: cfg.cluster.compact_bytes,
            drift_bound,
            lease_holders: cfg.lease_holders(k),
            auto_leases: auto_leases.clone(),
            metrics: metrics.clone(),
            demand_every: Duration::from_millis(cfg.leases.auto_interval_ms),
            data_dir: dir.clone(),
            inbox: peer_tx.clone(),
        };
        let shard = Shard::new(k, core, restore, clock, wal, links.clone(), opts);
        shard_tasks.push(tokio::spawn(shard.run(peer_rx, client_rx, stop_rx.clone())));
        peer_inboxes.push(peer_tx);
        client_inboxes.push(client_tx);
    }
    let inbox = Inboxes {
        shards: Arc::new(peer_inboxes),
        site_names: Arc::new(cfg.sites.iter().map(|s| s.name.clone()).collect()),
        links: links.clone(),
    };
    // RTT probes to every peer on the peer streams, for `meridian status` and the proxies.
    {
        let (links, n, mut stop) = (links.clone(), cfg.sites.len(), stop_rx.clone());
        let (metrics, names): (_, Vec<String>) = (
            metrics.clone(),
            cfg.sites.iter().map(|s| s.name.clone()).collect(),
        );
        tokio::spawn(async move {
            loop {
                for j in (0..n).filter(|&j| j != me) {
                    links.probe(j, None);
                }
                // The RTT distribution, sampled at each probe round.
                for (j, ms) in links.rtt_ms().into_iter().enumerate() {
                    if j != me && ms >= 0.0 {
                        let peer = PeerLabel {
                            peer: names[j].clone(),
                        };
                        metrics
                            .peer_rtt_seconds
                            .get_or_create(&peer)
                            .observe(ms / 1e3);
                        metrics.peer_rtt_last.get_or_create(&peer).set(ms / 1e3);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
    for (j, s) in cfg.sites.iter().enumerate().skip(me + 1) {
        tokio::spawn(peer::dial(
            inbox.clone(),
            links.clone(),
            j,
            s.addr.clone(),
            tls.clone(),
            stop_rx.clone(),
        ));
    }
    let peer_svc = PeerService {
        inbox,
        links: links.clone(),
    };
    let client_svc = ReplicaService {
        links: links.clone(),
        site: site.to_string(),
        site_index: me as u32,
        shards: client_inboxes,
        metrics: metrics.clone(),
    };
    tracing::info!(site, %addr, shards = cfg.cluster.shards, "replica serving");
    let mut server_stop = stop_rx.clone();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .add_service(
            PeerServer::new(peer_svc)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
        )
        .add_service(ReplicaServer::new(client_svc).max_decoding_message_size(4 << 20))
        .serve_with_incoming_shutdown(listener::incoming(listener, server_tls), async move {
            let _ = server_stop.changed().await;
        });
    let server = tokio::spawn(server);
    stop.await;
    tracing::info!(site, "shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    for t in shard_tasks {
        let _ = t.await;
    }
    // The shards dropped their WAL senders: each thread syncs what it has and exits.
    tokio::task::spawn_blocking(move || {
        for h in wal_threads {
            let _ = h.join();
        }
    })
    .await
    .map_err(|e| ReplicaError::Server(e.to_string()))?;
    tracing::info!(site, "stopped");
    Ok(())
}
