//! Helpers for tests over real `meridian` processes on 127.0.0.1.
#![allow(dead_code)]
use meridian_replica::client::{Outcome, ReplicaClient};
use meridian_replica::config::ClusterConfig;
use meridian_replica::kv::{KvCommand, KvResult, Op, Outcome as KvOutcome};
use meridian_replica::tls::TlsFiles;
use meridian_replica::wire::pb::ReadMode;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_meridian")
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meridian-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A cluster started with `meridian cluster up`; stopped (and its extra processes killed) on drop.
pub struct TestCluster {
    pub dir: PathBuf,
    pub cfg: ClusterConfig,
    pub tls: TlsFiles,
    pub extra: Vec<Child>,
    /// The environment `cluster up` was given: restarted processes get it too (a skewed clock
    /// stays skewed across a restart).
    pub env: Vec<(String, String)>,
}

impl TestCluster {
    pub fn up(name: &str, extra_args: &[&str]) -> TestCluster {
        TestCluster::up_env(name, extra_args, &[])
    }

    /// `up` with environment variables for `cluster up` (and so for every process it starts).
    pub fn up_env(name: &str, extra_args: &[&str], env: &[(&str, &str)]) -> TestCluster {
        meridian_replica::tls::install_provider();
        let dir = temp_dir(name);
        let out = Command::new(bin())
            .args(["cluster", "up", "--dir"])
            .arg(&dir)
            .args(extra_args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cfg = ClusterConfig::load(&dir.join("cluster.toml")).unwrap();
        let tls = TlsFiles::new(
            cfg.resolve(&cfg.tls.ca),
            &cfg.resolve(&cfg.tls.cert_dir),
            "meridian-tool",
        );
        TestCluster {
            dir,
            cfg,
            tls,
            extra: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn pid(&self, site: &str) -> i32 {
        let text = std::fs::read_to_string(self.dir.join("pids")).unwrap();
        let mut found = None;
        for l in text.lines() {
            let mut it = l.split_whitespace();
            if it.next() == Some(site) {
                found = it.next().map(|p| p.parse().unwrap());
            }
        }
        found.expect("site in pids")
    }

    pub fn kill9(&self, site: &str) {
        let pid = self.pid(site);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Wait until it is really gone (the port must be free for a restart). A dead process
        // nobody reaped yet (a zombie: `cluster up` is not our child) counts as gone.
        let zombie = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(true)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && !zombie(pid)
            && Instant::now() < deadline
        {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a replica process of `site` again (from its data directory); recorded in pids.
    /// `meridian` as the cluster runs it: inside the namespace of `region`'s emulated host
    /// when the cluster sits on a `meridian wan` emulation (`cluster up --wan-hosts`).
    fn meridian_in(&self, region: &str) -> Command {
        let wan = self.cfg.base_dir.join("wan-hosts");
        let ns = std::fs::read_to_string(&wan).ok().and_then(|dir| {
            let w: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(Path::new(dir.trim()).join("wan.json")).ok()?,
            )
            .ok()?;
            w["hosts"]
                .as_array()?
                .iter()
                .find(|h| h["region"] == region)?["namespace"]
                .as_str()
                .map(str::to_string)
        });
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns, bin()]);
                c
            }
            None => Command::new(bin()),
        };
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    fn region_of(&self, name: &str) -> String {
        self.cfg
            .sites
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.region.clone())
            .or_else(|| {
                self.cfg
                    .proxies
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.region.clone())
            })
            .unwrap_or_default()
    }

    pub fn restart(&mut self, site: &str) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("logs").join(format!("{site}.log")))
            .unwrap();
        let child = self
            .meridian_in(&self.region_of(site))
            .args(["replica", "--config"])
            .arg(self.dir.join("cluster.toml"))
            .args(["--site", site])
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut pids = std::fs::read_to_string(self.dir.join("pids")).unwrap();
        pids.push_str(&format!("{site} {}\n", child.id()));
        std::fs::write(self.dir.join("pids"), pids).unwrap();
        self.extra.push(child);
    }

    /// Starts a killed proxy again (`name`: its `[[proxy]]` name, e.g. `proxy-us-east-1`).
    pub fn restart_proxy(&mut self, name: &str) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("logs").join(format!("{name}.log")))
            .unwrap();
        let child = self
            .meridian_in(&self.region_of(name))
            .args(["proxy", "--config"])
            .arg(self.dir.join("cluster.toml"))
            .args(["--name", name])
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut pids = std::fs::read_to_string(self.dir.join("pids")).unwrap();
        pids.push_str(&format!("{name} {}\n", child.id()));
        std::fs::write(self.dir.join("pids"), pids).unwrap();
        self.extra.push(child);
    }

    pub fn log(&self, site: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{site}.log")))
            .unwrap_or_default()
    }

    pub fn site_names(&self) -> Vec<String> {
        self.cfg.sites.iter().map(|s| s.name.clone()).collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = Command::new(bin())
            .args(["cluster", "down", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for c in &mut self.extra {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Connections to every site plus leader tracking; retries writes until they are acknowledged.
pub struct Writer {
    pub conns: Vec<Option<ReplicaClient>>,
    pub addrs: Vec<meridian_replica::config::HostPort>,
    pub tls: TlsFiles,
    pub shards: u32,
    pub leader: Vec<usize>,
}

impl Writer {
    pub async fn new(c: &TestCluster) -> Writer {
        let addrs: Vec<_> = c.cfg.sites.iter().map(|s| s.addr.clone()).collect();
        Writer {
            conns: vec![None; addrs.len()],
            addrs,
            tls: c.tls.clone(),
            shards: c.cfg.cluster.shards,
            leader: vec![0; c.cfg.cluster.shards as usize],
        }
    }

    async fn conn(&mut self, i: usize) -> Option<ReplicaClient> {
        if self.conns[i].is_none() {
            self.conns[i] = ReplicaClient::connect(&self.addrs[i], &self.tls).await.ok();
        }
        self.conns[i].clone()
    }

    /// Submits `cmd` until some leader acknowledges it (same client id and sequence number on
    /// every retry, so it applies once) or `limit` passes.
    pub async fn submit(&mut self, cmd: &KvCommand, limit: Duration) -> Option<KvResult> {
        let key = match &cmd.op {
            Op::Put { key, .. } | Op::Get { key } | Op::Delete { key } => key.clone(),
            _ => panic!("unsupported"),
        };
        let shard = meridian_proxy::route::shard_for_key(&key, self.shards);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let l = self.leader[shard as usize];
            let Some(mut c) = self.conn(l).await else {
                self.leader[shard as usize] = (l + 1) % self.addrs.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match tokio::time::timeout(
                Duration::from_secs(5),
                c.submit(shard, std::slice::from_ref(cmd)),
            )
            .await
            {
                Ok(Ok(Outcome::Ok(mut r))) => return r.pop(),
                Ok(Ok(Outcome::NotLeader(Some(h)))) if h != l => self.leader[shard as usize] = h,
                Ok(Ok(Outcome::NotLeader(_))) => {
                    self.leader[shard as usize] = (l + 1) % self.addrs.len();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(_)) | Err(_) => {
                    self.conns[l] = None;
                    self.leader[shard as usize] = (l + 1) % self.addrs.len();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        None
    }

    /// Reads `key` linearizably (leader lease, or through the log).
    pub async fn get(&mut self, key: &[u8], client: u64, seq: u64) -> Option<Option<Vec<u8>>> {
        let cmd = KvCommand {
            client,
            seq,
            op: Op::Get { key: key.to_vec() },
        };
        let shard = meridian_proxy::route::shard_for_key(key, self.shards);
        for _ in 0..100 {
            let l = self.leader[shard as usize];
            if let Some(mut c) = self.conn(l).await {
                match c.read(shard, &cmd, ReadMode::Leader).await {
                    Ok(Outcome::Ok((r, _path))) => {
                        let KvOutcome::Get { kv } = r.outcome else {
                            panic!("get answered {r:?}")
                        };
                        return Some(kv.map(|kv| kv.value));
                    }
                    Ok(Outcome::NotLeader(Some(h))) if h != l => {
                        self.leader[shard as usize] = h;
                        continue;
                    }
                    _ => self.conns[l] = None,
                }
            }
            self.leader[shard as usize] = (l + 1) % self.addrs.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

/// `meridian status --json` of the cluster, if it answered.
pub fn status_json(c: &TestCluster) -> Option<serde_json::Value> {
    let out = Command::new(bin())
        .args(["status", "--json", "--dir"])
        .arg(&c.dir)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

pub fn put(client: u64, seq: u64, key: &str, value: &str) -> KvCommand {
    KvCommand {
        client,
        seq,
        op: Op::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        },
    }
}

pub fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "log"));
    v.sort();
    v
}

/// The text of a proxy's Prometheus endpoint (`proxies.<region>.metrics` of endpoints.json).
#[allow(dead_code)]
pub fn scrape_proxy_metrics(c: &TestCluster, region: &str) -> String {
    use std::io::{Read, Write};
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("endpoints.json")).unwrap())
            .unwrap();
    let url = e["proxies"][region]["metrics"].as_str().unwrap();
    let (host, path) = url
        .strip_prefix("http://")
        .unwrap()
        .split_once('/')
        .unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nhost: {host}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// Every proxy's etcd endpoint (`proxies.<region>.etcd` of endpoints.json), in region order.
pub fn etcd_urls(c: &TestCluster) -> Vec<String> {
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("endpoints.json")).unwrap())
            .unwrap();
    e["proxies"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| {
            p["etcd"]
                .as_str()
                .expect("every proxy lists its etcd endpoint")
                .to_string()
        })
        .collect()
}

/// The regions of `etcd_urls`, in the same order.
pub fn etcd_regions(c: &TestCluster) -> Vec<String> {
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("endpoints.json")).unwrap())
            .unwrap();
    e["proxies"].as_object().unwrap().keys().cloned().collect()
}

/// An `etcd-client` client of `url` over TLS with the cluster CA.
pub async fn etcd_connect(c: &TestCluster, url: &str) -> etcd_client::Client {
    let ca = std::fs::read_to_string(c.cfg.resolve(&c.cfg.tls.ca)).unwrap();
    etcd_client::Client::connect(
        [url],
        Some(etcd_client::ConnectOptions::new().with_tls(
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca)),
        )),
    )
    .await
    .expect("connects over TLS with the cluster CA")
}

/// The cluster's `endpoints.json`.
pub fn endpoints(c: &TestCluster) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(c.dir.join("endpoints.json")).unwrap()).unwrap()
}

/// The HTTPS address of `region`'s proxy.
pub fn proxy_url(c: &TestCluster, region: &str) -> String {
    endpoints(c)["proxies"][region]["http"]
        .as_str()
        .unwrap()
        .to_string()
}
