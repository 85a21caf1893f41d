//! The nemesis runs' workload: clients through the native HTTPS API (registers and list
//! appends), clients through the etcd v3 edge, and a watcher of the etcd registers with the
//! check of what it saw. Each records a history for the linearizability and list checkers.
use super::https::Conn;
use meridian_testkit::history::{HistoryOp, OpKind, Outcome as HOutcome};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Register keys (puts and linearizable gets) and list keys (appends of unique elements in
/// one-operation transactions, and reads of the whole list).
pub const REGISTERS: u64 = 6;
pub const LISTS: u64 = 4;

/// One client through one proxy until `stop`, recording each operation: it takes turns with
/// a put, a get, an append and a list read.
pub async fn client(
    url: String,
    tls: Arc<rustls::ClientConfig>,
    process: u64,
    start: Instant,
    stop: Arc<AtomicBool>,
    reads_only: bool,
) -> Vec<HistoryOp> {
    let mut h = Vec::new();
    let mut conn: Option<Conn> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        if conn.is_none() {
            conn = Conn::open(&url, tls.clone()).await.ok();
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let list = !reads_only && i % 4 >= 2;
        let write = !reads_only && i.is_multiple_of(2);
        let key = if list {
            format!("nem-list-{}", (process * 3 + i / 4) % LISTS)
        } else {
            format!("nem-{}", (process * 7 + i) % REGISTERS)
        };
        let v = if list {
            format!(",p{process}-{i}")
        } else {
            format!("p{process}-{i}")
        };
        let (method, path, body) = match (write, list) {
            (true, false) => ("PUT", format!("/v1/kv/{key}"), v.clone().into_bytes()),
            (true, true) => (
                "POST",
                "/v1/txn".to_string(),
                serde_json::json!({"success": [{"append": {"key": key, "value": v}}]})
                    .to_string()
                    .into_bytes(),
            ),
            (false, _) => ("GET", format!("/v1/kv/{key}"), vec![]),
        };
        let c = conn.as_mut().unwrap();
        let invoke = start.elapsed().as_nanos() as u64;
        let resp =
            tokio::time::timeout(Duration::from_secs(8), c.request(method, &path, body)).await;
        let complete = start.elapsed().as_nanos() as u64;
        let resp = match resp {
            Ok(Ok(r)) => Some(r),
            _ => {
                conn = None;
                None
            }
        };
        let wop = if list { OpKind::Append } else { OpKind::Put };
        let (op, value, outcome, read) = match (&resp, write) {
            (Some(r), true) if r.status == 200 => (wop, Some(v), HOutcome::Ok, None),
            // Refused before it reached the log (overload, bad request): no effect.
            (Some(r), true) if r.status == 503 || r.status == 400 => {
                (wop, Some(v), HOutcome::Fail, None)
            }
            (_, true) => (wop, Some(v), HOutcome::Unknown, None),
            (Some(r), false) if r.status == 200 || r.status == 404 => (
                OpKind::Get,
                None,
                HOutcome::Ok,
                (r.status == 200).then(|| String::from_utf8_lossy(&r.body).into_owned()),
            ),
            (_, false) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        h.push(HistoryOp {
            process,
            op,
            key,
            value,
            expect: None,
            invoke_ns: invoke,
            complete_ns: complete,
            outcome,
            read,
            path: None,
        });
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    h
}

/// Register keys written and read through the etcd v3 edge (etcd-client crate).
pub const ETCD_REGISTERS: u64 = 3;

/// What a watcher of the etcd registers saw: per key, (mod revision, value) of each put event
/// in arrival order, and whether the history was compacted under it (then completeness is not
/// checked for that key, order still is).
pub type Watched = Vec<(Vec<(i64, String)>, bool)>;

/// Watches every etcd register through a proxy's etcd v3 endpoint from revision 1 until
/// `stop`, resuming each key from its last revision + 1 whenever the stream breaks (a proxy
/// kill, a partition): the client's side of "no gap, no duplicate, also across a proxy
/// restart".
pub async fn etcd_watcher(url: String, ca: String, stop: Arc<AtomicBool>) -> Watched {
    use etcd_client::{Certificate, Client, ConnectOptions, TlsOptions, WatchOptions};
    let n = ETCD_REGISTERS as usize;
    let mut seen: Watched = vec![(Vec::new(), false); n];
    // Per key: the revision to resume from (after the last event, or the compaction point).
    let mut resume: Vec<i64> = vec![1; n];
    while !stop.load(Ordering::Relaxed) {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(ca.clone()))
                    .domain_name("localhost"),
            );
        let Ok(Ok(mut client)) = tokio::time::timeout(
            Duration::from_secs(3),
            Client::connect([url.clone()], Some(opts)),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(Ok(mut ws)) = tokio::time::timeout(
            Duration::from_secs(3),
            client.watch(
                "nem-etcd-0",
                Some(WatchOptions::new().with_start_revision(resume[0])),
            ),
        )
        .await
        else {
            continue;
        };
        let mut ok = true;
        for (k, from) in resume.iter().enumerate().skip(1) {
            let opts = WatchOptions::new().with_start_revision(*from);
            if ws.watch(format!("nem-etcd-{k}"), Some(opts)).await.is_err() {
                ok = false;
            }
        }
        while ok && !stop.load(Ordering::Relaxed) {
            let m = match tokio::time::timeout(Duration::from_millis(500), ws.message()).await {
                Err(_) => continue,
                Ok(Ok(Some(m))) => m,
                Ok(_) => break,
            };
            let k = m.watch_id() as usize;
            if k >= n {
                continue;
            }
            if m.canceled() {
                if m.compact_revision() > 0 {
                    // Go on from the horizon: order is still checked, completeness not.
                    seen[k].1 = true;
                    resume[k] = resume[k].max(m.compact_revision());
                }
                break;
            }
            for e in m.events() {
                if let Some(kv) = e.kv() {
                    let v = String::from_utf8_lossy(kv.value()).into_owned();
                    seen[k].0.push((kv.mod_revision(), v));
                    resume[k] = kv.mod_revision() + 1;
                }
            }
        }
    }
    seen
}

/// Checks a watcher's view against the history: per key, revisions strictly increasing (no
/// duplicate, in order), every value one a client put, and — unless compacted — every
/// acknowledged put seen, the last one the key's final value.
pub fn check_watched(watched: &Watched, history: &[HistoryOp]) -> Result<usize, String> {
    let mut events = 0;
    for (k, (ev, compacted)) in watched.iter().enumerate() {
        let key = format!("nem-etcd-{k}");
        events += ev.len();
        if let Some(w) = ev.windows(2).find(|w| w[0].0 >= w[1].0) {
            return Err(format!(
                "watch of {key}: revision {} after {} (a duplicate or out of order)",
                w[1].0, w[0].0
            ));
        }
        let put: std::collections::HashSet<&str> = history
            .iter()
            .filter(|o| o.key == key && o.op == OpKind::Put)
            .filter_map(|o| o.value.as_deref())
            .collect();
        if let Some(p) = ev.iter().find(|e| !put.contains(e.1.as_str())) {
            return Err(format!("watch of {key}: value {} nobody put", p.1));
        }
        if *compacted {
            continue;
        }
        let got: std::collections::HashSet<&str> = ev.iter().map(|e| e.1.as_str()).collect();
        if let Some(lost) = history.iter().find(|o| {
            o.key == key
                && o.op == OpKind::Put
                && o.outcome == HOutcome::Ok
                && !got.contains(o.value.as_deref().unwrap_or(""))
        }) {
            return Err(format!(
                "watch of {key}: acknowledged put {:?} never seen",
                lost.value
            ));
        }
        let last_read = history
            .iter()
            .filter(|o| o.key == key && o.process == 99 && o.op == OpKind::Get)
            .filter_map(|o| o.read.clone())
            .next_back();
        if let (Some(r), Some(e)) = (last_read, ev.last()) {
            if r != e.1 {
                return Err(format!(
                    "watch of {key}: last event {} but the key reads {r}",
                    e.1
                ));
            }
        }
    }
    Ok(events)
}

/// One client through a proxy's etcd v3 endpoint (the `etcd-client` crate, unchanged) until
/// `stop`: puts and linearizable gets of its own register keys, recorded like the others.
pub async fn etcd_client(
    url: String,
    ca: String,
    process: u64,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<HistoryOp> {
    use etcd_client::{Certificate, Client, ConnectOptions, TlsOptions};
    let mut h = Vec::new();
    let mut client: Option<Client> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        if client.is_none() {
            let opts = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(8))
                // The cluster's certificates name localhost; on the host WAN the proxies listen
                // on their emulated hosts' addresses.
                .with_tls(
                    TlsOptions::new()
                        .ca_certificate(Certificate::from_pem(ca.clone()))
                        .domain_name("localhost"),
                );
            client = tokio::time::timeout(
                Duration::from_secs(3),
                Client::connect([url.clone()], Some(opts)),
            )
            .await
            .ok()
            .and_then(Result::ok);
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let key = format!("nem-etcd-{}", (process + i) % ETCD_REGISTERS);
        let write = i.is_multiple_of(2);
        let v = format!("e{process}-{i}");
        let c = client.as_mut().unwrap();
        let invoke = start.elapsed().as_nanos() as u64;
        let (op, value, outcome, read) = if write {
            let r = tokio::time::timeout(
                Duration::from_secs(8),
                c.put(key.as_str(), v.as_str(), None),
            )
            .await;
            let outcome = match r {
                Ok(Ok(_)) => HOutcome::Ok,
                // Refused before it reached the log: overload or bad input.
                Ok(Err(etcd_client::Error::GRpcStatus(s)))
                    if matches!(
                        s.code(),
                        tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument
                    ) =>
                {
                    HOutcome::Fail
                }
                _ => {
                    client = None;
                    HOutcome::Unknown
                }
            };
            (OpKind::Put, Some(v), outcome, None)
        } else {
            match tokio::time::timeout(Duration::from_secs(8), c.get(key.as_str(), None)).await {
                Ok(Ok(r)) => (
                    OpKind::Get,
                    None,
                    HOutcome::Ok,
                    r.kvs()
                        .first()
                        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                ),
                _ => {
                    client = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        };
        let complete = start.elapsed().as_nanos() as u64;
        h.push(HistoryOp {
            process,
            op,
            key,
            value,
            expect: None,
            invoke_ns: invoke,
            complete_ns: complete,
            outcome,
            read,
            path: None,
        });
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    h
}
