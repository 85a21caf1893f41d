//! The proxy's view of the replica sites: exactly one persistent HTTP/2 mTLS connection per
//! site (whatever the client count), the emulated WAN delay to each, live RTT measurements
//! (EWMA and recent maximum) and the leader of each shard.
use meridian_replica::client::ReplicaClient;
use meridian_replica::delay::DelayLine;
use meridian_replica::tls::TlsFiles;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A site's RTT counts only while its probes succeed: unanswered this long, it is unknown.
const RTT_FRESH: Duration = Duration::from_secs(3);
/// How long a computed [`RttView`] serves requests before it is computed again (a probe's
/// result replaces it at once): it only has to notice `RTT_FRESH` running out.
const VIEW_TTL: Duration = Duration::from_millis(10);

/// The measured RTTs (ms; `None`: unknown) and the sites by increasing RTT (unknown last).
/// Every read consults them; computing them takes a lock and a clock read per site and two
/// allocations, so requests share one copy (`Sites::rtt_view`).
#[derive(Debug)]
pub struct RttView {
    pub rtt: Vec<Option<f64>>,
    pub nearest: Vec<usize>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RttStat {
    pub ewma_ms: Option<f64>,
    pub max_recent_ms: f64,
    pub samples: u64,
    pub last_ok: Option<Instant>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LeaderInfo {
    pub site: Option<usize>,
    pub lease: bool,
}

pub struct Site {
    pub name: String,
    pub region: String,
    pub conn: Mutex<Option<ReplicaClient>>,
    pub addr: meridian_replica::config::HostPort,
    /// Emulated one-way delay between this proxy and the site.
    pub one_way: Duration,
    pub rtt: Mutex<RttStat>,
    /// What the site itself measures to every other site (ms, -1 unknown), from its Status.
    pub peer_rtt: Mutex<Vec<f64>>,
}

pub struct Sites {
    pub sites: Vec<Site>,
    pub leaders: Mutex<Vec<LeaderInfo>>,
    /// Per shard: a bit per site that held a valid quorum lease at its last probe.
    pub qlease: Mutex<Vec<u32>>,
    /// Per shard: the highest revision any site reported at a probe (a watch whose replica
    /// stays behind it is moved to another site).
    pub revisions: Mutex<Vec<u64>>,
    pub tls: TlsFiles,
    /// The site this proxy's requests say they come from (its region's, else the nearest):
    /// the replicas count demand by it (`[leases] mode = "auto"`).
    pub origin: Option<usize>,
    /// Point reads to each site, batched (`read_batch`).
    pub reads: crate::read_batch::ReadBatcher,
    /// The proxy logic's clock: time since this proxy started.
    epoch: Instant,
    /// The last `RttView` and when it was computed.
    view: Mutex<Option<(Instant, Arc<RttView>)>>,
}

impl Sites {
    pub fn new(sites: Vec<Site>, shards: u32, tls: TlsFiles) -> Sites {
        Sites {
            reads: crate::read_batch::ReadBatcher::new(sites.len()),
            sites,
            leaders: Mutex::new(vec![LeaderInfo::default(); shards as usize]),
            qlease: Mutex::new(vec![0; shards as usize]),
            revisions: Mutex::new(vec![0; shards as usize]),
            tls,
            origin: None,
            epoch: Instant::now(),
            view: Mutex::new(None),
        }
    }

    /// Counts read calls into the proxy's metrics.
    pub fn with_read_counters(
        mut self,
        calls: prometheus_client::metrics::counter::Counter,
        batched: prometheus_client::metrics::counter::Counter,
    ) -> Sites {
        self.reads = self.reads.counting(calls, batched);
        self
    }

    /// Requests carry `origin` as their source site.
    pub fn with_origin(mut self, origin: Option<usize>) -> Sites {
        self.origin = origin;
        self
    }

    /// Now on the proxy logic's clock.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The connection to site `i` (made once; tonic reconnects it underneath if it drops), its
    /// writes and reads on one persistent pipe stream.
    pub async fn conn(&self, i: usize) -> Option<ReplicaClient> {
        if let Some(c) = self.sites[i].conn.lock().expect("conn lock").clone() {
            return Some(c);
        }
        let c = ReplicaClient::connect(&self.sites[i].addr, &self.tls)
            .await
            .ok()?
            .with_origin(self.origin)
            .with_pipe();
        let mut slot = self.sites[i].conn.lock().expect("conn lock");
        Some(slot.get_or_insert(c).clone())
    }

    /// Emulated WAN: hold a request or a reply for the one-way delay to site `i`.
    pub async fn wan(&self, i: usize) {
        DelayLine::global().sleep(self.sites[i].one_way).await;
    }

    pub fn rtt_ms(&self) -> Vec<Option<f64>> {
        self.rtt_view().rtt.clone()
    }

    /// The RTTs and the sites by distance, as of at most `VIEW_TTL` ago (or the last probe).
    pub fn rtt_view(&self) -> Arc<RttView> {
        let now = Instant::now();
        let mut cached = self.view.lock().expect("view lock");
        if let Some((at, v)) = cached.as_ref() {
            if now.saturating_duration_since(*at) < VIEW_TTL {
                return v.clone();
            }
        }
        let rtt: Vec<Option<f64>> = self
            .sites
            .iter()
            .map(|s| {
                let r = s.rtt.lock().expect("rtt lock");
                r.ewma_ms.filter(|_| {
                    r.last_ok
                        .is_some_and(|t| now.saturating_duration_since(t) < RTT_FRESH)
                })
            })
            .collect();
        let mut nearest: Vec<usize> = (0..self.sites.len()).collect();
        nearest.sort_by(|&a, &b| {
            rtt[a]
                .unwrap_or(f64::MAX)
                .total_cmp(&rtt[b].unwrap_or(f64::MAX))
        });
        let v = Arc::new(RttView { rtt, nearest });
        *cached = Some((now, v.clone()));
        v
    }

    /// The highest revision of `shard` a probe has seen at any site.
    pub fn revision(&self, shard: u32) -> u64 {
        self.revisions.lock().expect("revisions lock")[shard as usize]
    }

    pub fn leader(&self, shard: u32) -> LeaderInfo {
        self.leaders.lock().expect("leaders lock")[shard as usize]
    }

    pub fn set_leader(&self, shard: u32, site: usize) {
        let mut l = self.leaders.lock().expect("leaders lock");
        if l[shard as usize].site != Some(site) {
            l[shard as usize] = LeaderInfo {
                site: Some(site),
                lease: false,
            };
        }
    }

    /// The nearest site that held a valid quorum lease on `shard` at its last probe.
    pub fn nearest_holder(&self, shard: u32) -> Option<usize> {
        self.nearest_holder_in(&self.rtt_view(), shard)
    }

    /// `nearest_holder` by the distances of `view`.
    pub fn nearest_holder_in(&self, view: &RttView, shard: u32) -> Option<usize> {
        let bits = self.qlease.lock().expect("qlease lock")[shard as usize];
        view.nearest
            .iter()
            .copied()
            .find(|&i| bits & (1 << i) != 0 && view.rtt[i].is_some())
    }

    /// Sites by increasing measured RTT (unmeasured last).
    pub fn nearest_first(&self) -> Vec<usize> {
        self.rtt_view().nearest.clone()
    }

    fn record(&self, i: usize, ms: f64) {
        let mut r = self.sites[i].rtt.lock().expect("rtt lock");
        r.ewma_ms = Some(r.ewma_ms.map_or(ms, |e| 0.8 * e + 0.2 * ms));
        // A decaying maximum: recent spikes show, old ones fade.
        r.max_recent_ms = (r.max_recent_ms * 0.95).max(ms);
        r.samples += 1;
        r.last_ok = Some(Instant::now());
        drop(r);
        // The next request sees this measurement.
        *self.view.lock().expect("view lock") = None;
    }

    /// Pings site `i` forever: measures the round trip on the persistent connection and learns
    /// which shards it leads.
    pub async fn probe(self: std::sync::Arc<Self>, i: usize, every: Duration) {
        loop {
            if let Some(mut c) = self.conn(i).await {
                let t0 = Instant::now();
                self.wan(i).await;
                let st = tokio::time::timeout(Duration::from_secs(2), c.status()).await;
                self.wan(i).await;
                if let Ok(Ok(st)) = st {
                    self.record(i, t0.elapsed().as_secs_f64() * 1e3);
                    *self.sites[i].peer_rtt.lock().expect("rtt lock") = st.peer_rtt_ms.clone();
                    {
                        let mut r = self.revisions.lock().expect("revisions lock");
                        for sh in &st.shards {
                            if let Some(x) = r.get_mut(sh.shard as usize) {
                                *x = (*x).max(sh.revision);
                            }
                        }
                    }
                    {
                        let mut q = self.qlease.lock().expect("qlease lock");
                        for sh in &st.shards {
                            let bits = &mut q[sh.shard as usize];
                            if sh.holds_quorum_lease {
                                *bits |= 1 << i;
                            } else {
                                *bits &= !(1 << i);
                            }
                        }
                    }
                    let mut l = self.leaders.lock().expect("leaders lock");
                    for sh in st.shards {
                        let e = &mut l[sh.shard as usize];
                        if sh.is_leader {
                            *e = LeaderInfo {
                                site: Some(i),
                                lease: sh.holds_lease,
                            };
                        } else if e.site == Some(i) {
                            e.lease = false;
                            e.site = (sh.leader_hint >= 0).then_some(sh.leader_hint as usize);
                        }
                    }
                } else {
                    *self.sites[i].conn.lock().expect("conn lock") = None;
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The live RTT matrix over the sites' regions (plus the proxy's region if no site is there):
/// site-to-site entries as the sites measure them (both directions averaged), the proxy's row
/// as the proxy measures it. `Err` names what is not measured yet.
pub fn live_matrix(
    sites: &Sites,
    proxy_region: &str,
) -> Result<meridian_topology::RttMatrix, String> {
    let peer: Vec<Vec<f64>> = sites
        .sites
        .iter()
        .map(|s| s.peer_rtt.lock().expect("rtt lock").clone())
        .collect();
    let mine = sites.rtt_ms();
    let mut regions: Vec<String> = Vec::new();
    let mut rep: Vec<usize> = Vec::new();
    for (i, s) in sites.sites.iter().enumerate() {
        if !regions.contains(&s.region) {
            regions.push(s.region.clone());
            rep.push(i);
        }
    }
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let site_rtt = |a: usize, b: usize| -> Result<f64, String> {
        if a == b {
            return Ok(0.0);
        }
        let x = peer
            .get(a)
            .and_then(|v| v.get(b))
            .copied()
            .filter(|v| *v >= 0.0);
        let y = peer
            .get(b)
            .and_then(|v| v.get(a))
            .copied()
            .filter(|v| *v >= 0.0);
        match (x, y) {
            (Some(x), Some(y)) => Ok((x + y) / 2.0),
            (Some(v), None) | (None, Some(v)) => Ok(v),
            (None, None) => Err(format!(
                "RTT between {} and {} not measured yet",
                sites.sites[a].name, sites.sites[b].name
            )),
        }
    };
    let mut ms = vec![vec![0.0; rep.len()]; rep.len()];
    for (i, &a) in rep.iter().enumerate() {
        for (j, &b) in rep.iter().enumerate() {
            ms[i][j] = round(site_rtt(a, b)?);
        }
    }
    if !regions.iter().any(|r| r == proxy_region) {
        let row: Vec<f64> = rep
            .iter()
            .map(|&i| {
                mine[i]
                    .map(round)
                    .ok_or_else(|| format!("RTT to {} not measured yet", sites.sites[i].name))
            })
            .collect::<Result<_, _>>()?;
        for (i, r) in row.iter().enumerate() {
            ms[i].push(*r);
        }
        let mut last = row;
        last.push(0.0);
        ms.push(last);
        regions.push(proxy_region.to_string());
    }
    let m = meridian_topology::RttMatrix { regions, ms };
    m.validate().map_err(|e| e.to_string())?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites(n: usize) -> Sites {
        let sites = (0..n)
            .map(|i| Site {
                name: format!("s{i}"),
                region: format!("r{i}"),
                conn: Mutex::new(None),
                addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                one_way: Duration::ZERO,
                rtt: Mutex::new(RttStat::default()),
                peer_rtt: Mutex::new(Vec::new()),
            })
            .collect();
        let tls = TlsFiles {
            ca: "ca.pem".into(),
            cert: "c.pem".into(),
            key: "c.key".into(),
        };
        Sites::new(sites, 1, tls)
    }

    #[test]
    fn a_probe_shows_in_the_next_view_and_a_silent_site_drops_out() {
        let s = sites(3);
        assert_eq!(s.rtt_ms(), vec![None, None, None]);
        // Views are shared between requests...
        assert!(Arc::ptr_eq(&s.rtt_view(), &s.rtt_view()));
        // ...but a probe's result is seen by the very next one.
        s.record(2, 10.0);
        s.record(0, 30.0);
        let v = s.rtt_view();
        assert_eq!(v.rtt, vec![Some(30.0), None, Some(10.0)]);
        assert_eq!(v.nearest, vec![2, 0, 1]);
        s.qlease.lock().unwrap()[0] = 0b011;
        assert_eq!(
            s.nearest_holder(0),
            Some(0),
            "site 1 holds but is unmeasured"
        );
        // Site 2 last answered longer ago than RTT_FRESH: unknown within VIEW_TTL.
        s.sites[2].rtt.lock().unwrap().last_ok = Instant::now().checked_sub(RTT_FRESH);
        std::thread::sleep(VIEW_TTL + Duration::from_millis(5));
        let v = s.rtt_view();
        assert_eq!(v.rtt, vec![Some(30.0), None, None]);
        assert_eq!(v.nearest[0], 0);
    }
}
