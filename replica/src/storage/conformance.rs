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
    drop(log);
    let len = std::fs::metadata(&path).unwrap().len();
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
