//! Snapshots taken off the shard task, and compaction behind them.
use super::*;

/// Snapshots are taken off the shard task: the driver hands out a frozen copy of the state at
/// the snapshot's slot and goes on applying; at most one is in flight; once it is reported the
/// core holds it, persists it, and a restart recovers the same state from it.
#[test]
fn snapshots_are_taken_from_a_frozen_copy_while_applying_goes_on() {
    let mut g = Group::new(3, true, None);
    for d in &mut g.drivers {
        d.cfg.snapshot_every = 3;
    }
    g.held_snapshots = Some(Vec::new());
    g.advance(Duration::from_secs(2));
    let put = |k: &str, v: &str| Op::Put {
        key: k.into(),
        value: v.into(),
    };
    let mut id = 0;
    while g.held_snapshots.as_ref().unwrap().iter().all(|h| h.0 != 0) {
        id += 1;
        assert!(id < 50, "no snapshot asked for");
        let r = submit_op(&mut g, 0, id, put("k", &format!("v{id}")));
        assert!(matches!(r, Reply::Done { .. }), "{r:?}");
    }
    let (_, through, frozen) = g
        .held_snapshots
        .as_ref()
        .unwrap()
        .iter()
        .find(|h| h.0 == 0)
        .cloned()
        .unwrap();
    let at = frozen.get(b"k").unwrap().value.clone();
    let rev = frozen.revision();
    // Applying goes on; the copy does not move, and no second snapshot is asked for.
    for _ in 0..10 {
        id += 1;
        submit_op(&mut g, 0, id, put("k", &format!("v{id}")));
    }
    assert_eq!(frozen.get(b"k").unwrap().value, at);
    assert_eq!(frozen.revision(), rev);
    assert!(g.drivers[0].kv().revision() >= rev + 10);
    let held = g.held_snapshots.as_ref().unwrap();
    assert_eq!(held.iter().filter(|h| h.0 == 0).count(), 1, "one in flight");
    assert_eq!(g.drivers[0].core().snapshot_through(), Slot::ZERO);
    // Reported: the core holds it and persisted it.
    g.held_snapshots = None;
    g.queue.push_back((
        0,
        Event::SnapshotTaken {
            through,
            data: frozen.snapshot().into(),
        },
    ));
    g.run();
    assert_eq!(g.drivers[0].core().snapshot_through(), through);
    let persisted = g.disks[0].iter().find_map(|r| match r {
        Record::Snapshot { through: t, data } if *t == through => Some(data.clone()),
        _ => None,
    });
    let restored = KvStore::restore(&persisted.expect("persisted")).unwrap();
    assert_eq!(restored.snapshot(), frozen.snapshot());
    // The next snapshot is asked for (and, unheld, taken) again.
    for _ in 0..5 {
        id += 1;
        submit_op(&mut g, 0, id, put("k", &format!("v{id}")));
    }
    assert!(g.drivers[0].core().snapshot_through() > through);
    // A restart recovers from the snapshot plus the log after it.
    let live = (g.drivers[0].kv().revision(), g.drivers[0].kv().digest());
    g.restart(0);
    g.advance(Duration::from_secs(3));
    let after = (g.drivers[0].kv().revision(), g.drivers[0].kv().digest());
    let other = (g.drivers[1].kv().revision(), g.drivers[1].kv().digest());
    assert_eq!(after, live, "other {other:?}");
}

/// A log grown past `compact_at` is compacted right behind a fresh snapshot of the applied
/// state, never by copying every applied entry; then not again until it has grown again.
#[test]
fn a_grown_log_is_compacted_behind_a_fresh_snapshot() {
    let mut g = Group::new(3, true, None);
    for d in &mut g.drivers {
        d.cfg.compact_at = 1000;
    }
    g.advance(Duration::from_secs(2));
    for id in 1..=20 {
        let op = Op::Put {
            key: format!("k{id}").into_bytes(),
            value: b"v".to_vec(),
        };
        assert!(matches!(submit_op(&mut g, 0, id, op), Reply::Done { .. }));
    }
    assert!(g.compactions.is_empty(), "not grown yet");
    assert_eq!(g.drivers[0].core().snapshot_through(), Slot::ZERO);
    g.log_size = 5000;
    g.held_snapshots = Some(Vec::new());
    let op = Op::Put {
        key: b"x".to_vec(),
        value: b"1".to_vec(),
    };
    submit_op(&mut g, 0, 21, op);
    assert!(
        g.compactions.is_empty(),
        "no rewrite before the snapshot is in"
    );
    let held = g.held_snapshots.take().unwrap();
    let (_, through, state) = held
        .iter()
        .find(|h| h.0 == 0)
        .cloned()
        .expect("snapshot asked");
    // The state as applied when the log crossed the threshold.
    assert!(through <= g.drivers[0].core().applied_index());
    assert!(state.get(b"k20").is_some());
    g.queue.push_back((
        0,
        Event::SnapshotTaken {
            through,
            data: state.snapshot().into(),
        },
    ));
    g.log_size = 0;
    g.run();
    let (_, records) = g.compactions.iter().find(|c| c.0 == 0).expect("compacted");
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::Snapshot { through: t, .. } if *t == through)));
    let entries = records
        .iter()
        .filter(|r| matches!(r, Record::Accept { slot, .. } | Record::Chosen { slot, .. } if *slot <= through))
        .count();
    assert!(
        entries <= 2 * 64,
        "entries behind the snapshot copied: {entries}"
    );
}
