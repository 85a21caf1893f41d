//! The storage conformance suite: every `LogStore` must pass it (the file WAL and the
//! simulator's in-memory log).
use super::{FileLog, LogStore, MemLog};
use meridian_core::{Ballot, Batch, Record, SiteId, Slot};

fn rec(i: u64) -> Record {
    if i.is_multiple_of(5) {
        Record::Promise(Ballot {
            round: i,
            site: SiteId(2),
        })
    } else {
        Record::Accept {
            slot: Slot(i),
            ballot: Ballot {
                round: 1,
                site: SiteId(0),
            },
            batch: Batch(vec![vec![i as u8; 40].into()]),
        }
    }
}

/// A store plus a way to "restart" it and read back what is durable.
trait Harness {
    type Store: LogStore;
    fn store(&mut self) -> &mut Self::Store;
    fn restart(&mut self) -> Vec<Record>;
}

fn suite(h: &mut impl Harness) {
    assert!(h.restart().is_empty(), "a new log is empty");
    let first: Vec<Record> = (1..=20).map(rec).collect();
    h.store().append(&first[..10]).unwrap();
    h.store().append(&first[10..]).unwrap();
    h.store().sync().unwrap();
    assert_eq!(h.restart(), first, "synced records come back in order");
    h.store().append(&[rec(21)]).unwrap();
    h.store().sync().unwrap();
    let mut expect = first.clone();
    expect.push(rec(21));
    assert_eq!(h.restart(), expect);
    let compacted = vec![rec(100), rec(101)];
    h.store().rewrite(&compacted).unwrap();
    assert_eq!(h.restart(), compacted, "a rewrite replaces everything");
    h.store().append(&[rec(102)]).unwrap();
    h.store().sync().unwrap();
    assert_eq!(
        h.restart(),
        vec![rec(100), rec(101), rec(102)],
        "appends continue after a rewrite"
    );
    let before = h.store().size();
    h.store().append(&[rec(103)]).unwrap();
    assert!(h.store().size() > before);
    h.store().sync().unwrap();
    // Snapshots: kept across restarts and rewrites; growth restarts at every rewrite.
    let snap = |through: u64| Record::Snapshot {
        through: Slot(through),
        data: vec![through as u8; 3000].into(),
    };
    h.store().append(&[snap(103), rec(104)]).unwrap();
    h.store().sync().unwrap();
    let got = h.restart();
    assert_eq!(got[got.len() - 2..], [snap(103), rec(104)]);
    let grown = h.store().grown();
    h.store().rewrite(&[rec(105), snap(103), rec(106)]).unwrap();
    assert_eq!(h.store().grown(), 0, "a rewrite starts growth afresh");
    h.store().append(&[rec(107), snap(107)]).unwrap();
    h.store().sync().unwrap();
    assert!(h.store().grown() > 0 && grown > 0);
    assert_eq!(
        h.restart(),
        vec![rec(105), snap(103), rec(106), rec(107), snap(107)]
    );
    h.store().rewrite(&[rec(110), snap(107)]).unwrap();
    assert_eq!(h.restart(), vec![rec(110), snap(107)]);
}

struct Mem(MemLog);
impl Harness for Mem {
    type Store = MemLog;
    fn store(&mut self) -> &mut MemLog {
        &mut self.0
    }
    fn restart(&mut self) -> Vec<Record> {
        self.0.crash();
        self.0.durable().to_vec()
    }
}

struct Files {
    dir: std::path::PathBuf,
    log: Option<FileLog>,
}
impl Harness for Files {
    type Store = FileLog;
    fn store(&mut self) -> &mut FileLog {
        self.log.as_mut().expect("open")
    }
    fn restart(&mut self) -> Vec<Record> {
        self.log = None;
        let (log, records, rec) = FileLog::open(&self.dir).unwrap();
        assert_eq!(rec.truncated, None);
        self.log = Some(log);
        records
    }
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "meridian-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn mem_log_conforms() {
    suite(&mut Mem(MemLog::default()));
}

#[test]
fn mem_log_loses_unsynced_records_on_crash() {
    let mut m = MemLog::default();
    m.append(&[rec(1)]).unwrap();
    m.sync().unwrap();
    m.append(&[rec(2)]).unwrap();
    m.crash();
    assert_eq!(m.durable(), &[rec(1)]);
}

#[test]
fn file_log_conforms() {
    let dir = temp_dir("conformance");
    suite(&mut Files {
        dir: dir.clone(),
        log: None,
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn torn_tail_is_truncated_and_reported() {
    let dir = temp_dir("torn");
    let (mut log, _, _) = FileLog::open(&dir).unwrap();
    log.append(&(1..=3).map(rec).collect::<Vec<_>>()).unwrap();
    log.sync().unwrap();
    let path = log.current_segment();
    let len = log.segment_len();
    drop(log);
    // A crash left the last record short (and no preallocated space after it).
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 7).unwrap();
    let (_, records, recovery) = FileLog::open(&dir).unwrap();
    assert_eq!(records, vec![rec(1), rec(2)]);
    let (p, off, dropped) = recovery.truncated.expect("reported");
    assert_eq!(p, path);
    assert_eq!(off + dropped, len - 7);
    // The truncation is durable: a second open finds a clean log.
    let (_, again, recovery) = FileLog::open(&dir).unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(recovery.truncated, None);
    let _ = std::fs::remove_dir_all(dir);
}

fn snapshot(through: u64, len: usize) -> Record {
    Record::Snapshot {
        through: Slot(through),
        data: (0..len)
            .map(|i| (i * 7 + through as usize) as u8)
            .collect::<Vec<_>>()
            .into(),
    }
}

/// A snapshot goes to its own file and the WAL holds a reference of a few bytes: a rewrite
/// copies the reference, not the state, and removes the snapshot files it made obsolete.
#[test]
fn snapshots_live_in_their_own_files_and_rewrites_copy_only_a_reference() {
    let dir = temp_dir("snapfile");
    let (mut log, _, _) = FileLog::open(&dir).unwrap();
    log.append(&[rec(1), snapshot(10, 1 << 20), rec(11)])
        .unwrap();
    log.sync().unwrap();
    let seg = log.segment_len();
    assert!(
        seg < 1024,
        "the WAL holds a reference, not 1 MiB: {seg} bytes"
    );
    assert!(log.size() > 1 << 20, "size counts the snapshot file");
    let snap10 = super::snapshot_file::path(&dir, 10);
    assert!(snap10.exists());
    log.rewrite(&[rec(12), snapshot(10, 1 << 20)]).unwrap();
    let seg = log.segment_len();
    assert!(
        seg < 1024,
        "a rewrite copies the reference only: {seg} bytes"
    );
    log.append(&[snapshot(20, 4096)]).unwrap();
    log.sync().unwrap();
    log.rewrite(&[snapshot(20, 4096), rec(21)]).unwrap();
    assert!(!snap10.exists(), "an obsolete snapshot file is removed");
    drop(log);
    let (_, records, _) = FileLog::open(&dir).unwrap();
    assert_eq!(records, vec![snapshot(20, 4096), rec(21)]);
    let _ = std::fs::remove_dir_all(dir);
}

/// A snapshot file that is damaged, missing or not the one the log names stops recovery with
/// an error naming the file; a log written with snapshots inline (before snapshot files)
/// still reads.
#[test]
fn a_damaged_or_missing_snapshot_file_stops_recovery_naming_it() {
    let dir = temp_dir("snapbad");
    let (mut log, _, _) = FileLog::open(&dir).unwrap();
    log.append(&[rec(1), snapshot(10, 5000), rec(11)]).unwrap();
    log.sync().unwrap();
    drop(log);
    let path = super::snapshot_file::path(&dir, 10);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[3000] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let msg = FileLog::open(&dir).err().expect("refuses").to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("CRC32C"), "{msg}");
    std::fs::write(&path, &good[..good.len() - 10]).unwrap();
    let msg = FileLog::open(&dir).err().expect("refuses").to_string();
    assert!(msg.contains("cut short"), "{msg}");
    // Another snapshot of the same slot is not the one the log names.
    std::fs::remove_file(&path).unwrap();
    let Record::Snapshot { data, .. } = snapshot(10, 4000) else {
        unreachable!()
    };
    super::snapshot_file::ensure(&dir, 10, &data).unwrap();
    let msg = FileLog::open(&dir).err().expect("refuses").to_string();
    assert!(msg.contains("not the one the log refers to"), "{msg}");
    std::fs::remove_file(&path).unwrap();
    let msg = FileLog::open(&dir).err().expect("refuses").to_string();
    assert!(msg.contains("missing") && msg.contains("snap-"), "{msg}");
    std::fs::write(&path, &good).unwrap();
    assert_eq!(FileLog::open(&dir).unwrap().1.len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
    // A log with the snapshot inline, as written before snapshot files.
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = Vec::new();
    for r in [rec(1), snapshot(10, 5000), rec(11)] {
        super::frame::encode(&r, &mut bytes);
    }
    std::fs::write(dir.join("wal-0000000000000001.log"), &bytes).unwrap();
    let (_, records, _) = FileLog::open(&dir).unwrap();
    assert_eq!(records, vec![rec(1), snapshot(10, 5000), rec(11)]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_flipped_byte_in_the_middle_stops_recovery_naming_file_and_offset() {
    let dir = temp_dir("flip");
    let (mut log, _, _) = FileLog::open(&dir).unwrap();
    log.append(&(1..=4).map(rec).collect::<Vec<_>>()).unwrap();
    log.sync().unwrap();
    let path = log.current_segment();
    drop(log);
    let mut bytes = std::fs::read(&path).unwrap();
    let first_len = 8 + u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    bytes[first_len + 12] ^= 0xff; // inside the second record's payload
    std::fs::write(&path, &bytes).unwrap();
    let err = FileLog::open(&dir).err().expect("refuses to open");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("byte offset {first_len}")), "{msg}");
    // Nothing was modified.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let _ = std::fs::remove_dir_all(dir);
}

/// The segment being written is preallocated with zeros: they are free space on reopen (given
/// back, nothing reported), a record cut short in front of them is a torn tail (cut and
/// reported), and zeros with a record after them are damage (refused, nothing changed).
#[test]
fn preallocated_space_is_neither_a_record_nor_damage() {
    let dir = temp_dir("prealloc");
    let (mut log, _, _) = FileLog::open(&dir).unwrap();
    log.append(&(1..=3).map(rec).collect::<Vec<_>>()).unwrap();
    log.sync().unwrap();
    let path = log.current_segment();
    let end = log.segment_len();
    let on_disk = std::fs::metadata(&path).unwrap().len();
    assert_eq!(on_disk, super::wal::PREALLOCATE, "space was preallocated");
    assert!(end < on_disk);
    // Appends go into the preallocated space: the file does not grow.
    log.append(&[rec(4)]).unwrap();
    log.sync().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), on_disk);
    let end4 = log.segment_len();
    drop(log);

    // A clean reopen: every record, nothing reported, the space given back.
    let (log, records, recovery) = FileLog::open(&dir).unwrap();
    assert_eq!(records, (1..=4).map(rec).collect::<Vec<_>>());
    assert_eq!(recovery.truncated, None);
    assert_eq!(log.segment_len(), end4);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), end4);
    drop(log);

    // The fourth record's write was cut short inside preallocated space.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.resize(on_disk as usize, 0);
    for b in &mut bytes[end as usize + 10..end4 as usize] {
        *b = 0;
    }
    std::fs::write(&path, &bytes).unwrap();
    let (_, records, recovery) = FileLog::open(&dir).unwrap();
    assert_eq!(records, (1..=3).map(rec).collect::<Vec<_>>());
    let (p, off, _) = recovery.truncated.expect("a torn tail is reported");
    assert_eq!((p.as_path(), off), (path.as_path(), end));

    // Zeros in front of a record: damage, refused, the file left as it was.
    let mut bytes = std::fs::read(&path).unwrap();
    let mut record = Vec::new();
    super::frame::encode(&rec(9), &mut record);
    bytes.extend_from_slice(&[0u8; 64]);
    bytes.extend_from_slice(&record);
    std::fs::write(&path, &bytes).unwrap();
    let msg = FileLog::open(&dir).err().expect("refuses").to_string();
    assert!(msg.contains(&format!("byte offset {end}")), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let _ = std::fs::remove_dir_all(dir);
}

/// A crash between a rewrite's rename and the removal of the old segments leaves an older
/// segment with its preallocated zeros: it still reads, and is not changed.
#[test]
fn an_older_segment_with_preallocated_space_still_reads() {
    let dir = temp_dir("prealloc-old");
    let (mut log, _, _) = FileLog::open(&dir).unwrap();
    log.append(&[rec(1), rec(2)]).unwrap();
    log.sync().unwrap();
    let old = log.current_segment();
    let kept = std::fs::read(&old).unwrap();
    log.rewrite(&[rec(2)]).unwrap();
    log.append(&[rec(3)]).unwrap();
    log.sync().unwrap();
    drop(log);
    std::fs::write(&old, &kept).unwrap();
    let (_, records, recovery) = FileLog::open(&dir).unwrap();
    assert_eq!(records, vec![rec(1), rec(2), rec(2), rec(3)]);
    assert_eq!(recovery.truncated, None);
    assert_eq!(
        std::fs::read(&old).unwrap(),
        kept,
        "an older segment is not changed"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `reserve` makes the room ahead of `sync` (the WAL thread times only the sync): the file has
/// its preallocated length before any record is written into it, and the records that follow
/// read back as written.
#[test]
fn reserve_preallocates_before_the_records_are_synced() {
    let dir = temp_dir("reserve");
    let (mut log, _, _) = FileLog::open(&dir).unwrap();
    let path = log.current_segment();
    log.append(&(1..=3).map(rec).collect::<Vec<_>>()).unwrap();
    log.reserve().unwrap();
    let on_disk = std::fs::metadata(&path).unwrap().len();
    assert_eq!(on_disk % crate::storage::wal::PREALLOCATE, 0, "{on_disk}");
    assert!(on_disk > 0);
    assert_eq!(log.segment_len(), 0, "no record written yet");
    log.sync().unwrap();
    assert!(log.segment_len() > 0);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        on_disk,
        "no second growth"
    );
    drop(log);
    let (_, records, recovery) = FileLog::open(&dir).unwrap();
    assert_eq!(records, (1..=3).map(rec).collect::<Vec<_>>());
    assert_eq!(recovery.truncated, None);
    let _ = std::fs::remove_dir_all(dir);
}
