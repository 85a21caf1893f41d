//! `meridian demo [--out DIR] [--seconds N]`: a five-region cluster on loopback with the WAN
//! emulated from the shipped RTT matrix; clients in every region write through the replicas'
//! client service (their own traffic delayed by the same matrix); prints per-region latency
//! next to the physical bound of DESIGN.md §6, writes DIR/report.json, and shuts everything
//! down — also on Ctrl-C.
use super::cluster::{down, tool_tls, up, wait_for_leaders, UpArgs};
use anyhow::{bail, Context, Result};
use meridian_replica::client::{Outcome, ReplicaClient};
use meridian_replica::config::ClusterConfig;
use meridian_replica::delay::DelayLine;
use meridian_replica::kv::{KvCommand, Op};
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
        dir: cdir.clone(),
        sites: 5,
        regions: vec![],
        shards: 4,
        no_wan: a.no_wan,
        proxy_outstanding: None,
        parent_pid: Some(std::process::id() as i32),
    };
    println!("starting five replica processes (emulated WAN from the shipped AWS RTT matrix) ...");
    let cluster = up(&up_args).await?;
    let outcome = tokio::select! {
        r = workload(&cluster.config, a.seconds, a.clients) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let stopped = down(&cdir);
    let samples = outcome?;
    stopped?;
    report(&cluster.config, &samples, &a)
}

async fn workload(cfg: &ClusterConfig, seconds: u64, per_region: usize) -> Result<Vec<Sample>> {
    let m = RttMatrix::embedded();
    let tls = tool_tls(cfg);
    // Wait for the planner's preferred leader to lead every shard (it campaigns first).
    let preferred = cfg
        .cluster
        .preferred_leader
        .as_ref()
        .and_then(|p| cfg.site_index(p));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut leaders = wait_for_leaders(cfg, Duration::from_secs(30)).await?;
    while Some(leaders.iter().all(|l| Some(*l) == preferred)) != Some(true)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        leaders = wait_for_leaders(cfg, Duration::from_secs(10)).await?;
    }
    let mut conns = Vec::new();
    for s in &cfg.sites {
        conns.push(ReplicaClient::connect(s.addr, &tls).await?);
    }
    println!("leaders per shard: {:?}; {seconds} s of writes from {per_region} clients in each region ...", leaders.iter().map(|&l| &cfg.sites[l].name).collect::<Vec<_>>());
    let region_of: Vec<usize> = cfg
        .sites
        .iter()
        .map(|s| m.index(&s.region))
        .collect::<Result<_, _>>()?;
    // The first second warms connections and pipelines up; it is not measured.
    let warm = Instant::now() + Duration::from_secs(1);
    let end = warm + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (ci, &creg) in region_of.iter().enumerate() {
        for w in 0..per_region {
            let conns = conns.clone();
            let mut leaders = leaders.clone();
            let region_of = region_of.clone();
            let m = m.clone();
            let shards = cfg.cluster.shards;
            tasks.push(tokio::spawn(async move {
                let client = (ci * 1000 + w + 1) as u64;
                let mut out = Vec::new();
                let mut seq = 0u64;
                while Instant::now() < end {
                    seq += 1;
                    let key = format!("demo/{ci}/{w}/{seq}");
                    let shard = meridian_proxy::route::shard_for_key(key.as_bytes(), shards);
                    let cmd = KvCommand {
                        client,
                        seq,
                        op: Op::Put {
                            key: key.into_bytes(),
                            value: vec![b'v'; 64],
                        },
                    };
                    let l = leaders[shard as usize];
                    let one_way = Duration::from_secs_f64(m.rtt(creg, region_of[l]) / 2000.0);
                    let t0 = Instant::now();
                    DelayLine::global().sleep(one_way).await;
                    let r = conns[l].clone().submit(shard, &[cmd]).await;
                    DelayLine::global().sleep(one_way).await;
                    match r {
                        Ok(Outcome::Ok(_)) => out.push(Sample {
                            region: ci,
                            leader: l,
                            ms: t0.elapsed().as_secs_f64() * 1e3,
                        }),
                        Ok(Outcome::NotLeader(Some(h))) => leaders[shard as usize] = h,
                        Ok(Outcome::NotLeader(None)) | Err(_) => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                    }
                }
                out
            }));
        }
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await?);
    }
    if samples.is_empty() {
        bail!("no write completed");
    }
    Ok(samples)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn report(cfg: &ClusterConfig, samples: &[Sample], a: &DemoArgs) -> Result<ExitCode> {
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
    println!("write latency per client region (bound = rtt(client, leader) + fastest-quorum rtt from the leader, DESIGN.md §6)");
    println!(
        "{:<16} {:>6} {:>9} {:>9} {:>9} {:>9} {:>7}  leader",
        "region", "count", "p50 ms", "p99 ms", "bound ms", "p50/bnd", "ok"
    );
    let mut rows = Vec::new();
    let mut all_ok = true;
    for (ci, s) in cfg.sites.iter().enumerate() {
        let mine: Vec<&Sample> = samples.iter().filter(|x| x.region == ci).collect();
        if mine.is_empty() {
            continue;
        }
        // The leader most of this region's writes went to.
        let mut counts = vec![0usize; cfg.sites.len()];
        mine.iter().for_each(|x| counts[x.leader] += 1);
        let l = (0..counts.len()).max_by_key(|&i| counts[i]).expect("sites");
        let mut ms: Vec<f64> = mine
            .iter()
            .filter(|x| x.leader == l)
            .map(|x| x.ms)
            .collect();
        ms.sort_by(|x, y| x.total_cmp(y));
        let bound =
            m.rtt(region_of[ci], region_of[l]) + quorum_latency(&m, &sites, &shape, region_of[l]);
        let p50 = pct(&ms, 0.5);
        let ok = p50 <= bound * 1.05 + 1.0;
        all_ok &= ok;
        println!(
            "{:<16} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.3} {:>7}  {}",
            s.region,
            ms.len(),
            p50,
            pct(&ms, 0.99),
            bound,
            p50 / bound,
            if ok { "yes" } else { "NO" },
            cfg.sites[l].name
        );
        rows.push(json!({
            "system": "meridian", "region": s.region, "op": "write", "path": "leader", "count": ms.len(),
            "ops_per_s": round2(ms.len() as f64 / a.seconds as f64),
            "p50_ms": round2(p50), "p90_ms": round2(pct(&ms, 0.9)), "p99_ms": round2(pct(&ms, 0.99)),
            "p999_ms": round2(pct(&ms, 0.999)), "max_ms": round2(*ms.last().expect("non-empty")),
            "bound_ms": round2(bound), "ratio_to_bound": (p50 / bound * 1000.0).round() / 1000.0,
            "leader": cfg.sites[l].name,
        }));
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
                     "client_traffic": "delayed rtt(client region, leader region)/2 each way"},
        "results": rows,
    });
    let path = a.out.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!();
    println!("report: {}", path.display());
    println!(
        "every region within 5 % (+1 ms) of its bound: {}",
        if all_ok { "yes" } else { "NO" }
    );
    Ok(ExitCode::SUCCESS)
}
