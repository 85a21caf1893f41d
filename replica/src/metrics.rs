//! Prometheus metrics of a replica process (README "Metrics" lists every series), and the
//! `/metrics` HTTP exporter the proxy shares. One registry per process instance.
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    pub shard: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardReason {
    pub shard: u32,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardPath {
    pub shard: u32,
    pub path: String,
}

pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latencies from 0.1 ms to ~100 s (seconds).
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// Every series of one replica process.
pub struct ReplicaMetrics {
    pub leader_changes: Family<ShardLabel, Counter>,
    pub elections: Family<ShardLabel, Counter>,
    pub is_leader: Family<ShardLabel, Gauge>,
    pub commit_seconds: HistogramFamily<ShardLabel>,
    pub fsync_seconds: HistogramFamily<ShardLabel>,
    pub commands_accepted: Family<ShardLabel, Counter>,
    pub slots_accepted: Family<ShardLabel, Counter>,
    pub bytes_accepted: Family<ShardLabel, Counter>,
    pub rejections: Family<ShardReason, Counter>,
    pub reads: Family<ShardPath, Counter>,
    pub waiting: Family<ShardLabel, Gauge>,
    pub watchers: Family<ShardLabel, Gauge>,
    pub queue_depth: Family<ShardLabel, Gauge>,
    pub commit_index: Family<ShardLabel, Gauge>,
    pub apply_lag: Family<ShardLabel, Gauge>,
    pub lease_valid: Family<ShardLabel, Gauge>,
    pub quorum_lease_valid: Family<ShardLabel, Gauge>,
    pub lease_holders: Family<ShardLabel, Gauge>,
    pub wal_bytes: Family<ShardLabel, Gauge>,
    pub peer_rtt_seconds: HistogramFamily<PeerLabel>,
    pub peer_rtt_last: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    registry: Registry,
}

impl ReplicaMetrics {
    pub fn new() -> Arc<ReplicaMetrics> {
        let mut r = Registry::with_prefix("meridian");
        let h = || {
            HistogramFamily::<ShardLabel>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            )
        };
        let m = ReplicaMetrics {
            leader_changes: Family::default(),
            elections: Family::default(),
            is_leader: Family::default(),
            commit_seconds: h(),
            fsync_seconds: h(),
            commands_accepted: Family::default(),
            slots_accepted: Family::default(),
            bytes_accepted: Family::default(),
            rejections: Family::default(),
            reads: Family::default(),
            waiting: Family::default(),
            watchers: Family::default(),
            queue_depth: Family::default(),
            commit_index: Family::default(),
            apply_lag: Family::default(),
            lease_valid: Family::default(),
            quorum_lease_valid: Family::default(),
            lease_holders: Family::default(),
            wal_bytes: Family::default(),
            peer_rtt_seconds: HistogramFamily::<PeerLabel>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            ),
            peer_rtt_last: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "leader_changes",
            "Times this replica saw a shard's leader change (a new leader ballot)",
            m.leader_changes.clone(),
        );
        r.register(
            "elections",
            "Campaigns this replica started for a shard",
            m.elections.clone(),
        );
        r.register(
            "is_leader",
            "1 while this replica leads the shard",
            m.is_leader.clone(),
        );
        r.register(
            "commit_seconds",
            "Proposal-acceptance latency at the leader: a client batch from arrival to its committed, applied reply",
            m.commit_seconds.clone(),
        );
        r.register(
            "fsync_seconds",
            "Time spent in durable logging: one WAL write + fsync",
            m.fsync_seconds.clone(),
        );
        r.register(
            "commands_accepted",
            "Client commands accepted for proposal at the leader",
            m.commands_accepted.clone(),
        );
        r.register(
            "slots_accepted",
            "Log slots accepted and written to the WAL here (at the leader, commands_accepted / slots_accepted is the batching factor)",
            m.slots_accepted.clone(),
        );
        r.register(
            "bytes_accepted",
            "Bytes of client commands accepted for proposal at the leader",
            m.bytes_accepted.clone(),
        );
        r.register(
            "rejections",
            "Client requests refused or failed, by reason (not_leader, overloaded, timeout, not_holder, queue_full, invalid)",
            m.rejections.clone(),
        );
        r.register(
            "reads",
            "Reads answered by this replica, by path (lease, log, qlease, local, quorum)",
            m.reads.clone(),
        );
        r.register(
            "waiting_requests",
            "Requests waiting in the shard driver (proposals, leader reads, parked reads)",
            m.waiting.clone(),
        );
        r.register(
            "watch_streams",
            "Watch streams this shard serves (proxies' upstream watches)",
            m.watchers.clone(),
        );
        r.register(
            "queue_depth",
            "Client requests queued for the shard task",
            m.queue_depth.clone(),
        );
        r.register(
            "commit_index",
            "Highest committed slot known here",
            m.commit_index.clone(),
        );
        r.register(
            "apply_lag",
            "Committed slots not yet applied",
            m.apply_lag.clone(),
        );
        r.register(
            "lease_valid",
            "1 while this replica is the leader and holds its leader lease",
            m.lease_valid.clone(),
        );
        r.register(
            "quorum_lease_valid",
            "1 while this replica holds a valid quorum lease on the shard",
            m.quorum_lease_valid.clone(),
        );
        r.register(
            "lease_holders",
            "Quorum-lease holders in the shard's lease configuration",
            m.lease_holders.clone(),
        );
        r.register(
            "wal_bytes",
            "Size of the shard's write-ahead log",
            m.wal_bytes.clone(),
        );
        r.register(
            "peer_rtt_seconds",
            "Measured round-trip time to each peer site (probes on the peer stream)",
            m.peer_rtt_seconds.clone(),
        );
        r.register(
            "peer_rtt_last_seconds",
            "The latest measured round-trip time to each peer site",
            m.peer_rtt_last.clone(),
        );
        Arc::new(ReplicaMetrics { registry: r, ..m })
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("text encoding into a String cannot fail");
        s
    }
}

/// Serves `GET /metrics` (plain HTTP/1.1) on `addr` with `render()` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let render = render.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let render = render.clone();
                    async move {
                        let (status, ctype, body) = if req.uri().path() == "/metrics" {
                            (
                                200,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                render(),
                            )
                        } else {
                            (404, "text/plain", "only /metrics here\n".to_string())
                        };
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", ctype)
                            .body(Full::new(Bytes::from(body)))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_prefixed_and_labelled() {
        let m = ReplicaMetrics::new();
        m.leader_changes
            .get_or_create(&ShardLabel { shard: 2 })
            .inc();
        m.fsync_seconds
            .get_or_create(&ShardLabel { shard: 0 })
            .observe(0.002);
        let t = m.render();
        assert!(
            t.contains("meridian_leader_changes_total{shard=\"2\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("meridian_fsync_seconds_count{shard=\"0\"} 1"),
            "{t}"
        );
        assert!(t.contains("# HELP meridian_peer_rtt_seconds"), "{t}");
    }
}
