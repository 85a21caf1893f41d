//! `meridian bench --watchers N`: etcd watch delivery on the emulated WAN. N watchers at the
//! proxy of one region (100 watches per client stream, each stream on its own connection,
//! watch i on key `many/{i % keys}`), writes through the etcd endpoint of the leader's region
//! by `writers` concurrent clients. Every watcher must see every write of its key exactly once,
//! in revision order, and the proxy must hold at most one upstream watch per key and move none
//! (else the run fails); the figure is each event's delivery delay after its write's
//! acknowledgement, next to the one-way WAN delay between the two regions.
use anyhow::{bail, ensure, Context, Result};
use meridian_replica::config::ClusterConfig;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Watches per client stream (and connection).
const PER_STREAM: usize = 100;

pub struct Plan {
    pub watchers: usize,
    pub writes: usize,
    pub keys: usize,
    pub writers: usize,
    /// Every replica and proxy process, by name (the cluster's `pids` file), for CPU per event.
    pub pids: Vec<(String, u32)>,
}

/// One delivered event: (key index, etcd revision, when it arrived).
type Seen = HashMap<i64, Vec<(usize, i64, Instant)>>;

async fn connect(url: &str, ca: &str) -> Result<etcd_client::Client> {
    etcd_client::Client::connect(
        [url],
        Some(etcd_client::ConnectOptions::new().with_tls(
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca)),
        )),
    )
    .await
    .with_context(|| format!("connecting to {url}"))
}

/// A value of the proxy's Prometheus text at `addr` (None: no answer or no such metric).
pub async fn proxy_metric(addr: Option<std::net::SocketAddr>, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr?).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The `q` quantile of sorted `xs`.
fn quantile(xs: &[f64], q: f64) -> f64 {
    xs.get(((xs.len() as f64 - 1.0) * q) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Every delivery's delay after its write's acknowledgement (ms, sorted), and per write the
/// delay of its first delivery and how long after that its last watcher got it (ms, sorted):
/// the first says how long a change took to reach the watchers' proxy and leave it, the
/// second what fanning it out to every watcher added.
#[derive(Debug, Default, PartialEq)]
pub struct Delays {
    pub all: Vec<f64>,
    pub first: Vec<f64>,
    pub spread: Vec<f64>,
}

/// Checks what each watch saw against the acknowledged writes of its key (revisions in
/// order); returns the delivery delays. Errors name the first watch that saw a write twice,
/// out of order, not at all, or one of another key.
pub fn check(
    watches: &[(Vec<usize>, Seen)],
    acks: &HashMap<(usize, i64), Instant>,
) -> Result<Delays> {
    let mut per_key: HashMap<usize, Vec<i64>> = HashMap::new();
    for &(k, rev) in acks.keys() {
        per_key.entry(k).or_default().push(rev);
    }
    for v in per_key.values_mut() {
        v.sort_unstable();
    }
    let mut all = Vec::new();
    // Per write: its earliest and latest delivery.
    let mut range: HashMap<(usize, i64), (f64, f64)> = HashMap::new();
    for (s, (key_of, seen)) in watches.iter().enumerate() {
        for (id, &k) in key_of.iter().enumerate() {
            let got = seen.get(&(id as i64)).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(e) = got.iter().find(|e| e.0 != k) {
                bail!(
                    "stream {s} watch {id} (key {k}) got an event of key {}",
                    e.0
                );
            }
            let revs: Vec<i64> = got.iter().map(|e| e.1).collect();
            let want = per_key.get(&k).map(Vec::as_slice).unwrap_or(&[]);
            ensure!(
                revs == want,
                "stream {s} watch {id} (key {k}): saw revisions {revs:?}, the writes were {want:?}"
            );
            for e in got {
                let d = e.2.saturating_duration_since(acks[&(k, e.1)]).as_secs_f64() * 1e3;
                all.push(d);
                let r = range.entry((k, e.1)).or_insert((d, d));
                *r = (r.0.min(d), r.1.max(d));
            }
        }
    }
    let mut first: Vec<f64> = range.values().map(|r| r.0).collect();
    let mut spread: Vec<f64> = range.values().map(|r| r.1 - r.0).collect();
    for v in [&mut all, &mut first, &mut spread] {
        v.sort_by(f64::total_cmp);
    }
    Ok(Delays { all, first, spread })
}

/// One client stream: `n` watches (watch j on key `(first + j) % keys`), then every event
/// until `want` arrived (or the deadline), then whatever else comes within 3 s (a duplicate
/// would show there).
async fn stream(
    url: String,
    ca: String,
    first: usize,
    n: usize,
    keys: usize,
    want: usize,
    ready: Arc<tokio::sync::Barrier>,
) -> Result<(Vec<usize>, Seen)> {
    let mut cl = connect(&url, &ca).await?;
    let key = |k: usize| format!("many/{k}");
    let mut key_of = vec![first % keys];
    let mut ws = cl.watch(key(first % keys), None).await?;
    let mut created = 0;
    while created < n {
        let m = ws.message().await?.context("watch stream ended")?;
        if m.canceled() {
            bail!("watch refused: {}", m.cancel_reason());
        }
        if m.created() {
            created += 1;
            if created < n {
                let k = (first + created) % keys;
                key_of.push(k);
                ws.watch(key(k), None).await?;
            }
        }
    }
    ready.wait().await;
    // What arrives is noted cheaply while the run is measured (the generator shares the
    // machine with what it measures): per watch id, the revision and arrival of each event
    // of the key that watch asked for; anything else is kept aside for the check to name.
    let want_key: Vec<Vec<u8>> = key_of.iter().map(|&k| key(k).into_bytes()).collect();
    let mut by_id: Vec<Vec<(i64, Instant)>> = vec![Vec::new(); n];
    let mut stray: Seen = HashMap::new();
    let mut note = |m: &etcd_client::WatchResponse, at: Instant| -> Result<usize> {
        let id = m.watch_id();
        for e in m.events() {
            let kv = e.kv().context("event without a key")?;
            match usize::try_from(id).ok().filter(|&i| i < n) {
                Some(i) if kv.key() == want_key[i] => by_id[i].push((kv.mod_revision(), at)),
                _ => {
                    let k: usize = kv
                        .key_str()?
                        .strip_prefix("many/")
                        .and_then(|k| k.parse().ok())
                        .context("event of a key not watched")?;
                    stray
                        .entry(id)
                        .or_default()
                        .push((k, kv.mod_revision(), at));
                }
            }
        }
        Ok(m.events().len())
    };
    // One timer for the whole wait (a timeout per message registers a timer each time).
    let deadline = tokio::time::sleep(Duration::from_secs(300));
    tokio::pin!(deadline);
    let mut got = 0;
    while got < want {
        tokio::select! {
            biased; // (no random branch order to draw per message)
            m = ws.message() => match m {
                Ok(Some(m)) => got += note(&m, Instant::now())?,
                _ => break,
            },
            _ = &mut deadline => break,
        }
    }
    while let Ok(Ok(Some(m))) = tokio::time::timeout(Duration::from_secs(3), ws.message()).await {
        note(&m, Instant::now())?;
    }
    let mut seen = stray;
    for (i, got) in by_id.into_iter().enumerate() {
        if got.is_empty() {
            continue;
        }
        let k = key_of[i];
        let all = seen.entry(i as i64).or_default();
        all.extend(got.into_iter().map(|(rev, at)| (k, rev, at)));
        // Strays of this id and its own events, in the order they arrived.
        all.sort_by_key(|e| e.2);
    }
    Ok((key_of, seen))
}

/// Runs the benchmark on the running cluster `cfg` (its proxies' etcd endpoints).
pub async fn measure(cfg: &ClusterConfig, plan: &Plan) -> Result<Value> {
    ensure!(
        plan.watchers > 0 && plan.writes > 0 && plan.keys > 0 && plan.writers > 0,
        "--watchers, --watch-writes and --clients must be positive"
    );
    let ca = std::fs::read_to_string(cfg.resolve(&cfg.tls.ca))?;
    let leader = cfg
        .cluster
        .preferred_leader
        .as_ref()
        .and_then(|l| cfg.site_index(l))
        .context("the cluster names no preferred leader")?;
    let regions: Vec<&str> = cfg.proxies.iter().map(|p| p.region.as_str()).collect();
    let w = regions
        .iter()
        .position(|r| *r == cfg.sites[leader].region)
        .context("no proxy in the leader's region")?;
    // The watchers' region: two proxies on (the same choice as the CI test), never the
    // writers' own.
    let r = (w + 2) % regions.len();
    ensure!(r != w, "the watch benchmark needs proxies in two regions");
    let url = |i: usize| -> Result<String> {
        let g = cfg.proxies[i]
            .grpc_addr
            .with_context(|| format!("proxy {} has no gRPC (etcd) address", cfg.proxies[i].name))?;
        Ok(format!("https://{g}"))
    };
    let (wurl, rurl) = (url(w)?, url(r)?);
    let m = meridian_topology::RttMatrix::embedded();
    let one_way = m.rtt(m.index(regions[w])?, m.index(regions[r])?) / 2.0;
    // Wait until writes go through (a leader is elected and the proxy found it).
    let mut warm = connect(&wurl, &ca).await?;
    let t0 = Instant::now();
    while let Err(e) = warm.put("many/warmup", "x", None).await {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("no write went through in 30 s: {e}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let streams = plan.watchers.div_ceil(PER_STREAM);
    let ready = Arc::new(tokio::sync::Barrier::new(streams + 1));
    let mut tasks = Vec::new();
    for s in 0..streams {
        let n = (plan.watchers - s * PER_STREAM).min(PER_STREAM);
        // Exactly the events of this stream's keys: each key gets writes / keys writes (the
        // first writes % keys keys one more).
        let want = (0..n)
            .map(|j| {
                let k = (s * PER_STREAM + j) % plan.keys;
                plan.writes / plan.keys + usize::from(k < plan.writes % plan.keys)
            })
            .sum();
        tasks.push(tokio::spawn(stream(
            rurl.clone(),
            ca.clone(),
            s * PER_STREAM,
            n,
            plan.keys,
            want,
            ready.clone(),
        )));
    }
    ready.wait().await;
    let metrics = cfg.proxies[r].metrics_addr;
    let upstreams = proxy_metric(metrics, "meridian_proxy_watch_upstreams").await;
    let acks: Arc<Mutex<HashMap<(usize, i64), Instant>>> = Default::default();
    let next = Arc::new(AtomicUsize::new(0));
    let proxy_pid: Vec<u32> = plan
        .pids
        .iter()
        .filter(|(n, _)| *n == cfg.proxies[r].name)
        .map(|p| p.1)
        .collect();
    let all: Vec<u32> = plan.pids.iter().map(|p| p.1).collect();
    let cpu_before = (
        super::cpu::total(&proxy_pid),
        super::cpu::total(&all),
        super::cpu::this_process(),
    );
    let host0 = super::cpu::host_times();
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..plan.writers {
        let mut cl = connect(&wurl, &ca).await?;
        let (acks, next) = (acks.clone(), next.clone());
        let (writes, keys) = (plan.writes, plan.keys);
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes {
                    return Ok::<(), anyhow::Error>(());
                }
                let r = cl
                    .put(format!("many/{}", i % keys), format!("v{i}"), None)
                    .await?;
                let rev = r.header().context("put without a header")?.revision();
                acks.lock()
                    .expect("acks lock")
                    .insert((i % keys, rev), Instant::now());
            }
        }));
    }
    for t in writers {
        t.await??;
    }
    let write_s = started.elapsed().as_secs_f64();
    let mut watches = Vec::new();
    for t in tasks {
        watches.push(t.await??);
    }
    // Over writes and deliveries (and the streams' 3 s quiet end, which costs little).
    let cpu = (
        super::cpu::total(&proxy_pid) - cpu_before.0,
        super::cpu::total(&all) - cpu_before.1,
        super::cpu::this_process() - cpu_before.2,
    );
    let host_steal = super::cpu::steal_share(host0, super::cpu::host_times());
    let acks = acks.lock().expect("acks lock").clone();
    let Delays {
        all: delays,
        first,
        spread,
    } = check(&watches, &acks)?;
    let moves = proxy_metric(metrics, "meridian_proxy_watch_moves_total").await;
    if let Some(u) = upstreams {
        ensure!(
            u as usize <= plan.keys,
            "{u} upstream watches for {} keys: watchers of one key must share one",
            plan.keys
        );
    }
    ensure!(
        moves.unwrap_or(0.0) == 0.0,
        "{moves:?} watch streams moved (a replica left a gap, fell silent or behind)"
    );
    let p99 = quantile(&delays, 0.99);
    let per_event = |s: f64| s * 1e6 / delays.len().max(1) as f64;
    Ok(json!({
        "watchers": plan.watchers,
        "keys": plan.keys,
        "writes": plan.writes,
        "writers": plan.writers,
        "write_region": regions[w],
        "watch_region": regions[r],
        "writes_per_s": plan.writes as f64 / write_s,
        "cpu_us_per_event": {
            "watchers_proxy": if proxy_pid.is_empty() { None } else { Some(per_event(cpu.0)) },
            "all_replicas_and_proxies": per_event(cpu.1),
            "clients": per_event(cpu.2),
        },
        "events": delays.len(),
        "upstreams": upstreams,
        "moves": moves,
        "one_way_ms": one_way,
        "p50_ms": quantile(&delays, 0.5),
        "p99_ms": p99,
        "max_ms": quantile(&delays, 1.0),
        "p99_over_one_way_ms": p99 - one_way,
        "first_delivery_over_one_way_ms": {
            "p50": quantile(&first, 0.5) - one_way,
            "p99": quantile(&first, 0.99) - one_way,
        },
        "fanout_spread_ms": {
            "p50": quantile(&spread, 0.5),
            "p99": quantile(&spread, 0.99),
        },
        "host_steal": host_steal,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_of(key: usize, revs: &[i64], at: Instant) -> (Vec<usize>, Seen) {
        let mut seen = Seen::new();
        seen.insert(0, revs.iter().map(|&r| (key, r, at)).collect());
        (vec![key], seen)
    }

    /// Per write: when its first watcher got it, and how much later its last one did.
    #[test]
    fn each_write_reports_its_first_delivery_and_its_fanout_spread() {
        let t = Instant::now();
        let acks: HashMap<(usize, i64), Instant> =
            [((1, 5), t), ((1, 9), t + Duration::from_millis(10))]
                .into_iter()
                .collect();
        let ms = |m: u64| t + Duration::from_millis(m);
        let mut a = watch_of(1, &[5, 9], ms(80));
        a.1.get_mut(&0).unwrap()[1].2 = ms(95); // rev 9: 85 ms after its ack
        let b = watch_of(1, &[5, 9], ms(83)); // rev 5 at 83, rev 9 at 73 after its ack
        let d = check(&[a, b], &acks).unwrap();
        assert_eq!(d.all, vec![73.0, 80.0, 83.0, 85.0]);
        assert_eq!(d.first, vec![73.0, 80.0]);
        assert_eq!(d.spread, vec![3.0, 12.0]);
    }

    #[test]
    fn the_check_accepts_every_write_once_in_order_and_nothing_else() {
        let t = Instant::now();
        let acks: HashMap<(usize, i64), Instant> = [((1, 5), t), ((1, 9), t), ((2, 7), t)]
            .into_iter()
            .collect();
        let later = t + Duration::from_millis(80);
        assert_eq!(
            check(&[watch_of(1, &[5, 9], later)], &acks).unwrap().all,
            vec![80.0, 80.0]
        );
        for (what, revs) in [
            ("duplicate", vec![5, 9, 9]),
            ("missing", vec![9]),
            ("reordered", vec![9, 5]),
            ("phantom", vec![5, 6, 9]),
        ] {
            assert!(
                check(&[watch_of(1, &revs, later)], &acks).is_err(),
                "a {what} event passed"
            );
        }
        let mut other = watch_of(1, &[5, 9], later);
        other.1.get_mut(&0).unwrap()[0].0 = 2;
        assert!(
            check(&[other], &acks).is_err(),
            "another key's event passed"
        );
    }
}
