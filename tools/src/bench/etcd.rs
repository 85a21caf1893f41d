//! An etcd v3 cluster for side-by-side runs: one member per region (Debian's `etcd-server`,
//! fsync on, as shipped), started and stopped by the benchmark, its leader moved to the region
//! Meridian's leader is in so both systems are measured with the same leader region.
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Member {
    pub name: String,
    pub region: String,
    pub client_url: String,
    peer_url: String,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    children: Vec<Child>,
}

/// The etcd binary: `MERIDIAN_ETCD`, else `etcd` on PATH; a clear error when neither exists.
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MERIDIAN_ETCD") {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "etcd is not installed: `--system etcd|both` needs an etcd v3 server binary \
                 (Debian: `apt-get install etcd-server`, which also starts a system etcd on \
                 2379 — stop it with `systemctl disable --now etcd`), or set MERIDIAN_ETCD to \
                 its path"
            )
        })
}

impl EtcdCluster {
    /// Starts one member per region under `dir`: on loopback, or (`wan`) each on the emulated
    /// host of its region, inside that host's namespace. `heartbeat_ms` should be about the
    /// round trip between members (etcd's tuning guide); the election timeout is ten heartbeats.
    /// Each member's Go runtime runs `threads` OS threads of Go code at once (GOMAXPROCS), as
    /// many as a Meridian process has workers in the same benchmark.
    pub fn start(
        dir: &Path,
        regions: &[String],
        heartbeat_ms: u64,
        wan: Option<&crate::wan::WanFile>,
        threads: usize,
    ) -> Result<EtcdCluster> {
        let bin = binary()?;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let mut namespaces = Vec::new();
        let mut held = Vec::new();
        let members: Vec<Member> = regions
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (client_url, peer_url) = match wan {
                    Some(w) => {
                        let h = w
                            .host_in(r)
                            .with_context(|| format!("the WAN emulation has no host in {r}"))?;
                        namespaces.push(Some(h.namespace.clone()));
                        (
                            format!("http://{}:2379", h.address),
                            format!("http://{}:2380", h.address),
                        )
                    }
                    None => {
                        namespaces.push(None);
                        (
                            format!(
                                "http://127.0.0.1:{}",
                                crate::ports::free_port("127.0.0.1", &mut held)?
                            ),
                            format!(
                                "http://127.0.0.1:{}",
                                crate::ports::free_port("127.0.0.1", &mut held)?
                            ),
                        )
                    }
                };
                Ok(Member {
                    name: format!("etcd-{i}-{r}"),
                    region: r.clone(),
                    client_url,
                    peer_url,
                })
            })
            .collect::<Result<_>>()?;
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        drop(held);
        let mut children = Vec::new();
        for (m, ns) in members.iter().zip(&namespaces) {
            let log = std::fs::File::create(dir.join(format!("{}.log", m.name)))?;
            let mut cmd = match ns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns]).arg(&bin);
                    c
                }
                None => Command::new(&bin),
            };
            let child = cmd
                .args(["--name", &m.name])
                .arg("--data-dir")
                .arg(dir.join(&m.name))
                .args(["--listen-client-urls", &m.client_url])
                .args(["--advertise-client-urls", &m.client_url])
                .args(["--listen-peer-urls", &m.peer_url])
                .args(["--initial-advertise-peer-urls", &m.peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-token", "meridian-bench"])
                .args(["--initial-cluster-state", "new"])
                .args(["--heartbeat-interval", &heartbeat_ms.to_string()])
                .args(["--election-timeout", &(heartbeat_ms * 10).to_string()])
                .args(["--logger", "zap", "--log-level", "warn"])
                .env("GOMAXPROCS", threads.max(1).to_string())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            children.push(child);
        }
        Ok(EtcdCluster { members, children })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }

    async fn client(&self, i: usize) -> Result<etcd_client::Client> {
        Ok(etcd_client::Client::connect([self.members[i].client_url.as_str()], None).await?)
    }

    /// Waits until every member answers and they agree on a leader; returns its index.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<usize> {
        let deadline = Instant::now() + limit;
        loop {
            for (i, c) in self.children.iter_mut().enumerate() {
                if let Some(st) = c.try_wait()? {
                    bail!(
                        "etcd member {} exited ({st}); see its log",
                        self.members[i].name
                    );
                }
            }
            if let Ok(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!("etcd did not elect a leader within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The leader's member index, as every member reports it.
    pub async fn leader(&self) -> Result<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for i in 0..self.members.len() {
            let mut c = self.client(i).await?;
            let s = c.status().await?;
            let me = s.header().context("status header")?.member_id();
            ids.push(me);
            match leader {
                None => leader = Some(s.leader()),
                Some(l) if l == s.leader() => {}
                Some(_) => bail!("members disagree on the leader"),
            }
        }
        let l = leader.filter(|&l| l != 0).context("no leader")?;
        ids.iter()
            .position(|&id| id == l)
            .context("leader is not a member")
    }

    /// Moves leadership to member `to` (etcd's MoveLeader, sent to the current leader).
    pub async fn move_leader(&self, to: usize, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let l = self.leader().await?;
            if l == to {
                return Ok(());
            }
            let target = self
                .client(to)
                .await?
                .status()
                .await?
                .header()
                .context("status header")?
                .member_id();
            let _ = self.client(l).await?.move_leader(target).await;
            if Instant::now() > deadline {
                bail!("etcd leadership did not move to {}", self.members[to].name);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
