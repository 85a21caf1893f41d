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
            "{:<16} {:>5} {:>7} {:>6} {:>10} {:>10} {:>6} {:>12} {:>9}",
            "site",
            "shard",
            "leader",
            "lease",
            "commit",
            "applied",
            "ballot",
            "wal bytes",
            "fsync us"
        );
        for s in &cfg.sites {
            let st = match ReplicaClient::connect(s.addr, &tls).await {
                Ok(mut c) => c.status().await,
                Err(e) => Err(e),
            };
            match st {
                Ok(st) => {
                    for sh in st.shards {
                        let leader = if sh.leader_hint >= 0 {
                            cfg.sites[sh.leader_hint as usize].name.as_str()
                        } else {
                            "-"
                        };
                        println!(
                            "{:<16} {:>5} {:>7} {:>6} {:>10} {:>10} {:>6} {:>12} {:>9}",
                            s.name,
                            sh.shard,
                            if sh.is_leader { "self" } else { leader },
                            sh.holds_lease,
                            sh.commit_index,
                            sh.applied_index,
                            format!("{}.{}", sh.ballot_round, sh.ballot_site),
                            sh.wal_bytes,
                            sh.fsync_us_last
                        );
                    }
                }
                Err(e) => println!("{:<16} unreachable: {e}", s.name),
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
