//! The load generator: client tasks, each bound to its region's endpoint, issuing the
//! workload closed loop (one operation at a time) or open loop (on a schedule, latencies
//! corrected for coordinated omission), recording into HDR histograms and, optionally, a
//! history for `meridian check`.
use super::hist::{merge_into, new_histogram, Recorded, RowKey};
use super::target::Target;
use super::workload::{KeyChooser, KeyDist, OpenLoop, Timing};
use meridian_core::Rng;
use serde_json::json;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The workload every client of a run follows.
#[derive(Clone, Debug)]
pub struct Workload {
    pub read_share: f64,
    pub keys: KeyDist,
    pub key_count: u64,
    pub value_size: usize,
    /// Read paths, taken in turn.
    pub read_paths: Vec<String>,
    /// Total target rate over all clients (open loop), or closed loop.
    pub open_loop: Option<f64>,
    pub warmup: Duration,
    pub measure: Duration,
    pub seed: u64,
    /// The shard count (to tag each operation with its key's shard), 1 for etcd.
    pub shards: u32,
}

pub fn key_name(k: u64) -> String {
    format!("bench/{k:06}")
}

/// The key as a history names it: etcd's keys are another store's, so they are prefixed.
fn history_key(system: &str, key: &str) -> String {
    if system == "meridian" {
        key.to_string()
    } else {
        format!("{system}:{key}")
    }
}

/// One client: its id, region (name and index among the run's regions) and connection.
pub struct Client {
    pub id: u64,
    pub region: String,
    pub region_index: usize,
    pub target: Target,
}

/// What a run produced.
pub struct Outcome {
    pub recorded: Recorded,
    /// Completed operations in the measured window (all clients).
    pub measured_ops: u64,
    pub history: Vec<String>,
}

/// Live progress on a terminal: ops/s and p99 of the last second (quiet when stderr is not
/// a terminal).
struct Progress {
    ops: AtomicU64,
    hist: Mutex<hdrhistogram::Histogram<u64>>,
}

fn now_ns(origin: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(origin).as_nanos() as u64
}

/// Runs `clients` through warm-up and the measured window.
pub async fn run(
    system: &str,
    clients: Vec<Client>,
    w: &Workload,
    regions: usize,
    history: bool,
    origin: Instant,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let measure_from = started + w.warmup;
    let end = measure_from + w.measure;
    let progress = std::io::stderr().is_terminal().then(|| {
        Arc::new(Progress {
            ops: AtomicU64::new(0),
            hist: Mutex::new(new_histogram()),
        })
    });
    let ticker = progress.clone().map(|p| {
        let total = w.warmup + w.measure;
        let system = system.to_string();
        tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = p.ops.swap(0, Ordering::Relaxed);
                let p99 = {
                    let mut h = p.hist.lock().expect("progress");
                    let v = h.value_at_quantile(0.99) as f64 / 1e3;
                    h.reset();
                    v
                };
                let el = started.elapsed().min(total).as_secs();
                let rate = n as f64 / last.elapsed().as_secs_f64();
                last = Instant::now();
                eprint!(
                    "\r{system}: {el:>4}/{} s  {rate:>9.0} ops/s  p99 {p99:>8.2} ms   ",
                    total.as_secs()
                );
            }
        })
    });
    let per_client_rate = w.open_loop.map(|r| r / clients.len().max(1) as f64);
    let mut tasks = Vec::new();
    for mut c in clients {
        let w = w.clone();
        let system = system.to_string();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let chooser = KeyChooser::new(&w.keys, w.key_count, c.region_index, regions);
            let mut rng = Rng::new(w.seed.wrapping_mul(1_000_003).wrapping_add(c.id));
            let mut sched = per_client_rate.map(|r| OpenLoop::new(started, r));
            let mut rec = Recorded::new();
            let mut lines = Vec::new();
            let (mut seq, mut measured, mut turn) = (0u64, 0u64, 0usize);
            let write_key = |path: &str, region: &str| RowKey {
                system: system.clone(),
                region: region.to_string(),
                op: if path.is_empty() { "write" } else { "read" }.to_string(),
                path: if path.is_empty() { "leader" } else { path }.to_string(),
            };
            loop {
                let due = match sched.as_mut() {
                    Some(s) => {
                        let d = s.next_due();
                        tokio::time::sleep_until(d.into()).await;
                        d
                    }
                    None => Instant::now(),
                };
                if due >= end {
                    break;
                }
                let frac = due.saturating_duration_since(measure_from).as_secs_f64()
                    / w.measure.as_secs_f64().max(1e-9);
                let k = chooser.next(&mut rng, frac);
                let key = key_name(k);
                let shard = if w.shards > 1 {
                    meridian_proxy::route::shard_for_key(key.as_bytes(), w.shards)
                } else {
                    0
                };
                let read = rng.chance(w.read_share);
                let path = if read {
                    turn += 1;
                    w.read_paths[turn % w.read_paths.len()].clone()
                } else {
                    String::new()
                };
                seq += 1;
                let value = if read {
                    None
                } else {
                    let mut v = format!("{}:{seq}", c.id).into_bytes();
                    if v.len() < w.value_size {
                        v.resize(w.value_size, b'.');
                    }
                    Some(v)
                };
                let sent = Instant::now();
                let r = match &value {
                    Some(v) => c.target.put(&key, v.clone()).await,
                    None => c.target.get(&key, &path).await,
                };
                let done = Instant::now();
                let t = Timing { due, sent, done };
                let row = write_key(&path, &c.region);
                let in_window = due >= measure_from;
                match &r {
                    Ok(a) => {
                        if in_window {
                            let series = rec.entry(row).or_default();
                            series.record(t.latency(), &a.served_by, shard);
                            series.record_service(t.service());
                            measured += 1;
                        }
                        if let Some(p) = &progress {
                            p.ops.fetch_add(1, Ordering::Relaxed);
                            let us = (t.latency().as_micros() as u64).max(1);
                            let _ = p.hist.lock().expect("progress").record(us);
                        }
                    }
                    Err(e) => {
                        tracing::debug!("{system} {key}: {e:#}");
                        if in_window {
                            rec.entry(row).or_default().errors += 1;
                        }
                    }
                }
                // Serializable and bounded-staleness reads promise no linearizability: a
                // history for the checker leaves them out.
                let linearizable = !(path == "serializable" || path.starts_with("bounded:"));
                if history && linearizable {
                    let text = |v: &Option<Vec<u8>>| {
                        v.as_ref()
                            .map(|v| String::from_utf8_lossy(v).trim_end_matches('.').to_string())
                    };
                    lines.push(
                        json!({
                            "process": c.id,
                            "op": if read { "get" } else { "put" },
                            "key": history_key(&system, &key),
                            "value": text(&value),
                            "expect": null,
                            "invoke_ns": now_ns(origin, sent),
                            "complete_ns": now_ns(origin, done),
                            // A failed request may still have taken effect.
                            "outcome": if r.is_ok() { "ok" } else { "unknown" },
                            "read": r.as_ref().ok().and_then(|a| text(&a.read)),
                            "path": r.as_ref().ok().filter(|_| read).map(|a| a.served_by.clone()),
                        })
                        .to_string(),
                    );
                }
            }
            (rec, measured, lines)
        }));
    }
    let mut out = Outcome {
        recorded: Recorded::new(),
        measured_ops: 0,
        history: Vec::new(),
    };
    for t in tasks {
        let (rec, n, h) = t.await?;
        merge_into(&mut out.recorded, &rec);
        out.measured_ops += n;
        out.history.extend(h);
    }
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }
    Ok(out)
}

/// Writes every key once (so reads find values), `parallel` at a time through `targets`
/// (round-robin over keys by their home region under `Local`); returns history lines.
pub async fn preload(
    system: &str,
    process_base: u64,
    targets: &mut [Target],
    key_count: u64,
    value_size: usize,
    origin: Instant,
    history: bool,
) -> anyhow::Result<Vec<String>> {
    let n = targets.len() as u64;
    let mut lines = Vec::new();
    let mut futs = Vec::new();
    for (i, t) in targets.iter_mut().enumerate() {
        futs.push(async move {
            let mut lines = Vec::new();
            let mut k = i as u64;
            while k < key_count {
                let mut v = format!("preload:{k}").into_bytes();
                v.resize(value_size.max(v.len()), b'.');
                let sent = Instant::now();
                let r = t.put(&key_name(k), v).await;
                let done = Instant::now();
                r.as_ref()
                    .map_err(|e| anyhow::anyhow!("preloading {}: {e:#}", key_name(k)))?;
                if history {
                    lines.push(
                        json!({"process": process_base + i as u64, "op": "put", "key": history_key(system, &key_name(k)),
                               "value": format!("preload:{k}"), "expect": null,
                               "invoke_ns": now_ns(origin, sent), "complete_ns": now_ns(origin, done),
                               "outcome": "ok", "read": null})
                        .to_string(),
                    );
                }
                k += n;
            }
            Ok::<_, anyhow::Error>(lines)
        });
    }
    for r in futures::future::join_all(futs).await {
        lines.extend(r?);
    }
    Ok(lines)
}
