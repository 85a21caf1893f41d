//! The etcd v3 edge at every proxy over real processes (issue "etcd v3 API"): Debian's
//! `etcdctl` and the Rust `etcd-client` crate, unchanged, against `proxies.<region>.etcd` of
//! endpoints.json — writes through one region's proxy, reads through another's; prefix and
//! from-key ranges, limits, sorting, counts, keys only; deletes of one key and of a prefix with
//! their previous values; transactions with compares on value, version, create and mod
//! revision; the member list (the proxies); and the clear errors of what is not built.
mod common;

use common::*;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions,
    SortOrder, SortTarget, TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use std::process::Command;

/// `etcdctl` against `url`; returns (success, stdout, stderr).
fn etcdctl(
    c: &TestCluster,
    url: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use std::io::Write;
    let ca = c.cfg.resolve(&c.cfg.tls.ca);
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .arg(format!("--cacert={}", ca.display()))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl runs");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn have_etcdctl() -> bool {
    Command::new("etcdctl").arg("version").output().is_ok()
}

#[test]
fn etcdctl_works_against_the_nearest_proxy() {
    if !have_etcdctl() {
        eprintln!("SKIPPED: etcdctl is not installed (Debian's etcd-client; .ci/run installs it)");
        return;
    }
    let c = TestCluster::up("etcd-etcdctl", &["--no-wan"]);
    let urls = etcd_urls(&c);
    assert_eq!(urls.len(), 5);
    let (a, b) = (&urls[0], &urls[3]);
    let ok = |url: &str, args: &[&str]| -> String {
        let (good, out, err) = etcdctl(&c, url, args, None);
        assert!(good, "etcdctl {args:?}: {out}{err}");
        out
    };
    assert_eq!(ok(a, &["put", "app/x", "42"]).trim(), "OK");
    assert_eq!(ok(b, &["get", "app/x", "--print-value-only"]).trim(), "42");
    ok(a, &["put", "app/y", "43"]);
    ok(a, &["put", "other", "1"]);
    assert_eq!(
        ok(b, &["get", "--prefix", "app/", "--keys-only"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["app/x", "app/y"]
    );
    assert_eq!(
        ok(
            b,
            &[
                "get",
                "--prefix",
                "app/",
                "--limit",
                "1",
                "--print-value-only"
            ]
        )
        .trim(),
        "42"
    );
    assert_eq!(
        ok(b, &["get", "app/", "--from-key", "--keys-only"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["app/x", "app/y", "other"]
    );
    // A transaction: the compare holds, so the success branch runs.
    let (good, out, err) = etcdctl(
        &c,
        a,
        &["txn"],
        Some("value(\"app/x\") = \"42\"\n\nput app/x 44\n\nput app/x never\n\n"),
    );
    assert!(good && out.starts_with("SUCCESS"), "{out}{err}");
    let (good, out, _) = etcdctl(
        &c,
        b,
        &["txn"],
        Some("value(\"app/x\") = \"42\"\n\nput app/x never\n\nget app/x\n\n"),
    );
    assert!(
        good && out.starts_with("FAILURE") && out.contains("44"),
        "{out}"
    );
    assert_eq!(ok(b, &["del", "--prefix", "app/"]).trim(), "2");
    assert_eq!(ok(a, &["get", "--prefix", "app/"]).trim(), "");
    // The members are the proxies, each with its etcd URL.
    let members = ok(a, &["member", "list"]);
    for u in &urls {
        assert!(members.contains(u.as_str()), "{members}");
    }
    assert!(ok(a, &["endpoint", "status"]).contains("3.5.0"));
    // A lease that does not exist, and what is not built, say so.
    let (good, _, err) = etcdctl(&c, a, &["put", "k", "v", "--lease=1234"], None);
    assert!(!good && err.contains("requested lease not found"), "{err}");
    // A read at a revision (`get --rev`) gives the key as it was then, also through another
    // region's proxy; a revision not reached yet is etcd's "future revision".
    let put = ok(a, &["put", "hist/k", "one", "-w", "json"]);
    let r1 = serde_json::from_str::<serde_json::Value>(&put).unwrap()["header"]["revision"]
        .as_i64()
        .unwrap();
    ok(a, &["put", "hist/k", "two"]);
    let at = format!("--rev={r1}");
    assert_eq!(
        ok(b, &["get", "hist/k", &at, "--print-value-only"]).trim(),
        "one"
    );
    assert_eq!(
        ok(b, &["get", "hist/k", "--print-value-only"]).trim(),
        "two"
    );
    let (good, _, err) = etcdctl(&c, a, &["get", "hist/k", "--rev=999999999"], None);
    assert!(!good && err.contains("future revision"), "{err}");
}

#[test]
fn the_etcd_client_crate_works_unchanged() {
    let c = TestCluster::up("etcd-crate", &["--no-wan", "--colocate", "grp/"]);
    let urls = etcd_urls(&c);
    let ca = std::fs::read_to_string(c.cfg.resolve(&c.cfg.tls.ca)).unwrap();
    rt().block_on(async {
        let connect = |url: String| {
            let ca = ca.clone();
            async move {
                Client::connect(
                    [url],
                    Some(
                        ConnectOptions::new()
                            .with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(ca))),
                    ),
                )
                .await
                .expect("connects over TLS with the cluster CA")
            }
        };
        let mut a = connect(urls[1].clone()).await;
        let mut b = connect(urls[4].clone()).await;
        for (k, v) in [("cfg/b", "2"), ("cfg/a", "1"), ("cfg/c", "3"), ("zzz", "9")] {
            a.put(k, v, None).await.unwrap();
        }
        // A key on cfg/a's shard (a transaction stays within one shard).
        let shards = c.cfg.cluster.shards;
        let home = meridian_proxy::route::shard_for_key(b"cfg/a", shards);
        let near = (0..)
            .map(|i| format!("near/{i}"))
            .find(|k| meridian_proxy::route::shard_for_key(k.as_bytes(), shards) == home)
            .unwrap();
        a.put(near.as_str(), "3", None).await.unwrap();
        let first = a
            .put("cfg/a", "1b", Some(PutOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert_eq!(first.prev_key().unwrap().value(), b"1");
        // Linearizable reads through another region's proxy see every acknowledged write.
        let r = b
            .get("cfg/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let keys: Vec<&str> = r.kvs().iter().map(|k| k.key_str().unwrap()).collect();
        assert_eq!(keys, ["cfg/a", "cfg/b", "cfg/c"]);
        assert_eq!(r.count(), 3);
        let a_kv = r.kvs()[0].clone();
        assert_eq!((a_kv.value(), a_kv.version()), (&b"1b"[..], 2));
        assert!(a_kv.mod_revision() > a_kv.create_revision());
        assert!(r.header().unwrap().revision() >= a_kv.mod_revision());
        // Limit, count, sort by value descending, keys only, count only, serializable.
        let r = b
            .get("cfg/", Some(GetOptions::new().with_prefix().with_limit(2)))
            .await
            .unwrap();
        assert_eq!((r.kvs().len(), r.count(), r.more()), (2, 3, true));
        let r = b
            .get(
                "cfg/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Value, SortOrder::Descend)
                        .with_limit(1),
                ),
            )
            .await
            .unwrap();
        assert_eq!(r.kvs()[0].value(), b"3");
        let r = b
            .get(
                "cfg/",
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        assert!(r.kvs().iter().all(|k| k.value().is_empty()) && r.kvs().len() == 3);
        let r = b
            .get(
                "cfg/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap();
        assert_eq!((r.kvs().len(), r.count()), (0, 3));
        let r = b
            .get("cfg/b", Some(GetOptions::new().with_serializable()))
            .await
            .unwrap();
        assert!(
            r.kvs().len() <= 1,
            "a serializable read answers from a nearby replica"
        );
        // Transactions: compares on version, mod revision, create revision and value.
        let t = Txn::new()
            .when([
                Compare::version("cfg/a", CompareOp::Equal, 2),
                Compare::mod_revision("cfg/a", CompareOp::Equal, a_kv.mod_revision()),
                Compare::create_revision("cfg/a", CompareOp::Equal, a_kv.create_revision()),
                Compare::value("cfg/a", CompareOp::Greater, "1a"),
            ])
            .and_then([
                TxnOp::put("cfg/a", "1c", Some(PutOptions::new().with_prev_key())),
                TxnOp::get("cfg/a", None),
                TxnOp::delete(near.as_str(), Some(DeleteOptions::new().with_prev_key())),
            ])
            .or_else([TxnOp::get("cfg/a", None)]);
        let r = b.txn(t).await.unwrap();
        assert!(r.succeeded(), "every compare holds");
        let rs = r.op_responses();
        assert_eq!(rs.len(), 3);
        match &rs[0] {
            TxnOpResponse::Put(p) => assert_eq!(p.prev_key().unwrap().value(), b"1b"),
            o => panic!("{o:?}"),
        }
        match &rs[1] {
            TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"1c"),
            o => panic!("{o:?}"),
        }
        match &rs[2] {
            TxnOpResponse::Delete(d) => {
                assert_eq!(d.deleted(), 1);
                assert_eq!(d.prev_kvs()[0].value(), b"3");
            }
            o => panic!("{o:?}"),
        }
        // The same compares fail now: the failure branch runs and changes nothing.
        let t = Txn::new()
            .when([Compare::version("cfg/a", CompareOp::Equal, 2)])
            .and_then([TxnOp::put("cfg/a", "never", None)])
            .or_else([TxnOp::get("cfg/a", None)]);
        let r = a.txn(t).await.unwrap();
        assert!(!r.succeeded());
        let v = a.get("cfg/a", None).await.unwrap();
        assert_eq!(v.kvs()[0].value(), b"1c");
        // A prefix delete with the previous values.
        let d = a
            .delete(
                "cfg/",
                Some(DeleteOptions::new().with_prefix().with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!(d.deleted(), 3);
        let prev: Vec<&[u8]> = d.prev_kvs().iter().map(|k| k.key()).collect();
        assert_eq!(prev, [&b"cfg/a"[..], b"cfg/b", b"cfg/c"]);
        assert!(b.get(near.as_str(), None).await.unwrap().kvs().is_empty());
        // A transaction across shards is refused whole, with the reason.
        let other = (0..)
            .map(|i| format!("far/{i}"))
            .find(|k| meridian_proxy::route::shard_for_key(k.as_bytes(), shards) != home)
            .unwrap();
        let e = a
            .txn(Txn::new().and_then([
                TxnOp::put("cfg/a", "x", None),
                TxnOp::put(other.as_str(), "x", None),
            ]))
            .await
            .expect_err("a transaction across shards");
        assert!(e.to_string().contains("within one shard"), "{e}");
        assert!(b.get("cfg/a", None).await.unwrap().kvs().is_empty());
        assert_eq!(
            b.get("cfg/", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap()
                .count(),
            0
        );
        assert_eq!(b.get("zzz", None).await.unwrap().kvs()[0].value(), b"9");
        // A nested transaction (etcd's request_txn) and a span delete inside it, on the
        // co-located prefix grp/: the inner compare is judged against the state before the
        // transaction (grp/a still "1", although the outer branch has just put "2").
        for (k, v) in [
            ("grp/a", "1"),
            ("grp/b", "2"),
            ("grp/c", "3"),
            ("grp/d", "4"),
        ] {
            a.put(k, v, None).await.unwrap();
        }
        let t = Txn::new()
            .when([Compare::value("grp/a", CompareOp::Equal, "1")])
            .and_then([
                TxnOp::put("grp/a", "2", None),
                TxnOp::txn(
                    Txn::new()
                        .when([Compare::value("grp/a", CompareOp::Equal, "1")])
                        .and_then([
                            TxnOp::get("grp/a", None),
                            TxnOp::delete(
                                "grp/b",
                                Some(DeleteOptions::new().with_range("grp/d").with_prev_key()),
                            ),
                        ])
                        .or_else([TxnOp::put("grp/wrong", "x", None)]),
                ),
                TxnOp::get("grp/", Some(GetOptions::new().with_prefix())),
            ]);
        let r = b.txn(t).await.unwrap();
        assert!(r.succeeded());
        let rs = r.op_responses();
        assert_eq!(rs.len(), 3, "{rs:?}");
        let TxnOpResponse::Txn(inner) = &rs[1] else {
            panic!("{:?}", rs[1])
        };
        assert!(
            inner.succeeded(),
            "judged against the state before: {inner:?}"
        );
        let irs = inner.op_responses();
        match (&irs[0], &irs[1]) {
            (TxnOpResponse::Get(g), TxnOpResponse::Delete(d)) => {
                assert_eq!(g.kvs()[0].value(), b"2", "the read sees the outer put");
                assert_eq!(d.deleted(), 2);
                let prev: Vec<&[u8]> = d.prev_kvs().iter().map(|k| k.value()).collect();
                assert_eq!(prev, [&b"2"[..], b"3"]);
            }
            o => panic!("{o:?}"),
        }
        match &rs[2] {
            TxnOpResponse::Get(g) => {
                let kvs: Vec<(&[u8], &[u8])> =
                    g.kvs().iter().map(|k| (k.key(), k.value())).collect();
                assert_eq!(kvs, [(&b"grp/a"[..], &b"2"[..]), (b"grp/d", b"4")]);
                let revs: Vec<i64> = g.kvs().iter().map(|k| k.mod_revision()).collect();
                assert_eq!(revs[0], r.header().unwrap().revision(), "one revision");
            }
            o => panic!("{o:?}"),
        }
        assert!(a.get("grp/wrong", None).await.unwrap().kvs().is_empty());
        // A span delete inside a transaction that is not confined to its shard is refused.
        let e = a
            .txn(Txn::new().and_then([TxnOp::delete(
                "cfg/",
                Some(DeleteOptions::new().with_prefix()),
            )]))
            .await
            .expect_err("a span delete over several shards inside a transaction");
        assert!(e.to_string().contains("transaction's shard"), "{e}");
        // etcd's shape rules: a key put twice on one path (here once in a nested
        // transaction) is refused with etcd's words, and nothing is written.
        let e = a
            .txn(Txn::new().and_then([
                TxnOp::put("grp/dup", "1", None),
                TxnOp::txn(Txn::new().and_then([TxnOp::put("grp/dup", "2", None)])),
            ]))
            .await
            .expect_err("a key put twice in one transaction");
        assert!(
            e.to_string().contains("duplicate key given in txn request"),
            "{e}"
        );
        assert!(a.get("grp/dup", None).await.unwrap().kvs().is_empty());
        // Reads at a revision, through another region's proxy (its replica may not have
        // applied the last write yet: it is asked again until it has).
        let rev = |h: Option<&etcd_client::ResponseHeader>| h.unwrap().revision();
        let r1 = rev(a.put("hist/x", "1", None).await.unwrap().header());
        let r2 = rev(a.put("hist/x", "2", None).await.unwrap().header());
        let r3 = rev(a.delete("hist/x", None).await.unwrap().header());
        assert!(r1 < r2 && r2 < r3);
        let at = |r: i64| Some(GetOptions::new().with_revision(r));
        let value = |g: etcd_client::GetResponse| {
            g.kvs()
                .first()
                .map(|kv| kv.value_str().unwrap().to_string())
        };
        assert_eq!(
            value(b.get("hist/x", at(r1)).await.unwrap()).as_deref(),
            Some("1")
        );
        assert_eq!(
            value(b.get("hist/x", at(r2)).await.unwrap()).as_deref(),
            Some("2")
        );
        assert_eq!(
            value(b.get("hist/x", at(r3)).await.unwrap()),
            None,
            "deleted at r3"
        );
        assert_eq!(
            value(b.get("hist/x", at(r1 - 1)).await.unwrap()),
            None,
            "before r1"
        );
        let e = b
            .get("hist/x", at(r3 + 1_000_000))
            .await
            .expect_err("a future revision");
        assert!(e.to_string().contains("future revision"), "{e}");
        // Inside a transaction, a range at a revision reads history (not the transaction's
        // own writes), nested too; a future revision refuses it all, nothing written.
        let t = Txn::new().and_then([
            TxnOp::get("hist/x", at(r1)),
            TxnOp::put("hist/y", "new", None),
            TxnOp::txn(Txn::new().and_then([TxnOp::get("hist/x", at(r2))])),
        ]);
        let r = a.txn(t).await.unwrap();
        assert!(r.succeeded());
        let rs = r.op_responses();
        match &rs[0] {
            TxnOpResponse::Get(g) => assert_eq!(value(g.clone()).as_deref(), Some("1")),
            o => panic!("{o:?}"),
        }
        match &rs[2] {
            TxnOpResponse::Txn(t) => match &t.op_responses()[0] {
                TxnOpResponse::Get(g) => assert_eq!(value(g.clone()).as_deref(), Some("2")),
                o => panic!("{o:?}"),
            },
            o => panic!("{o:?}"),
        }
        assert_eq!(
            value(a.get("hist/y", None).await.unwrap()).as_deref(),
            Some("new")
        );
        let e = a
            .txn(Txn::new().and_then([
                TxnOp::get("hist/x", at(r3 + 1_000_000)),
                TxnOp::put("hist/z", "no", None),
            ]))
            .await
            .expect_err("a future revision inside a transaction");
        assert!(e.to_string().contains("future revision"), "{e}");
        assert!(a.get("hist/z", None).await.unwrap().kvs().is_empty());
        // Only reads of history: answered without the log.
        let r = a
            .txn(Txn::new().and_then([TxnOp::get("hist/x", at(r2))]))
            .await
            .unwrap();
        match &r.op_responses()[0] {
            TxnOpResponse::Get(g) => assert_eq!(value(g.clone()).as_deref(), Some("2")),
            o => panic!("{o:?}"),
        }
        let e = b
            .get("hist/", at(r1).map(|o| o.with_prefix()))
            .await
            .expect_err("a prefix over several shards at a revision");
        assert!(e.to_string().contains("one shard"), "{e}");
        // After a compaction past r2, r1 is gone (once the compaction reached b's replica).
        a.compact(r3, None).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match b.get("hist/x", at(r1)).await {
                Err(e) if e.to_string().contains("compacted") => break,
                r => assert!(
                    std::time::Instant::now() < deadline,
                    "still readable: {r:?}"
                ),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(value(b.get("hist/x", at(r3)).await.unwrap()), None);

        // The members are the proxies.
        let m = a.member_list().await.unwrap();
        assert_eq!(m.members().len(), 5);
        let s = a.status().await.unwrap();
        assert_eq!(s.version(), "3.5.0");
        // Bad input: an empty key, a revision of another shard in a compare.
        assert!(a.put("", "v", None).await.is_err());
        let foreign = a_kv.mod_revision() + 1;
        let e = a
            .txn(Txn::new().when([Compare::mod_revision("cfg/a", CompareOp::Less, foreign)]))
            .await
            .expect_err("a revision of another shard is refused");
        assert!(e.to_string().contains("shard"), "{e}");
    });
}
