//! `meridian status --dir DIR` (or `--config cluster.toml`): every site's shards, leaders,
//! progress, lease and WAL state.
use super::cluster::tool_tls;
use anyhow::{bail, Result};
use meridian_replica::client::ReplicaClient;
use meridian_replica::config::ClusterConfig;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// A directory made by `meridian cluster up`.
    #[arg(long, conflicts_with = "config")]
    dir: Option<std::path::PathBuf>,
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

pub fn run(a: StatusArgs) -> Result<ExitCode> {
    let path = match (&a.dir, &a.config) {
        (Some(d), _) => d.join("cluster.toml"),
        (_, Some(c)) => c.clone(),
        _ => bail!("give --dir or --config"),
    };
    let cfg = ClusterConfig::load(&path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tls = tool_tls(&cfg);
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
        let mut rtt_rows: Vec<(String, Vec<f64>)> = Vec::new();
        let mut unreachable = 0;
        for s in &cfg.sites {
            let st = match ReplicaClient::connect(s.addr, &tls).await {
                Ok(mut c) => c.status().await,
                Err(e) => Err(e),
            };
            match st {
                Ok(st) => {
                    rtt_rows.push((s.name.clone(), st.peer_rtt_ms.clone()));
                    for sh in st.shards {
                        let leader = if sh.leader_hint >= 0 {
                            cfg.sites[sh.leader_hint as usize].name.as_str()
                        } else {
                            "-"
                        };
                        let holders: Vec<&str> = sh
                            .lease_holders
                            .iter()
                            .filter_map(|h| cfg.sites.get(*h as usize))
                            .map(|s| s.name.as_str())
                            .collect();
                        println!(
                            "{:<16} {:>5} {:>7} {:>6} {:>7} {:>10} {:>10} {:>6} {:>12} {:>9}  {}",
                            s.name,
                            sh.shard,
                            if sh.is_leader { "self" } else { leader },
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
                Err(e) => {
                    unreachable += 1;
                    println!("{:<16} unreachable: {e}", s.name);
                }
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
        for (name, row) in &rtt_rows {
            let cells: String = row
                .iter()
                .map(|v| {
                    if *v < 0.0 {
                        format!("{:>15}", "-")
                    } else {
                        format!("{v:>15.1}")
                    }
                })
                .collect();
            println!("{name:<16} {cells}");
        }
        Ok(if unreachable == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}
