//! `meridian demo [--out DIR] [--seconds N]`: a five-region cluster on loopback with the WAN
//! emulated from the shipped RTT matrix; clients in every region write through the replicas'
//! client service (their own traffic delayed by the same matrix); prints per-region latency
//! next to the physical bound of DESIGN.md §6, writes DIR/report.json, and shuts everything
//! down — also on Ctrl-C.
use super::cluster::{down, up, wait_for_preferred_leaders, UpArgs};
use crate::https::{tls_config, Conn};
use anyhow::{bail, Context, Result};
use meridian_replica::config::ClusterConfig;
use meridian_topology::input::Demand;
use meridian_topology::leases::{best_holders, objective};
use meridian_topology::model::{quorum_latency, QuorumShape};
use meridian_topology::RttMatrix;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the report (and the cluster's files) go.
    #[arg(long, default_value = "meridian-demo")]
    out: PathBuf,
    /// Length of the measured workload.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients per region.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Diagnostics: run without the emulated WAN (loopback speed).
    #[arg(long, hide = true)]
    no_wan: bool,
    /// Quorum leases, with a read-mostly workload (a write, three auto reads and one leader
    /// read for comparison per round) and lease rows against their bounds. The holders are
    /// chosen live by each shard's leader (`[leases] mode = "auto"`) unless --lease-holders
    /// pins them.
    #[arg(long)]
    quorum_leases: bool,
    /// With --quorum-leases: `auto` (default), `all`, or site names separated by commas.
    #[arg(long, default_value = "auto")]
    lease_holders: String,
}

pub fn run(a: DemoArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(demo(a))
}

struct Sample {
    region: usize,
    leader: usize,
    shard: usize,
    op: &'static str,
    /// The path that served it (reads: as the proxy reported).
    path: String,
    ms: f64,
}

async fn demo(a: DemoArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let cdir = a.out.join("cluster");
    if cdir.join("pids").exists() {
        let _ = down(&cdir);
    }
    let _ = std::fs::remove_dir_all(&cdir);
    let up_args = UpArgs {
        colocate: Vec::new(),
        lease_ms: 1000,
        lease_holders: a.quorum_leases.then(|| a.lease_holders.clone()),
        // The demo's leaders re-evaluate every second (the default is five).
        lease_auto_interval_ms: 1000,
        dir: cdir.clone(),
        sites: 5,
        regions: vec![],
        shards: 4,
        no_wan: a.no_wan,
        proxy_outstanding: None,
        proxy_no_batching: false,
        auth: false,
        parent_pid: Some(std::process::id() as i32),
        wan_hosts: None,
        threads: None,
    };
    println!("starting five replica processes (emulated WAN from the shipped AWS RTT matrix) ...");
    let cluster = up(&up_args).await?;
    let host0 = crate::bench::cpu::host_times();
    let outcome = tokio::select! {
        r = workload(&cluster.config, a.seconds, a.clients, a.quorum_leases) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let steal = crate::bench::cpu::steal_share(host0, crate::bench::cpu::host_times());
    let stopped = down(&cdir);
    let (samples, holders) = outcome?;
    stopped?;
    report(&cluster.config, &samples, &holders, &a, steal)
}

async fn workload(
    cfg: &ClusterConfig,
    seconds: u64,
    per_region: usize,
    leases: bool,
) -> Result<(Vec<Sample>, Vec<Vec<usize>>)> {
    let leaders = wait_for_preferred_leaders(cfg).await?;
    println!(
        "leaders per shard: {:?}; {seconds} s of writes and reads (read_mode=auto) from {per_region} clients per region, each through its region's proxy ...",
        leaders.iter().map(|&l| &cfg.sites[l].name).collect::<Vec<_>>()
    );
    let tls = tls_config(&cfg.resolve(&cfg.tls.ca));
    // The first second warms connections and pipelines up (with quorum leases five: the
    // leaders see the demand, choose holders, the holders take their leases and the proxies
    // see them); it is not measured.
    let warm = Instant::now() + Duration::from_secs(if leases { 5 } else { 1 });
    let end = warm + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (ci, s) in cfg.sites.iter().enumerate() {
        let proxy = cfg
            .proxies
            .iter()
            .find(|p| p.region == s.region)
            .context("a proxy per region")?;
        let url = format!("https://{}", proxy.http_addr);
        for w in 0..per_region {
            let (url, tls, leaders) = (url.clone(), tls.clone(), leaders.clone());
            let shards = cfg.cluster.shards;
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(&url, tls).await?;
                let mut out = Vec::new();
                let mut i = 0u64;
                while Instant::now() < end {
                    i += 1;
                    let key = format!("demo/{ci}/{w}/{i}");
                    let shard =
                        meridian_proxy::route::shard_for_key(key.as_bytes(), shards) as usize;
                    let leader = leaders[shard];
                    let t0 = Instant::now();
                    let r = conn
                        .request("PUT", &format!("/v1/kv/{key}"), vec![b'v'; 64])
                        .await?;
                    if r.status == 200 && t0 >= warm {
                        out.push(Sample {
                            region: ci,
                            leader,
                            shard,
                            op: "write",
                            path: "leader".into(),
                            ms: t0.elapsed().as_secs_f64() * 1e3,
                        });
                    }
                    // Read a key written a few rounds ago (committed everywhere by now); with
                    // quorum leases, read-mostly: three auto reads and one leader read.
                    if i > 4 {
                        let old = format!("demo/{ci}/{w}/{}", i - 4);
                        let shard =
                            meridian_proxy::route::shard_for_key(old.as_bytes(), shards) as usize;
                        let leader = leaders[shard];
                        let reads: &[(&str, &'static str)] = if leases {
                            &[
                                ("auto", "read"),
                                ("auto", "read"),
                                ("auto", "read"),
                                ("leader", "read-leader"),
                            ]
                        } else {
                            &[("auto", "read")]
                        };
                        for (mode, op) in reads {
                            let t0 = Instant::now();
                            let r = conn
                                .request("GET", &format!("/v1/kv/{old}?read_mode={mode}"), vec![])
                                .await?;
                            if r.status == 200 && t0 >= warm {
                                let path = r.header("x-meridian-read-path").unwrap_or_default();
                                out.push(Sample {
                                    region: ci,
                                    leader,
                                    shard,
                                    op,
                                    path,
                                    ms: t0.elapsed().as_secs_f64() * 1e3,
                                });
                            }
                        }
                    }
                }
                Ok::<_, std::io::Error>(out)
            }));
        }
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    if samples.is_empty() {
        bail!("no operation completed");
    }
    let holders = if leases {
        super::cluster::lease_holders(cfg, &super::cluster::tool_tls(cfg)).await?
    } else {
        vec![Vec::new(); cfg.cluster.shards as usize]
    };
    Ok((samples, holders))
}

/// Host steal from which the demo mentions it beside its verdict.
const STEAL_NOTE: f64 = 0.01;

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn report(
    cfg: &ClusterConfig,
    samples: &[Sample],
    shard_holders: &[Vec<usize>],
    a: &DemoArgs,
    host_steal: Option<f64>,
) -> Result<ExitCode> {
    let m = RttMatrix::embedded();
    let region_of: Vec<usize> = cfg
        .sites
        .iter()
        .map(|s| m.index(&s.region))
        .collect::<Result<_, _>>()?;
    let sites: Vec<Option<usize>> = region_of.iter().map(|&r| Some(r)).collect();
    let shape = if cfg.sites.len() == 9 {
        QuorumShape::three_by_three()
    } else {
        QuorumShape::Majority
    };
    println!();
    let leases = a.quorum_leases;
    println!("latency per client region through its region's proxy, next to the physical bound of DESIGN.md §6");
    if leases {
        let names = |h: &Vec<usize>| {
            h.iter()
                .map(|&i| cfg.sites[i].name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "  quorum-lease holders per shard ({}): {}",
            if a.lease_holders == "auto" {
                "chosen live by each leader, [leases] mode = \"auto\""
            } else {
                "pinned"
            },
            shard_holders
                .iter()
                .enumerate()
                .map(|(k, h)| format!("{k}: [{}]", names(h)))
                .collect::<Vec<_>>()
                .join("  ")
        );
        // The planner's rule on this run's own demand (operations per region, read share),
        // for each shard's leader: the live choice and the plan side by side.
        for (k, live) in shard_holders.iter().enumerate() {
            let mine: Vec<&Sample> = samples.iter().filter(|x| x.shard == k).collect();
            let Some(l) = mine.first().map(|x| x.leader) else {
                continue;
            };
            let demand: Vec<Demand> = (0..cfg.sites.len())
                .filter_map(|ci| {
                    let ops = mine.iter().filter(|x| x.region == ci).count() as f64;
                    let reads = mine
                        .iter()
                        .filter(|x| x.region == ci && x.op != "write")
                        .count() as f64;
                    (ops > 0.0).then(|| Demand {
                        region: region_of[ci],
                        weight: ops,
                        read_share: reads / ops,
                    })
                })
                .collect();
            if let Some((obj, plan)) = best_holders(&m, &shape, &demand, &sites, l) {
                let live_obj = objective(&m, &shape, &demand, &sites, l, live);
                println!(
                    "  shard {k}: live holders [{}] ({:.1} ms/op), planner on this run's demand [{}] ({:.1} ms/op){}",
                    names(live),
                    live_obj,
                    names(&plan),
                    obj,
                    if &plan == live { ": same" } else { "" }
                );
            }
        }
        println!("  write bound = rtt(proxy, leader) + max(fastest-quorum rtt from the leader, rtt(leader, farthest holder))");
        println!("  read  bound = min(lease read = rtt(proxy, nearest holder), leader read, quorum read)");
    } else {
        println!("  write bound = rtt(proxy, leader) + fastest-quorum rtt from the leader");
        println!("  read  bound = min(leader read = rtt(proxy, leader), quorum read = fastest-quorum rtt from the proxy)");
    }
    println!(
        "{:<16} {:<11} {:>6} {:>9} {:>9} {:>9} {:>8} {:>4}  path",
        "region", "op", "count", "p50 ms", "p99 ms", "bound ms", "p50/bnd", "ok"
    );
    let mut rows = Vec::new();
    let mut all_ok = true;
    // Quorum-lease verdict inputs: per region (lease share, lease p50, leader-read p50).
    let mut lease_stats: Vec<(usize, f64, f64, f64)> = Vec::new();
    let ops: &[&str] = if leases {
        &["write", "read", "read-leader"]
    } else {
        &["write", "read"]
    };
    for &op in ops {
        for (ci, s) in cfg.sites.iter().enumerate() {
            let mine: Vec<&Sample> = samples
                .iter()
                .filter(|x| x.region == ci && x.op == op)
                .collect();
            if mine.is_empty() {
                continue;
            }
            // The leader most of these operations' shards had.
            // The leader and holder set most of these operations' shards had.
            let mut groups: Vec<((usize, &Vec<usize>), usize)> = Vec::new();
            for x in &mine {
                let g = (x.leader, &shard_holders[x.shard]);
                match groups.iter_mut().find(|e| e.0 == g) {
                    Some(e) => e.1 += 1,
                    None => groups.push((g, 1)),
                }
            }
            let ((l, held), _) = *groups.iter().max_by_key(|e| e.1).expect("samples");
            let mut ms: Vec<f64> = mine
                .iter()
                .filter(|x| x.leader == l && &shard_holders[x.shard] == held)
                .map(|x| x.ms)
                .collect();
            let holders: Vec<usize> = held.iter().map(|&h| region_of[h]).collect();
            ms.sort_by(|x, y| x.total_cmp(y));
            let (c, lr) = (region_of[ci], region_of[l]);
            let farthest = holders.iter().map(|&h| m.rtt(lr, h)).fold(0.0, f64::max);
            let nearest = holders
                .iter()
                .map(|&h| m.rtt(c, h))
                .fold(f64::INFINITY, f64::min);
            let bound = match op {
                "write" => m.rtt(c, lr) + quorum_latency(&m, &sites, &shape, lr).max(farthest),
                "read-leader" => m.rtt(c, lr),
                _ => m
                    .rtt(c, lr)
                    .min(quorum_latency(&m, &sites, &shape, c))
                    .min(nearest),
            };
            let mut paths: Vec<(String, usize)> = Vec::new();
            for x in &mine {
                match paths.iter_mut().find(|(p, _)| *p == x.path) {
                    Some(e) => e.1 += 1,
                    None => paths.push((x.path.clone(), 1)),
                }
            }
            paths.sort_by_key(|p| std::cmp::Reverse(p.1));
            let served: Vec<String> = paths
                .iter()
                .map(|(p, n)| format!("{p} {:.0}%", 100.0 * *n as f64 / mine.len() as f64))
                .collect();
            let p50 = pct(&ms, 0.5);
            // The lease verdict is about regions with a local holder.
            let local_holder = held.iter().any(|&h| region_of[h] == region_of[ci]);
            if leases && op == "read" && local_holder {
                let by_lease = mine.iter().filter(|x| x.path == "lease").count();
                lease_stats.push((ci, by_lease as f64 / mine.len() as f64, p50, f64::NAN));
            }
            if op == "read-leader" {
                if let Some(e) = lease_stats.iter_mut().find(|e| e.0 == ci) {
                    e.3 = p50;
                }
            }
            let ok = p50 <= bound * 1.05 + 1.0;
            all_ok &= ok;
            let ratio = if bound > 0.0 { p50 / bound } else { f64::NAN };
            println!(
                "{:<16} {:<11} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>8.3} {:>4}  {}",
                s.region,
                op,
                ms.len(),
                p50,
                pct(&ms, 0.99),
                bound,
                ratio,
                if ok { "yes" } else { "NO" },
                served.join(", ")
            );
            rows.push(json!({
                "system": "meridian", "region": s.region, "op": if op == "write" { "write" } else { "read" },
                "path": match op { "write" => "leader", "read-leader" => "leader", _ => "auto" },
                "served_by": paths.iter().map(|(p, n)| json!({"path": p, "count": n})).collect::<Vec<_>>(),
                "count": ms.len(), "ops_per_s": round2(ms.len() as f64 / a.seconds as f64),
                "p50_ms": round2(p50), "p90_ms": round2(pct(&ms, 0.9)), "p99_ms": round2(pct(&ms, 0.99)),
                "p999_ms": round2(pct(&ms, 0.999)), "max_ms": round2(*ms.last().expect("non-empty")),
                "bound_ms": round2(bound), "ratio_to_bound": if bound > 0.0 { json!((ratio * 1000.0).round() / 1000.0) } else { json!(null) },
                "leader": cfg.sites[l].name,
            }));
        }
    }
    let rtt: Vec<Vec<f64>> = region_of
        .iter()
        .map(|&x| region_of.iter().map(|&y| m.rtt(x, y)).collect())
        .collect();
    let report = json!({
        "topology": {
            "sites": cfg.sites.iter().map(|s| json!({"name": s.name, "region": s.region})).collect::<Vec<_>>(),
            "shards": cfg.cluster.shards,
            "quorum": cfg.cluster.quorum,
            "preferred_leader": cfg.cluster.preferred_leader,
            "rtt_matrix": "shared/data/aws-rtt-p50.csv (embedded), emulated in-process at rtt/2 per direction",
            "rtt_ms": rtt,
        },
        "workload": {"seconds": a.seconds, "warmup_seconds": 1, "clients_per_region": a.clients, "op": "put", "value_bytes": 64,
                     "client_traffic": "each client talks to its region's proxy; proxy-to-replica traffic is delayed rtt/2 each way",
                     "reads": "GET ?read_mode=auto of a key the same client wrote four operations earlier"},
        "results": rows,
        "host_steal": host_steal.map(|x| (x * 1000.0).round() / 1000.0),
    });
    // The benchmark's report writer: report.json, report.md and a latency CDF per region.
    let mut recorded = crate::bench::hist::Recorded::new();
    for x in samples {
        let (op, path) = match x.op {
            "write" => ("write", "leader"),
            "read-leader" => ("read", "leader"),
            _ => ("read", "auto"),
        };
        let key = crate::bench::hist::RowKey {
            system: "meridian".into(),
            region: cfg.sites[x.region].region.clone(),
            op: op.into(),
            path: path.into(),
        };
        recorded.entry(key).or_default().record(
            std::time::Duration::from_secs_f64(x.ms / 1e3),
            &x.path,
            x.shard as u32,
        );
    }
    let mut header = report.clone();
    header.as_object_mut().expect("object").remove("results");
    crate::bench::report::write(&a.out, &header, &rows, &recorded, &[])?;
    let path = a.out.join("report.json");
    println!();
    println!("report: {}", path.display());
    println!(
        "every region within 5 % (+1 ms) of its bound: {}",
        if all_ok { "yes" } else { "NO" }
    );
    if let Some(x) = host_steal.filter(|x| *x >= STEAL_NOTE) {
        // Every hop of a request waits for a CPU the hypervisor may be lending out.
        println!(
            "the hypervisor took {:.1} % of this machine's CPU time during the run (steal): latencies above their bounds are partly the host's",
            x * 100.0
        );
    }
    if leases {
        // Holder regions: >= 95 % of auto reads by the local holder, median <= 1 ms, and outside
        // the leader's region >= 50x below the same region's leader read.
        let leader_region = cfg
            .cluster
            .preferred_leader
            .as_ref()
            .and_then(|p| cfg.site_index(p));
        let ok = lease_stats.iter().all(|(ci, share, lease, leader)| {
            *share >= 0.95
                && *lease <= 1.0
                && (Some(*ci) == leader_region
                    || leader.is_nan()
                    || *leader >= 50.0 * lease.max(0.01))
        });
        for (ci, share, lease, leader) in &lease_stats {
            println!(
                "  {:<16} lease share {:>5.1} %, lease p50 {:.2} ms, leader-read p50 {:.1} ms ({:.0}x)",
                cfg.sites[*ci].region,
                share * 100.0,
                lease,
                leader,
                leader / lease.max(0.01)
            );
        }
        println!(
            "quorum-lease reads >= 95 % local, median <= 1 ms, >= 50x below the leader read outside the leader's region: {}",
            if ok { "yes" } else { "NO" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
