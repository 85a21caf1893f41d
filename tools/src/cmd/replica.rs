//! `meridian replica --config cluster.toml --site NAME`
use anyhow::Result;
use meridian_replica::config::ClusterConfig;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ReplicaArgs {
    #[arg(long)]
    config: std::path::PathBuf,
    #[arg(long)]
    site: String,
    /// Exit when this process is gone (used by `meridian demo`, so Ctrl-C or a crash of the
    /// demo never leaves replicas behind).
    #[arg(long)]
    parent_pid: Option<i32>,
    /// Async worker threads (0: one per core). `cluster up` gives each of its processes an
    /// equal share of the machine's cores.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: ReplicaArgs) -> Result<ExitCode> {
    let cfg = ClusterConfig::load(&a.config)?;
    let rt = super::runtime::server(a.threads)?;
    rt.block_on(async move {
        let stop = super::signals::until_shutdown(a.parent_pid);
        meridian_replica::node::run(cfg, &a.site, stop).await
    })?;
    Ok(ExitCode::SUCCESS)
}
