//! `cluster.toml`: every site, the shard count, quorum system, leader preference, lease policy,
//! TLS files and optional WAN emulation. Relative paths are relative to the file's directory.
use crate::driver::demand::AutoLeases;
use meridian_core::{CoreConfig, Quorum, SiteId};
use meridian_topology::model::QuorumShape;
use meridian_topology::RttMatrix;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod auth;
mod host_port;
mod limits;
pub use auth::{AuthSection, CertConfig, RoleConfig, TokenConfig};
pub use host_port::HostPort;
pub use limits::LimitsSection;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub cluster: ClusterSection,
    pub tls: TlsSection,
    #[serde(default)]
    pub wan: WanSection,
    #[serde(rename = "site")]
    pub sites: Vec<SiteConfig>,
    #[serde(default, rename = "proxy", skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<ProxyConfig>,
    /// Quorum leases (DESIGN.md §2): which sites hold read leases on which shards.
    #[serde(default)]
    pub leases: LeasesSection,
    /// Client authentication and authorization at the proxies (off unless `enabled`).
    #[serde(default)]
    pub auth: AuthSection,
    /// Client connection limits at every proxy.
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn d_shards() -> u32 {
    4
}
fn d_quorum() -> String {
    "majority".into()
}
fn d_lease() -> u64 {
    1000
}
fn d_drift() -> f64 {
    0.01
}
fn d_heartbeat() -> u64 {
    100
}
fn d_election() -> u64 {
    1500
}
fn d_jitter() -> u64 {
    1000
}
fn d_snapshot() -> u64 {
    10_000
}
fn d_compact() -> u64 {
    64 << 20
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub name: String,
    /// Shard groups; every site hosts one replica of each.
    #[serde(default = "d_shards")]
    pub shards: u32,
    /// "majority" or "hierarchical" (9 sites as 3 groups of 3, in site order).
    #[serde(default = "d_quorum")]
    pub quorum: String,
    /// Site that campaigns first and takes leadership back (e.g. the planner's choice).
    #[serde(default)]
    pub preferred_leader: Option<String>,
    /// Per-shard preferred leaders (index = shard), overriding `preferred_leader` where given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shard_leaders: Vec<String>,
    /// Key prefixes whose keys all live on one shard, placed by the prefix (DESIGN.md §4): what
    /// a transaction or a sorted range over a prefix needs, e.g. etcd's lock and election
    /// recipes (`etcdctl lock NAME` keeps its keys under `NAME/`). Prefixes may not nest.
    /// Changing this (like `shards`) moves keys: set it before the cluster holds data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub colocate: Vec<String>,
    /// Leader lease length; 0 disables lease reads.
    #[serde(default = "d_lease")]
    pub lease_ms: u64,
    /// Clock drift rate bound ε.
    #[serde(default = "d_drift")]
    pub drift_bound: f64,
    #[serde(default = "d_heartbeat")]
    pub heartbeat_ms: u64,
    #[serde(default = "d_election")]
    pub election_timeout_ms: u64,
    #[serde(default = "d_jitter")]
    pub election_jitter_ms: u64,
    /// Snapshot the state machine every this many applied slots.
    #[serde(default = "d_snapshot")]
    pub snapshot_every: u64,
    /// Compact the WAL when it grows beyond this many bytes.
    #[serde(default = "d_compact")]
    pub compact_bytes: u64,
}

fn d_qlease() -> u64 {
    2000
}
fn d_mode() -> String {
    "off".into()
}

/// `[leases]`: `mode = "off"` (default), `"pinned"` with `holders` (every shard) and/or
/// `shard_holders` (index = shard, overriding `holders`), or `"auto"`: each shard's leader
/// chooses the holders from where its reads and writes come, by the planner's rule, every
/// `auto_interval_ms`. The configuration enters each shard's log as a command, so every
/// replica agrees on it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasesSection {
    #[serde(default = "d_mode")]
    pub mode: String,
    /// Quorum-lease promise length; holders renew every quarter of it.
    #[serde(default = "d_qlease")]
    pub lease_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shard_holders: Vec<Vec<String>>,
    /// `auto`: how often a shard's leader re-evaluates its holders. In every mode, the
    /// interval at which leaders decay their per-origin demand (`meridian status` compares the
    /// leader placement with it).
    #[serde(default = "d_auto_interval")]
    pub auto_interval_ms: u64,
    /// `auto`: below this much demand per shard (operations, decayed: the steady state is
    /// twice the operations of one interval) the holders stay as they are.
    #[serde(default = "d_auto_min_ops")]
    pub auto_min_ops: u64,
    /// `auto`: hysteresis, the share of the mean operation latency a new set must save.
    #[serde(default = "d_auto_min_saving")]
    pub auto_min_saving: f64,
}

fn d_auto_interval() -> u64 {
    5000
}
fn d_auto_min_ops() -> u64 {
    20
}
fn d_auto_min_saving() -> f64 {
    0.05
}

impl Default for LeasesSection {
    fn default() -> LeasesSection {
        LeasesSection {
            mode: d_mode(),
            lease_ms: d_qlease(),
            holders: Vec::new(),
            shard_holders: Vec::new(),
            auto_interval_ms: d_auto_interval(),
            auto_min_ops: d_auto_min_ops(),
            auto_min_saving: d_auto_min_saving(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// Directory holding `<name>.pem` and `<name>.key` for every site and proxy.
    pub cert_dir: PathBuf,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanSection {
    /// RTT matrix CSV for emulated delays: "embedded" (the shipped AWS matrix) or a path.
    /// Without it there is no emulated delay.
    #[serde(default)]
    pub rtt_matrix: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub name: String,
    /// Region name (in the RTT matrix when WAN emulation is on).
    pub region: String,
    /// The address peers, proxies and tools dial for both the peer and the client gRPC
    /// services: `ip:port` or `dns-name:port` (resolved at every connection attempt, so a
    /// Kubernetes pod that comes back with another IP is found again).
    pub addr: HostPort,
    /// The socket to bind (default: `addr` when it is an IP address, else `0.0.0.0:<port>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub continent: Option<String>,
    /// Prometheus `/metrics` over plain HTTP, if served (bind it to a private address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
}

impl SiteConfig {
    /// The socket this site binds.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .or_else(|| self.addr.socket_addr())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], self.addr.port())))
    }
}

/// A regional proxy: apps connect to it; it holds one connection per site.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Certificate name (`<name>.pem` in tls.cert_dir).
    pub name: String,
    /// The region it serves (in the RTT matrix when WAN emulation is on).
    pub region: String,
    /// HTTPS/JSON API.
    pub http_addr: SocketAddr,
    /// Native gRPC API (TLS), if served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<SocketAddr>,
    /// Admission bound: writes outstanding (queued or in flight) per shard, and reads in
    /// flight in all; beyond it requests fail fast with 503 (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_outstanding: Option<usize>,
    /// Prometheus `/metrics` over plain HTTP, if served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
}

impl ClusterConfig {
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut c: ClusterConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        c.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        c.validate().map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })?;
        Ok(c)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn validate(&self) -> Result<(), String> {
        let n = self.sites.len();
        if n == 0 || n > 16 {
            return Err(format!("[[site]]: need 1 to 16 sites, found {n}"));
        }
        for (i, s) in self.sites.iter().enumerate() {
            if self.sites[..i].iter().any(|o| o.name == s.name) {
                return Err(format!("[[site]] name '{}' appears twice", s.name));
            }
            if self.sites[..i].iter().any(|o| o.addr == s.addr) {
                return Err(format!(
                    "[[site]] '{}': addr {} is used by another site",
                    s.name, s.addr
                ));
            }
        }
        self.auth.validate()?;
        self.limits.validate()?;
        match self.cluster.quorum.as_str() {
            "majority" => {}
            "hierarchical" if n == 9 => {}
            "hierarchical" => {
                return Err(format!(
                    "cluster.quorum = \"hierarchical\" needs 9 sites, found {n}"
                ))
            }
            o => {
                return Err(format!(
                    "cluster.quorum must be \"majority\" or \"hierarchical\", not \"{o}\""
                ))
            }
        }
        if self.cluster.shards == 0 || self.cluster.shards > 1024 {
            return Err(format!(
                "cluster.shards must be 1..=1024, not {}",
                self.cluster.shards
            ));
        }
        if let Some(p) = &self.cluster.preferred_leader {
            if self.site_index(p).is_none() {
                return Err(format!(
                    "cluster.preferred_leader '{p}' is not a [[site]] name"
                ));
            }
        }
        if self.cluster.shard_leaders.len() > self.cluster.shards as usize {
            return Err(format!(
                "cluster.shard_leaders names {} shards but cluster.shards is {}",
                self.cluster.shard_leaders.len(),
                self.cluster.shards
            ));
        }
        if let Some(p) = self
            .cluster
            .shard_leaders
            .iter()
            .find(|p| self.site_index(p).is_none())
        {
            return Err(format!(
                "cluster.shard_leaders: '{p}' is not a [[site]] name"
            ));
        }
        check_colocate(&self.cluster.colocate)?;
        self.validate_leases()?;
        if !(0.0..0.5).contains(&self.cluster.drift_bound) {
            return Err("cluster.drift_bound must be within [0, 0.5)".into());
        }
        if self.cluster.lease_ms >= self.cluster.election_timeout_ms {
            return Err("cluster.lease_ms must be below cluster.election_timeout_ms".into());
        }
        if let Some(m) = self
            .rtt_matrix()
            .map_err(|e| format!("wan.rtt_matrix: {e}"))?
        {
            for s in &self.sites {
                m.index(&s.region).map_err(|_| {
                    format!(
                        "[[site]] '{}': region '{}' is not in wan.rtt_matrix",
                        s.name, s.region
                    )
                })?;
            }
        }
        Ok(())
    }

    fn validate_leases(&self) -> Result<(), String> {
        let l = &self.leases;
        if l.auto_interval_ms < 100 {
            return Err("leases.auto_interval_ms must be at least 100".into());
        }
        match l.mode.as_str() {
            "off" => return Ok(()),
            "pinned" => {}
            "auto" => {
                if l.lease_ms < 200 {
                    return Err("leases.lease_ms must be at least 200".into());
                }
                if !(0.0..1.0).contains(&l.auto_min_saving) {
                    return Err("leases.auto_min_saving must be within [0, 1)".into());
                }
                if !l.holders.is_empty() || !l.shard_holders.is_empty() {
                    return Err("leases.mode = \"auto\" chooses the holders itself: remove leases.holders and leases.shard_holders (or use \"pinned\")".into());
                }
                return self.auto_leases().map(|_| ());
            }
            m => {
                return Err(format!(
                    "leases.mode '{m}': use \"off\", \"pinned\" or \"auto\""
                ))
            }
        }
        if l.lease_ms < 200 {
            return Err("leases.lease_ms must be at least 200".into());
        }
        if l.holders.is_empty() && l.shard_holders.is_empty() {
            return Err(
                "leases.mode = \"pinned\" needs leases.holders or leases.shard_holders".into(),
            );
        }
        if l.shard_holders.len() > self.cluster.shards as usize {
            return Err(format!(
                "leases.shard_holders names {} shards but cluster.shards is {}",
                l.shard_holders.len(),
                self.cluster.shards
            ));
        }
        for name in l.holders.iter().chain(l.shard_holders.iter().flatten()) {
            if self.site_index(name).is_none() {
                return Err(format!("leases: holder '{name}' is not a [[site]] name"));
            }
        }
        Ok(())
    }

    /// `[leases] mode = "auto"`: the driver's rule inputs (the sites' regions in
    /// `wan.rtt_matrix`, or in the embedded AWS matrix when none is configured). `None` in
    /// other modes.
    pub fn auto_leases(&self) -> Result<Option<AutoLeases>, String> {
        let l = &self.leases;
        if l.mode != "auto" {
            return Ok(None);
        }
        let matrix = self
            .rtt_matrix()
            .map_err(|e| format!("wan.rtt_matrix: {e}"))?
            .unwrap_or_else(RttMatrix::embedded);
        let site_regions = self
            .sites
            .iter()
            .map(|s| {
                matrix.index(&s.region).map_err(|_| {
                    format!(
                        "leases.mode = \"auto\" needs every site's round trips: [[site]] '{}' has region '{}', which is not in {} (set wan.rtt_matrix to a matrix that has it)",
                        s.name,
                        s.region,
                        self.wan.rtt_matrix.as_deref().unwrap_or("the embedded AWS matrix")
                    )
                })
            })
            .collect::<Result<Vec<usize>, String>>()?;
        let shape = match self.quorum() {
            Quorum::Majority(_) => QuorumShape::Majority,
            Quorum::Hierarchical(g) => QuorumShape::Hierarchical(
                g.iter()
                    .map(|g| g.iter().map(|s| s.0 as usize).collect())
                    .collect(),
            ),
        };
        Ok(Some(AutoLeases {
            matrix: std::sync::Arc::new(matrix),
            site_regions,
            shape,
            every: Duration::from_millis(l.auto_interval_ms),
            min_ops: l.auto_min_ops as f64,
            min_saving: l.auto_min_saving,
            min_saving_ms: 1.0,
            // As long as the leader waits before revoking a silent holder's renewals.
            silent_after: Duration::from_millis(l.lease_ms) * 5,
        }))
    }

    /// The pinned quorum-lease holders of `shard` (site indices), or None when leases are off.
    pub fn lease_holders(&self, shard: u32) -> Option<Vec<u8>> {
        if self.leases.mode != "pinned" {
            return None;
        }
        let names = self
            .leases
            .shard_holders
            .get(shard as usize)
            .unwrap_or(&self.leases.holders);
        Some(
            names
                .iter()
                .filter_map(|n| self.site_index(n))
                .map(|i| i as u8)
                .collect(),
        )
    }

    /// The first site in `region`, if any.
    pub fn site_index_in_region(&self, region: &str) -> Option<usize> {
        self.sites.iter().position(|s| s.region == region)
    }

    pub fn site_index(&self, name: &str) -> Option<usize> {
        self.sites.iter().position(|s| s.name == name)
    }

    pub fn quorum(&self) -> Quorum {
        match self.cluster.quorum.as_str() {
            "hierarchical" => Quorum::three_by_three(),
            _ => Quorum::Majority(self.sites.len()),
        }
    }

    /// The emulated WAN's RTT matrix, if configured.
    pub fn rtt_matrix(&self) -> Result<Option<RttMatrix>, String> {
        match self.wan.rtt_matrix.as_deref() {
            None => Ok(None),
            Some("embedded") => Ok(Some(RttMatrix::embedded())),
            Some(p) => {
                let path = self.resolve(Path::new(p));
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                RttMatrix::from_csv(&text)
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The core configuration for one site of one shard.
    pub fn core_config(&self, me: usize, shard: u32, seed: u64) -> CoreConfig {
        let c = &self.cluster;
        let mut cfg = CoreConfig::wan(
            SiteId(me as u8),
            self.quorum(),
            seed ^ ((shard as u64) << 32),
        );
        cfg.preferred_leader = c
            .shard_leaders
            .get(shard as usize)
            .or(c.preferred_leader.as_ref())
            .and_then(|p| self.site_index(p))
            .map(|i| SiteId(i as u8));
        cfg.lease = (c.lease_ms > 0).then(|| Duration::from_millis(c.lease_ms));
        cfg.quorum_lease = matches!(self.leases.mode.as_str(), "pinned" | "auto")
            .then(|| Duration::from_millis(self.leases.lease_ms));
        cfg.drift_bound = c.drift_bound;
        cfg.heartbeat_interval = Duration::from_millis(c.heartbeat_ms);
        cfg.election_timeout = Duration::from_millis(c.election_timeout_ms);
        cfg.election_jitter = Duration::from_millis(c.election_jitter_ms);
        cfg
    }
}

/// `cluster.colocate` as a configuration may hold it: no empty prefix (that would put every key
/// on one shard: set `shards = 1` instead), none twice, none inside another (its keys would be
/// claimed by both).
pub fn check_colocate(colocate: &[String]) -> Result<(), String> {
    for (i, a) in colocate.iter().enumerate() {
        if a.is_empty() {
            return Err(
                "cluster.colocate: an empty prefix would put every key on one shard (use shards = 1)"
                    .into(),
            );
        }
        for b in &colocate[i + 1..] {
            if a.starts_with(b.as_str()) || b.starts_with(a.as_str()) {
                return Err(format!(
                    "cluster.colocate: prefixes '{a}' and '{b}' overlap; a key under both would have two homes"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> String {
        r#"
[cluster]
name = "t"
shards = 3
preferred_leader = "a"
shard_leaders = ["b", "", "c"]

[tls]
ca = "ca.pem"
cert_dir = "certs"

[[site]]
name = "a"
region = "r1"
addr = "127.0.0.1:1"
data_dir = "a"

[[site]]
name = "b"
region = "r2"
addr = "127.0.0.1:2"
data_dir = "b"

[[site]]
name = "c"
region = "r3"
addr = "127.0.0.1:3"
data_dir = "c"
"#
        .to_string()
    }

    fn load(text: &str) -> Result<ClusterConfig, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "meridian-cfg-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cluster.toml");
        std::fs::write(&p, text).unwrap();
        ClusterConfig::load(&p)
    }

    #[test]
    fn per_shard_leaders_override_the_cluster_preference() {
        let c = load(&base().replace(r#"["b", "", "c"]"#, r#"["b", "a", "c"]"#)).unwrap();
        assert_eq!(c.core_config(0, 0, 1).preferred_leader, Some(SiteId(1)));
        assert_eq!(c.core_config(0, 1, 1).preferred_leader, Some(SiteId(0)));
        assert_eq!(c.core_config(0, 2, 1).preferred_leader, Some(SiteId(2)));
        let c = load(&base().replace(r#"shard_leaders = ["b", "", "c"]"#, "")).unwrap();
        assert_eq!(c.core_config(0, 2, 1).preferred_leader, Some(SiteId(0)));
    }

    #[test]
    fn addresses_are_ips_or_dns_names_and_bind_where_they_should() {
        let h: HostPort = "10.0.0.1:7100".parse().unwrap();
        assert_eq!(h.socket_addr(), Some("10.0.0.1:7100".parse().unwrap()));
        let h: HostPort = "[::1]:7100".parse().unwrap();
        assert_eq!(h.to_string(), "[::1]:7100");
        assert_eq!(h.socket_addr(), Some("[::1]:7100".parse().unwrap()));
        let h: HostPort = "Meridian-us-east-1-0.meridian-us-east-1:7100"
            .parse()
            .unwrap();
        assert_eq!(h.host(), "meridian-us-east-1-0.meridian-us-east-1");
        assert_eq!((h.port(), h.socket_addr()), (7100, None));
        for bad in [
            "nope",
            "host:",
            "host:99999",
            ":7100",
            "a..b:1",
            "-a:1",
            "a_b:1",
            "a b:1",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
        let by_name = base()
            .replace(r#"shard_leaders = ["b", "", "c"]"#, "")
            .replace("127.0.0.1:2", "site-b.meridian:7100");
        let c = load(&by_name).unwrap();
        assert_eq!(c.sites[0].listen_addr(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(c.sites[1].listen_addr(), "0.0.0.0:7100".parse().unwrap());
        let with_listen = by_name.replace(
            "addr = \"site-b.meridian:7100\"",
            "addr = \"site-b.meridian:7100\"\nlisten = \"10.1.2.3:7200\"",
        );
        let c = load(&with_listen).unwrap();
        assert_eq!(c.sites[1].listen_addr(), "10.1.2.3:7200".parse().unwrap());
        let e = load(&by_name.replace("site-b.meridian:7100", "site_b:7100"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither an IP address nor a DNS name"), "{e}");
    }

    #[test]
    fn auth_sections_are_checked() {
        let ok = base().replace(r#"shard_leaders = ["b", "", "c"]"#, "");
        let h = "a".repeat(64);
        let section = |token_role: &str, sha: &str| {
            format!(
                "{ok}\n[auth]\nenabled = true\n[[auth.token]]\nname = \"t\"\nsha256 = \"{sha}\"\nrole = \"{token_role}\"\n[[auth.role]]\nname = \"reader\"\nread_prefixes = [\"public/\"]\n"
            )
        };
        let c = load(&section("reader", &h)).unwrap();
        assert!(c.auth.enabled);
        assert_eq!(c.auth.roles[0].read_prefixes, vec!["public/".to_string()]);
        assert!(!load(&ok).unwrap().auth.enabled, "off by default");
        let e = load(&section("writer", &h)).unwrap_err().to_string();
        assert!(e.contains("no role 'writer'"), "{e}");
        let e = load(&section("root", "abc")).unwrap_err().to_string();
        assert!(e.contains("64 lowercase hex"), "{e}");
        let e = load(&format!("{ok}\n[limits]\nheader_timeout_ms = 5\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.header_timeout_ms"), "{e}");
        let c = load(&format!("{ok}\n[limits]\nmax_connections = 7\n")).unwrap();
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(c.limits.header_timeout_ms, 10_000, "the rest default");
        let e = load(&format!("{ok}\n[auth]\nenabled = true\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no client could do anything"), "{e}");
        let e = load(&section("root", &h).replace("name = \"reader\"", "name = \"root\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("built-in root"), "{e}");
    }

    #[test]
    fn colocated_prefixes_are_read_and_checked() {
        let ok = base().replace(r#"shard_leaders = ["b", "", "c"]"#, "");
        let with = |list: &str| ok.replace("shards = 3", &format!("shards = 3\ncolocate = {list}"));
        let c = load(&with(r#"["locks/", "election/"]"#)).unwrap();
        assert_eq!(
            c.cluster.colocate,
            vec!["locks/".to_string(), "election/".into()]
        );
        assert!(
            load(&ok).unwrap().cluster.colocate.is_empty(),
            "none by default"
        );
        let e = load(&with(r#"["locks/", "locks/a/"]"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'locks/' and 'locks/a/' overlap"), "{e}");
        let e = load(&with(r#"[""]"#)).unwrap_err().to_string();
        assert!(e.contains("cluster.colocate"), "{e}");
    }

    #[test]
    fn invalid_configs_name_the_key() {
        let e = load(&base()).unwrap_err().to_string();
        assert!(e.contains("shard_leaders"), "{e}");
        let e = load(&base().replace("shards = 3", "shards = 3\nbogus = 1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = load(&base().replace(r#"preferred_leader = "a""#, r#"preferred_leader = "z""#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("preferred_leader 'z'"), "{e}");
        let e = load(&base().replace("127.0.0.1:2", "127.0.0.1:1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("used by another site"), "{e}");
        let e = load(&base().replace(r#"name = "t""#, "name = \"t\"\nquorum = \"hierarchical\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs 9 sites"), "{e}");
    }

    #[test]
    fn auto_leases_need_known_regions_and_no_pinned_holders() {
        let ok = base()
            .replace(r#"shard_leaders = ["b", "", "c"]"#, "")
            .replace(r#""r1""#, r#""us-east-1""#)
            .replace(r#""r2""#, r#""eu-west-1""#)
            .replace(r#""r3""#, r#""ap-northeast-1""#);
        let auto = format!("{ok}\n[leases]\nmode = \"auto\"\n");
        let c = load(&auto).unwrap();
        let a = c.auto_leases().unwrap().expect("auto");
        assert_eq!(a.site_regions.len(), 3);
        assert_eq!(c.lease_holders(0), None, "auto pins nothing");
        assert!(c.core_config(0, 0, 1).quorum_lease.is_some());
        let e = load(&format!("{auto}holders = [\"a\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("chooses the holders itself"), "{e}");
        let e = load(&auto.replace(r#""ap-northeast-1""#, r#""mars-1""#))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'mars-1'") && e.contains("wan.rtt_matrix"),
            "{e}"
        );
        let e = load(&auto.replace(r#""auto""#, r#""sometimes""#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"off\", \"pinned\" or \"auto\""), "{e}");
    }
}
