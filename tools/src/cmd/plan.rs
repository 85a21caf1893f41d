//! `meridian plan`: score 5- or 9-replica placements over an RTT matrix (DESIGN.md §7).
use anyhow::{bail, Context, Result};
use meridian_topology::input::{parse_demand, parse_sites, Demand, PlanInput, QuorumKind, Survive};
use meridian_topology::plan::{evaluate_fixed, plan, PlanReport};
use meridian_topology::regions::Regions;
use meridian_topology::RttMatrix;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PlanArgs {
    /// RTT matrix CSV (default: the shipped 32-region AWS matrix).
    #[arg(long)]
    rtt: Option<std::path::PathBuf>,
    /// RTT matrix as JSON ({"regions": [..], "ms": [[..]]}) from a file or an http(s):// URL,
    /// e.g. a running proxy's https://HOST/v1/cluster/rtt (with --ca).
    #[arg(long, conflicts_with = "rtt")]
    rtt_from: Option<String>,
    /// CA certificate for an https:// --rtt-from (e.g. the cluster's certs/ca.pem).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Regions file with failure domains (region,city,country,continent,lat,lon).
    #[arg(long)]
    regions: Option<std::path::PathBuf>,
    /// Candidate sites, e.g. `us-east-1,us-east-2*2` (default: every region once).
    #[arg(long)]
    candidates: Option<String>,
    /// Client demand: `region=weight[:read_share]`, comma-separated (default: every region, 1:0.5).
    #[arg(long)]
    demand: Option<String>,
    #[arg(long, default_value_t = 5)]
    replicas: usize,
    /// majority, or hierarchical (3 groups of 3, needs --replicas 9).
    #[arg(long, default_value = "majority")]
    quorum: String,
    /// A quorum must survive the loss of any one: site, region or continent.
    #[arg(long, default_value = "site")]
    survive: String,
    /// Consider quorum leases (lease holders chosen by the model).
    #[arg(long)]
    leases: bool,
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Evaluate exactly this placement instead of searching.
    #[arg(long)]
    fixed: Option<String>,
    /// Print the JSON report of DESIGN.md §7.
    #[arg(long)]
    json: bool,
    /// Draw the best placement on a world map.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
}

fn load_matrix(a: &PlanArgs) -> Result<RttMatrix> {
    if let Some(src) = &a.rtt_from {
        let text = if src.starts_with("https://") {
            let ca =
                a.ca.as_ref()
                    .context("an https:// --rtt-from needs --ca (the cluster's CA certificate)")?;
            https_get(src, ca).with_context(|| format!("fetching {src}"))?
        } else if let Some(rest) = src.strip_prefix("http://") {
            http_get(rest).with_context(|| format!("fetching {src}"))?
        } else {
            let path = src.strip_prefix("file://").unwrap_or(src);
            std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
        };
        let m: RttMatrix = serde_json::from_str(&text)
            .with_context(|| format!("{src}: not an RTT matrix JSON"))?;
        m.validate().with_context(|| src.clone())?;
        return Ok(m);
    }
    match &a.rtt {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            RttMatrix::from_csv(&text).with_context(|| p.display().to_string())
        }
        None => Ok(RttMatrix::embedded()),
    }
}

fn https_get(url: &str, ca: &std::path::Path) -> Result<String> {
    let rest = url.trim_start_matches("https://");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c =
            crate::https::Conn::open(&format!("https://{host}"), crate::https::tls_config(ca))
                .await?;
        let r = c.request("GET", &path, vec![]).await?;
        if r.status != 200 {
            bail!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body));
        }
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    })
}

/// A minimal HTTP/1.1 GET (plain http only), enough for a proxy's JSON endpoint.
fn http_get(host_path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let (host, path) = host_path
        .split_once('/')
        .map_or((host_path, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("HTTP error: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

pub fn build_input(a: &PlanArgs) -> Result<(PlanInput, Regions)> {
    let matrix = load_matrix(a)?;
    let regions = match &a.regions {
        Some(p) => Regions::from_csv(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| p.display().to_string())?,
        None => Regions::embedded(),
    };
    let survive = Survive::parse(&a.survive)?;
    let mut continent = Vec::new();
    for r in &matrix.regions {
        match regions.get(r) {
            Some(g) => continent.push(g.continent.clone()),
            None if survive == Survive::Continent => {
                bail!("region '{r}' is not in the regions file (needed for --survive continent)")
            }
            None => continent.push(format!("?{r}")),
        }
    }
    let candidates = match &a.candidates {
        Some(c) => parse_sites(&matrix, c)?,
        None => (0..matrix.regions.len()).map(|r| (r, 1)).collect(),
    };
    let demand = match &a.demand {
        Some(d) => parse_demand(&matrix, d)?,
        None => (0..matrix.regions.len())
            .map(|region| Demand {
                region,
                weight: 1.0,
                read_share: 0.5,
            })
            .collect(),
    };
    let quorum = match a.quorum.as_str() {
        "majority" => QuorumKind::Majority,
        "hierarchical" => QuorumKind::Hierarchical,
        o => bail!("--quorum must be majority or hierarchical, not '{o}'"),
    };
    let input = PlanInput {
        matrix,
        continent,
        candidates,
        demand,
        replicas: a.replicas,
        quorum,
        survive,
        leases: a.leases,
        top: a.top.max(1),
    };
    Ok((input, regions))
}

pub fn run(a: PlanArgs) -> Result<ExitCode> {
    let (input, regions) = build_input(&a)?;
    let (report, best) = match &a.fixed {
        Some(f) => evaluate_fixed(&input, &parse_sites(&input.matrix, f)?)?,
        None => plan(&input)?,
    };
    if let Some(path) = &a.svg {
        let p = &report.placements[0];
        let title = format!(
            "{} - leader {} - objective {:.1} ms",
            p.sites.join(", "),
            p.leader,
            p.objective_ms
        );
        let svg = meridian_topology::svg::render(&input, &regions, &best[0], &title);
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    let text = if a.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        table(&report)
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(ExitCode::SUCCESS)
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1}"))
}

fn table(r: &PlanReport) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "search: {} ({} placements evaluated)",
        r.search.method, r.search.evaluated
    );
    for p in &r.placements {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "#{} objective {:.1} ms  sites [{}]  leader {}",
            p.rank,
            p.objective_ms,
            p.sites.join(", "),
            p.leader
        );
        if !p.lease_holders.is_empty() {
            let _ = writeln!(o, "   lease holders [{}]", p.lease_holders.join(", "));
        }
        if let Some(g) = &p.groups {
            let g: Vec<String> = g.iter().map(|x| format!("[{}]", x.join(", "))).collect();
            let _ = writeln!(o, "   groups {}", g.join(" "));
        }
        let _ = writeln!(
            o,
            "   {:<16} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "region", "weight", "write", "leader", "quorum", "lease", "read"
        );
        for x in &p.per_region {
            let _ = writeln!(
                o,
                "   {:<16} {:>7.1} {:>8.1} {:>8.1} {:>8.1} {:>8} {:>8.1}",
                x.region,
                x.weight,
                x.write_ms,
                x.leader_read_ms,
                x.quorum_read_ms,
                ms(x.lease_read_ms),
                x.read_ms
            );
        }
        let _ = writeln!(
            o,
            "   if one {} is lost:",
            p.failures.first().map_or("site", |f| f.kind)
        );
        for f in &p.failures {
            let mark = if Some(&f.lost) == p.linchpin.as_ref() {
                "  <- linchpin"
            } else {
                ""
            };
            match f.objective_ms {
                Some(obj) => {
                    let _ = writeln!(
                        o,
                        "     {:<20} objective {:>7.1} ms, leader {}{mark}",
                        f.lost,
                        obj,
                        f.leader.as_deref().unwrap_or("-")
                    );
                }
                None => {
                    let _ = writeln!(o, "     {:<20} NO QUORUM{mark}", f.lost);
                }
            }
        }
    }
    o
}
