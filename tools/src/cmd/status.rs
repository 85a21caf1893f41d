//! `meridian status --dir DIR` (or `--config cluster.toml`): every site's shards, leaders,
//! progress, lease and WAL state, measured RTTs, and alerts (`alerts.rs`). Every RPC has a
//! timeout: a site that does not answer is a line of the report, never a hang. Exit code 1 when
//! an alert fires.
use super::alerts::{alerts, quorum_margin, Alert, Inputs};
use super::cluster::tool_tls;
use anyhow::{bail, Context, Result};
use meridian_core::{SiteId, SiteSet};
use meridian_replica::client::ReplicaClient;
use meridian_replica::config::ClusterConfig;
use meridian_replica::tls::TlsFiles;
use meridian_replica::wire::pb;
use meridian_topology::RttMatrix;
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

/// How long one site may take to connect and answer.
pub const SITE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(clap::Args)]
pub struct StatusArgs {
    /// A directory made by `meridian cluster up`.
    #[arg(long, conflicts_with = "config")]
    dir: Option<std::path::PathBuf>,
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// The RTT matrix the placement was planned with (`embedded` or a CSV path), for the
    /// RTT-drift alert (default: wan.rtt_matrix when set).
    #[arg(long)]
    planned_rtt: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The lease-churn alert's window in seconds.
    #[arg(long, default_value_t = super::alerts::CHURN_WINDOW.as_secs())]
    churn_window: u64,
    /// The lease-churn alert fires at this many leadership or lease changes of a shard (as one
    /// site saw them) within the window.
    #[arg(long, default_value_t = super::alerts::CHURN_MAX)]
    churn_max: usize,
}

/// One site's status, or why it gave none within `SITE_TIMEOUT`.
pub async fn site_status(
    addr: &meridian_replica::config::HostPort,
    tls: &TlsFiles,
) -> Result<pb::StatusReply, String> {
    let call = async {
        let mut c = ReplicaClient::connect(addr, tls)
            .await
            .map_err(|e| e.to_string())?;
        c.status().await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(SITE_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {SITE_TIMEOUT:?}")),
    }
}

pub fn run(a: StatusArgs) -> Result<ExitCode> {
    let path = match (&a.dir, &a.config) {
        (Some(d), _) => d.join("cluster.toml"),
        (_, Some(c)) => c.clone(),
        _ => bail!("give --dir or --config"),
    };
    let cfg = ClusterConfig::load(&path)?;
    let planned: Option<RttMatrix> = match a.planned_rtt.as_deref() {
        None => cfg.rtt_matrix().map_err(anyhow::Error::msg)?,
        Some("embedded") => Some(RttMatrix::embedded()),
        Some(p) => Some(
            RttMatrix::from_csv(
                &std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?,
            )
            .with_context(|| format!("{p}: not an RTT matrix CSV"))?,
        ),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tls = tool_tls(&cfg);
    let reports: Vec<Result<pb::StatusReply, String>> = rt.block_on(futures::future::join_all(
        cfg.sites.iter().map(|s| site_status(&s.addr, &tls)),
    ));
    let found = alerts(&Inputs {
        cfg: &cfg,
        reports: &reports,
        planned: planned.as_ref(),
        churn_window: std::time::Duration::from_secs(a.churn_window),
        churn_max: a.churn_max,
    });
    let mut up = SiteSet::default();
    for (i, r) in reports.iter().enumerate() {
        if r.is_ok() {
            up.insert(SiteId(i as u8));
        }
    }
    let margin = quorum_margin(&cfg.quorum(), up);
    if a.json {
        print_json(&cfg, &reports, margin, &found)?;
    } else {
        print_text(&cfg, &reports, margin, &found);
    }
    Ok(if found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn name(cfg: &ClusterConfig, i: i64) -> String {
    usize::try_from(i)
        .ok()
        .and_then(|i| cfg.sites.get(i))
        .map_or("-".into(), |s| s.name.clone())
}

fn print_text(
    cfg: &ClusterConfig,
    reports: &[Result<pb::StatusReply, String>],
    margin: i32,
    found: &[Alert],
) {
    println!(
        "{:<16} {:>5} {:>7} {:>6} {:>7} {:>10} {:>10} {:>6} {:>12} {:>9}  lease holders",
        "site",
        "shard",
        "leader",
        "lease",
        "qlease",
        "commit",
        "applied",
        "ballot",
        "wal bytes",
        "fsync us"
    );
    for (s, r) in cfg.sites.iter().zip(reports) {
        match r {
            Ok(st) => {
                for sh in &st.shards {
                    let holders: Vec<String> = sh
                        .lease_holders
                        .iter()
                        .map(|h| name(cfg, *h as i64))
                        .collect();
                    println!(
                        "{:<16} {:>5} {:>7} {:>6} {:>7} {:>10} {:>10} {:>6} {:>12} {:>9}  {}",
                        s.name,
                        sh.shard,
                        if sh.is_leader {
                            "self".to_string()
                        } else {
                            name(cfg, sh.leader_hint as i64)
                        },
                        sh.holds_lease,
                        sh.holds_quorum_lease,
                        sh.commit_index,
                        sh.applied_index,
                        format!("{}.{}", sh.ballot_round, sh.ballot_site),
                        sh.wal_bytes,
                        sh.fsync_us_last,
                        if holders.is_empty() {
                            "-".to_string()
                        } else {
                            holders.join(",")
                        }
                    );
                }
            }
            Err(e) => println!("{:<16} unreachable: {e}", s.name),
        }
    }
    println!();
    println!("measured RTT (ms) between sites, on their peer streams:");
    let short: Vec<String> = cfg
        .sites
        .iter()
        .map(|s| s.name.chars().take(14).collect())
        .collect();
    println!(
        "{:<16} {}",
        "",
        short.iter().map(|n| format!("{n:>15}")).collect::<String>()
    );
    for (s, r) in cfg.sites.iter().zip(reports) {
        let Ok(st) = r else { continue };
        let cells: String = st
            .peer_rtt_ms
            .iter()
            .map(|v| {
                if *v < 0.0 {
                    format!("{:>15}", "-")
                } else {
                    format!("{v:>15.1}")
                }
            })
            .collect();
        println!("{:<16} {cells}", s.name);
    }
    println!();
    println!(
        "quorum margin: {}",
        if margin < 0 {
            "none (no quorum answers)".to_string()
        } else {
            format!("survives {margin} more site loss(es)")
        }
    );
    if found.is_empty() {
        println!("alerts: none");
    } else {
        println!("alerts:");
        for a in found {
            println!("  [{}] {}", a.kind, a.message);
        }
    }
}

fn print_json(
    cfg: &ClusterConfig,
    reports: &[Result<pb::StatusReply, String>],
    margin: i32,
    found: &[Alert],
) -> Result<()> {
    let sites: Vec<serde_json::Value> = cfg
        .sites
        .iter()
        .zip(reports)
        .map(|(s, r)| match r {
            Ok(st) => json!({
                "name": s.name, "reachable": true, "peer_rtt_ms": st.peer_rtt_ms,
                "shards": st.shards.iter().map(|sh| json!({
                    "shard": sh.shard, "is_leader": sh.is_leader, "leader": name(cfg, sh.leader_hint as i64),
                    "holds_lease": sh.holds_lease, "holds_quorum_lease": sh.holds_quorum_lease,
                    "commit_index": sh.commit_index, "applied_index": sh.applied_index,
                    "state_digest": format!("{:016x}", sh.state_digest), "digest_version": sh.digest_version.max(1),
                    "ballot": format!("{}.{}", sh.ballot_round, sh.ballot_site),
                    "wal_bytes": sh.wal_bytes, "wal_grown_bytes": sh.wal_grown_bytes, "compact_threshold_bytes": sh.compact_threshold_bytes, "fsync_us_last": sh.fsync_us_last,
                    "lease_holders": sh.lease_holders.iter().map(|h| name(cfg, *h as i64)).collect::<Vec<_>>(),
                    "demand_reads": sh.demand_reads, "demand_writes": sh.demand_writes,
                    "churn": sh.churn.iter().map(|e| json!({"age_ms": e.age_ms, "kind": e.kind})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }),
            Err(e) => json!({"name": s.name, "reachable": false, "error": e}),
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "sites": sites,
            "quorum_margin": margin,
            "alerts": found,
        }))?
    );
    Ok(())
}
