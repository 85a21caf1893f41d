//! `meridian cluster up --dir DIR [--sites 5|9] [--regions ..]` and `meridian cluster down --dir DIR`:
//! a local cluster on 127.0.0.1, one process per site, with the WAN emulated from the shipped
//! RTT matrix.
use anyhow::{bail, Context, Result};
use meridian_replica::config::{
    AuthSection, CertConfig, ClusterConfig, ClusterSection, LeasesSection, ProxyConfig, RoleConfig,
    SiteConfig, TlsSection, TokenConfig, WanSection,
};
use meridian_replica::tls::TlsFiles;
use meridian_testkit::sim::config::{FIVE_REGIONS, NINE_REGIONS};
use meridian_topology::assess::assess;
use meridian_topology::input::Demand;
use meridian_topology::model::QuorumShape;
use meridian_topology::RttMatrix;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum ClusterCmd {
    /// Start a local cluster in the background.
    Up(UpArgs),
    /// Stop exactly the processes `up` started in DIR.
    Down(DownArgs),
}

#[derive(clap::Args, Clone)]
pub struct UpArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// 5 (majority) or 9 (hierarchical 3x3).
    #[arg(long, default_value_t = 5)]
    pub sites: usize,
    /// Regions of the sites (default: five or nine shipped regions).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Key prefixes whose keys share one shard (cluster.colocate), separated by commas: e.g.
    /// `locks/,election/` for etcdctl lock and elect on a many-shard cluster.
    #[arg(long, value_delimiter = ',')]
    pub colocate: Vec<String>,
    /// Turn the WAN delay emulation off (loopback speed).
    #[arg(long)]
    pub no_wan: bool,
    /// Leader lease length in ms (0: no lease reads; every leader read goes through the log).
    #[arg(long, default_value_t = 1000)]
    pub lease_ms: u64,
    /// Quorum-lease holders for every shard: site names separated by commas, `all`, or
    /// `auto` (each shard's leader chooses them from where reads come, by the planner's rule)
    /// (default: none, quorum leases off).
    #[arg(long)]
    pub lease_holders: Option<String>,
    /// With `--lease-holders auto`: how often each leader re-evaluates its holders; in every
    /// mode, how often leaders decay their measured demand (`meridian status`).
    #[arg(long, default_value_t = 5000)]
    pub lease_auto_interval_ms: u64,
    /// Proxies' admission bound (writes outstanding per shard, reads in flight).
    #[arg(long)]
    pub proxy_outstanding: Option<usize>,
    /// Turn client authentication on at the proxies: a `root` token (read-write on every key)
    /// and a `reader` token (read on `public/`) go to DIR/auth.json (mode 0600), their SHA-256
    /// to cluster.toml; the `meridian-tool` client certificate is root too.
    #[arg(long)]
    pub auth: bool,
    /// Start the proxies with write batching off (for measuring what batching gains).
    #[arg(long, hide = true)]
    pub proxy_no_batching: bool,
    /// Replicas exit when this process does (used by `demo`).
    #[arg(long, hide = true)]
    pub parent_pid: Option<i32>,
    /// Run every site and proxy on the host of its region in a `meridian wan` emulation
    /// (DIR/wan.json): the router delays their packets, so the in-process delay layer is off.
    #[arg(long)]
    pub wan_hosts: Option<PathBuf>,
    /// Async worker threads of every replica and proxy process (default: this machine's cores
    /// split equally among them, at least one each).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(clap::Args)]
pub struct DownArgs {
    #[arg(long)]
    pub dir: PathBuf,
}

pub fn run(c: ClusterCmd) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match c {
        ClusterCmd::Up(a) => rt.block_on(async {
            let cluster = up(&a).await?;
            println!(
                "cluster up: {} sites in {}",
                cluster.config.sites.len(),
                a.dir.display()
            );
            for s in &cluster.config.sites {
                println!("  {:<16} {}", s.name, s.addr);
            }
            println!("endpoints: {}", a.dir.join("endpoints.json").display());
            Ok(ExitCode::SUCCESS)
        }),
        ClusterCmd::Down(a) => {
            let n = down(&a.dir)?;
            println!("cluster down: stopped {n} processes");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub struct Cluster {
    pub config: ClusterConfig,
}

/// Distinct free ports below the ephemeral range (`crate::ports`): every listener is held
/// until all are chosen, so none repeats.
struct Ports(Vec<std::net::TcpListener>);

impl Ports {
    fn new() -> Ports {
        Ports(Vec::new())
    }
    fn next(&mut self) -> Result<std::net::SocketAddr> {
        let port = crate::ports::free_port("127.0.0.1", &mut self.0)?;
        Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

/// The planner's leader for uniform demand over the sites' regions (writes and reads).
pub fn planned_leader(m: &RttMatrix, regions: &[String], hierarchical: bool) -> Result<String> {
    let idx: Vec<usize> = regions
        .iter()
        .map(|r| m.index(r))
        .collect::<Result<_, _>>()?;
    let sites: Vec<Option<usize>> = idx.iter().map(|&i| Some(i)).collect();
    let demand: Vec<Demand> = idx
        .iter()
        .map(|&region| Demand {
            region,
            weight: 1.0,
            read_share: 0.0,
        })
        .collect();
    let shape = if hierarchical {
        QuorumShape::three_by_three()
    } else {
        QuorumShape::Majority
    };
    let a = assess(m, &shape, &demand, false, &sites).context("no quorum")?;
    Ok(regions[a.leader].clone())
}

pub fn write_config(a: &UpArgs) -> Result<ClusterConfig> {
    let regions: Vec<String> = if a.regions.is_empty() {
        match a.sites {
            5 => FIVE_REGIONS.iter().map(|s| s.to_string()).collect(),
            9 => NINE_REGIONS.iter().map(|s| s.to_string()).collect(),
            n => bail!("--sites must be 5 or 9 (or give --regions), not {n}"),
        }
    } else {
        a.regions.clone()
    };
    let m = RttMatrix::embedded();
    let mut ports = Ports::new();
    for r in &regions {
        m.index(r).with_context(|| format!("--regions: '{r}'"))?;
    }
    let hierarchical = regions.len() == 9;
    let wan = a.wan_hosts.as_deref().map(crate::wan::load).transpose()?;
    // On an emulated host every process has its host's address; ports are fixed per site.
    let host_addr = |region: &str, port: u16| -> Result<std::net::SocketAddr> {
        let w = wan.as_ref().expect("wan");
        let h = w
            .host_in(region)
            .with_context(|| format!("the WAN emulation has no host in {region}"))?;
        Ok(std::net::SocketAddr::from((h.address, port)))
    };
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let dir = a.dir.canonicalize()?;
    let names: Vec<String> = regions.clone();
    let mut proxy_regions: Vec<String> = Vec::new();
    for r in &regions {
        if !proxy_regions.contains(r) {
            proxy_regions.push(r.clone());
        }
    }
    let proxy_names: Vec<String> = proxy_regions.iter().map(|r| format!("proxy-{r}")).collect();
    meridian_replica::tls::generate(
        &dir.join("certs"),
        &names,
        &proxy_names,
        &["meridian-tool".to_string()],
    )?;
    let proxies = proxy_regions
        .iter()
        .zip(&proxy_names)
        .enumerate()
        .map(|(j, (r, n))| {
            let mut port = |k: u16| match wan {
                Some(_) => host_addr(r, 8400 + 10 * j as u16 + k),
                None => ports.next(),
            };
            Ok(ProxyConfig {
                name: n.clone(),
                region: r.clone(),
                http_addr: port(0)?,
                grpc_addr: Some(port(1)?),
                max_outstanding: a.proxy_outstanding,
                metrics_addr: Some(port(2)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let sites = names
        .iter()
        .zip(&regions)
        .enumerate()
        .map(|(i, (n, r))| {
            let mut port = |k: u16| match wan {
                Some(_) => host_addr(r, 7100 + 10 * i as u16 + k),
                None => ports.next(),
            };
            Ok(SiteConfig {
                name: n.clone(),
                region: r.clone(),
                addr: port(0)?.into(),
                listen: None,
                data_dir: PathBuf::from(format!("data/{n}")),
                continent: None,
                metrics_addr: Some(port(1)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let auth = a.auth.then(local_auth);
    let cfg = ClusterConfig {
        cluster: ClusterSection {
            name: "local".into(),
            shards: a.shards,
            quorum: if hierarchical {
                "hierarchical".into()
            } else {
                "majority".into()
            },
            preferred_leader: Some(planned_leader(&m, &regions, hierarchical)?),
            shard_leaders: Vec::new(),
            colocate: a.colocate.clone(),
            lease_ms: a.lease_ms,
            drift_bound: 0.01,
            heartbeat_ms: 100,
            election_timeout_ms: 1500,
            election_jitter_ms: 1000,
            snapshot_every: 10_000,
            compact_bytes: 64 << 20,
        },
        tls: TlsSection {
            ca: "certs/ca.pem".into(),
            cert_dir: "certs".into(),
        },
        wan: WanSection {
            rtt_matrix: (!a.no_wan && wan.is_none()).then(|| "embedded".to_string()),
        },
        leases: match a.lease_holders.as_deref() {
            None | Some("") => LeasesSection {
                auto_interval_ms: a.lease_auto_interval_ms,
                ..LeasesSection::default()
            },
            Some("auto") => LeasesSection {
                mode: "auto".into(),
                auto_interval_ms: a.lease_auto_interval_ms,
                ..LeasesSection::default()
            },
            Some(list) => LeasesSection {
                mode: "pinned".into(),
                holders: if list == "all" {
                    sites.iter().map(|s| s.name.clone()).collect()
                } else {
                    list.split(',').map(|s| s.trim().to_string()).collect()
                },
                auto_interval_ms: a.lease_auto_interval_ms,
                ..LeasesSection::default()
            },
        },
        sites,
        proxies,
        auth: auth
            .as_ref()
            .map(|(section, _)| section.clone())
            .unwrap_or_default(),
        limits: Default::default(),
        base_dir: dir.clone(),
    };
    drop(ports);
    if let Some((_, tokens)) = &auth {
        let path = dir.join("auth.json");
        std::fs::write(&path, serde_json::to_string_pretty(tokens)?)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    }
    let header = "# Written by `meridian cluster up`. See the README for every key.\n";
    std::fs::write(
        dir.join("cluster.toml"),
        format!("{header}{}", cfg.to_toml()),
    )?;
    ClusterConfig::load(&dir.join("cluster.toml")).context("the written config does not load")
}

/// `cluster up --auth`: the [auth] section and the tokens it was made from (auth.json).
fn local_auth() -> (AuthSection, serde_json::Value) {
    use meridian_proxy::auth::{hex, new_token, sha256};
    let (root, reader) = (new_token(), new_token());
    let section = AuthSection {
        enabled: true,
        tokens: vec![
            TokenConfig {
                name: "root".into(),
                sha256: hex(&sha256(&root)),
                role: "root".into(),
            },
            TokenConfig {
                name: "reader".into(),
                sha256: hex(&sha256(&reader)),
                role: "reader".into(),
            },
        ],
        certs: vec![CertConfig {
            client: "meridian-tool".into(),
            role: "root".into(),
        }],
        roles: vec![RoleConfig {
            name: "reader".into(),
            read_prefixes: vec!["public/".into()],
            write_prefixes: vec![],
        }],
    };
    let tokens = json!({
        "root": {"token": root},
        "reader": {"token": reader, "read_prefixes": ["public/"]},
    });
    (section, tokens)
}

pub fn tool_tls(cfg: &ClusterConfig) -> TlsFiles {
    TlsFiles::new(
        cfg.resolve(&cfg.tls.ca),
        &cfg.resolve(&cfg.tls.cert_dir),
        "meridian-tool",
    )
}

/// Starts one replica process per site and waits until every shard has a leader.
pub async fn up(a: &UpArgs) -> Result<Cluster> {
    let dir = &a.dir;
    if dir.join("pids").exists() {
        bail!(
            "{} already holds a running cluster (run `meridian cluster down --dir {}` first)",
            dir.display(),
            dir.display()
        );
    }
    let cfg = write_config(a)?;
    let dir = cfg.base_dir.clone();
    std::fs::create_dir_all(dir.join("logs"))?;
    if let Some(w) = &a.wan_hosts {
        // Where the emulation is, for whoever restarts a process of this cluster later.
        std::fs::write(
            dir.join("wan-hosts"),
            w.canonicalize()?.to_string_lossy().as_bytes(),
        )?;
    }
    let mut pids: Vec<(String, u32)> = Vec::new();
    let threads = a
        .threads
        .unwrap_or_else(|| {
            super::runtime::share(super::runtime::cores(), cfg.sites.len() + cfg.proxies.len())
        })
        .to_string();
    let wan = a.wan_hosts.as_deref().map(crate::wan::load).transpose()?;
    let ns = |region: &str| {
        wan.as_ref()
            .and_then(|w| w.host_in(region))
            .map(|h| h.namespace.clone())
    };
    for s in &cfg.sites {
        let args = ["replica", "--site", &s.name, "--threads", &threads];
        let pid = spawn(&dir, &s.name, &args, a.parent_pid, ns(&s.region).as_deref())?;
        pids.push((s.name.clone(), pid));
    }
    for p in &cfg.proxies {
        let mut args = vec!["proxy", "--name", &p.name, "--threads", &threads];
        if a.proxy_no_batching {
            args.push("--no-batching");
        }
        let pid = spawn(&dir, &p.name, &args, a.parent_pid, ns(&p.region).as_deref())?;
        pids.push((p.name.clone(), pid));
    }
    let pid_text: String = pids.iter().map(|(n, p)| format!("{n} {p}\n")).collect();
    std::fs::write(dir.join("pids"), pid_text)?;
    let endpoints = json!({
        "ca": dir.join("certs/ca.pem"),
        "client_cert": dir.join("certs/meridian-tool.pem"),
        "client_key": dir.join("certs/meridian-tool.key"),
        "sites": cfg.sites.iter().map(|s| (s.name.clone(), json!({"region": s.region, "addr": s.addr.to_string(), "metrics": s.metrics_addr.map(|m| format!("http://{m}/metrics"))}))).collect::<serde_json::Map<_, _>>(),
        "proxies": cfg.proxies.iter().map(|p| (p.region.clone(), json!({"name": p.name, "http": format!("https://{}", p.http_addr), "grpc": p.grpc_addr.map(|g| format!("https://{g}")), "etcd": p.grpc_addr.map(|g| format!("https://{g}")), "metrics": p.metrics_addr.map(|m| format!("http://{m}/metrics"))}))).collect::<serde_json::Map<_, _>>(),
    });
    std::fs::write(
        dir.join("endpoints.json"),
        serde_json::to_string_pretty(&endpoints)?,
    )?;
    let cluster = Cluster { config: cfg };
    let ready = async {
        wait_for_leaders(&cluster.config, Duration::from_secs(60)).await?;
        for p in &cluster.config.proxies {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while tokio::net::TcpStream::connect(p.http_addr).await.is_err() {
                if tokio::time::Instant::now() > deadline {
                    bail!(
                        "proxy {} did not start listening on {}",
                        p.name,
                        p.http_addr
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Let the proxies' first probes learn RTTs and leaders.
        tokio::time::sleep(Duration::from_millis(800)).await;
        Ok(())
    };
    if let Err(e) = ready.await {
        let _ = down(&dir);
        bail!("{e}; replica logs are in {}", dir.join("logs").display());
    }
    Ok(cluster)
}

/// Starts `meridian <args> --config DIR/cluster.toml` in its own process group, logging to
/// DIR/logs/<name>.log.
/// Starts `meridian ARGS` (inside network namespace `netns` when given: `ip netns exec` execs
/// in place, so the pid is the process's own).
fn spawn(
    dir: &Path,
    name: &str,
    args: &[&str],
    parent: Option<i32>,
    netns: Option<&str>,
) -> Result<u32> {
    let log = std::fs::File::create(dir.join("logs").join(format!("{name}.log")))?;
    let exe = std::env::current_exe()?;
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    };
    cmd.args(args).arg("--config").arg(dir.join("cluster.toml"));
    if let Some(p) = parent {
        cmd.arg("--parent-pid").arg(p.to_string());
    }
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    );
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning {name}"))?;
    Ok(child.id())
}

/// Polls every site until each shard has a leader that every site agrees on.
pub async fn wait_for_leaders(cfg: &ClusterConfig, limit: Duration) -> Result<Vec<usize>> {
    let tls = tool_tls(cfg);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(leaders) = leaders(cfg, &tls).await {
            return Ok(leaders);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no stable leader for every shard within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (up to 15 s) for the planner's preferred leader to lead every shard (it campaigns
/// first, so this is quick unless another site won the first election); returns the leaders,
/// preferred or not.
pub async fn wait_for_preferred_leaders(cfg: &ClusterConfig) -> Result<Vec<usize>> {
    let preferred = cfg
        .cluster
        .preferred_leader
        .as_ref()
        .and_then(|p| cfg.site_index(p));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut leaders = wait_for_leaders(cfg, Duration::from_secs(30)).await?;
    while Some(leaders.iter().all(|l| Some(*l) == preferred)) != Some(true)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        leaders = wait_for_leaders(cfg, Duration::from_secs(10)).await?;
    }
    Ok(leaders)
}

/// The leader of every shard (as the leader itself reports), if every shard has one and it
/// holds its lease (when leases are on).
pub async fn leaders(cfg: &ClusterConfig, tls: &TlsFiles) -> Result<Vec<usize>> {
    let mut found = vec![None; cfg.cluster.shards as usize];
    // Every site at once, each within its timeout: a paused site costs one timeout, not a hang.
    let reports = futures::future::join_all(
        cfg.sites
            .iter()
            .map(|s| super::status::site_status(&s.addr, tls)),
    )
    .await;
    for st in reports.into_iter().flatten() {
        for sh in st.shards {
            if sh.is_leader && (sh.holds_lease || cfg.cluster.lease_ms == 0) {
                found[sh.shard as usize] = Some(st.site_index as usize);
            }
        }
    }
    found
        .into_iter()
        .map(|l| l.context("a shard has no leader"))
        .collect()
}

/// The quorum-lease holders of every shard, as each shard's leader's log says.
pub async fn lease_holders(cfg: &ClusterConfig, tls: &TlsFiles) -> Result<Vec<Vec<usize>>> {
    let mut found = vec![None; cfg.cluster.shards as usize];
    let reports = futures::future::join_all(
        cfg.sites
            .iter()
            .map(|s| super::status::site_status(&s.addr, tls)),
    )
    .await;
    for st in reports.into_iter().flatten() {
        for sh in st.shards {
            if sh.is_leader {
                found[sh.shard as usize] =
                    Some(sh.lease_holders.iter().map(|&h| h as usize).collect());
            }
        }
    }
    found
        .into_iter()
        .map(|l| l.context("a shard has no leader"))
        .collect()
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Stops the processes listed in DIR/pids (SIGTERM, then SIGKILL after 10 s).
pub fn down(dir: &Path) -> Result<usize> {
    use nix::sys::signal::{kill, Signal};
    let path = dir.join("pids");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: no cluster started here", path.display()))?;
    let pids: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    for &p in &pids {
        let _ = kill(nix::unistd::Pid::from_raw(p as i32), Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) && std::time::Instant::now() < deadline {
        reap();
        std::thread::sleep(Duration::from_millis(50));
    }
    for &p in pids.iter().filter(|&&p| alive(p)) {
        tracing::warn!(pid = p, "did not stop after SIGTERM; killing");
        let _ = kill(nix::unistd::Pid::from_raw(p as i32), Signal::SIGKILL);
    }
    reap();
    std::fs::remove_file(&path)?;
    Ok(pids.len())
}

/// Collects exited children (when they are ours) so they do not linger as zombies.
fn reap() {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if matches!(s, nix::sys::wait::WaitStatus::StillAlive) {
            break;
        }
    }
}
