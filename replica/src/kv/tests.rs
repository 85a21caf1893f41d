use super::*;

fn cmd(client: u64, seq: u64, op: Op) -> KvCommand {
    KvCommand { client, seq, op }
}
fn put(k: &str, v: &str) -> Op {
    Op::Put {
        key: k.into(),
        value: v.into(),
    }
}

#[test]
fn put_get_delete_carry_revisions_and_versions() {
    let mut s = KvStore::default();
    assert_eq!(s.apply(&cmd(1, 1, put("a", "1"))).revision, 1);
    assert_eq!(s.apply(&cmd(1, 2, put("a", "2"))).revision, 2);
    let r = s.apply(&cmd(1, 3, Op::Get { key: "a".into() }));
    let Outcome::Get { kv: Some(kv) } = r.outcome else {
        panic!()
    };
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.version,
            kv.create_revision,
            kv.mod_revision
        ),
        (&b"2"[..], 2, 1, 2)
    );
    assert_eq!(r.revision, 2, "reads do not bump the revision");
    let r = s.apply(&cmd(1, 4, Op::Delete { key: "a".into() }));
    assert_eq!(r.revision, 3);
    let r = s.apply(&cmd(1, 5, Op::Delete { key: "a".into() }));
    assert_eq!(r.revision, 3, "deleting nothing changes nothing");
}

#[test]
fn retried_write_applies_once_and_returns_the_same_result() {
    let mut s = KvStore::default();
    let c = cmd(7, 1, put("k", "v"));
    let first = s.apply(&c);
    s.apply(&cmd(8, 1, put("k", "w")));
    let again = s.apply(&c);
    assert_eq!(first, again);
    assert_eq!(
        s.get(b"k").unwrap().value,
        b"w",
        "the retry did not overwrite w"
    );
    assert_eq!(s.revision(), 2);
    assert_eq!(s.apply(&cmd(7, 0, put("k", "old"))).outcome, Outcome::Stale);
}

#[test]
fn range_is_ordered_limited_and_prefix_bounded() {
    let mut s = KvStore::default();
    for (i, k) in ["b/2", "a/1", "b/1", "b/3", "c"].iter().enumerate() {
        s.apply(&cmd(1, i as u64 + 1, put(k, "x")));
    }
    let Outcome::Range { kvs, more } = s
        .read(&Op::Range {
            prefix: "b/".into(),
            limit: 2,
        })
        .outcome
    else {
        panic!()
    };
    let keys: Vec<_> = kvs
        .iter()
        .map(|k| String::from_utf8(k.key.clone()).unwrap())
        .collect();
    assert_eq!(keys, ["b/1", "b/2"]);
    assert!(more);
}

#[test]
fn txn_compares_value_version_and_mod_revision() {
    let mut s = KvStore::default();
    s.apply(&cmd(1, 1, put("k", "v1")));
    let cas = |expect: Option<&str>, new: &str| {
        Op::Txn(Txn {
            compares: vec![Compare {
                key: "k".into(),
                target: CompareTarget::Value(expect.map(|e| e.into())),
            }],
            success: vec![TxnOp::Put {
                key: "k".into(),
                value: new.into(),
            }],
            failure: vec![TxnOp::Get { key: "k".into() }],
        })
    };
    let r = s.apply(&cmd(1, 2, cas(Some("nope"), "v2")));
    assert!(matches!(
        r.outcome,
        Outcome::Txn {
            succeeded: false,
            ..
        }
    ));
    assert_eq!(
        r.revision, 1,
        "a failed compare with read-only else-branch writes nothing"
    );
    let r = s.apply(&cmd(1, 3, cas(Some("v1"), "v2")));
    assert!(matches!(
        r.outcome,
        Outcome::Txn {
            succeeded: true,
            ..
        }
    ));
    assert_eq!(s.get(b"k").unwrap().value, b"v2");
    let ver = Op::Txn(Txn {
        compares: vec![
            Compare {
                key: "k".into(),
                target: CompareTarget::Version(2),
            },
            Compare {
                key: "k".into(),
                target: CompareTarget::ModRevision(2),
            },
            Compare {
                key: "missing".into(),
                target: CompareTarget::Version(0),
            },
        ],
        success: vec![
            TxnOp::Delete { key: "k".into() },
            TxnOp::Put {
                key: "n".into(),
                value: "1".into(),
            },
        ],
        failure: vec![],
    });
    let r = s.apply(&cmd(1, 4, ver));
    assert!(matches!(
        r.outcome,
        Outcome::Txn {
            succeeded: true,
            ..
        }
    ));
    assert_eq!(r.revision, 3, "one revision for the whole transaction");
    assert!(s.get(b"k").is_none());
    assert_eq!(s.get(b"n").unwrap().mod_revision, 3);
}

#[test]
fn snapshot_round_trips_including_sessions() {
    let mut s = KvStore::default();
    let c = cmd(3, 9, put("a", "b"));
    s.apply(&c);
    let mut r = KvStore::restore(&s.snapshot()).unwrap();
    assert_eq!(r, s);
    assert_eq!(r.apply(&c).revision, 1, "dedup survives a snapshot");
    assert!(KvStore::restore(b"\xff\xff").is_err());
}

#[test]
fn command_codec_round_trips_and_rejects_garbage() {
    let c = cmd(1, 2, put("k", "v"));
    assert_eq!(KvCommand::decode(&c.encode()).unwrap(), c);
    assert!(KvCommand::decode(&[1, 2, 3]).is_err());
    assert!(cmd(1, 1, Op::Get { key: "k".into() }).is_read_only());
    assert!(!c.is_read_only());
}

#[test]
fn reads_through_the_log_are_never_answered_from_a_session() {
    // Readers may share one identity (the proxy reads as client 0, seq 0): each read must see
    // the state at its own point in the log.
    let mut s = KvStore::default();
    let get = cmd(0, 0, Op::Get { key: "k".into() });
    assert!(matches!(s.apply(&get).outcome, Outcome::Get { kv: None }));
    s.apply(&cmd(1, 1, put("k", "v")));
    let Outcome::Get { kv: Some(kv) } = s.apply(&get).outcome else {
        panic!("stale read")
    };
    assert_eq!(kv.value, b"v");
}

#[test]
fn session_table_is_bounded_and_evicts_the_least_recently_used() {
    let mut s = KvStore::default();
    for c in 0..(MAX_SESSIONS as u64 + 10) {
        s.apply(&cmd(c, 1, put("k", "v")));
        if c == MAX_SESSIONS as u64 - 1 {
            // Client 3 was created early but used late: least recently *used* goes, not
            // oldest created.
            s.apply(&cmd(3, 2, put("k", "late")));
        }
    }
    let before = s.revision();
    s.apply(&cmd(3, 2, put("k", "late")));
    assert_eq!(s.revision(), before, "a recently used client is remembered");
    // Client 5 was among the least recently used: forgotten, so its retry applies again
    // (documented limit).
    let before = s.revision();
    s.apply(&cmd(5, 1, put("k", "again")));
    assert_eq!(s.revision(), before + 1);
    // The most recent client is remembered: its retry does not apply twice.
    let last = MAX_SESSIONS as u64 + 9;
    let before = s.revision();
    s.apply(&cmd(last, 1, put("k", "v")));
    assert_eq!(s.revision(), before);
}

/// A follower applies without answering: the same state, sessions included, as a leader that
/// answers; a retry after a failover still gets the remembered result.
#[test]
fn unanswered_applies_leave_the_same_state() {
    let cmds = [
        cmd(1, 1, put("a", "1")),
        cmd(2, 1, put("a", "2")),
        cmd(1, 1, put("a", "1")),
        cmd(1, 0, put("a", "old")),
        cmd(3, 1, Op::Delete { key: b"a".to_vec() }),
        cmd(4, 1, Op::Get { key: b"a".to_vec() }),
    ];
    let (mut leader, mut follower) = (KvStore::default(), KvStore::default());
    for c in &cmds {
        leader.apply(c);
        follower.apply_unanswered(c);
    }
    assert_eq!(leader, follower);
    assert_eq!(leader.snapshot(), follower.snapshot());
    let retried = follower.apply(&cmd(2, 1, put("a", "2")));
    assert_eq!(retried.revision, 2);
    assert!(matches!(retried.outcome, Outcome::Put { prev: Some(ref p) } if p.value == b"1"));
}

/// The state digest: equal for equal states however they were reached (applied in order,
/// restored from a snapshot), different as soon as one value, revision or lease configuration
/// differs; a put undone by a delete leaves only the revision changed.
#[test]
fn state_digest_tracks_the_data_incrementally() {
    let ops = [
        put("a", "1"),
        put("b", "2"),
        put("a", "3"),
        Op::Delete { key: b"b".to_vec() },
        put("c", "4"),
    ];
    let (mut x, mut y) = (KvStore::default(), KvStore::default());
    for (i, op) in ops.iter().enumerate() {
        x.apply(&cmd(1, i as u64 + 1, op.clone()));
        y.apply(&cmd(2, i as u64 + 1, op.clone()));
        assert_eq!(
            x.digest(),
            y.digest(),
            "after op {i} (sessions differ, data do not)"
        );
    }
    let restored = KvStore::restore(&x.snapshot()).unwrap();
    assert_eq!(restored.digest(), x.digest());
    // One more write anywhere changes it; the same write on the other side restores equality.
    let before = x.digest();
    x.apply(&cmd(1, 10, put("c", "5")));
    assert_ne!(x.digest(), before);
    y.apply(&cmd(2, 10, put("c", "6")));
    assert_ne!(x.digest(), y.digest(), "same revision, different value");
    let mut z = KvStore::default();
    z.apply(&cmd(1, 1, put("k", "v")));
    let mut w = KvStore::default();
    w.apply(&cmd(1, 1, put("k", "v")));
    w.apply(&cmd(1, 2, Op::SetLeaseHolders { sites: vec![1] }));
    assert_ne!(z.digest(), w.digest(), "the lease configuration counts");
    // An empty store and one whose only key was deleted differ only by the revision.
    let mut e = KvStore::default();
    e.apply(&cmd(1, 1, put("k", "v")));
    e.apply(&cmd(1, 2, Op::Delete { key: b"k".to_vec() }));
    assert_ne!(e.digest(), KvStore::default().digest());
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|k| String::from_utf8(k.key.clone()).unwrap())
        .collect()
}

#[test]
fn scan_counts_and_limits_a_half_open_span() {
    let mut s = KvStore::default();
    for (i, k) in ["a", "b/1", "b/2", "b/3", "c", "d"].iter().enumerate() {
        s.apply(&cmd(1, i as u64 + 1, put(k, "x")));
    }
    let scan = |s: &KvStore, start: &str, end: &str, limit| match s
        .read(&Op::Scan {
            start: start.into(),
            end: end.into(),
            limit,
        })
        .outcome
    {
        Outcome::Scan { kvs, more, count } => (keys(&kvs), more, count),
        o => panic!("{o:?}"),
    };
    assert_eq!(
        scan(&s, "b/", "b0", 0),
        (vec!["b/1".into(), "b/2".into(), "b/3".into()], false, 3)
    );
    assert_eq!(
        scan(&s, "b/2", "", 2),
        (vec!["b/2".into(), "b/3".into()], true, 4)
    );
    assert_eq!(scan(&s, "c", "d", 0), (vec!["c".into()], false, 1));
    assert_eq!(scan(&s, "e", "", 0), (vec![], false, 0));
    let c = cmd(
        0,
        0,
        Op::Scan {
            start: "b".into(),
            end: "c".into(),
            limit: 0,
        },
    );
    assert!(c.is_read_only());
    assert!(c.touches(b"b/9") && !c.touches(b"c") && !c.touches(b"a"));
}

#[test]
fn delete_range_removes_the_span_under_one_revision() {
    let mut s = KvStore::default();
    for (i, k) in ["a", "b/1", "b/2", "c"].iter().enumerate() {
        s.apply(&cmd(1, i as u64 + 1, put(k, "x")));
    }
    let r = s.apply(&cmd(
        1,
        10,
        Op::DeleteRange {
            start: "b/".into(),
            end: "b0".into(),
        },
    ));
    let Outcome::DeletedRange { deleted } = r.outcome else {
        panic!()
    };
    assert_eq!(keys(&deleted), ["b/1", "b/2"]);
    assert_eq!(r.revision, 5);
    assert!(s.get(b"b/1").is_none() && s.get(b"a").is_some() && s.get(b"c").is_some());
    let again = s.apply(&cmd(
        1,
        11,
        Op::DeleteRange {
            start: "b/".into(),
            end: "b0".into(),
        },
    ));
    assert_eq!(again.revision, 5, "deleting nothing changes nothing");
    // The retry of the first is answered from the session, not applied twice.
    let retry = s.apply(&cmd(
        1,
        11,
        Op::DeleteRange {
            start: "".into(),
            end: "".into(),
        },
    ));
    assert_eq!(retry, again);
    assert!(s.get(b"a").is_some());
}

#[test]
fn ordered_compares_follow_etcd() {
    let mut s = KvStore::default();
    s.apply(&cmd(1, 1, put("k", "m")));
    s.apply(&cmd(1, 2, put("k", "n")));
    let holds = |s: &mut KvStore, seq, key: &str, f: CompareField, o: Order| {
        let r = s.apply(&cmd(
            2,
            seq,
            Op::Txn(Txn {
                compares: vec![Compare {
                    key: key.into(),
                    target: CompareTarget::Ordered(f, o),
                }],
                success: vec![],
                failure: vec![],
            }),
        ));
        matches!(
            r.outcome,
            Outcome::Txn {
                succeeded: true,
                ..
            }
        )
    };
    assert!(holds(
        &mut s,
        1,
        "k",
        CompareField::Version(2),
        Order::Equal
    ));
    assert!(holds(
        &mut s,
        2,
        "k",
        CompareField::Version(1),
        Order::Greater
    ));
    assert!(holds(
        &mut s,
        3,
        "k",
        CompareField::CreateRevision(1),
        Order::Equal
    ));
    assert!(holds(
        &mut s,
        4,
        "k",
        CompareField::ModRevision(3),
        Order::Less
    ));
    assert!(holds(
        &mut s,
        5,
        "k",
        CompareField::Value(b"m".to_vec()),
        Order::Greater
    ));
    assert!(holds(
        &mut s,
        6,
        "k",
        CompareField::Value(b"n".to_vec()),
        Order::Equal
    ));
    assert!(!holds(
        &mut s,
        7,
        "k",
        CompareField::Value(b"n".to_vec()),
        Order::NotEqual
    ));
    assert!(holds(&mut s, 8, "k", CompareField::Lease(0), Order::Equal));
    // An absent key: numbers are 0, a value comparison always fails.
    assert!(holds(
        &mut s,
        9,
        "x",
        CompareField::CreateRevision(0),
        Order::Equal
    ));
    assert!(!holds(
        &mut s,
        10,
        "x",
        CompareField::Value(vec![]),
        Order::Equal
    ));
    assert!(!holds(
        &mut s,
        11,
        "x",
        CompareField::Value(vec![]),
        Order::NotEqual
    ));
}

/// TTL leases in the state machine: keys attached by a lease put (also in a transaction) go
/// with the lease under one revision; a plain put detaches a key; an expiry loses to a
/// keep-alive that applied first; leases survive a snapshot, and a snapshot from before leases
/// existed (no lease section) still restores.
#[test]
fn ttl_leases_attach_detach_expire_and_survive_snapshots() {
    let mut s = KvStore::default();
    let lease = |s: &mut KvStore, seq, op| match s.apply(&cmd(1, seq, op)).outcome {
        Outcome::Lease(i) => i,
        o => panic!("{o:?}"),
    };
    assert!(!lease(&mut s, 1, Op::LeaseGrant { id: 3, ttl: 10 }).existed);
    assert!(
        lease(&mut s, 2, Op::LeaseGrant { id: 3, ttl: 99 }).existed,
        "id taken"
    );
    let put = |key: &str, lease| Op::LeasePut {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
    };
    s.apply(&cmd(1, 3, put("a", 3)));
    s.apply(&cmd(
        1,
        4,
        Op::Txn(Txn {
            compares: vec![],
            success: vec![TxnOp::PutLease {
                key: b"b".to_vec(),
                value: b"v".to_vec(),
                lease: 3,
            }],
            failure: vec![],
        }),
    ));
    s.apply(&cmd(1, 5, put("c", 3)));
    assert_eq!(s.lease_of(b"c"), 3);
    s.apply(&cmd(
        1,
        6,
        Op::Put {
            key: b"c".to_vec(),
            value: b"w".to_vec(),
        },
    ));
    assert_eq!(s.lease_of(b"c"), 0, "a put without a lease detaches");
    // A lease put or a transaction to a missing lease changes nothing.
    let rev = s.revision();
    assert!(!lease(&mut s, 7, put("z", 4)).existed);
    assert_eq!((s.revision(), s.get(b"z")), (rev, None));
    // Snapshots keep leases; an old-format snapshot (no section) restores without them.
    let r = KvStore::restore(&s.snapshot()).unwrap();
    assert_eq!(r.lease_of(b"a"), 3);
    assert_eq!(r.digest(), s.digest());
    let mut plain = KvStore::default();
    plain.apply(&cmd(1, 1, put("a", 0)));
    assert_eq!(KvStore::restore(&plain.snapshot()).unwrap(), plain);
    let mut bad = s.snapshot();
    bad.push(0);
    assert!(
        KvStore::restore(&bad).is_err(),
        "trailing bytes are refused"
    );
    // An expiry with a stale keep-alive count loses; the current one deletes a and b at once.
    let k = lease(&mut s, 8, Op::LeaseKeepAlive { id: 3 });
    assert_eq!(k.refresh, 1);
    let stale = cmd(0, 0, Op::LeaseExpire { id: 3, refresh: 0 });
    assert!(matches!(s.apply(&stale).outcome, Outcome::Lease(i) if i.keys.is_empty()));
    assert!(s.get(b"a").is_some());
    let rev = s.revision();
    let gone = match s
        .apply(&cmd(0, 0, Op::LeaseExpire { id: 3, refresh: 1 }))
        .outcome
    {
        Outcome::Lease(i) => i.keys,
        o => panic!("{o:?}"),
    };
    assert_eq!(gone, [b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(s.revision(), rev + 1, "one revision for the lease's keys");
    assert!(s.get(b"a").is_none() && s.get(b"b").is_none() && s.get(b"c").is_some());
    assert!(!lease(&mut s, 9, Op::LeaseRevoke { id: 3 }).existed);
}

#[test]
fn key_values_carry_their_ttl_lease_through_puts_txns_ranges_and_snapshots() {
    let mut s = KvStore::default();
    let mut seq = 0;
    let mut go = |s: &mut KvStore, op| {
        seq += 1;
        s.apply(&cmd(1, seq, op))
    };
    go(&mut s, Op::LeaseGrant { id: 5, ttl: 10 });
    let lput = |key: &str, lease| Op::LeasePut {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
    };
    go(&mut s, lput("a", 5));
    assert_eq!(s.get(b"a").unwrap().lease, 5);
    // etcd's ignore_lease keeps it; a plain put drops it, and the previous value says 5.
    go(&mut s, lput("a", KEEP_LEASE));
    assert_eq!(s.get(b"a").unwrap().lease, 5);
    match go(&mut s, put("a", "w")).outcome {
        Outcome::Put { prev } => assert_eq!(prev.unwrap().lease, 5),
        o => panic!("{o:?}"),
    }
    assert_eq!(s.get(b"a").unwrap().lease, 0);
    // A transaction's lease put, seen by a range.
    go(
        &mut s,
        Op::Txn(Txn {
            compares: vec![],
            success: vec![TxnOp::PutLease {
                key: b"b".to_vec(),
                value: b"v".to_vec(),
                lease: 5,
            }],
            failure: vec![],
        }),
    );
    match s
        .read(&Op::Range {
            prefix: vec![],
            limit: 10,
        })
        .outcome
    {
        Outcome::Range { kvs, .. } => assert_eq!(
            kvs.iter()
                .map(|k| (k.key.clone(), k.lease))
                .collect::<Vec<_>>(),
            vec![(b"a".to_vec(), 0), (b"b".to_vec(), 5)]
        ),
        o => panic!("{o:?}"),
    }
    let r = KvStore::restore(&s.snapshot()).unwrap();
    assert_eq!(r, s);
    assert_eq!(r.get(b"b").unwrap().lease, 5);
}

/// A snapshot written by the code before key-values carried their lease (generated once by
/// that code: plain=p2, leased=l1 and leased2=l2 on lease 42 (TTL 30 s), gone deleted; 7
/// writes of client 7).
const SNAPSHOT_BEFORE_KV_LEASES: &[u8] = include_bytes!("testdata/snapshot-before-kv-leases.bin");

#[test]
fn a_snapshot_from_before_key_value_leases_restores_with_them_filled_in() {
    let mut r = KvStore::restore(SNAPSHOT_BEFORE_KV_LEASES).unwrap();
    let kv = |r: &KvStore, k: &[u8]| {
        let kv = r.get(k).unwrap();
        (kv.value.clone(), kv.version, kv.lease)
    };
    assert_eq!(kv(&r, b"plain"), (b"p2".to_vec(), 2, 0));
    assert_eq!(kv(&r, b"leased"), (b"l1".to_vec(), 1, 42));
    assert_eq!(kv(&r, b"leased2"), (b"l2".to_vec(), 1, 42));
    assert!(r.get(b"gone").is_none());
    assert_eq!(r.revision(), 6);
    // Its sessions still deduplicate, and it snapshots in the new layout.
    let retry = cmd(
        7,
        7,
        Op::Delete {
            key: b"gone".to_vec(),
        },
    );
    assert_eq!(r.apply(&retry).revision, 6, "a retried write applies once");
    let again = r.snapshot();
    assert!(again.starts_with(b"MRDNSNP2"));
    assert_eq!(KvStore::restore(&again).unwrap(), r);
    // The teeth: read in the new layout, the old bytes do not make sense.
    let mut marked = b"MRDNSNP2".to_vec();
    marked.extend_from_slice(SNAPSHOT_BEFORE_KV_LEASES);
    assert!(KvStore::restore(&marked).map(|m| m != r).unwrap_or(true));
}

/// `History::at` against a model: the store's whole content after every revision, kept aside.
/// Random puts, deletes, transactions and range deletes on a few keys; every revision the
/// history still reaches reads back exactly, for several spans; below it, `Err(horizon)`.
#[test]
fn reads_at_a_revision_rebuild_the_span_exactly_as_it_was() {
    let mut s = KvStore::default();
    s.record_changes();
    let mut h = History::new(0, 1 << 20);
    let mut states = vec![Vec::new()]; // index: revision
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let key = |i: u64| format!("k{i}").into_bytes();
    for seq in 1..400 {
        let op = match rnd(10) {
            0..=4 => put(&format!("k{}", rnd(8)), &format!("v{seq}")),
            5..=6 => Op::Delete { key: key(rnd(8)) },
            7 => Op::DeleteRange {
                start: key(rnd(4)),
                end: key(4 + rnd(4)),
            },
            _ => Op::Txn(Txn {
                compares: vec![],
                success: vec![
                    TxnOp::Put {
                        key: key(rnd(8)),
                        value: b"t".to_vec(),
                    },
                    TxnOp::Delete { key: key(rnd(8)) },
                ],
                failure: vec![],
            }),
        };
        let before = s.revision();
        s.apply(&cmd(1, seq, op));
        h.push(s.take_changes());
        if s.revision() > before {
            states.push(s.span_kvs(b"", b""));
        }
    }
    assert_eq!(states.len() as u64, s.revision() + 1);
    h.compact(s.revision() / 2);
    let spans: [(&[u8], &[u8]); 4] = [(b"", b""), (b"k2", b"k5"), (b"k3", b"k3\0"), (b"k6", b"")];
    for (start, end) in spans {
        let now = s.span_kvs(start, end);
        for (rev, state) in states.iter().enumerate() {
            let want: Vec<KeyValue> = state
                .iter()
                .filter(|kv| in_span(&kv.key, start, end))
                .cloned()
                .collect();
            let got = h.at(rev as u64, start, end, now.clone());
            if (rev as u64) + 1 < h.horizon() {
                assert_eq!(got, Err(h.horizon()), "revision {rev} is gone");
            } else {
                assert_eq!(got, Ok(want), "revision {rev} of {start:?}..{end:?}");
            }
        }
    }
}

/// A nested transaction (etcd's `request_txn`): every compare on the path is judged against the
/// state before the transaction, even one about a key an earlier operation of the same
/// transaction changed; the branches taken come back depth first, the reads in running order,
/// and all the writes share one revision.
#[test]
fn nested_transactions_judge_every_compare_against_the_state_before() {
    let mut s = KvStore::default();
    s.apply(&cmd(1, 1, put("k", "1")));
    s.apply(&cmd(1, 2, put("r/a", "x")));
    s.apply(&cmd(1, 3, put("r/b", "y")));
    let value_is = |k: &str, v: &str| Compare {
        key: k.into(),
        target: CompareTarget::Value(Some(v.into())),
    };
    let tp = |k: &str, v: &str| TxnOp::Put {
        key: k.into(),
        value: v.into(),
    };
    let nested = Op::Txn(Txn {
        compares: vec![value_is("k", "1")],
        success: vec![
            tp("k", "2"),
            // k is 2 by now, but the compare sees the state before the transaction: 1.
            TxnOp::Txn(Txn {
                compares: vec![value_is("k", "1")],
                success: vec![
                    tp("seen", "before"),
                    TxnOp::Get { key: "k".into() },
                    TxnOp::Txn(Txn {
                        compares: vec![value_is("k", "2")],
                        success: vec![tp("deep", "wrong")],
                        failure: vec![TxnOp::Range {
                            start: "r/".into(),
                            end: "r0".into(),
                        }],
                    }),
                ],
                failure: vec![tp("seen", "after")],
            }),
            TxnOp::DeleteRange {
                start: "r/".into(),
                end: "r0".into(),
            },
        ],
        failure: vec![tp("outer", "failed")],
    });
    assert!(!cmd(1, 4, nested.clone()).is_read_only());
    for key in ["k", "seen", "deep", "r/a", "outer"] {
        assert!(cmd(1, 4, nested.clone()).touches(key.as_bytes()), "{key}");
    }
    assert!(!cmd(1, 4, nested.clone()).touches(b"elsewhere"));
    let r = s.apply(&cmd(1, 4, nested));
    let Outcome::TxnTree {
        branches,
        gets,
        ranges,
    } = r.outcome
    else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(branches, vec![true, true, false]);
    assert_eq!(r.revision, 4, "one revision for every write at every depth");
    assert_eq!(
        gets.iter()
            .map(|g| g.as_ref().map(|kv| kv.value.clone()))
            .collect::<Vec<_>>(),
        vec![Some(b"2".to_vec())],
        "a read sees the writes that ran before it"
    );
    assert_eq!(ranges.len(), 1);
    assert_eq!(ranges[0].len(), 2, "the range ran before the range delete");
    assert_eq!(s.get(b"k").unwrap().value, b"2");
    assert_eq!(s.get(b"seen").unwrap().value, b"before");
    assert!(s.get(b"deep").is_none() && s.get(b"outer").is_none());
    assert!(s.get(b"r/a").is_none() && s.get(b"r/b").is_none());
    assert_eq!(s.get(b"seen").unwrap().mod_revision, 4);

    // A nested transaction that only reads writes nothing; one whose path puts to a missing
    // lease fails whole.
    let read_only = Op::Txn(Txn {
        compares: vec![],
        success: vec![TxnOp::Txn(Txn {
            compares: vec![value_is("k", "2")],
            success: vec![TxnOp::Get { key: "k".into() }],
            failure: vec![tp("k", "3")],
        })],
        failure: vec![],
    });
    assert!(
        !cmd(1, 5, read_only.clone()).is_read_only(),
        "a branch may write"
    );
    let r = s.apply(&cmd(1, 5, read_only));
    assert_eq!(r.revision, 4);
    assert!(
        matches!(r.outcome, Outcome::TxnTree { ref branches, .. } if branches == &[true, true])
    );
    let missing_lease = Op::Txn(Txn {
        compares: vec![],
        success: vec![
            tp("k", "4"),
            TxnOp::Txn(Txn {
                compares: vec![],
                success: vec![TxnOp::PutLease {
                    key: "held".into(),
                    value: "v".into(),
                    lease: 77,
                }],
                failure: vec![],
            }),
        ],
        failure: vec![],
    });
    let r = s.apply(&cmd(1, 6, missing_lease));
    assert!(matches!(r.outcome, Outcome::Lease(_)), "{:?}", r.outcome);
    assert_eq!(s.get(b"k").unwrap().value, b"2", "nothing changed");
    assert_eq!(r.revision, 4);
}
