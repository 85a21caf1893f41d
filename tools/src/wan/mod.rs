//! `meridian wan`: host-level WAN emulation (DESIGN.md §5). `up` makes one network namespace
//! per emulated host, each reaching the others only through a TUN device whose far end a
//! userspace router holds (`router.rs`); every packet waits for its pair's one-way delay from
//! the RTT matrix. Any process — a Meridian replica, an etcd member, ping — run in a host with
//! `exec` sees the WAN through its real kernel TCP stack. Needs root.
pub mod netns;
pub mod probe;
pub mod router;

use anyhow::{bail, Context, Result};
use meridian_topology::RttMatrix;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Host {
    pub name: String,
    pub namespace: String,
    /// The TUN device (inside the namespace).
    pub device: String,
    pub address: Ipv4Addr,
    pub region: String,
}

/// `DIR/wan.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WanFile {
    pub hosts: Vec<Host>,
    pub subnet: String,
    pub rtt_source: String,
    /// Round trips between the hosts, ms (the router delays each direction by half).
    pub rtt_ms: Vec<Vec<f64>>,
    /// This (the root) namespace's own address on the emulated network: no delay to any host.
    pub gateway: Ipv4Addr,
    pub gateway_device: String,
    pub router_pid: u32,
    pub control: PathBuf,
}

impl WanFile {
    /// The host of `region` (the first, when several are in it).
    pub fn host_in(&self, region: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.region == region)
    }
}

#[derive(clap::Subcommand)]
pub enum WanCmd {
    /// Create the hosts and start the router (root).
    Up(UpArgs),
    /// Run a command inside one host's network namespace.
    Exec(ExecArgs),
    /// Stop the router and remove the hosts.
    Down(DirArg),
    /// Round trips between two hosts (UDP echo through both kernels) next to the matrix.
    Ping(PingArgs),
    /// Send the router a command: stats | heal | loss A B PERCENT | partition A,B|C,D |
    /// block FROM,.. TO,.. (one direction).
    Ctl(CtlArgs),
    #[command(hide = true)]
    Router(RouterArgs),
    #[command(hide = true)]
    Echo(EchoArgs),
    #[command(hide = true)]
    Probe(ProbeArgs),
}

#[derive(clap::Args)]
pub struct DirArg {
    #[arg(long)]
    dir: PathBuf,
}

#[derive(clap::Args, Clone)]
pub struct UpArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub hosts: usize,
    /// RTT matrix CSV (format of shared/data/aws-rtt-p50.csv; default: the embedded one).
    #[arg(long)]
    pub rtt: Option<PathBuf>,
    /// The hosts' regions in order (default: the five or nine shipped regions, repeated).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
}

#[derive(clap::Args)]
pub struct ExecArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Host name (h0, h1, ..), index, or region (when one host is in it).
    host: String,
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

#[derive(clap::Args)]
pub struct PingArgs {
    #[arg(long)]
    dir: PathBuf,
    from: String,
    to: String,
    #[arg(long, default_value_t = 20)]
    count: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct CtlArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(required = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct RouterArgs {
    #[arg(long)]
    dir: PathBuf,
}

#[derive(clap::Args)]
pub struct EchoArgs {
    #[arg(long)]
    bind: std::net::SocketAddr,
}

#[derive(clap::Args)]
pub struct ProbeArgs {
    #[arg(long)]
    to: std::net::SocketAddr,
    #[arg(long)]
    count: usize,
}

pub fn find_host(hosts: &[Host], s: &str) -> Result<usize> {
    if let Some(i) = hosts.iter().position(|h| h.name == s) {
        return Ok(i);
    }
    if let Ok(i) = s.parse::<usize>() {
        if i < hosts.len() {
            return Ok(i);
        }
    }
    let in_region: Vec<usize> = (0..hosts.len()).filter(|&i| hosts[i].region == s).collect();
    match in_region.as_slice() {
        [i] => Ok(*i),
        [] => bail!(
            "no host {s:?} (hosts: {})",
            hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => bail!("{s:?} names {} hosts; use a host name", in_region.len()),
    }
}

pub fn load(dir: &Path) -> Result<WanFile> {
    let p = dir.join("wan.json");
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "reading {} (is `meridian wan up --dir {}` running?)",
            p.display(),
            dir.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// Namespace and device names unique to `dir`, so two emulations can coexist.
fn tag(dir: &Path) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in dir.to_string_lossy().bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    format!("{:04x}", h & 0xffff)
}

/// The hosts of an emulation under `dir` (names, namespaces, addresses, regions).
pub fn plan(dir: &Path, a: &UpArgs, m: &RttMatrix) -> Result<WanFile> {
    if a.hosts == 0 || a.hosts > 200 {
        bail!("--hosts must lie in 1..=200");
    }
    let regions: Vec<String> = if a.regions.is_empty() {
        let base: &[&str] = if a.hosts > 5 {
            &meridian_testkit::sim::config::NINE_REGIONS
        } else {
            &meridian_testkit::sim::config::FIVE_REGIONS
        };
        (0..a.hosts)
            .map(|i| base[i % base.len()].to_string())
            .collect()
    } else if a.regions.len() == a.hosts {
        a.regions.clone()
    } else {
        bail!(
            "--regions names {} regions for {} hosts",
            a.regions.len(),
            a.hosts
        );
    };
    let idx: Vec<usize> = regions
        .iter()
        .map(|r| {
            m.index(r)
                .with_context(|| format!("region {r:?} is not in the RTT matrix"))
        })
        .collect::<Result<_>>()?;
    let t = tag(dir);
    let octet = 100 + (u32::from_str_radix(&t, 16).unwrap_or(0) % 100) as u8;
    let hosts = regions
        .iter()
        .enumerate()
        .map(|(i, r)| Host {
            name: format!("h{i}"),
            namespace: format!("mwan-{t}-{i}"),
            device: format!("mwt{t}{i}"),
            address: Ipv4Addr::new(10, octet, 0, i as u8 + 1),
            region: r.clone(),
        })
        .collect();
    Ok(WanFile {
        hosts,
        subnet: format!("10.{octet}.0.0/16"),
        rtt_source: a
            .rtt
            .as_ref()
            .map_or("embedded shared/data/aws-rtt-p50.csv".into(), |p| {
                p.display().to_string()
            }),
        rtt_ms: idx
            .iter()
            .map(|&x| idx.iter().map(|&y| m.rtt(x, y)).collect())
            .collect(),
        gateway: Ipv4Addr::new(10, octet, 0, 254),
        gateway_device: format!("mwg{t}"),
        router_pid: 0,
        control: PathBuf::new(),
    })
}

fn matrix(rtt: &Option<PathBuf>) -> Result<RttMatrix> {
    match rtt {
        None => Ok(RttMatrix::embedded()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            RttMatrix::from_csv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        }
    }
}

pub fn run(c: WanCmd) -> Result<ExitCode> {
    match c {
        WanCmd::Up(a) => up(&a).map(|_| ExitCode::SUCCESS),
        WanCmd::Down(a) => down(&a.dir).map(|_| ExitCode::SUCCESS),
        WanCmd::Exec(a) => exec(&a),
        WanCmd::Ping(a) => ping_cmd(&a),
        WanCmd::Ctl(a) => {
            let reply = ctl(&a.dir, &a.command.join(" "))?;
            println!("{reply}");
            Ok(if reply["ok"] == true {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        WanCmd::Router(a) => {
            let spec: UpArgs =
                serde_json::from_str(&std::fs::read_to_string(a.dir.join("wan-spec.json"))?)
                    .map(|s: SpecFile| s.into())?;
            let m = matrix(&spec.rtt)?;
            let wan = plan(&a.dir, &spec, &m)?;
            let oneway = wan
                .rtt_ms
                .iter()
                .map(|r| r.iter().map(|x| x / 2.0).collect())
                .collect();
            router::run(&a.dir, wan, oneway)?;
            Ok(ExitCode::SUCCESS)
        }
        WanCmd::Echo(a) => {
            probe::echo(a.bind, Duration::from_secs(10))?;
            Ok(ExitCode::SUCCESS)
        }
        WanCmd::Probe(a) => {
            let r = probe::probe(a.to, a.count, Duration::from_millis(20))?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `up` hands the router (the arguments, serialized).
#[derive(Serialize, Deserialize)]
struct SpecFile {
    hosts: usize,
    rtt: Option<PathBuf>,
    regions: Vec<String>,
}

impl From<SpecFile> for UpArgs {
    fn from(s: SpecFile) -> UpArgs {
        UpArgs {
            dir: PathBuf::new(),
            hosts: s.hosts,
            rtt: s.rtt,
            regions: s.regions,
        }
    }
}

/// Starts the router (detached, in its own process group) and waits for `wan.json`.
pub fn up(a: &UpArgs) -> Result<WanFile> {
    if let Some(why) = netns::unavailable() {
        bail!("{why}");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let dir = a.dir.canonicalize()?;
    if let Ok(w) = load(&dir) {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(w.router_pid as i32), None).is_ok() {
            bail!(
                "{} already holds a running emulation (meridian wan down --dir {})",
                dir.display(),
                dir.display()
            );
        }
        let _ = down(&dir);
    }
    // Check the plan (regions, matrix) before starting anything.
    let m = matrix(&a.rtt)?;
    plan(&dir, a, &m)?;
    let rtt = a.rtt.as_ref().map(|p| p.canonicalize()).transpose()?;
    std::fs::write(
        dir.join("wan-spec.json"),
        serde_json::to_string(&SpecFile {
            hosts: a.hosts,
            rtt,
            regions: a.regions.clone(),
        })?,
    )?;
    let log = std::fs::File::create(dir.join("router.log"))?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(std::env::current_exe()?)
            .args(["wan", "router", "--dir"])
            .arg(&dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(w) = load(&dir) {
            if w.router_pid == child.id() {
                return Ok(w);
            }
        }
        if let Some(st) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("router.log")).unwrap_or_default();
            bail!("the WAN router exited ({st}):\n{}", log.trim());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the WAN router did not come up within 30 s (see {})",
                dir.join("router.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the router (it removes the namespaces) and removes any it left.
pub fn down(dir: &Path) -> Result<()> {
    let w = load(dir)?;
    let pid = nix::unistd::Pid::from_raw(w.router_pid as i32);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    for h in &w.hosts {
        netns::del(&h.namespace);
    }
    let _ = std::fs::remove_file(dir.join("wan.json"));
    let _ = std::fs::remove_file(dir.join("control.sock"));
    Ok(())
}

/// The command line that runs `cmd` inside `host`.
pub fn in_host(w: &WanFile, host: &str, cmd: &[String]) -> Result<Command> {
    let h = &w.hosts[find_host(&w.hosts, host)?];
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &h.namespace]).args(cmd);
    Ok(c)
}

fn exec(a: &ExecArgs) -> Result<ExitCode> {
    let w = load(&a.dir)?;
    let st = in_host(&w, &a.host, &a.cmd)?.status()?;
    Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8))
}

pub fn ctl(dir: &Path, command: &str) -> Result<serde_json::Value> {
    use std::io::{BufRead, Write};
    let w = load(dir)?;
    let mut s = std::os::unix::net::UnixStream::connect(&w.control)
        .with_context(|| format!("connecting to {}", w.control.display()))?;
    writeln!(s, "{command}")?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}

/// Round trips from `from` to `to`, ms, each through both hosts' kernels and the router.
pub fn ping(dir: &Path, from: &str, to: &str, count: usize) -> Result<(Vec<f64>, f64)> {
    let w = load(dir)?;
    let (f, t) = (find_host(&w.hosts, from)?, find_host(&w.hosts, to)?);
    let me = std::env::current_exe()?.to_string_lossy().to_string();
    let port = 17_000 + (std::process::id() % 20_000) as u16;
    let bind = format!("{}:{port}", w.hosts[t].address);
    let mut echo = in_host(
        &w,
        &w.hosts[t].name,
        &[
            me.clone(),
            "wan".into(),
            "echo".into(),
            "--bind".into(),
            bind.clone(),
        ],
    )?
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()?;
    // Wait for the server's "listening" line.
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(echo.stdout.as_mut().context("echo stdout")?)
            .read_line(&mut line)?;
        if !line.starts_with("listening") {
            let _ = echo.kill();
            bail!("the echo server in {} did not start", w.hosts[t].name);
        }
    }
    let out = in_host(
        &w,
        &w.hosts[f].name,
        &[
            me,
            "wan".into(),
            "probe".into(),
            "--to".into(),
            bind,
            "--count".into(),
            count.to_string(),
        ],
    )?
    .output()?;
    let _ = echo.kill();
    let _ = echo.wait();
    if !out.status.success() {
        bail!(
            "probe from {}: {}",
            w.hosts[f].name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let rtts: Vec<Option<f64>> = serde_json::from_slice(&out.stdout)?;
    Ok((rtts.into_iter().flatten().collect(), w.rtt_ms[f][t]))
}

fn ping_cmd(a: &PingArgs) -> Result<ExitCode> {
    let (mut rtts, want) = ping(&a.dir, &a.from, &a.to, a.count)?;
    rtts.sort_by(|x, y| x.total_cmp(y));
    let q = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize];
    let v = serde_json::json!({
        "from": a.from, "to": a.to, "received": rtts.len(), "sent": a.count,
        "matrix_rtt_ms": want, "min_ms": q(0.0), "median_ms": q(0.5), "p90_ms": q(0.9), "max_ms": q(1.0),
    });
    if a.json {
        println!("{v}");
    } else {
        println!(
            "{} -> {}: {}/{} back, rtt min/median/p90/max {:.2}/{:.2}/{:.2}/{:.2} ms, matrix {:.2} ms",
            a.from, a.to, rtts.len(), a.count, q(0.0), q(0.5), q(0.9), q(1.0), want
        );
    }
    Ok(ExitCode::SUCCESS)
}
