//! Network namespaces and links through iproute2's `ip` (Debian's iproute2 is on every machine;
//! `tc netem` is not, DESIGN.md §5).
use anyhow::{bail, Context, Result};
use std::process::Command;

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

pub fn add(ns: &str) -> Result<()> {
    if exists(ns) {
        let _ = ip(&["netns", "del", ns]);
    }
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])
}

pub fn del(ns: &str) {
    if exists(ns) {
        if let Err(e) = ip(&["netns", "del", ns]) {
            tracing::warn!("{e:#}");
        }
    }
}

/// Moves `dev` (in this namespace) into `ns`, gives it `addr/prefix` and brings it up; IPv6
/// stays off in the namespace (the router carries IPv4 only).
pub fn attach(dev: &str, ns: &str, addr: &str, prefix: u8) -> Result<()> {
    ip(&["link", "set", dev, "netns", ns])?;
    let cidr = format!("{addr}/{prefix}");
    ip(&["-n", ns, "addr", "add", &cidr, "dev", dev])?;
    ip(&["-n", ns, "link", "set", dev, "up"])?;
    let _ = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw"])
        .arg("net.ipv6.conf.all.disable_ipv6=1")
        .status();
    Ok(())
}

/// Why host-level emulation cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "host-level WAN emulation needs root (network namespaces and TUN devices); run \
             `meridian wan` as root, or use the in-process delay layer (--wan inproc)"
                .into(),
        );
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some(
            "host-level WAN emulation needs /dev/net/tun, which this machine lacks".into(),
        );
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("host-level WAN emulation needs iproute2's `ip` on PATH".into());
    }
    None
}
