//! The proxy's persistent call stream to a replica (`Replica.Pipe`, `ReplicaClient::with_pipe`)
//! on real replica processes: each call is answered as its unary RPC answers it, replies reach
//! their own callers however they interleave, one call's failure leaves the others alone, and
//! a pipe broken by a replica's crash is reopened by the next call.
mod common;

use common::*;
use meridian_replica::client::{ClientError, Outcome, ReplicaClient};
use meridian_replica::kv::{KvCommand, KvResult, Op, Outcome as KvOutcome};
use meridian_replica::wire::pb::ReadMode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn get(client: u64, seq: u64, key: &str) -> KvCommand {
    KvCommand {
        client,
        seq,
        op: Op::Get {
            key: key.as_bytes().to_vec(),
        },
    }
}

fn value_of(r: &KvResult) -> Option<Vec<u8>> {
    match &r.outcome {
        KvOutcome::Get { kv } => kv.as_ref().map(|kv| kv.value.clone()),
        o => panic!("a get answered {o:?}"),
    }
}

/// The leader of shard 0 (one shard), found by writing through it.
async fn leader(c: &TestCluster) -> usize {
    let mut w = Writer::new(c).await;
    let r = w
        .submit(&put(900, 1, "pipe/probe", "x"), Duration::from_secs(30))
        .await;
    assert!(r.is_some(), "no leader acknowledged a write");
    w.leader[0]
}

#[test]
fn piped_calls_answer_as_unary_calls_and_reach_their_own_callers() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::up("pipe-calls", &["--no-wan", "--shards", "1"]);
    let rt = rt();
    rt.block_on(async {
        let l = leader(&c).await;
        let addr = &c.cfg.sites[l].addr;
        let piped = ReplicaClient::connect(addr, &c.tls)
            .await
            .unwrap()
            .with_pipe();
        let mut unary = ReplicaClient::connect(addr, &c.tls).await.unwrap();

        // 200 writes at once, each its own key and value, all on the one pipe.
        let writes = (0..200u64).map(|i| {
            let mut p = piped.clone();
            async move {
                let cmd = put(1000 + i, 1, &format!("pipe/{i}"), &format!("value-{i}"));
                p.submit(0, std::slice::from_ref(&cmd)).await
            }
        });
        for (i, r) in futures::future::join_all(writes)
            .await
            .into_iter()
            .enumerate()
        {
            match r {
                Ok(Outcome::Ok(results)) => assert_eq!(results.len(), 1, "write {i}"),
                other => panic!("piped write {i}: {:?}", other.err()),
            }
        }

        // 200 reads at once — single reads, batches and a call that fails, interleaved: every
        // reply must be the caller's own key's value.
        let reads = (0..200u64).map(|i| {
            let mut p = piped.clone();
            async move {
                let key = format!("pipe/{i}");
                let cmd = get(2000 + i, 1, &key);
                let want = format!("value-{i}").into_bytes();
                match i % 3 {
                    0 => {
                        let r = p
                            .read_waiting(0, &cmd, ReadMode::Leader, 0, Duration::ZERO)
                            .await
                            .unwrap();
                        let Outcome::Ok(r) = r else {
                            panic!("not leader")
                        };
                        let kv: KvResult = bincode::deserialize(&r.result).unwrap();
                        assert_eq!(value_of(&kv), Some(want), "read of {key}");
                    }
                    1 => {
                        let other = format!("pipe/{}", (i + 1) % 200);
                        let cmd2 = get(3000 + i, 1, &other);
                        let rs = p
                            .read_batch(&[
                                (0, &cmd, ReadMode::Leader),
                                (0, &cmd2, ReadMode::Leader),
                            ])
                            .await
                            .unwrap();
                        let vals: Vec<Option<Vec<u8>>> = rs
                            .into_iter()
                            .map(|r| match r.unwrap() {
                                Outcome::Ok(r) => {
                                    value_of(&bincode::deserialize(&r.result).unwrap())
                                }
                                Outcome::NotLeader(_) => panic!("not leader"),
                            })
                            .collect();
                        let want2 = format!("value-{}", (i + 1) % 200).into_bytes();
                        assert_eq!(
                            vals,
                            vec![Some(want), Some(want2)],
                            "batch of {key}, {other}"
                        );
                    }
                    _ => {
                        // An unknown shard fails this call alone, with the unary call's status.
                        let e = p
                            .read(7, &cmd, ReadMode::Leader)
                            .await
                            .err()
                            .expect("refused");
                        let ClientError::Rpc(s) = e else {
                            panic!("{e}")
                        };
                        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
                        assert!(s.message().contains("unknown shard 7"), "{s:?}");
                    }
                }
            }
        });
        futures::future::join_all(reads).await;
        assert!(piped.pipe_open(), "the calls went unary, not on the pipe");
        assert!(!unary.pipe_open());

        // A write larger than a pipe call leaves unary on the same client, and is read back.
        let big = "b".repeat(meridian_replica::client::PIPE_MAX_CALL + 1);
        let r = piped
            .clone()
            .submit(0, &[put(4000, 1, "pipe/big", &big)])
            .await
            .unwrap();
        assert!(matches!(r, Outcome::Ok(_)));
        let r = piped
            .clone()
            .read(0, &get(4001, 1, "pipe/big"), ReadMode::Leader)
            .await
            .unwrap();
        let Outcome::Ok((kv, _)) = r else {
            panic!("not leader")
        };
        assert_eq!(value_of(&kv), Some(big.into_bytes()));

        // The same read, piped and unary: the same reply.
        let cmd = get(5000, 1, "pipe/42");
        let a = piped
            .clone()
            .read_full(0, &cmd, ReadMode::Leader, 0)
            .await
            .unwrap();
        let b = unary.read_full(0, &cmd, ReadMode::Leader, 0).await.unwrap();
        let (Outcome::Ok(a), Outcome::Ok(b)) = (a, b) else {
            panic!("not leader")
        };
        assert_eq!(
            (a.result, a.path, a.not_leader),
            (b.result, b.path, b.not_leader)
        );
        // And the same refusal for an unknown shard.
        let ua = unary.read(7, &cmd, ReadMode::Leader).await.err().unwrap();
        let pa = piped
            .clone()
            .read(7, &cmd, ReadMode::Leader)
            .await
            .err()
            .unwrap();
        assert_eq!(ua.to_string(), pa.to_string());
    });
}

#[test]
fn a_pipe_broken_by_a_replica_crash_is_reopened_by_the_next_call() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::up("pipe-crash", &["--no-wan", "--shards", "1"]);
    let rt = rt();
    let l = rt.block_on(leader(&c));
    // A follower answers local reads on its own: kill it, see the pipe fail, bring it back.
    let f = (l + 1) % c.cfg.sites.len();
    let site = c.cfg.sites[f].name.clone();
    let addr = c.cfg.sites[f].addr.clone();
    let piped = rt.block_on(async {
        let mut p = ReplicaClient::connect(&addr, &c.tls)
            .await
            .unwrap()
            .with_pipe();
        let r = p.read(0, &get(1, 1, "pipe/probe"), ReadMode::Local).await;
        assert!(matches!(r, Ok(Outcome::Ok(_))), "{:?}", r.err());
        p
    });
    c.kill9(&site);
    rt.block_on(async {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            piped
                .clone()
                .read(0, &get(1, 2, "pipe/probe"), ReadMode::Local),
        )
        .await
        .expect("a call to a dead replica must fail, not hang");
        assert!(r.is_err(), "a dead replica answered");
        assert!(!piped.pipe_open(), "a broken pipe still counts as open");
    });
    c.restart(&site);
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = piped
                .clone()
                .read(0, &get(1, 3, "pipe/probe"), ReadMode::Local)
                .await;
            if let Ok(Outcome::Ok((kv, _))) = &r {
                // Until it has caught up a restarted follower may not have the key yet.
                if value_of(kv) == Some(b"x".to_vec()) {
                    assert!(
                        piped.pipe_open(),
                        "the answer came unary, not on a new pipe"
                    );
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the same client never got through again: {:?}",
                r.err()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}
