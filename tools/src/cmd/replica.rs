//! `meridian replica --config cluster.toml --site NAME`
use anyhow::{Context, Result};
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
}

pub fn run(a: ReplicaArgs) -> Result<ExitCode> {
    let cfg = ClusterConfig::load(&a.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let stop = super::signals::until_shutdown(a.parent_pid);
        meridian_replica::node::run(cfg, &a.site, stop).await
    })?;
    Ok(ExitCode::SUCCESS)
}
