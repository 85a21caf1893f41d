//! Deployment as containers (issue "Operate it"): builds the image from this checkout
//! (`deploy/docker/build-image.sh`, nothing pulled), starts `deploy/compose` — five sites and five
//! proxies, each its own container and address on a private network — writes through one
//! region's proxy, reads it back through another, kills one site's container and still writes.
//! Where no Docker daemon or docker-compose is available it says so and checks nothing else.
mod common;
#[path = "common/https.rs"]
mod https;

use common::*;
use https::{tls_config, Conn};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn available() -> Result<(), String> {
    let docker = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map_err(|e| format!("no docker client: {e}"))?;
    if !docker.status.success() {
        return Err(format!(
            "no Docker daemon: {}",
            String::from_utf8_lossy(&docker.stderr).trim()
        ));
    }
    Command::new("docker-compose")
        .arg("version")
        .output()
        .map_err(|e| format!("no docker-compose: {e}"))
        .and_then(|o| {
            o.status
                .success()
                .then_some(())
                .ok_or_else(|| "docker-compose does not run".to_string())
        })
}

/// `docker-compose -p PROJECT down -v` when the test ends, however it ends.
struct Down {
    dir: PathBuf,
    project: String,
}

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args(["-p", &self.project, "down", "-v", "--timeout", "5"])
            .current_dir(&self.dir)
            .output();
    }
}

fn compose(dir: &Path, project: &str, args: &[&str]) {
    let out = Command::new("docker-compose")
        .args(["-p", project])
        .args(args)
        .current_dir(dir)
        .env("MERIDIAN_IMAGE", "meridian:test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker-compose {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_cluster_writes_reads_and_survives_a_lost_site() {
    if let Err(why) = available() {
        eprintln!(
            "SKIPPED (says plainly): the container test needs Docker and docker-compose: {why}"
        );
        return;
    }
    // The binary this test run built (no cargo inside cargo).
    let out = Command::new(repo().join("deploy/docker/build-image.sh"))
        .arg("meridian:test")
        .env("MERIDIAN_BIN", bin())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-image.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A private copy of deploy/compose with fresh certificates.
    let dir = temp_dir("compose");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["docker-compose.yml", "cluster.toml"] {
        std::fs::copy(repo().join("deploy/compose").join(f), dir.join(f)).unwrap();
    }
    let cfg = meridian_replica::config::ClusterConfig::load(&dir.join("cluster.toml")).unwrap();
    // The certificates as the shipped script makes them: by the image, owned by its user.
    std::fs::copy(repo().join("deploy/compose/certs.sh"), dir.join("certs.sh")).unwrap();
    let out = Command::new(dir.join("certs.sh"))
        .env("MERIDIAN_IMAGE", "meridian:test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in cfg
        .sites
        .iter()
        .map(|s| &s.name)
        .chain(cfg.proxies.iter().map(|p| &p.name))
    {
        assert!(
            dir.join("certs").join(format!("{name}.key")).exists(),
            "{name}"
        );
    }
    // The image runs unprivileged.
    let out = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}",
            "meridian:test",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "65532:65532");
    let project = format!("meridian-it-{}", std::process::id());
    let _down = Down {
        dir: dir.clone(),
        project: project.clone(),
    };
    compose(&dir, &project, &["up", "-d"]);
    let url = |region: &str| {
        let p = cfg.proxies.iter().find(|p| p.region == region).unwrap();
        format!("https://{}", p.http_addr)
    };
    let tls = tls_config(&dir.join("certs/ca.pem"));
    rt().block_on(async {
        // The first write waits for the cluster to elect its leaders.
        let end = Instant::now() + Duration::from_secs(60);
        let mut east = loop {
            if let Ok(c) = Conn::open(&url("us-east-1"), tls.clone()).await {
                break c;
            }
            assert!(Instant::now() < end, "the us-east-1 proxy never listened");
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        loop {
            if let Ok(r) = east.request("PUT", "/v1/kv/deploy", b"one".to_vec()).await {
                if r.status == 200 {
                    break;
                }
            }
            assert!(Instant::now() < end, "no write succeeded through us-east-1");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut west = Conn::open(&url("eu-west-1"), tls.clone()).await.unwrap();
        let r = west.request("GET", "/v1/kv/deploy", vec![]).await.unwrap();
        assert_eq!((r.status, &*r.body), (200, &b"one"[..]));
    });
    // Every container's process runs as the image's user, not root.
    let out = Command::new("docker-compose")
        .args(["-p", &project, "top", "site-us-east-1"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(
        top.lines()
            .any(|l| l.contains("meridian") && l.split_whitespace().next() == Some("65532")),
        "site-us-east-1 should run as uid 65532: {top}"
    );
    // One site's container killed: writes go on (a quorum of four remains).
    compose(&dir, &project, &["kill", "site-eu-central-1"]);
    rt().block_on(async {
        let mut east = Conn::open(&url("us-east-1"), tls.clone()).await.unwrap();
        let r = east
            .request("PUT", "/v1/kv/deploy", b"two".to_vec())
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        let mut tokyo = Conn::open(&url("ap-northeast-1"), tls.clone())
            .await
            .unwrap();
        let r = tokyo.request("GET", "/v1/kv/deploy", vec![]).await.unwrap();
        assert_eq!((r.status, &*r.body), (200, &b"two"[..]));
    });
}
