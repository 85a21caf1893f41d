//! etcd Watch at every proxy over real processes (issue "etcd v3 API"): watchers at one
//! region's proxy see every change written through another region's proxy exactly once, in
//! revision order per key, with previous values and filters; a watch resumes from a revision
//! (also after its proxy restarts) without gap or duplicate; `Compact` makes an older start
//! `compacted`; many watchers of one key share one upstream stream; `etcdctl watch` works.
mod common;

use common::*;
use etcd_client::{
    Client, DeleteOptions, EventType, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions,
    WatchStream,
};
use std::time::Duration;

/// One observed event: (watch id, key, put?, value, mod revision, previous value).
type Seen = (i64, String, bool, String, i64, Option<String>);

/// Reads responses until `want` events arrived (`want` 0: until a creation or cancellation),
/// or `limit` passed; creations and cancellations are returned too, as (watch id, created,
/// canceled, reason, compact revision).
async fn collect(
    w: &mut WatchStream,
    want: usize,
    limit: Duration,
) -> (Vec<Seen>, Vec<(i64, bool, bool, String, i64)>) {
    let mut events = Vec::new();
    let mut control = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while if want == 0 {
        control.is_empty()
    } else {
        events.len() < want
    } {
        let m = match tokio::time::timeout_at(deadline, w.message()).await {
            Ok(Ok(Some(m))) => m,
            _ => break,
        };
        if m.created() || m.canceled() {
            control.push((
                m.watch_id(),
                m.created(),
                m.canceled(),
                m.cancel_reason().to_string(),
                m.compact_revision(),
            ));
        }
        for e in m.events() {
            let kv = e.kv().unwrap();
            events.push((
                m.watch_id(),
                kv.key_str().unwrap().to_string(),
                e.event_type() == EventType::Put,
                kv.value_str().unwrap().to_string(),
                kv.mod_revision(),
                e.prev_kv().map(|p| p.value_str().unwrap().to_string()),
            ));
        }
    }
    (events, control)
}

/// Waits for the created response of the watch just requested; returns its id.
async fn created(w: &mut WatchStream) -> i64 {
    let (_, control) = collect(w, 0, Duration::from_secs(10)).await;
    let (id, created, canceled, reason, _) = control.first().cloned().expect("a created response");
    assert!(created && !canceled, "watch {id} refused: {reason}");
    id
}

fn by_watch(events: &[Seen], id: i64) -> Vec<(String, bool, String, Option<String>)> {
    events
        .iter()
        .filter(|e| e.0 == id)
        .map(|e| (e.1.clone(), e.2, e.3.clone(), e.5.clone()))
        .collect()
}

fn ev(
    key: &str,
    put: bool,
    value: &str,
    prev: Option<&str>,
) -> (String, bool, String, Option<String>) {
    (key.into(), put, value.into(), prev.map(str::to_string))
}

#[test]
fn watches_see_every_change_once_in_order_and_resume_from_a_revision() {
    let mut c = TestCluster::up("etcd-watch", &["--no-wan"]);
    let urls = etcd_urls(&c);
    let shards = c.cfg.cluster.shards;
    rt().block_on(async {
        let mut a: Client = etcd_connect(&c, &urls[0]).await;
        let mut b: Client = etcd_connect(&c, &urls[3]).await;
        // One stream, three watches: a key, a prefix with previous values, deletes only.
        let mut w = a.watch("w/k", None).await.unwrap();
        let key_id = created(&mut w).await;
        w.watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
        let prefix_id = created(&mut w).await;
        w.watch(
            "w/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_filters([WatchFilterType::NoPut]),
            ),
        )
        .await
        .unwrap();
        let deletes_id = created(&mut w).await;
        assert_eq!([key_id, prefix_id, deletes_id], [0, 1, 2]);

        // Writes through another region's proxy: puts, a transaction, deletes.
        b.put("w/k", "v1", None).await.unwrap();
        b.put("w/j", "a", None).await.unwrap();
        let v2 = b
            .put("w/k", "v2", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        b.txn(Txn::new().and_then([TxnOp::put("w/k", "v3", None)]))
            .await
            .unwrap();
        b.put("other", "x", None).await.unwrap();
        b.delete("w/k", None).await.unwrap();
        b.delete("w/", Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap();
        let (events, control) = collect(&mut w, 4 + 6 + 2, Duration::from_secs(20)).await;
        assert!(control.is_empty(), "{control:?}");
        assert_eq!(
            by_watch(&events, key_id),
            [
                ev("w/k", true, "v1", None),
                ev("w/k", true, "v2", None),
                ev("w/k", true, "v3", None),
                ev("w/k", false, "", None),
            ]
        );
        // Per key, in order, each once, with the previous values.
        let prefix = by_watch(&events, prefix_id);
        let of = |k: &str| -> Vec<_> { prefix.iter().filter(|e| e.0 == k).cloned().collect() };
        assert_eq!(
            of("w/k"),
            [
                ev("w/k", true, "v1", None),
                ev("w/k", true, "v2", Some("v1")),
                ev("w/k", true, "v3", Some("v2")),
                ev("w/k", false, "", Some("v3")),
            ]
        );
        assert_eq!(
            of("w/j"),
            [ev("w/j", true, "a", None), ev("w/j", false, "", Some("a"))]
        );
        assert_eq!(prefix.len(), 6, "nothing outside the prefix: {prefix:?}");
        let deletes = by_watch(&events, deletes_id);
        assert!(
            deletes.iter().all(|e| !e.1) && deletes.len() == 2,
            "{deletes:?}"
        );
        // Revisions only grow per key; the key watch saw them as the prefix watch did.
        let revs: Vec<i64> = events
            .iter()
            .filter(|e| e.0 == key_id)
            .map(|e| e.4)
            .collect();
        assert!(revs.windows(2).all(|p| p[0] < p[1]), "{revs:?}");
        assert_eq!(revs[1], v2);

        // Resume from a revision: exactly the changes from there on.
        let mut r = a
            .watch("w/k", Some(WatchOptions::new().with_start_revision(v2)))
            .await
            .unwrap();
        created(&mut r).await;
        let (again, _) = collect(&mut r, 3, Duration::from_secs(10)).await;
        let again: Vec<_> = again.iter().map(|e| (e.3.clone(), e.4)).collect();
        assert_eq!(
            again.iter().map(|e| e.1).collect::<Vec<_>>(),
            revs[1..].to_vec()
        );
        // ... and nothing more (no duplicate of the last one).
        let (more, _) = collect(&mut r, 1, Duration::from_millis(1500)).await;
        assert!(more.is_empty(), "{more:?}");

        // A range over several shards cannot resume from one revision: refused, with why.
        if shards > 1 {
            let mut m = a
                .watch(
                    "w/",
                    Some(WatchOptions::new().with_prefix().with_start_revision(v2)),
                )
                .await
                .unwrap();
            let (_, control) = collect(&mut m, 0, Duration::from_secs(10)).await;
            let (_, _, canceled, reason, _) = control.first().cloned().expect("a response");
            assert!(canceled && reason.contains("several shards"), "{reason}");
        }

        // Compact: a watch from below the compaction point is told so, with where it may
        // start; from the point itself it still works.
        let last = *revs.last().unwrap();
        a.compact(last, None).await.unwrap();
        let mut old = a
            .watch("w/k", Some(WatchOptions::new().with_start_revision(v2)))
            .await
            .unwrap();
        // As etcd: created, then canceled with the compaction revision.
        created(&mut old).await;
        let (_, control) = collect(&mut old, 0, Duration::from_secs(10)).await;
        let (_, _, canceled, reason, compact) = control.first().cloned().expect("a response");
        assert!(canceled && reason.contains("compacted"), "{reason}");
        assert!(
            compact > v2 && compact <= last,
            "compact revision {compact}"
        );
        let mut at = a
            .watch("w/k", Some(WatchOptions::new().with_start_revision(last)))
            .await
            .unwrap();
        created(&mut at).await;
        let (tail, _) = collect(&mut at, 1, Duration::from_secs(10)).await;
        assert_eq!(tail.len(), 1);
        assert_eq!(
            (tail[0].2, tail[0].4),
            (false, last),
            "the delete at {last}"
        );
        drop((w, r, old, at));

        // Many watchers of one key at a proxy share one upstream stream.
        let mut streams = Vec::new();
        for _ in 0..4 {
            let mut s = a.watch("hot/0", None).await.unwrap();
            created(&mut s).await;
            for _ in 0..49 {
                s.watch("hot/0", None).await.unwrap();
                created(&mut s).await;
            }
            streams.push(s);
        }
        let region = etcd_regions(&c)[0].clone();
        let gauge = |c: &TestCluster| -> i64 {
            scrape_proxy_metrics(c, &region)
                .lines()
                .find(|l| l.starts_with("meridian_proxy_watch_upstreams"))
                .and_then(|l| l.split_whitespace().last()?.parse().ok())
                .expect("the upstream gauge")
        };
        // The watches dropped above close their upstreams within a progress interval or two.
        let t0 = std::time::Instant::now();
        while gauge(&c) > 1 && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(gauge(&c), 1, "200 watchers of one key: one upstream");
        b.put("hot/0", "h", None).await.unwrap();
        for s in &mut streams {
            let (e, _) = collect(s, 50, Duration::from_secs(10)).await;
            assert_eq!(e.len(), 50, "every watcher sees the put once");
        }
        // Cancel: each canceled watch is confirmed and sees nothing more; the others go on.
        // A progress request gets one response for the stream (watch id -1) at or past the
        // put.
        let hot = b.put("hot/0", "i", None).await.unwrap();
        let hot_rev = hot.header().unwrap().revision();
        for s in &mut streams {
            let (e, _) = collect(s, 50, Duration::from_secs(10)).await;
            assert_eq!(e.len(), 50);
        }
        for id in 1..50 {
            streams[0].cancel(id).await.unwrap();
        }
        let mut confirmed = std::collections::BTreeSet::new();
        while confirmed.len() < 49 {
            let m = tokio::time::timeout(Duration::from_secs(10), streams[0].message())
                .await
                .expect("cancel confirmations")
                .unwrap()
                .unwrap();
            assert!(m.canceled() && m.events().is_empty(), "{m:?}");
            confirmed.insert(m.watch_id());
        }
        assert_eq!(confirmed, (1..50).collect());
        streams[1].request_progress().await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(10), streams[1].message())
            .await
            .expect("a progress response")
            .unwrap()
            .unwrap();
        assert_eq!(m.watch_id(), -1);
        assert!(m.events().is_empty() && !m.canceled());
        assert!(m.header().unwrap().revision() >= hot_rev, "{m:?}");
        b.put("hot/0", "j", None).await.unwrap();
        let (e, _) = collect(&mut streams[0], 2, Duration::from_secs(3)).await;
        assert_eq!(e.len(), 1, "one watch of the stream is left: {e:?}");
        for s in &mut streams[1..] {
            let (e, _) = collect(s, 50, Duration::from_secs(10)).await;
            assert_eq!(e.len(), 50);
        }
        drop(streams);

        // A proxy restart: the client resumes from its last revision + 1, and sees exactly
        // the changes made while it was gone.
        let mut w = a.watch("r/k", None).await.unwrap();
        created(&mut w).await;
        b.put("r/k", "1", None).await.unwrap();
        let (seen, _) = collect(&mut w, 1, Duration::from_secs(10)).await;
        let last_seen = seen[0].4;
        drop(w);
        let proxy = format!("proxy-{region}");
        let pid = c.pid(&proxy);
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        for v in ["2", "3"] {
            b.put("r/k", v, Some(PutOptions::new())).await.unwrap();
        }
        c.restart_proxy(&proxy);
        let t0 = std::time::Instant::now();
        let mut a = loop {
            let mut cl = etcd_connect(&c, &urls[0]).await;
            if cl.status().await.is_ok() {
                break cl;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the proxy comes back"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut w = a
            .watch(
                "r/k",
                Some(WatchOptions::new().with_start_revision(last_seen + 1)),
            )
            .await
            .unwrap();
        created(&mut w).await;
        b.put("r/k", "4", None).await.unwrap();
        let (seen, _) = collect(&mut w, 3, Duration::from_secs(10)).await;
        let values: Vec<&str> = seen.iter().map(|e| e.3.as_str()).collect();
        assert_eq!(values, ["2", "3", "4"]);
        let (more, _) = collect(&mut w, 1, Duration::from_millis(1500)).await;
        assert!(more.is_empty(), "{more:?}");
    });
}

#[test]
fn etcdctl_watch_prints_the_changes() {
    if std::process::Command::new("etcdctl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: etcdctl is not installed (Debian's etcd-client; .ci/run installs it)");
        return;
    }
    let c = TestCluster::up("etcd-watch-ctl", &["--no-wan"]);
    let urls = etcd_urls(&c);
    let ca = c.cfg.resolve(&c.cfg.tls.ca);
    let ctl = |url: &str| {
        let mut cmd = std::process::Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={url}"))
            .arg(format!("--cacert={}", ca.display()));
        cmd
    };
    let watcher = ctl(&urls[1])
        .args(["watch", "--prefix", "ctl/", "--prev-kv"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for args in [
        &["put", "ctl/a", "one"][..],
        &["put", "ctl/a", "two"],
        &["del", "ctl/a"],
    ] {
        let out = ctl(&urls[2]).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let _ = std::process::Command::new("kill")
        .arg(watcher.id().to_string())
        .status();
    let out = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    // etcdctl prints each event as type, (previous key and value,) key, value.
    assert_eq!(
        lines,
        [
            "PUT", "ctl/a", "one", "PUT", "ctl/a", "one", "ctl/a", "two", "DELETE", "ctl/a", "two",
            "ctl/a", ""
        ],
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // etcd's lock recipe orders its keys by create revision across a prefix: on several
    // shards, its prefix not co-located, it is refused with the reason (never a lock two
    // holders believe they hold).
    let out = ctl(&urls[0])
        .args(["lock", "jobs", "echo", "held"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("co-locate its prefix"), "{err}");
}

/// Many watchers at one proxy over many keys, writes through another region's proxy on the
/// emulated WAN, through `meridian bench --watchers` (which fails unless every watcher sees
/// every write of its key exactly once, in revision order, the proxy holds at most one
/// upstream per key and moves none: `bench::watch::check` and its unit test). The delivery
/// delay is printed, not asserted (timing belongs to benchmarks). CI runs 1,000 watchers and
/// 1,000 writes; the size: `MERIDIAN_WATCHERS=10000 MERIDIAN_WATCH_WRITES=10000 cargo
/// test --release -p meridian --test etcd_watch many -- --nocapture`, or the benchmark itself
/// (README).
#[test]
fn many_watchers_see_every_write_of_their_key_once_in_order() {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let (watchers, writes) = (
        var("MERIDIAN_WATCHERS", "1000"),
        var("MERIDIAN_WATCH_WRITES", "1000"),
    );
    let out = temp_dir("etcd-watch-many");
    let r = std::process::Command::new(bin())
        .args(["bench", "--watchers", &watchers, "--watch-writes", &writes])
        .args(["--watch-keys", "100", "--clients", "32", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&r.stderr));
    assert!(r.status.success(), "the watch benchmark failed");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("watch.json")).unwrap()).unwrap();
    let n = |k: &str| v[k].as_f64().unwrap();
    let writes: f64 = writes.parse().unwrap();
    assert_eq!(
        n("events"),
        writes * watchers.parse::<f64>().unwrap() / 100.0
    );
    assert!(n("upstreams") <= 100.0, "one upstream per key: {v}");
    assert_eq!(n("moves"), 0.0, "watch streams moved: {v}");
    // Physics: no event arrives before the commit could cross the WAN (a loose floor: the
    // acknowledgement itself leaves the writer's region after the commit).
    assert!(
        n("p50_ms") >= n("one_way_ms") * 0.5,
        "faster than light: {v}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
