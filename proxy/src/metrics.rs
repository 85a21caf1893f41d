//! Prometheus metrics of a proxy process (README "Metrics"): client requests by operation,
//! path and outcome with their latency, and — computed at each scrape — RTT to every site,
//! leaders, quorum-lease holders seen, admission and queue depths. One registry per instance.
use crate::logic::ServiceError;
use crate::Proxy;
use meridian_replica::metrics::{latency_histogram, HistogramFamily};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpPath {
    pub op: &'static str,
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpOutcome {
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabel {
    pub site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    pub shard: u32,
}

pub struct ProxyMetrics {
    pub requests: Family<OpOutcome, Counter>,
    pub request_seconds: HistogramFamily<OpPath>,
    pub reads_by_path: Family<OpPath, Counter>,
    pub site_rtt_seconds: Family<SiteLabel, Gauge<f64, AtomicU64>>,
    pub site_rtt_max_recent_seconds: Family<SiteLabel, Gauge<f64, AtomicU64>>,
    pub site_reachable: Family<SiteLabel, Gauge>,
    pub shard_leader: Family<ShardLabel, Gauge>,
    pub shard_lease_holders_seen: Family<ShardLabel, Gauge>,
    pub writes_outstanding: Family<ShardLabel, Gauge>,
    pub reads_in_flight: Gauge,
    pub identities_in_use: Gauge,
    pub auth_refusals: Family<ReasonLabel, Counter>,
    pub accept_errors: Counter,
    pub connections_closed: Family<ReasonLabel, Counter>,
    pub connections_open: Gauge,
    pub parked_connections: Gauge,
    pub watch_upstreams: Gauge,
    pub watch_replies: Counter,
    pub watch_moves: Counter,
    pub read_calls: Counter,
    pub batched_reads: Counter,
    pub writes: crate::batcher::WriteCounters,
    registry: Registry,
}

/// Why the proxy closes a client connection (`connections_closed`).
pub const CLOSE_REASONS: [&str; 4] = [
    "max_connections",
    "handshake_timeout",
    "header_timeout",
    "idle_timeout",
];

/// The `outcome` label of an error.
pub fn outcome(e: &ServiceError) -> &'static str {
    match e {
        ServiceError::BadRequest(_) => "bad_request",
        ServiceError::TooLarge(_) => "too_large",
        ServiceError::Overloaded => "overloaded",
        ServiceError::Timeout(_) => "timeout",
        ServiceError::Refused(_) => "refused",
        ServiceError::NoLease(_) => "no_lease",
        ServiceError::Unauthenticated(_) => "unauthenticated",
        ServiceError::Forbidden(_) => "forbidden",
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> ProxyMetrics {
        let mut r = Registry::with_prefix("meridian_proxy");
        let m = ProxyMetrics {
            requests: Family::default(),
            request_seconds: HistogramFamily::<OpPath>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            ),
            reads_by_path: Family::default(),
            site_rtt_seconds: Family::default(),
            site_rtt_max_recent_seconds: Family::default(),
            site_reachable: Family::default(),
            shard_leader: Family::default(),
            shard_lease_holders_seen: Family::default(),
            writes_outstanding: Family::default(),
            reads_in_flight: Gauge::default(),
            identities_in_use: Gauge::default(),
            auth_refusals: Family::default(),
            accept_errors: Counter::default(),
            connections_closed: Family::default(),
            connections_open: Gauge::default(),
            parked_connections: Gauge::default(),
            watch_upstreams: Gauge::default(),
            watch_replies: Counter::default(),
            watch_moves: Counter::default(),
            read_calls: Counter::default(),
            batched_reads: Counter::default(),
            writes: Default::default(),
            registry: Registry::default(),
        };
        for reason in CLOSE_REASONS {
            let _ = m.connections_closed.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        for reason in ["unauthenticated", "forbidden"] {
            let _ = m.auth_refusals.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        r.register(
            "requests",
            "Client requests finished, by operation (get, range, put, delete, txn) and outcome (ok or the error kind)",
            m.requests.clone(),
        );
        r.register(
            "request_seconds",
            "Client request latency at the proxy, by operation and read path",
            m.request_seconds.clone(),
        );
        r.register(
            "reads",
            "Reads answered, by operation and the path that served them (lease, leader, log, quorum, local)",
            m.reads_by_path.clone(),
        );
        r.register(
            "site_rtt_seconds",
            "Measured round trip to each replica site (EWMA of the probes)",
            m.site_rtt_seconds.clone(),
        );
        r.register(
            "site_rtt_max_recent_seconds",
            "Decaying maximum of the measured round trip to each site",
            m.site_rtt_max_recent_seconds.clone(),
        );
        r.register(
            "site_reachable",
            "1 while the site answered a probe within the last 3 s",
            m.site_reachable.clone(),
        );
        r.register(
            "shard_leader",
            "Site index of each shard's leader as the proxy knows it (-1: unknown)",
            m.shard_leader.clone(),
        );
        r.register(
            "shard_lease_holders_seen",
            "Sites that held a valid quorum lease on the shard at their last probe",
            m.shard_lease_holders_seen.clone(),
        );
        r.register(
            "writes_outstanding",
            "Writes queued or in flight per shard (admission is bounded)",
            m.writes_outstanding.clone(),
        );
        r.register(
            "reads_in_flight",
            "Reads in flight (admission is bounded)",
            m.reads_in_flight.clone(),
        );
        r.register(
            "identities_in_use",
            "Exactly-once write identities taken from the pool",
            m.identities_in_use.clone(),
        );
        r.register(
            "auth_refusals",
            "Requests refused by [auth], by reason (unauthenticated: no or an unknown credential; forbidden: outside the role's grant)",
            m.auth_refusals.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accepts of client connections (e.g. out of file descriptors); the accept loop backs off",
            m.accept_errors.clone(),
        );
        r.register(
            "connections_closed",
            "Client connections the proxy closed by a limit: max_connections, handshake_timeout, header_timeout, idle_timeout",
            m.connections_closed.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open now",
            m.connections_open.clone(),
        );
        r.register(
            "read_calls",
            "Read calls sent to replicas (a batch of point reads is one call)",
            m.read_calls.clone(),
        );
        r.register(
            "batched_reads",
            "Point reads that left in a batch of two or more (ReadBatch)",
            m.batched_reads.clone(),
        );
        r.register(
            "write_calls",
            "Submit calls sent to leaders (a batch of writes is one call)",
            m.writes.calls.clone(),
        );
        r.register(
            "writes_submitted",
            "Writes sent in those calls (divided by write_calls: the mean batch)",
            m.writes.commands.clone(),
        );
        r.register(
            "connections_parked",
            "Idle HTTP/1.1 client connections parked now (TLS stream kept, HTTP state freed)",
            m.parked_connections.clone(),
        );
        r.register(
            "watch_upstreams",
            "Upstream watch streams to replicas open now (one per watched shard span, shared by its watchers)",
            m.watch_upstreams.clone(),
        );
        r.register(
            "watch_replies",
            "Watch replies received from replicas (changes and progress)",
            m.watch_replies.clone(),
        );
        r.register(
            "watch_moves",
            "Watch streams moved: an upstream to another site (its replica failed, fell silent or behind, or left a gap) or a watcher off its shared upstream onto a private one (it fell behind)",
            m.watch_moves.clone(),
        );
        ProxyMetrics { registry: r, ..m }
    }

    pub fn closed(&self, reason: &str) {
        self.connections_closed
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn auth_refused(&self, reason: &str) {
        self.auth_refusals
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Records one finished request.
    /// Labels are static strings: a request's metrics allocate nothing.
    pub fn finished(
        &self,
        op: &'static str,
        path: &'static str,
        t0: Instant,
        result: Result<(), &ServiceError>,
    ) {
        let outcome = result.map_or_else(outcome, |_| "ok");
        self.requests
            .get_or_create(&OpOutcome { op, outcome })
            .inc();
        let label = OpPath { op, path };
        if result.is_ok() {
            self.request_seconds
                .get_or_create(&label)
                .observe(t0.elapsed().as_secs_f64());
            if op == "get" || op == "range" {
                self.reads_by_path.get_or_create(&label).inc();
            }
        }
    }

    /// The text exposition, with the gauges read from the proxy's state now.
    pub fn render(&self, p: &Proxy, read_limit: usize) -> String {
        let rtt = p.sites.rtt_ms();
        for (i, s) in p.sites.sites.iter().enumerate() {
            let l = SiteLabel {
                site: s.name.clone(),
            };
            let st = *s.rtt.lock().expect("rtt lock");
            if let Some(ms) = st.ewma_ms {
                self.site_rtt_seconds.get_or_create(&l).set(ms / 1e3);
            }
            self.site_rtt_max_recent_seconds
                .get_or_create(&l)
                .set(st.max_recent_ms / 1e3);
            self.site_reachable
                .get_or_create(&l)
                .set(i64::from(rtt[i].is_some()));
        }
        let qlease = p.sites.qlease.lock().expect("qlease lock").clone();
        for shard in 0..p.shards {
            let l = ShardLabel { shard };
            self.shard_leader
                .get_or_create(&l)
                .set(p.sites.leader(shard).site.map_or(-1, |s| s as i64));
            self.shard_lease_holders_seen
                .get_or_create(&l)
                .set(i64::from(qlease[shard as usize].count_ones() as u8));
            self.writes_outstanding
                .get_or_create(&l)
                .set(p.batcher.outstanding(shard) as i64);
        }
        self.reads_in_flight
            .set(read_limit.saturating_sub(p.reads.available_permits()) as i64);
        self.identities_in_use.set(p.sessions.in_use() as i64);
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("text encoding into a String cannot fail");
        s
    }
}
