//! The regional proxy under load and bad input, over real processes (issue: regional proxy,
//! "Done means"): one connection per site for a thousand clients, overload shed with 503,
//! documented errors that change nothing, 1 MiB writes, oversized transactions, clients that
//! hang up mid-write. Tests run one at a time.
mod common;
#[path = "common/https.rs"]
mod https;

use common::*;
use https::{tls_config, Conn};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// Established TCP connections from `pid` to 127.0.0.1:`port`.
fn connections(pid: i32, port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(l) = std::fs::read_link(e.path()) {
            let l = l.to_string_lossy().into_owned();
            if let Some(i) = l.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.insert(i.to_string());
            }
        }
    }
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let rem_port = f[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if f[3] == "01" && rem_port == Some(port) && inodes.contains(f[9]) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn a_thousand_clients_share_one_connection_per_site() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::up("proxy-conns", &["--no-wan"]);
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    let url = proxy_url(&c, "eu-west-1");
    let pid = c.pid("proxy-eu-west-1");
    rt().block_on(async {
        let mut conns = Vec::new();
        for _ in 0..1000 {
            conns.push(Conn::open(&url, tls.clone()).await.expect("connect"));
        }
        let mut tasks = Vec::new();
        for (i, mut conn) in conns.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let r = conn
                    .request("PUT", &format!("/v1/kv/conn-{i}"), b"x".to_vec())
                    .await
                    .unwrap();
                assert_eq!(r.status, 200);
                let r = conn
                    .request("GET", &format!("/v1/kv/conn-{i}?read_mode=quorum"), vec![])
                    .await
                    .unwrap();
                assert_eq!(r.status, 200);
                conn // keep it open
            }));
        }
        let mut open = Vec::new();
        for t in tasks {
            open.push(t.await.unwrap());
        }
        assert_eq!(open.len(), 1000);
        for s in &c.cfg.sites {
            assert_eq!(
                connections(pid, s.addr.port()),
                1,
                "proxy connections to {}",
                s.name
            );
        }
    });
}

/// A transaction touching "guarded" and a key on another shard.
fn cross_shard_txn() -> Vec<u8> {
    let home = meridian_proxy::route::shard_for_key(b"guarded", 4);
    let other = (0..)
        .map(|i| format!("other-shard-{i}"))
        .find(|k| meridian_proxy::route::shard_for_key(k.as_bytes(), 4) != home)
        .unwrap();
    format!(r#"{{"success": [{{"put": {{"key": "guarded", "value": "t"}}}}, {{"put": {{"key": "{other}", "value": "t"}}}}]}}"#).into_bytes()
}

fn rss_kb(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

#[test]
fn overload_is_shed_fast_with_503_and_accepted_writes_keep_their_latency() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::up("proxy-overload", &["--proxy-outstanding", "16"]);
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    let url = proxy_url(&c, "us-east-1");
    let pid = c.pid("proxy-us-east-1");
    let rt = rt();
    // Unloaded latency of a write from the leader's region.
    let base = rt.block_on(async {
        let mut conn = Conn::open(&url, tls.clone()).await.unwrap();
        let mut lat = Vec::new();
        for i in 0..10 {
            let t = Instant::now();
            assert_eq!(
                conn.request("PUT", &format!("/v1/kv/calm-{i}"), b"x".to_vec())
                    .await
                    .unwrap()
                    .status,
                200
            );
            lat.push(t.elapsed());
        }
        lat.sort();
        lat[5]
    });
    let rss_before = rss_kb(pid);
    let (ok, shed, ok_lat, shed_lat) = rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..300 {
            let (url, tls) = (url.clone(), tls.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(&url, tls).await.unwrap();
                let mut out = Vec::new();
                let end = Instant::now() + Duration::from_secs(4);
                let mut i = 0;
                while Instant::now() < end {
                    i += 1;
                    let t = Instant::now();
                    let r = conn
                        .request("PUT", &format!("/v1/kv/load-{w}-{i}"), vec![7; 100])
                        .await
                        .unwrap();
                    out.push((r.status, t.elapsed(), r.header("retry-after")));
                }
                out
            }));
        }
        let (mut ok, mut shed, mut ok_lat, mut shed_lat) = (0, 0, Vec::new(), Vec::new());
        for t in tasks {
            for (status, lat, retry) in t.await.unwrap() {
                match status {
                    200 => {
                        ok += 1;
                        ok_lat.push(lat);
                    }
                    503 => {
                        assert_eq!(retry.as_deref(), Some("1"), "503 without Retry-After");
                        shed += 1;
                        shed_lat.push(lat);
                    }
                    s => panic!("unexpected status {s}"),
                }
            }
        }
        ok_lat.sort();
        shed_lat.sort();
        (ok, shed, ok_lat, shed_lat)
    });
    assert!(
        shed > ok,
        "offered load far beyond capacity should be mostly shed: {ok} ok, {shed} shed"
    );
    assert!(ok > 50, "accepted work continues: {ok}");
    let shed_p50 = shed_lat[shed_lat.len() / 2];
    assert!(
        shed_p50 < Duration::from_millis(20),
        "shedding is not fast: {shed_p50:?}"
    );
    let ok_p50 = ok_lat[ok_lat.len() / 2];
    assert!(
        ok_p50 < base * 2 + Duration::from_millis(20),
        "accepted writes slowed from {base:?} to {ok_p50:?}"
    );
    let rss_after = rss_kb(pid);
    assert!(
        rss_after < rss_before + 100_000,
        "proxy memory grew from {rss_before} kB to {rss_after} kB"
    );
}

#[test]
fn bad_input_gets_its_documented_error_and_changes_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::up("proxy-bad", &["--no-wan"]);
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    rt().block_on(async {
        let mut p = Conn::open(&proxy_url(&c, "us-east-1"), tls.clone()).await.unwrap();
        assert_eq!(p.request("PUT", "/v1/kv/guarded", b"original".to_vec()).await.unwrap().status, 200);
        let long_key = format!("/v1/kv/{}", "k".repeat(5000));
        let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
            ("PUT", long_key.clone(), b"x".to_vec(), 400),
            ("PUT", "/v1/kv/guarded".into(), vec![b'x'; (1 << 20) + 10], 413),
            ("PUT", "/v1/kv/guarded?colour=red".into(), b"x".to_vec(), 400),
            ("GET", "/v1/kv/guarded?read_mode=bogus".into(), vec![], 400),
            ("GET", "/v1/kv/guarded?consistency=eventual".into(), vec![], 400),
            ("GET", "/v1/kv/guarded?read_mode=lease".into(), vec![], 400),
            ("GET", "/v1/kv/guarded?format=xml".into(), vec![], 400),
            ("GET", "/v1/kv?limit=0".into(), vec![], 400),
            ("POST", "/v1/txn".into(), b"{not json".to_vec(), 400),
            ("POST", "/v1/txn".into(), br#"{"success": [{"put": {"key": "guarded"}}]}"#.to_vec(), 400),
            ("POST", "/v1/txn".into(), cross_shard_txn(), 400),
            ("PATCH", "/v1/kv/guarded".into(), b"x".to_vec(), 405),
            ("GET", "/v2/nothing".into(), vec![], 404),
            ("PUT", "/v1/kv/".into(), b"x".to_vec(), 400),
            ("PUT", "/v1/kv/%zz".into(), b"x".to_vec(), 400),
        ];
        for (m, path, body, want) in cases {
            let r = p.request(m, &path, body).await;
            let r = match r {
                Ok(r) => r,
                // A refused oversized body may close the connection: reconnect and go on.
                Err(e) => panic!("{m} {}: {e}", &path[..path.len().min(40)]),
            };
            assert_eq!(r.status, want, "{m} {}: {}", &path[..path.len().min(40)], String::from_utf8_lossy(&r.body));
            let msg: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert!(msg["error"].as_str().is_some_and(|e| !e.is_empty()), "no error message");
        }
        let r = p.request("GET", "/v1/kv/guarded?read_mode=leader", vec![]).await.unwrap();
        assert_eq!(r.body, b"original".as_slice(), "a rejected request changed the value");
        let r = p.request("GET", "/v1/kv?prefix=other-shard", vec![]).await.unwrap();
        let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(j["kvs"].as_array().unwrap().len(), 0, "a refused transaction wrote something");
        // And the good paths of the same endpoints work.
        let ok = br#"{"compare": [{"key": "guarded", "value": "original"}], "success": [{"put": {"key": "guarded", "value": "swapped"}}], "failure": []}"#;
        let r = p.request("POST", "/v1/txn", ok.to_vec()).await.unwrap();
        let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(j["succeeded"], true, "{j}");
        let r = p.request("GET", "/v1/kv?prefix=guard", vec![]).await.unwrap();
        let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(j["kvs"][0]["value"], "swapped");

        // The native gRPC API: same operations, same limits, path and revision in metadata.
        use meridian_replica::wire::pb;
        let grpc = endpoints(&c)["proxies"]["us-east-1"]["grpc"].as_str().unwrap().to_string();
        let ca = std::fs::read_to_string(c.cfg.resolve(&c.cfg.tls.ca)).unwrap();
        let ch = tonic::transport::Endpoint::from_shared(grpc)
            .unwrap()
            .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca)).domain_name("localhost"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut kv = pb::kv_client::KvClient::new(ch);
        let put = kv.put(pb::PutRequest { key: b"grpc-key".to_vec(), value: b"g1".to_vec() }).await.unwrap();
        assert!(put.metadata().get("x-meridian-revision").is_some());
        for mode in ["leader", "quorum", "auto"] {
            let got = kv.get(pb::GetRequest { key: b"grpc-key".to_vec(), consistency: String::new(), read_mode: mode.into() }).await.unwrap();
            let path = got.metadata().get("x-meridian-read-path").unwrap().to_str().unwrap().to_string();
            let got = got.into_inner();
            assert!(got.found);
            assert_eq!(got.kv.unwrap().value, b"g1");
            assert_eq!(got.read_path, path);
        }
        let e = kv.put(pb::PutRequest { key: vec![b'k'; 5000], value: b"x".to_vec() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = kv.get(pb::GetRequest { key: b"grpc-key".to_vec(), consistency: String::new(), read_mode: "bogus".into() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let t = kv
            .txn(pb::TxnRequest {
                compare: vec![pb::Compare { key: b"grpc-key".to_vec(), target: Some(pb::compare::Target::Value(b"g1".to_vec())) }],
                success: vec![pb::TxnOp { op: Some(pb::txn_op::Op::Put(pb::KeyValue { key: b"grpc-key".to_vec(), value: b"g2".to_vec(), ..Default::default() })) }],
                failure: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(t.succeeded);
        let d = kv.delete(pb::DeleteRequest { key: b"grpc-key".to_vec() }).await.unwrap().into_inner();
        assert!(d.deleted);
        let r = kv.range(pb::RangeRequest { prefix: b"guard".to_vec(), limit: 10, consistency: String::new(), read_mode: String::new() }).await.unwrap().into_inner();
        assert_eq!(r.kvs.len(), 1);
    });
}

/// Defect 5: concurrent 1 MiB writes (the documented maximum) form batches under the replica's
/// message limit and all succeed, instead of one oversized batch refused and retried to 504.
#[test]
fn concurrent_one_mebibyte_writes_all_succeed() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::up("proxy-bigwrites", &["--no-wan", "--shards", "1"]);
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    let url = proxy_url(&c, "us-east-1");
    let statuses = rt().block_on(async {
        let mut tasks = Vec::new();
        for t in 0..24u32 {
            let (url, tls) = (url.clone(), tls.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(&url, tls).await.unwrap();
                let body = vec![b'a' + (t % 26) as u8; 1 << 20];
                conn.request("PUT", &format!("/v1/kv/big{t}"), body)
                    .await
                    .map(|r| r.status)
                    .unwrap_or(0)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

/// Defect 6: a transaction that passes the proxy's body limit but encodes beyond the replica's
/// command limit is refused at once with 413, and changes nothing.
#[test]
fn an_oversized_transaction_is_refused_with_413_at_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::up("proxy-bigtxn", &["--no-wan", "--shards", "1"]);
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    let url = proxy_url(&c, "us-east-1");
    rt().block_on(async {
        let mut conn = Conn::open(&url, tls).await.unwrap();
        // Two puts of 600 KiB: under the 1 MiB + 64 KiB body limit, over one command's limit
        // once both values are in it... and a third to be sure.
        let v = "x".repeat(350 << 10);
        let body = serde_json::json!({"success": [
            {"put": {"key": "t1", "value": v}}, {"put": {"key": "t1", "value": v}},
            {"put": {"key": "t1", "value": v}}]});
        let t0 = Instant::now();
        let r = conn
            .request("POST", "/v1/txn", body.to_string().into_bytes())
            .await
            .unwrap();
        assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "refused only after {:?}",
            t0.elapsed()
        );
        let r = conn.request("GET", "/v1/kv/t1", vec![]).await.unwrap();
        assert_eq!(r.status, 404, "nothing was written");
    });
}

/// An HTTP/2 connection to a proxy: dropping a request's future resets its stream, which
/// cancels the request at the proxy (a client hanging up).
async fn h2(
    url: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let host = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let mut cfg = (*tls).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// Defect 4: clients hanging up mid-write return their exactly-once identity to the pool. More
/// hung-up writes than the pool holds (8192), then every write still succeeds (it used to get
/// 503 for minutes once the leaked identities ran out).
#[test]
fn clients_hanging_up_mid_write_do_not_exhaust_the_identity_pool() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::up("proxy-hangup", &[]);
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    let url = proxy_url(&c, "us-east-1");
    let put = |i: u32| {
        http::Request::builder()
            .method("PUT")
            .uri(format!("{url}/v1/kv/hang{}", i % 50))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
            .unwrap()
    };
    let (sent, after) = rt().block_on(async {
        let sender = h2(&url, tls.clone()).await;
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
        let mut tasks = Vec::new();
        for i in 0..9000u32 {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let mut s = sender.clone();
            let req = put(i);
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                if s.ready().await.is_err() {
                    return 0;
                }
                // Hang up 20 ms in: the write (about 70 ms over the emulated WAN) is in flight.
                let r = tokio::time::timeout(Duration::from_millis(20), s.send_request(req)).await;
                u32::from(r.is_err())
            }));
        }
        let mut sent = 0;
        for t in tasks {
            sent += t.await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut after = Vec::new();
        for i in 0..20 {
            let mut s = sender.clone();
            s.ready().await.unwrap();
            let r = s.send_request(put(100_000 + i)).await.unwrap();
            after.push(r.status().as_u16());
        }
        (sent, after)
    });
    assert!(
        sent > 8192,
        "only {sent} writes were still in flight after 20 ms: the rest were refused at once (identities exhausted)"
    );
    assert!(after.iter().all(|s| *s == 200), "{after:?}");
}
