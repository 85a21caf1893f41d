//! `meridian bench`: the WAN benchmark. Starts the systems under test (Meridian: replica and
//! proxy processes; etcd: one member per region), drives the same workload through each from
//! clients in every region, and writes the report of DESIGN.md §7b with plots.
pub mod bounds;
mod cost;
pub mod cpu;
pub mod drive;
pub mod etcd;
pub mod hist;
pub mod idle;
pub mod plot;
pub mod ratios;
pub mod report;
pub mod target;
pub mod watch;
pub mod workload;

use crate::cmd::cluster::{down, lease_holders, tool_tls, up, wait_for_preferred_leaders, UpArgs};
use anyhow::{bail, Context, Result};
use bounds::Geometry;
use cost::{cores, generator_json, measured, Measured, Roles, SystemRun};
use drive::{Client, Workload};
use hist::Recorded;
use meridian_replica::config::ClusterConfig;
use meridian_topology::model::QuorumShape;
use meridian_topology::RttMatrix;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use target::Target;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Systems {
    Meridian,
    Etcd,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Wan {
    /// Loopback, no emulated delay.
    None,
    /// Meridian's in-process delay layer (Meridian only: etcd cannot sit behind it).
    Inproc,
    /// Network namespaces and a packet router (`meridian wan`; root).
    Host,
}

#[derive(clap::Args, Clone, Debug)]
pub struct WorkloadArgs {
    #[arg(long, value_enum, default_value = "meridian")]
    pub system: Systems,
    #[arg(long, value_enum, default_value = "inproc")]
    pub wan: Wan,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Unmeasured seconds first (connections, pipelines and leases settle).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Clients per region, each with its own connection to its region's proxy (etcd: member).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Share of operations that are reads.
    #[arg(long, default_value_t = 0.5)]
    pub read_share: f64,
    /// Key choice: uniform, zipf:θ (0<θ<1), local:F (a share F from the client's own
    /// region's keys) or local:F:G (that share moving from F to G over the run).
    #[arg(long, default_value = "uniform")]
    pub keys: workload::KeyDist,
    #[arg(long, default_value_t = 1000)]
    pub key_count: u64,
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Meridian read paths, taken in turn: auto, leader, quorum, lease (linearizable),
    /// serializable, bounded:MS.
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub read_mode: Vec<String>,
    /// etcd read kinds, taken in turn: linearizable, serializable.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "linearizable,serializable"
    )]
    pub etcd_reads: Vec<String>,
    /// Open loop at this many operations per second over all clients (latency measured from
    /// when each operation was due: corrected for coordinated omission).
    #[arg(long)]
    pub open_loop: Option<f64>,
    /// Shard groups of the Meridian cluster.
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Quorum-lease holders for Meridian (`auto`, `all`, or site names).
    #[arg(long)]
    pub lease_holders: Option<String>,
    /// Also write every operation to FILE (DESIGN.md §7b) for `meridian check`.
    #[arg(long)]
    pub history: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Loopback throughput instead: closed-loop writes, then linearizable reads, at each of
    /// these total client counts, CPU per operation of every system (forces --wan none).
    #[arg(long, value_delimiter = ',')]
    pub throughput: Option<Vec<usize>>,
    /// With --throughput: measure every (client count, operation) pair this many times, the
    /// two systems back to back in each round (alternating which goes first), and report each
    /// round's ratio and their median.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    #[arg(long, default_value = "meridian-bench")]
    pub out: PathBuf,
    /// Worker threads of every server process, the same for both systems (Meridian's
    /// `--threads`, etcd's GOMAXPROCS) (default: each system's own, one per core — not the
    /// equal share `cluster up` gives its processes, which etcd does not have). With
    /// `--watchers`: every replica's and proxy's (default there: `cluster up`'s equal share).
    #[arg(long)]
    pub threads: Option<usize>,
}

fn validate(a: &WorkloadArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&a.read_share) {
        bail!("--read-share must lie in 0..=1");
    }
    if a.clients == 0 || a.seconds == 0 || a.key_count < 2 {
        bail!("--clients and --seconds must be at least 1, --key-count at least 2");
    }
    for p in &a.read_mode {
        let ok = matches!(
            p.as_str(),
            "auto" | "leader" | "quorum" | "lease" | "serializable"
        ) || p
            .strip_prefix("bounded:")
            .is_some_and(|ms| ms.parse::<u64>().is_ok());
        if !ok {
            bail!(
                "unknown --read-mode {p:?} (auto, leader, quorum, lease, serializable, bounded:MS)"
            );
        }
    }
    for p in &a.etcd_reads {
        if !matches!(p.as_str(), "linearizable" | "serializable") {
            bail!("unknown --etcd-reads {p:?} (linearizable, serializable)");
        }
    }
    if a.open_loop.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--open-loop takes a positive rate");
    }
    if a.system != Systems::Meridian && a.wan == Wan::Inproc && a.throughput.is_none() {
        bail!(
            "etcd cannot run behind Meridian's in-process delay layer: use --wan host (network \
             namespaces and a packet router, root) or --wan none (loopback) for etcd"
        );
    }
    if a.wan == Wan::Host && a.throughput.is_none() {
        if let Some(why) = crate::wan::netns::unavailable() {
            bail!("--wan host: {why}");
        }
    }
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if a.rounds > 1 && a.throughput.is_none() {
        bail!("--rounds repeats --throughput measurements; give --throughput");
    }
    if a.history.is_some() && a.throughput.is_some() {
        bail!("--history records one cluster's operations; --throughput starts a fresh cluster per row");
    }
    if a.lease_holders.is_some() && a.system == Systems::Etcd {
        bail!("--lease-holders is for Meridian");
    }
    Ok(())
}

pub fn run(a: WorkloadArgs) -> Result<std::process::ExitCode> {
    validate(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::select! {
            r = bench(&a) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The regions of a run: the five shipped ones, as `meridian cluster up` places them.
fn regions_of(cfg: &ClusterConfig) -> Vec<String> {
    cfg.sites.iter().map(|s| s.region.clone()).collect()
}

fn geometry<'a>(m: &'a RttMatrix, regions: &[String]) -> Result<Geometry<'a>> {
    Ok(Geometry {
        m,
        sites: regions
            .iter()
            .map(|r| m.index(r).map(Some))
            .collect::<Result<_, _>>()?,
        shape: if regions.len() == 9 {
            QuorumShape::three_by_three()
        } else {
            QuorumShape::Majority
        },
    })
}

fn workload_of(a: &WorkloadArgs, read_paths: Vec<String>, shards: u32) -> Workload {
    Workload {
        read_share: a.read_share,
        keys: a.keys.clone(),
        key_count: a.key_count,
        value_size: a.value_size,
        read_paths,
        open_loop: a.open_loop,
        warmup: Duration::from_secs_f64(a.warmup),
        measure: Duration::from_secs(a.seconds),
        seed: a.seed,
        shards,
    }
}

/// Clients: `per_region` in every region, or (`total`) dealt round-robin over the regions.
fn placement(regions: &[String], per_region: Option<usize>, total: usize) -> Vec<usize> {
    match per_region {
        Some(n) => (0..regions.len())
            .flat_map(|r| std::iter::repeat_n(r, n))
            .collect(),
        None => (0..total).map(|i| i % regions.len()).collect(),
    }
}

/// Meridian's processes by role: the replicas leading a shard when the run began, the other
/// replicas, the proxies.
fn meridian_roles(setup: &MeridianSetup) -> Roles {
    let mut roles: Roles = ["leaders", "followers", "proxies"]
        .iter()
        .map(|r| (r.to_string(), Vec::new()))
        .collect();
    for (name, pid) in &setup.named_pids {
        let site = setup.cfg.sites.iter().position(|s| &s.name == name);
        let role = match site {
            Some(i) if setup.leaders.contains(&i) => 0,
            Some(_) => 1,
            None => 2,
        };
        roles[role].1.push(*pid);
    }
    roles
}

struct MeridianSetup {
    cfg: ClusterConfig,
    leaders: Vec<usize>,
    /// Every process of the cluster by its name (a site's or a proxy's).
    named_pids: Vec<(String, u32)>,
}

async fn start_meridian(a: &WorkloadArgs, dir: &Path, no_wan: bool) -> Result<MeridianSetup> {
    if dir.join("pids").exists() {
        let _ = down(dir);
    }
    let _ = std::fs::remove_dir_all(dir);
    let up_args = UpArgs {
        colocate: Vec::new(),
        lease_ms: 1000,
        lease_holders: a.lease_holders.clone(),
        lease_auto_interval_ms: 1000,
        dir: dir.to_path_buf(),
        sites: 5,
        regions: vec![],
        shards: a.shards,
        no_wan,
        proxy_outstanding: None,
        proxy_no_batching: false,
        auth: false,
        parent_pid: Some(std::process::id() as i32),
        wan_hosts: wan_of(a)?.map(|_| wan_dir(a)),
        threads: Some(server_threads(a)),
    };
    let cluster = up(&up_args).await?;
    let cfg = cluster.config;
    let leaders = wait_for_preferred_leaders(&cfg).await?;
    let named_pids = std::fs::read_to_string(dir.join("pids"))?
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect();
    Ok(MeridianSetup {
        cfg,
        leaders,
        named_pids,
    })
}

async fn meridian_clients(
    cfg: &ClusterConfig,
    regions: &[String],
    at: &[usize],
) -> Result<Vec<Client>> {
    let tls = crate::https::tls_config(&cfg.resolve(&cfg.tls.ca));
    let mut out = Vec::new();
    for (i, &r) in at.iter().enumerate() {
        let proxy = cfg
            .proxies
            .iter()
            .find(|p| p.region == regions[r])
            .context("a proxy per region")?;
        out.push(Client {
            id: i as u64 + 1,
            region: regions[r].clone(),
            region_index: r,
            target: Target::meridian(&format!("https://{}", proxy.http_addr), tls.clone()).await?,
        });
    }
    Ok(out)
}

/// One Meridian run: cluster up, preload, workload, rows, cluster down.
async fn run_meridian(
    a: &WorkloadArgs,
    w: &Workload,
    at: Option<usize>,
    total: usize,
    history: &mut Vec<String>,
    origin: Instant,
) -> Result<SystemRun> {
    let dir = a.out.join("meridian-cluster");
    let no_wan = loopback(a);
    let setup = start_meridian(a, &dir, a.wan != Wan::Inproc || a.throughput.is_some()).await?;
    let r = async {
        let regions = regions_of(&setup.cfg);
        let mut loaders = meridian_clients(&setup.cfg, &regions, &placement(&regions, Some(1), 0)).await?;
        let mut targets: Vec<Target> = loaders.drain(..).map(|c| c.target).collect();
        history.extend(drive::preload("meridian", 1_000_000, &mut targets, a.key_count, a.value_size, origin, a.history.is_some()).await?);
        let clients = meridian_clients(&setup.cfg, &regions, &placement(&regions, at, total)).await?;
        let (out, Measured { by_role, generator_cpu, window, host_steal }) = measured(
            "meridian",
            clients,
            w,
            regions.len(),
            &meridian_roles(&setup),
            a.history.is_some(),
            origin,
        )
        .await?;
        let holders = if a.lease_holders.is_some() {
            lease_holders(&setup.cfg, &tool_tls(&setup.cfg)).await?
        } else {
            vec![Vec::new(); setup.cfg.cluster.shards as usize]
        };
        history.extend(out.history.iter().cloned());
        let m = RttMatrix::embedded();
        let g = geometry(&m, &regions)?;
        let mut rows = Vec::new();
        for (k, s) in &out.recorded {
            let c = m.index(&k.region)?;
            let bound = if no_wan {
                Some(0.0)
            } else {
                report::weighted_bound(s, |shard| {
                    let (l, h) = (setup.leaders[shard as usize], &holders[shard as usize]);
                    Some(g.meridian(c, l, h, &k.op, &k.path))
                })
            };
            let leaders: Vec<&str> = setup.leaders.iter().map(|&l| setup.cfg.sites[l].name.as_str()).collect();
            rows.push(report::row(k, s, a.seconds as f64, bound, json!({"leaders": leaders})));
        }
        let topology = json!({
            "sites": setup.cfg.sites.iter().map(|s| json!({"name": s.name, "region": s.region})).collect::<Vec<_>>(),
            "shards": setup.cfg.cluster.shards,
            "quorum": setup.cfg.cluster.quorum,
            "leader_per_shard": setup.leaders.iter().map(|&l| &setup.cfg.sites[l].name).collect::<Vec<_>>(),
            "lease_holders_per_shard": holders.iter().map(|h| h.iter().map(|&i| &setup.cfg.sites[i].name).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "wan": match (no_wan, a.wan) {
                (true, _) => "none (loopback)",
                (false, Wan::Host) => "host-level: a network namespace per region, a packet router holding each packet rtt/2 (meridian wan)",
                _ => "in-process delay layer, rtt/2 each way, from the embedded AWS matrix",
            },
        });
        Ok::<_, anyhow::Error>(SystemRun {
            recorded: out.recorded,
            rows,
            measured_ops: out.measured_ops,
            system_cpu: by_role.iter().map(|(_, c)| c).sum(),
            by_role,
            generator_cpu,
            window,
            host_steal,
            topology,
        })
    }
    .await;
    down(&dir)?;
    r
}

/// One etcd run: one member per region (the regions Meridian's `cluster up` uses), leader
/// moved to Meridian's preferred leader region.
async fn run_etcd(
    a: &WorkloadArgs,
    w: &Workload,
    at: Option<usize>,
    total: usize,
    history: &mut Vec<String>,
    origin: Instant,
) -> Result<SystemRun> {
    let m = RttMatrix::embedded();
    let regions: Vec<String> = meridian_testkit::sim::config::FIVE_REGIONS
        .iter()
        .map(|r| r.to_string())
        .collect();
    let leader_region = crate::cmd::cluster::planned_leader(&m, &regions, false)?;
    let leader = regions
        .iter()
        .position(|r| *r == leader_region)
        .context("leader region")?;
    let wan = wan_of(a)?;
    // etcd's tuning guide: heartbeat about the members' round trip, election ten heartbeats.
    let heartbeat = if wan.is_some() { 250 } else { 100 };
    // A member that lost its port to another process between our check and its bind exits
    // at once: start the cluster again (new ports), twice at most.
    let mut attempt = 0;
    let mut e = loop {
        attempt += 1;
        let mut e = etcd::EtcdCluster::start(
            &a.out.join("etcd-cluster"),
            &regions,
            heartbeat,
            wan.as_ref(),
            server_threads(a),
        )?;
        match e.wait_ready(Duration::from_secs(30)).await {
            Ok(_) => break e,
            Err(err) if attempt < 3 && format!("{err:#}").contains("exited") => {
                tracing::warn!("etcd did not start ({err:#}); again");
                e.stop();
            }
            Err(err) => return Err(err),
        }
    };
    e.move_leader(leader, Duration::from_secs(20)).await?;
    let r = async {
        let mut targets = Vec::new();
        for mb in &e.members {
            targets.push(Target::etcd(&mb.client_url).await?);
        }
        history.extend(
            drive::preload(
                "etcd",
                2_000_000,
                &mut targets,
                a.key_count,
                a.value_size,
                origin,
                a.history.is_some(),
            )
            .await?,
        );
        let mut clients = Vec::new();
        for (i, r) in placement(&regions, at, total).into_iter().enumerate() {
            clients.push(Client {
                id: 10_000 + i as u64,
                region: regions[r].clone(),
                region_index: r,
                target: Target::etcd(&e.members[r].client_url).await?,
            });
        }
        // The member the leader was moved to above.
        let lead = Some(leader);
        let pids = e.pids();
        let roles: Roles = vec![
            (
                "leaders".to_string(),
                pids.iter().enumerate().filter(|(i, _)| Some(*i) == lead).map(|(_, p)| *p).collect(),
            ),
            (
                "followers".to_string(),
                pids.iter().enumerate().filter(|(i, _)| Some(*i) != lead).map(|(_, p)| *p).collect(),
            ),
        ];
        let (out, Measured { by_role, generator_cpu, window, host_steal }) = measured(
            "etcd",
            clients,
            w,
            regions.len(),
            &roles,
            a.history.is_some(),
            origin,
        )
        .await?;
        let now_leader = e.leader().await.ok();
        history.extend(out.history.iter().cloned());
        let g = geometry(&m, &regions)?;
        let no_wan = loopback(a);
        let mut rows = Vec::new();
        for (k, s) in &out.recorded {
            let c = m.index(&k.region)?;
            let bound = if no_wan {
                0.0
            } else {
                g.etcd(c, leader, &k.op, &k.path)
            };
            rows.push(report::row(
                k,
                s,
                a.seconds as f64,
                Some(bound),
                json!({"leader": e.members[leader].name}),
            ));
        }
        let topology = json!({
            "members": e.members.iter().map(|m| json!({"name": m.name, "region": m.region})).collect::<Vec<_>>(),
            "leader": e.members[leader].name,
            "leader_at_end": now_leader.map(|l| e.members[l].name.clone()),
            "version": etcd_version(),
        });
        Ok::<_, anyhow::Error>(SystemRun {
            recorded: out.recorded,
            rows,
            measured_ops: out.measured_ops,
            system_cpu: by_role.iter().map(|(_, c)| c).sum(),
            by_role,
            generator_cpu,
            window,
            host_steal,
            topology,
        })
    }
    .await;
    e.stop();
    r
}

fn etcd_version() -> Option<String> {
    let out = std::process::Command::new(etcd::binary().ok()?)
        .arg("--version")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string)
}

/// Whether the run has no emulated delay (bounds are then zero).
fn loopback(a: &WorkloadArgs) -> bool {
    a.wan == Wan::None || a.throughput.is_some()
}

/// Worker threads of each server process of either system.
fn server_threads(a: &WorkloadArgs) -> usize {
    a.threads.unwrap_or_else(crate::cmd::runtime::cores)
}

/// The host-level emulation of a `--wan host` run: five hosts, one per region.
fn wan_dir(a: &WorkloadArgs) -> PathBuf {
    a.out.join("wan")
}

fn wan_of(a: &WorkloadArgs) -> Result<Option<crate::wan::WanFile>> {
    if a.wan == Wan::Host && a.throughput.is_none() {
        Ok(Some(crate::wan::load(&wan_dir(a))?))
    } else {
        Ok(None)
    }
}

async fn bench(a: &WorkloadArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    if a.wan == Wan::Host && a.throughput.is_none() {
        let regions: Vec<String> = meridian_testkit::sim::config::FIVE_REGIONS
            .iter()
            .map(|r| r.to_string())
            .collect();
        // An emulation left by an interrupted run (its router outlives us) goes first.
        let _ = crate::wan::down(&wan_dir(a));
        let w = crate::wan::up(&crate::wan::UpArgs {
            dir: wan_dir(a),
            hosts: regions.len(),
            rtt: None,
            regions,
        })?;
        eprintln!(
            "host-level WAN: {} hosts ({}), router pid {}",
            w.hosts.len(),
            w.subnet,
            w.router_pid
        );
        let r = measure_all(a).await;
        crate::wan::down(&wan_dir(a))?;
        return r;
    }
    measure_all(a).await
}

async fn measure_all(a: &WorkloadArgs) -> Result<()> {
    let origin = Instant::now();
    let mut history = Vec::new();
    let systems: Vec<&str> = match a.system {
        Systems::Meridian => vec!["meridian"],
        Systems::Etcd => vec!["etcd"],
        Systems::Both => vec!["meridian", "etcd"],
    };
    let mut rows = Vec::new();
    let mut recorded = Recorded::new();
    let mut topology = serde_json::Map::new();
    let mut generator = serde_json::Map::new();
    let mut throughput = Vec::new();
    if let Some(levels) = &a.throughput {
        // Each (client count, operation) pair of systems back to back, round after round.
        for round in 0..a.rounds {
            for &n in levels {
                for (op, share) in [("write", 0.0), ("read", 1.0)] {
                    for sys in ratios::order(round, &systems) {
                        let paths = if sys == "meridian" {
                            vec!["auto".to_string()]
                        } else {
                            vec!["linearizable".to_string()]
                        };
                        let mut wa = a.clone();
                        wa.read_share = share;
                        let w =
                            workload_of(&wa, paths, if sys == "meridian" { a.shards } else { 1 });
                        eprintln!(
                            "{sys}: {op}s, {n} clients, {} s (round {} of {}) ...",
                            a.seconds,
                            round + 1,
                            a.rounds
                        );
                        let s = if sys == "meridian" {
                            run_meridian(&wa, &w, None, n, &mut history, origin).await?
                        } else {
                            run_etcd(&wa, &w, None, n, &mut history, origin).await?
                        };
                        let mut all = hist::Series::default();
                        for v in s.recorded.values() {
                            all.merge(v);
                        }
                        let mut t = generator_json(&s, 2.0);
                        t["system"] = json!(sys);
                        t["op"] = json!(op);
                        t["clients"] = json!(n);
                        t["round"] = json!(round);
                        t["p50_ms"] = json!((all.ms(0.5) * 100.0).round() / 100.0);
                        t["p99_ms"] = json!((all.ms(0.99) * 100.0).round() / 100.0);
                        t["errors"] = json!(all.errors);
                        eprintln!("  {}", t);
                        throughput.push(t);
                        topology.insert(sys.to_string(), s.topology);
                    }
                }
            }
        }
        for r in ratios::summarize(&throughput) {
            eprintln!("meridian / etcd: {r}");
        }
    } else {
        for &sys in &systems {
            let s = if sys == "meridian" {
                let w = workload_of(a, a.read_mode.clone(), a.shards);
                run_meridian(a, &w, Some(a.clients), 0, &mut history, origin).await?
            } else {
                let w = workload_of(a, a.etcd_reads.clone(), 1);
                run_etcd(a, &w, Some(a.clients), 0, &mut history, origin).await?
            };
            generator.insert(sys.to_string(), generator_json(&s, 10.0));
            topology.insert(sys.to_string(), s.topology.clone());
            rows.extend(s.rows);
            hist::merge_into(&mut recorded, &s.recorded);
        }
        print_rows(&rows);
    }
    let header = json!({
        "topology": topology,
        "workload": {
            "mode": if a.throughput.is_some() { "throughput" } else { "latency" },
            "wan": format!("{:?}", a.wan).to_lowercase(),
            "seconds": a.seconds, "warmup_seconds": a.warmup,
            "clients_per_region": if a.throughput.is_some() { json!(null) } else { json!(a.clients) },
            "read_share": a.read_share, "keys": format!("{:?}", a.keys), "key_count": a.key_count,
            "value_bytes": a.value_size, "meridian_read_modes": a.read_mode, "etcd_reads": a.etcd_reads,
            "loop": match a.open_loop { Some(r) => format!("open at {r} ops/s (latency from due time)"), None => "closed".into() },
            "seed": a.seed,
        },
        "generator": generator,
        "machine": {"cores": cores()},
        // Worker threads of each server process (both systems).
        "threads_per_process": server_threads(a),
    });
    let mut header = header;
    if wan_of(a)?.is_some() {
        // The router's own lateness: how far past its due time it released packets.
        header["wan_router"] = crate::wan::ctl(&wan_dir(a), "stats").unwrap_or_default();
    }
    report::write(&a.out, &header, &rows, &recorded, &throughput)?;
    if let Some(h) = &a.history {
        std::fs::write(h, history.join("\n") + "\n")
            .with_context(|| format!("writing {}", h.display()))?;
    }
    println!("report: {}", a.out.join("report.json").display());
    Ok(())
}

fn print_rows(rows: &[Value]) {
    println!(
        "{:<9} {:<15} {:<6} {:<13} {:>7} {:>9} {:>9} {:>9} {:>8}",
        "system", "region", "op", "path", "count", "p50 ms", "p99 ms", "bound ms", "p50/bnd"
    );
    for r in rows {
        println!(
            "{:<9} {:<15} {:<6} {:<13} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>8}",
            r["system"].as_str().unwrap_or(""),
            r["region"].as_str().unwrap_or(""),
            r["op"].as_str().unwrap_or(""),
            r["path"].as_str().unwrap_or(""),
            r["count"],
            r["p50_ms"].as_f64().unwrap_or(f64::NAN),
            r["p99_ms"].as_f64().unwrap_or(f64::NAN),
            r["bound_ms"].as_f64().unwrap_or(f64::NAN),
            r["ratio_to_bound"]
                .as_f64()
                .map_or("–".into(), |x| format!("{x:.3}")),
        );
    }
}
