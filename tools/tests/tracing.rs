//! Request tracing over real processes (issue "Operate it"): a client's `traceparent` is
//! continued by the proxy's request span, carried to the replicas in gRPC metadata, and every
//! span of the chain (client → proxy request → proxy batch → leader replica; or proxy request →
//! each replica a quorum read asks) names its parent, so one trace id finds the request's log
//! lines in every process it touched.
mod common;
#[path = "common/https.rs"]
mod https;

use common::*;
use https::{tls_config, Conn};
use std::time::{Duration, Instant};

const FILTER: &str = "info,meridian_proxy=debug,meridian_replica::node::service=debug";

/// The field `name` of a span line (`name=value`, value up to the next space or brace).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=");
    let i = line.find(&pat).or_else(|| {
        let brace = format!("{{{name}=");
        line.find(&brace)
    })? + pat.len();
    let rest = &line[i..];
    let end = rest.find([' ', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// Closed spans named `span` with trace id `trace` in `log`.
fn spans<'a>(log: &'a str, span: &str, trace: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(&format!("{span}{{")) && l.contains(" close "))
        .filter(|l| field(l, "trace_id") == Some(trace))
        .collect()
}

/// Waits until `f` finds something in the logs (span lines are written when a span closes,
/// which may be just after the reply left).
fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "spans never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_client_trace_is_continued_by_the_proxy_and_every_replica_it_asks() {
    let c = TestCluster::up_env("tracing", &["--no-wan"], &[("RUST_LOG", FILTER)]);
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("endpoints.json")).unwrap())
            .unwrap();
    let proxy = e["proxies"]["us-east-1"]["http"]
        .as_str()
        .unwrap()
        .to_string();
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    let proxy_log = || c.log("proxy-us-east-1");
    let replica_logs = || {
        c.site_names()
            .iter()
            .map(|s| (s.clone(), c.log(s)))
            .collect::<Vec<_>>()
    };

    let write_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let read_trace = "0af7651916cd43dd8448eb211c80319c";
    let (put, get, untraced, malformed) = rt().block_on(async {
        let mut conn = Conn::open(&proxy, tls).await.unwrap();
        // Warm up: the proxy learns the leaders.
        for i in 0..20 {
            let r = conn
                .request("PUT", &format!("/v1/kv/warm{i}"), b"v".to_vec())
                .await
                .unwrap();
            if r.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let tp = format!("00-{write_trace}-{client_span}-01");
        let put = conn
            .request_with(
                "PUT",
                "/v1/kv/traced",
                b"x".to_vec(),
                &[("traceparent", &tp)],
            )
            .await
            .unwrap();
        let tp = format!("00-{read_trace}-{client_span}-01");
        let get = conn
            .request_with(
                "GET",
                "/v1/kv/traced?read_mode=quorum",
                vec![],
                &[("traceparent", &tp)],
            )
            .await
            .unwrap();
        let untraced = conn.request("GET", "/v1/kv/traced", vec![]).await.unwrap();
        let malformed = conn
            .request_with(
                "GET",
                "/v1/kv/traced",
                vec![],
                &[("traceparent", "00-zz-not-a-trace")],
            )
            .await
            .unwrap();
        (put, get, untraced, malformed)
    });
    assert_eq!(put.status, 200);
    assert_eq!(get.status, 200);
    assert_eq!(
        get.header("x-meridian-read-path").as_deref(),
        Some("quorum")
    );
    assert_eq!(
        put.header("x-meridian-trace-id").as_deref(),
        Some(write_trace)
    );
    assert_eq!(
        get.header("x-meridian-trace-id").as_deref(),
        Some(read_trace)
    );

    // The write: client span → proxy request span → batch span → the leader's replica span.
    let request = eventually(|| {
        spans(&proxy_log(), "request", write_trace)
            .pop()
            .map(String::from)
    });
    assert_eq!(
        field(&request, "parent_span"),
        Some(client_span),
        "{request}"
    );
    assert_eq!(field(&request, "op"), Some("put"), "{request}");
    assert_eq!(field(&request, "outcome"), Some("ok"), "{request}");
    let request_span = field(&request, "span_id").unwrap().to_string();
    assert_ne!(request_span, client_span);
    let batch = eventually(|| {
        spans(&proxy_log(), "batch", write_trace)
            .pop()
            .map(String::from)
    });
    assert_eq!(
        field(&batch, "parent_span"),
        Some(request_span.as_str()),
        "{batch}"
    );
    assert!(field(&batch, "request_spans")
        .unwrap()
        .contains(&request_span));
    let batch_span = field(&batch, "span_id").unwrap().to_string();
    let at_replicas = eventually(|| {
        let hits: Vec<(String, String)> = replica_logs()
            .into_iter()
            .flat_map(|(site, log)| {
                spans(&log, "replica_request", write_trace)
                    .into_iter()
                    .map(|l| (site.clone(), l.to_string()))
                    .collect::<Vec<_>>()
            })
            .filter(|(_, l)| field(l, "outcome") == Some("ok"))
            .collect();
        (!hits.is_empty()).then_some(hits)
    });
    for (site, l) in &at_replicas {
        assert_eq!(
            field(l, "parent_span"),
            Some(batch_span.as_str()),
            "{site}: {l}"
        );
        assert_eq!(field(l, "rpc"), Some("submit"), "{site}: {l}");
    }

    // The quorum read: one proxy span, whose id every asked replica names as its parent; a
    // majority of the five answered it.
    let request = eventually(|| {
        spans(&proxy_log(), "request", read_trace)
            .pop()
            .map(String::from)
    });
    assert_eq!(field(&request, "path"), Some("quorum"), "{request}");
    let calls: usize = field(&request, "calls").unwrap().parse().unwrap();
    assert!(calls >= 3, "a quorum read asks a majority: {request}");
    let read_span = field(&request, "span_id").unwrap().to_string();
    let sites = eventually(|| {
        let sites: Vec<String> = replica_logs()
            .into_iter()
            .filter(|(_, log)| {
                spans(log, "replica_request", read_trace)
                    .iter()
                    .any(|l| field(l, "parent_span") == Some(read_span.as_str()))
            })
            .map(|(s, _)| s)
            .collect();
        (sites.len() >= 3).then_some(sites)
    });
    assert!(sites.len() >= 3, "{sites:?}");

    // Without a (valid) traceparent, a new trace starts and is reported to the client.
    for r in [&untraced, &malformed] {
        assert_eq!(r.status, 200);
        let id = r.header("x-meridian-trace-id").expect("a trace id");
        assert_eq!(id.len(), 32);
        assert_ne!(id, write_trace);
        let root = eventually(|| spans(&proxy_log(), "request", &id).pop().map(String::from));
        assert_eq!(field(&root, "parent_span"), Some(""), "{root}");
    }
    assert_ne!(
        untraced.header("x-meridian-trace-id"),
        malformed.header("x-meridian-trace-id")
    );
}
