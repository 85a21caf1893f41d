//! `meridian certs --out DIR --sites a,b,.. [--proxies x,..] [--clients c,..]`
use anyhow::{bail, Context, Result};
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
    /// Give the directory and every file to this owner (`UID:GID`, e.g. `65532:65532`, the
    /// container image's user), so processes running as it can read their keys (needs root).
    #[arg(long)]
    owner: Option<String>,
}

fn parse_owner(s: &str) -> Result<(u32, u32)> {
    let (u, g) = s
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("--owner '{s}': give UID:GID, e.g. 65532:65532"))?;
    let num = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| anyhow::anyhow!("--owner '{s}': '{x}' is not a number"))
    };
    Ok((num(u)?, num(g)?))
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
    let owner = a.owner.as_deref().map(parse_owner).transpose()?;
    meridian_replica::tls::generate(&a.out, &a.sites, &a.proxies, &a.clients)?;
    if let Some((uid, gid)) = owner {
        let chown = |p: &std::path::Path| {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .with_context(|| format!("chown {uid}:{gid} {}", p.display()))
        };
        chown(&a.out)?;
        for e in std::fs::read_dir(&a.out)? {
            chown(&e?.path())?;
        }
    }
    tracing::info!(dir = %a.out.display(), "certificates written");
    Ok(ExitCode::SUCCESS)
}
