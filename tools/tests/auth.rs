//! Authentication and authorization at the proxy over real processes (issue "Reliability and
//! security"): `cluster up --auth` writes auth.json; unauthenticated, wrong-token, foreign-CA
//! and out-of-prefix requests are refused with the documented codes (HTTP 401/403, gRPC
//! UNAUTHENTICATED/PERMISSION_DENIED), change nothing, are counted, and are logged without the
//! secret; a client certificate of the cluster CA identifies its client.
mod common;
#[path = "common/https.rs"]
mod https;

use common::*;
use https::{tls_config, Conn};
use meridian_replica::wire::pb;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TLS client config presenting `cert`/`key` (PEM files) and trusting `ca`.
fn with_client_cert(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in meridian_replica::tls::load_certs(ca).unwrap() {
        roots.add(c).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            meridian_replica::tls::load_certs(cert).unwrap(),
            meridian_replica::tls::load_key(key).unwrap(),
        )
        .unwrap(),
    )
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn only_granted_clients_read_and_write_and_refusals_change_nothing() {
    let c = TestCluster::up("auth", &["--no-wan", "--auth"]);
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("endpoints.json")).unwrap())
            .unwrap();
    let auth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("auth.json")).unwrap()).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(c.dir.join("auth.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "auth.json is the owner's only");
    let root = auth["root"]["token"].as_str().unwrap().to_string();
    let reader = auth["reader"]["token"].as_str().unwrap().to_string();
    assert_eq!(auth["reader"]["read_prefixes"][0], "public/");
    let toml = std::fs::read_to_string(c.dir.join("cluster.toml")).unwrap();
    assert!(
        !toml.contains(&root) && !toml.contains(&reader),
        "the config keeps hashes only"
    );
    let proxy = e["proxies"]["eu-west-1"]["http"]
        .as_str()
        .unwrap()
        .to_string();
    let grpc = e["proxies"]["eu-west-1"]["grpc"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = c.cfg.resolve(&c.cfg.tls.ca);
    let certs = c.cfg.resolve(&c.cfg.tls.cert_dir);
    // Another CA with its own client: trusted by nobody here.
    let foreign = c.dir.join("foreign");
    let out = Command::new(bin())
        .args(["certs", "--out"])
        .arg(&foreign)
        .args(["--sites", "x", "--clients", "meridian-tool"])
        .output()
        .unwrap();
    assert!(out.status.success());

    rt().block_on(async {
        let mut anon = Conn::open(&proxy, tls_config(&ca)).await.unwrap();
        // Root writes (the cluster may still be electing: retry briefly).
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let r = anon
                .request_with(
                    "PUT",
                    "/v1/kv/public/a",
                    b"1".to_vec(),
                    &[("authorization", &bearer(&root))],
                )
                .await
                .unwrap();
            if r.status == 200 {
                break;
            }
            assert!(Instant::now() < end, "root never wrote: {}", r.status);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = anon
            .request_with(
                "PUT",
                "/v1/kv/private/s",
                b"secret".to_vec(),
                &[("authorization", &bearer(&root))],
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);

        // No credential, a wrong token, a malformed header: 401, with a challenge.
        for (m, path, h) in [
            ("GET", "/v1/kv/public/a", None),
            ("PUT", "/v1/kv/public/a", None),
            ("GET", "/v1/kv/public/a", Some("Bearer not-a-token".to_string())),
            ("PUT", "/v1/kv/public/a", Some(bearer("wrong"))),
            ("GET", "/v1/kv/public/a", Some(root.clone())),
            ("GET", "/v1/kv?prefix=public/", None),
            ("GET", "/v1/cluster/rtt", None),
        ] {
            let hs: Vec<(&str, &str)> = h.iter().map(|v| ("authorization", v.as_str())).collect();
            let r = anon.request_with(m, path, b"2".to_vec(), &hs).await.unwrap();
            assert_eq!(r.status, 401, "{m} {path} {h:?}");
            assert!(r.header("www-authenticate").is_some());
        }
        let r = anon.request("GET", "/healthz", vec![]).await.unwrap();
        assert_eq!(r.status, 200, "health checks need no credential");

        // The reader: reads public/, nothing else; a range must stay inside the grant.
        let rd = bearer(&reader);
        let h = [("authorization", rd.as_str())];
        let r = anon.request_with("GET", "/v1/kv/public/a", vec![], &h).await.unwrap();
        assert_eq!((r.status, &*r.body), (200, &b"1"[..]));
        let r = anon
            .request_with("GET", "/v1/kv?prefix=public/", vec![], &h)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        for (m, path) in [
            ("PUT", "/v1/kv/public/a"),
            ("DELETE", "/v1/kv/public/a"),
            ("GET", "/v1/kv/private/s"),
            ("GET", "/v1/kv?prefix=pub"),
            ("GET", "/v1/kv?prefix="),
        ] {
            let r = anon.request_with(m, path, b"2".to_vec(), &h).await.unwrap();
            assert_eq!(r.status, 403, "{m} {path}");
            assert!(!String::from_utf8_lossy(&r.body).contains(&reader));
        }
        let txn = br#"{"compare":[{"key":"public/a","version":1}],"success":[{"put":{"key":"public/a","value":"3"}}]}"#;
        let r = anon
            .request_with("POST", "/v1/txn", txn.to_vec(), &h)
            .await
            .unwrap();
        assert_eq!(r.status, 403, "a txn writing outside the grant is refused whole");
        // Nothing the refusals tried happened.
        let r = anon
            .request_with("GET", "/v1/kv/public/a", vec![], &[("authorization", &bearer(&root))])
            .await
            .unwrap();
        assert_eq!((r.status, &*r.body), (200, &b"1"[..]));

        // The cluster CA's `meridian-tool` client certificate is root (cluster up --auth).
        let tool = with_client_cert(
            &ca,
            &certs.join("meridian-tool.pem"),
            &certs.join("meridian-tool.key"),
        );
        let mut by_cert = Conn::open(&proxy, tool).await.unwrap();
        let r = by_cert
            .request("PUT", "/v1/kv/private/t", b"by-cert".to_vec())
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        // A site's certificate is not a client identity.
        let site = with_client_cert(&ca, &certs.join("us-east-1.pem"), &certs.join("us-east-1.key"));
        let mut as_site = Conn::open(&proxy, site).await.unwrap();
        let r = as_site.request("GET", "/v1/kv/public/a", vec![]).await.unwrap();
        assert_eq!(r.status, 401);
        // A client certificate of a foreign CA: the handshake fails, nothing is served.
        let evil = with_client_cert(
            &ca,
            &foreign.join("meridian-tool.pem"),
            &foreign.join("meridian-tool.key"),
        );
        let refused = match Conn::open(&proxy, evil).await {
            Err(_) => true,
            Ok(mut conn) => conn
                .request("PUT", "/v1/kv/public/a", b"evil".to_vec())
                .await
                .is_err(),
        };
        assert!(refused, "a foreign CA's certificate must not get through");

        // gRPC: the same rules, as UNAUTHENTICATED and PERMISSION_DENIED.
        let pem = std::fs::read_to_string(&ca).unwrap();
        let ch = tonic::transport::Endpoint::from_shared(grpc.clone())
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut kv = pb::kv_client::KvClient::new(ch);
        let get = |key: &str, token: Option<&str>| {
            let mut r = tonic::Request::new(pb::GetRequest {
                key: key.as_bytes().to_vec(),
                consistency: String::new(),
                read_mode: String::new(),
            });
            if let Some(t) = token {
                r.metadata_mut()
                    .insert("authorization", bearer(t).parse().unwrap());
            }
            r
        };
        let e = kv.get(get("public/a", None)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = kv.get(get("public/a", Some("wrong"))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = kv.get(get("private/s", Some(&reader))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let mut put = tonic::Request::new(pb::PutRequest {
            key: b"public/a".to_vec(),
            value: b"grpc".to_vec(),
        });
        put.metadata_mut()
            .insert("authorization", bearer(&reader).parse().unwrap());
        let e = kv.put(put).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let ok = kv.get(get("public/a", Some(&reader))).await.unwrap().into_inner();
        assert_eq!(ok.kv.unwrap().value, b"1");
        let ok = kv.get(get("private/s", Some(&root))).await.unwrap().into_inner();
        assert_eq!(ok.kv.unwrap().value, b"secret");
    });

    // Counted, and logged without the secret.
    let metrics_url = e["proxies"]["eu-west-1"]["metrics"].as_str().unwrap();
    let rest = metrics_url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    use std::io::{Read, Write};
    write!(s, "GET /{path} HTTP/1.0\r\nhost: {host}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let count = |reason: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with("meridian_proxy_auth_refusals_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    // 7 HTTP 401s + the site certificate + 2 gRPC.
    assert!(
        count("unauthenticated") >= 10.0,
        "{}",
        count("unauthenticated")
    );
    // 6 HTTP 403s + 2 gRPC.
    assert!(count("forbidden") >= 8.0, "{}", count("forbidden"));
    let log = c.log("proxy-eu-west-1");
    assert!(log.contains("request refused"), "refusals are logged");
    assert!(log.contains("AUTHENTICATION") || log.contains("authentication on"));
    assert!(
        !log.contains(&root) && !log.contains(&reader),
        "never the token"
    );
}
