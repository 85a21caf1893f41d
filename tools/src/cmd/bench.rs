//! `meridian bench`: the WAN benchmark (`crate::bench`), or with `--batch` the fsync'd write
//! throughput of one shard group on loopback per batch size, or with `--proxy` HTTP writes
//! through one proxy.
use super::cluster::{down, leaders, tool_tls, up, UpArgs};
use anyhow::{bail, Result};
use meridian_replica::client::{Outcome, ReplicaClient};
use meridian_replica::config::ClusterConfig;
use meridian_replica::kv::{KvCommand, Op};
use serde_json::json;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Instead of the WAN benchmark: fsync'd write throughput of one shard group on loopback,
    /// straight to the leader's client service, for these commands-per-Submit batch sizes
    /// (`--clients` is then the total number of concurrent submitters).
    #[arg(long, value_delimiter = ',')]
    batch: Option<Vec<usize>>,
    /// Instead of the WAN benchmark: HTTP writes through one proxy on loopback (batching on,
    /// then off).
    #[arg(long)]
    proxy: bool,
    /// Instead of the WAN benchmark: what N idle TLS client connections cost one proxy
    /// (resident memory per connection, connected and after one request each); writes
    /// idle.json.
    #[arg(long, value_name = "N")]
    idle_clients: Option<usize>,
    /// Instead of the WAN benchmark: etcd watch delivery on the emulated WAN: N watchers at
    /// one region's proxy over `--watch-keys` keys, `--watch-writes` writes through the
    /// leader region's proxy by `--clients` writers; every watcher must see every write of
    /// its key once and in order; reports each event's delay after its write's
    /// acknowledgement next to the one-way delay (watch.json).
    #[arg(long, value_name = "N")]
    watchers: Option<usize>,
    /// With `--watchers`: how many writes.
    #[arg(long, default_value_t = 10_000)]
    watch_writes: usize,
    /// With `--watchers`: how many keys the watches spread over.
    #[arg(long, default_value_t = 100)]
    watch_keys: usize,
    #[command(flatten)]
    w: crate::bench::WorkloadArgs,
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    if a.watchers.is_some() {
        if a.batch.is_some() || a.proxy || a.idle_clients.is_some() {
            bail!("--watchers takes no --batch, --proxy or --idle-clients");
        }
    } else if let Some(n) = a.idle_clients {
        if n == 0 || a.batch.is_some() || a.proxy {
            bail!("--idle-clients takes a positive count and no --batch or --proxy");
        }
    } else if a.batch.is_none() && !a.proxy {
        return crate::bench::run(a.w);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let cdir = a.w.out.join("cluster");
        if cdir.join("pids").exists() {
            let _ = down(&cdir);
        }
        let _ = std::fs::remove_dir_all(&cdir);
        if a.proxy {
            return proxy_bench(&a, &cdir).await;
        }
        if let Some(n) = a.idle_clients {
            return idle_bench(&a, &cdir, n).await;
        }
        if let Some(n) = a.watchers {
            return watch_bench(&a, &cdir, n).await;
        }
        let up_args = loopback(cdir.clone(), 1, false);
        let cluster = up(&up_args).await?;
        let r = tokio::select! {
            r = measure(&cluster.config, &a) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        down(&cdir)?;
        let rows = r?;
        std::fs::write(
            a.w.out.join("bench.json"),
            serde_json::to_string_pretty(&json!({"results": rows}))?,
        )?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn measure(cfg: &ClusterConfig, a: &BenchArgs) -> Result<Vec<serde_json::Value>> {
    let tls = tool_tls(cfg);
    let l = leaders(cfg, &tls).await?[0];
    let conn = ReplicaClient::connect(&cfg.sites[l].addr, &tls).await?;
    println!(
        "one shard group, 5 replicas on loopback, fsync'd WAL, {} clients, leader {}",
        a.w.clients, cfg.sites[l].name
    );
    println!(
        "{:>6} {:>14} {:>12} {:>10} {:>10} {:>10} {:>7}",
        "batch", "commands/s", "submits/s", "p50 ms", "p99 ms", "max ms", "failed"
    );
    let mut rows = Vec::new();
    for (bi, &batch) in a.batch.iter().flatten().enumerate() {
        if batch == 0 {
            bail!("--batch sizes must be at least 1");
        }
        let end = Instant::now() + Duration::from_secs(a.w.seconds);
        let mut tasks = Vec::new();
        for c in 0..a.w.clients {
            let mut conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                let client = ((bi * 1000 + c) as u64 + 1) << 8;
                let mut seq = 0u64;
                let mut lat = Vec::new();
                let mut done = 0usize;
                let mut failed = 0usize;
                while Instant::now() < end {
                    let cmds: Vec<KvCommand> = (0..batch)
                        .map(|i| {
                            seq += 1;
                            // Each command carries its own client id so that every one is a
                            // separate exactly-once session entry.
                            KvCommand {
                                client: client + (i as u64 % 256),
                                seq,
                                op: Op::Put {
                                    key: format!("b{c}/{seq}").into_bytes(),
                                    value: vec![7; 64],
                                },
                            }
                        })
                        .collect();
                    let t0 = Instant::now();
                    let ok = matches!(conn.submit(0, &cmds).await, Ok(Outcome::Ok(_)));
                    // A failed submit's time counts too: a stall that ends in an error is
                    // still a stall.
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                    if ok {
                        done += batch;
                    } else {
                        failed += 1;
                    }
                }
                (done, failed, lat)
            }));
        }
        let (mut total, mut failed, mut lat) = (0usize, 0usize, Vec::new());
        for t in tasks {
            let (d, f, l) = t.await?;
            total += d;
            failed += f;
            lat.extend(l);
        }
        lat.sort_by(|x, y| x.total_cmp(y));
        let p = |q: f64| {
            lat.get(((lat.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let secs = a.w.seconds as f64;
        println!(
            "{:>6} {:>14.0} {:>12.0} {:>10.2} {:>10.2} {:>10.2} {:>7}",
            batch,
            total as f64 / secs,
            lat.len() as f64 / secs,
            p(0.5),
            p(0.99),
            p(1.0),
            failed
        );
        rows.push(json!({"batch": batch, "clients": a.w.clients, "commands_per_s": total as f64 / secs, "submits_per_s": lat.len() as f64 / secs, "p50_ms": p(0.5), "p99_ms": p(0.99), "max_ms": p(1.0), "failed": failed}));
    }
    Ok(rows)
}

/// A five-site loopback cluster (no emulated WAN) for the loopback benchmarks, owned by this
/// process (it goes down if we die).
fn loopback(dir: std::path::PathBuf, shards: u32, no_batching: bool) -> UpArgs {
    UpArgs {
        colocate: Vec::new(),
        lease_ms: 1000,
        lease_holders: None,
        lease_auto_interval_ms: 5000,
        dir,
        sites: 5,
        regions: vec![],
        shards,
        no_wan: true,
        proxy_outstanding: None,
        proxy_no_batching: no_batching,
        auth: false,
        parent_pid: Some(std::process::id() as i32),
        wan_hosts: None,
        threads: None,
    }
}

/// etcd watch delivery on the emulated WAN (`crate::bench::watch`).
async fn watch_bench(a: &BenchArgs, cdir: &std::path::Path, watchers: usize) -> Result<ExitCode> {
    let mut up_args = loopback(cdir.to_path_buf(), a.w.shards, false);
    up_args.no_wan = false;
    up_args.threads = a.w.threads;
    let cluster = up(&up_args).await?;
    let pids = std::fs::read_to_string(cdir.join("pids"))?
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect();
    let plan = crate::bench::watch::Plan {
        watchers,
        writes: a.watch_writes,
        keys: a.watch_keys,
        writers: a.w.clients,
        pids,
    };
    let r = tokio::select! {
        r = crate::bench::watch::measure(&cluster.config, &plan) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    down(cdir)?;
    let v = r?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "{} watchers in {} over {} keys, {} writes through {} by {} writers ({:.0} writes/s): {} events, each once and in order; {} upstream watches, {} moves",
        v["watchers"], v["watch_region"].as_str().unwrap_or("?"), v["keys"], v["writes"],
        v["write_region"].as_str().unwrap_or("?"), v["writers"], f("writes_per_s"), v["events"],
        v["upstreams"], v["moves"],
    );
    println!(
        "delivery after the write's acknowledgement: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; one-way delay {:.1} ms (p99 = one-way + {:.1} ms)",
        f("p50_ms"), f("p99_ms"), f("max_ms"), f("one_way_ms"), f("p99_over_one_way_ms"),
    );
    let part = |k: &str, q: &str| v[k][q].as_f64().unwrap_or(f64::NAN);
    println!(
        "per write: first delivery one-way + {:.1} ms (p50), + {:.1} ms (p99); its last watcher {:.1} ms (p50), {:.1} ms (p99) after its first",
        part("first_delivery_over_one_way_ms", "p50"),
        part("first_delivery_over_one_way_ms", "p99"),
        part("fanout_spread_ms", "p50"),
        part("fanout_spread_ms", "p99"),
    );
    let cpu = &v["cpu_us_per_event"];
    println!(
        "CPU per delivered event: watchers' proxy {:.1} µs, all replicas and proxies {:.1} µs, the clients {:.1} µs",
        cpu["watchers_proxy"].as_f64().unwrap_or(f64::NAN),
        cpu["all_replicas_and_proxies"].as_f64().unwrap_or(f64::NAN),
        cpu["clients"].as_f64().unwrap_or(f64::NAN),
    );
    if let Some(x) = v["host_steal"].as_f64() {
        println!(
            "host steal during the writes: {:.1} % of the machine's CPU time",
            x * 100.0
        );
    }
    std::fs::create_dir_all(&a.w.out)?;
    std::fs::write(
        a.w.out.join("watch.json"),
        serde_json::to_string_pretty(&v)?,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Memory per idle client connection at one proxy (`crate::bench::idle`).
async fn idle_bench(a: &BenchArgs, cdir: &std::path::Path, n: usize) -> Result<ExitCode> {
    let up_args = loopback(cdir.to_path_buf(), 1, false);
    let cluster = up(&up_args).await?;
    let r = async {
        let proxy = &cluster.config.proxies[0];
        let pids = std::fs::read_to_string(cdir.join("pids"))?;
        let pid: i32 = pids
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{} ", proxy.name)))
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no pid for {} in {}", proxy.name, cdir.display()))?;
        let tls = crate::https::tls_config(&cluster.config.resolve(&cluster.config.tls.ca));
        crate::bench::idle::measure(
            &format!("https://{}", proxy.http_addr),
            pid,
            proxy.metrics_addr,
            tls,
            n,
        )
        .await
    }
    .await;
    down(cdir)?;
    let v = r?;
    println!(
        "{n} idle TLS clients on one proxy: {:.1} KiB per connection connected, {:.1} KiB after one request each (proxy RSS {} -> {} -> {} KiB, parked {}); second requests ok: {}/{n}",
        v["kib_per_connection"]["connected"].as_f64().unwrap_or(f64::NAN),
        v["kib_per_connection"]["after_one_request"].as_f64().unwrap_or(f64::NAN),
        v["proxy_rss_kib"]["before"],
        v["proxy_rss_kib"]["connected"],
        v["proxy_rss_kib"]["after_one_request"],
        v["parked"]["after_one_request"],
        v["second_requests_ok"],
    );
    std::fs::create_dir_all(&a.w.out)?;
    std::fs::write(a.w.out.join("idle.json"), serde_json::to_string_pretty(&v)?)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes/s through one proxy over HTTPS on loopback (no emulated delay), batching on and off.
async fn proxy_bench(a: &BenchArgs, cdir: &std::path::Path) -> Result<ExitCode> {
    let mut rows = Vec::new();
    println!("HTTPS PUTs through one proxy, 4 shard groups x 5 replicas on loopback, {} clients, {} s each", a.w.clients, a.w.seconds);
    println!(
        "{:>9} {:>12} {:>10} {:>10}",
        "batching", "writes/s", "p50 ms", "p99 ms"
    );
    for batching in [true, false] {
        let _ = std::fs::remove_dir_all(cdir);
        let up_args = loopback(cdir.to_path_buf(), 4, !batching);
        let cluster = up(&up_args).await?;
        let r = proxy_load(&cluster.config, a).await;
        down(cdir)?;
        let (writes, mut lat) = r?;
        lat.sort_by(|x, y| x.total_cmp(y));
        let p = |q: f64| {
            lat.get(((lat.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let rate = writes as f64 / a.w.seconds as f64;
        println!(
            "{:>9} {:>12.0} {:>10.2} {:>10.2}",
            if batching { "on" } else { "off" },
            rate,
            p(0.5),
            p(0.99)
        );
        rows.push(json!({"batching": batching, "clients": a.w.clients, "writes_per_s": rate, "p50_ms": p(0.5), "p99_ms": p(0.99)}));
    }
    std::fs::write(
        a.w.out.join("bench-proxy.json"),
        serde_json::to_string_pretty(&json!({"results": rows}))?,
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn proxy_load(cfg: &ClusterConfig, a: &BenchArgs) -> Result<(usize, Vec<f64>)> {
    let tls = crate::https::tls_config(&cfg.resolve(&cfg.tls.ca));
    let url = format!("https://{}", cfg.proxies[0].http_addr);
    let end = Instant::now() + Duration::from_secs(a.w.seconds);
    let mut tasks = Vec::new();
    for c in 0..a.w.clients {
        let (url, tls) = (url.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = crate::https::Conn::open(&url, tls).await?;
            let (mut n, mut lat, mut i) = (0usize, Vec::new(), 0u64);
            while Instant::now() < end {
                i += 1;
                let t0 = Instant::now();
                let r = conn
                    .request("PUT", &format!("/v1/kv/bench-{c}-{i}"), vec![7; 64])
                    .await?;
                if r.status == 200 {
                    n += 1;
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            Ok::<_, std::io::Error>((n, lat))
        }));
    }
    let (mut total, mut lat) = (0, Vec::new());
    for t in tasks {
        let (n, l) = t.await??;
        total += n;
        lat.extend(l);
    }
    Ok((total, lat))
}
