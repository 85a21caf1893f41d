//! `meridian certs --out DIR --sites a,b,.. [--proxies x,..] [--clients c,..]`
use anyhow::{bail, Result};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CertsArgs {
    #[arg(long)]
    out: std::path::PathBuf,
    /// Site names (one certificate each).
    #[arg(long, value_delimiter = ',')]
    sites: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    proxies: Vec<String>,
    /// Client identities (tools, tests, benchmark clients).
    #[arg(long, value_delimiter = ',')]
    clients: Vec<String>,
}

pub fn run(a: CertsArgs) -> Result<ExitCode> {
    if a.sites.is_empty() {
        bail!("--sites names at least one site");
    }
    for n in a.sites.iter().chain(&a.proxies).chain(&a.clients) {
        if n.is_empty()
            || n.len() > 60
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("invalid name '{n}': use 1-60 letters, digits, '-', '_' or '.'");
        }
    }
    meridian_replica::tls::generate(&a.out, &a.sites, &a.proxies, &a.clients)?;
    tracing::info!(dir = %a.out.display(), "certificates written");
    Ok(ExitCode::SUCCESS)
}
