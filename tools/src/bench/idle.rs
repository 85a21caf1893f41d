//! `meridian bench --idle-clients N`: what an idle client connection costs the proxy. N TLS
//! clients connect to one proxy and stay; the proxy's resident memory (VmRSS) is read before,
//! with all connected, and after each has made one request and gone idle (parked); then every
//! one of them makes a second request, to show a parked connection still serves.
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: i32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// Raises this process's descriptor limit to its hard limit (the clients need one each).
fn raise_nofile(need: u64) -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < need {
        setrlimit(Resource::RLIMIT_NOFILE, hard.max(need), hard.max(need))
            .or_else(|_| setrlimit(Resource::RLIMIT_NOFILE, hard, hard))?;
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < need {
        bail!("{need} connections need {need} descriptors; the limit here is {soft}");
    }
    Ok(())
}

async fn settle() {
    // Past the proxy's park delay (1 s), with time for its allocator to return pages.
    tokio::time::sleep(Duration::from_secs(4)).await;
}

/// The proxy's `meridian_proxy_connections_parked` gauge (None: no metrics address or no
/// answer).
async fn parked(metrics: Option<std::net::SocketAddr>) -> Option<u64> {
    super::watch::proxy_metric(metrics, "meridian_proxy_connections_parked")
        .await
        .map(|v| v as u64)
}

/// Runs the measurement against the proxy at `url` (process `pid`, metrics at `metrics`).
pub async fn measure(
    url: &str,
    pid: i32,
    metrics: Option<std::net::SocketAddr>,
    tls: Arc<rustls::ClientConfig>,
    n: usize,
) -> Result<Value> {
    raise_nofile(n as u64 + 256)?;
    // Warm the proxy up (its first request allocates pools that are not per connection).
    {
        let mut c = crate::https::Conn::open(url, tls.clone()).await?;
        for _ in 0..10 {
            c.request("GET", "/v1/kv/idle-bench-warmup", vec![]).await?;
        }
    }
    settle().await;
    let base = rss_kib(pid)?;
    let t0 = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut opening = Vec::with_capacity(n);
    for _ in 0..n {
        let (url, tls, gate) = (url.to_string(), tls.clone(), gate.clone());
        opening.push(tokio::spawn(async move {
            let _p = gate.acquire_owned().await;
            crate::https::Conn::open(&url, tls).await
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for t in opening {
        conns.push(t.await?.context("opening a client connection")?);
    }
    let connect_s = t0.elapsed().as_secs_f64();
    settle().await;
    let connected = rss_kib(pid)?;
    let parked_connected = parked(metrics).await;
    let served = |conns: Vec<crate::https::Conn>, gate: Arc<tokio::sync::Semaphore>| async move {
        let mut tasks = Vec::with_capacity(conns.len());
        for (i, mut c) in conns.into_iter().enumerate() {
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let _p = gate.acquire_owned().await;
                let r = c
                    .request("GET", &format!("/v1/kv/idle-{}", i % 100), vec![])
                    .await;
                (
                    c,
                    r.map(|r| r.status == 200 || r.status == 404)
                        .unwrap_or(false),
                )
            }));
        }
        let mut back = Vec::with_capacity(tasks.len());
        let mut ok = 0;
        for t in tasks {
            let (c, good) = t.await.expect("request task");
            ok += usize::from(good);
            back.push(c);
        }
        (back, ok)
    };
    let (conns, first_ok) = served(conns, gate.clone()).await;
    settle().await;
    let after = rss_kib(pid)?;
    let parked_after = parked(metrics).await;
    let (conns, second_ok) = served(conns, gate).await;
    drop(conns);
    let per = |kib: u64| (kib.saturating_sub(base)) as f64 / n as f64;
    Ok(json!({
        "clients": n,
        "proxy_rss_kib": {"before": base, "connected": connected, "after_one_request": after},
        "kib_per_connection": {"connected": per(connected), "after_one_request": per(after)},
        "parked": {"connected": parked_connected, "after_one_request": parked_after},
        "connect_seconds": connect_s,
        "first_requests_ok": first_ok,
        "second_requests_ok": second_ok,
    }))
}
