//! `meridian proxy --config cluster.toml --region NAME`
use anyhow::{Context, Result};
use meridian_replica::config::ClusterConfig;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ProxyArgs {
    #[arg(long)]
    config: std::path::PathBuf,
    /// The region this proxy serves (its [[proxy]] entry); or give --name.
    #[arg(long, required_unless_present = "name")]
    region: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// Send every write in its own RPC (for measuring what batching gains).
    #[arg(long)]
    no_batching: bool,
    #[arg(long, hide = true)]
    parent_pid: Option<i32>,
    /// Async worker threads (0: one per core). `cluster up` gives each of its processes an
    /// equal share of the machine's cores.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: ProxyArgs) -> Result<ExitCode> {
    let cfg = ClusterConfig::load(&a.config)?;
    let name = match (&a.name, &a.region) {
        (Some(n), _) => n.clone(),
        (None, Some(r)) => cfg
            .proxies
            .iter()
            .find(|p| &p.region == r)
            .map(|p| p.name.clone())
            .with_context(|| format!("no [[proxy]] for region '{r}' in {}", a.config.display()))?,
        (None, None) => unreachable!("clap requires one"),
    };
    raise_fd_limit();
    let rt = super::runtime::server(a.threads)?;
    let opts = meridian_proxy::server::Options {
        batching: !a.no_batching,
        ..Default::default()
    };
    rt.block_on(meridian_proxy::server::run(
        cfg,
        &name,
        opts,
        super::signals::until_shutdown(a.parent_pid),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// A proxy holds one socket per client connection: lift the soft descriptor limit to the hard.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
