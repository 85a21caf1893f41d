//! The file write-ahead log: segment files `wal-<n>.log` of framed records, and snapshot files
//! `snap-<through>.bin` the log refers to (`snapshot_file`).
//!
//! The segment being written is extended with zeros a chunk at a time ([`PREALLOCATE`]) and
//! records are written into that space: an fdatasync then has no file size to persist (on
//! ext4, a synchronous inode write saved per group commit — about a third of its CPU). Zeros
//! after a segment's last record are free space, not records and not damage.
//!
//! Recovery reads every segment in order. A torn final record (a write cut short by a crash,
//! possibly followed by preallocated zeros) is truncated and reported; any other damage stops
//! the replica with an error naming the file and byte offset — never silently dropped data.
use super::frame::{self, Decoded, WalEntry, HEADER};
use super::{snapshot_file, LogStore};
use meridian_core::Record;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt record at byte offset {offset}: {reason}; refusing to start (restore this replica from a peer or remove its data directory)")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What recovery found besides the records.
#[derive(Debug, Default, PartialEq)]
pub struct Recovery {
    /// A torn tail that was cut off: (file, offset it was cut at, bytes dropped).
    pub truncated: Option<(PathBuf, u64, u64)>,
    pub segments: usize,
}

/// The segment being written grows by this much zeroed space at a time.
pub const PREALLOCATE: u64 = 1 << 20;

pub struct FileLog {
    dir: PathBuf,
    segment: u64,
    file: File,
    /// Where the next record goes in the current segment (its records' length).
    end: u64,
    /// The current segment's length on disk: records, then zeros.
    allocated: u64,
    buf: Vec<u8>,
    /// Bytes of the segments and of the snapshot files they refer to.
    size: u64,
    /// Bytes written since the last rewrite (since opening, everything).
    grown: u64,
    /// The snapshot files the log refers to, by slot, with their sizes.
    snapshots: std::collections::BTreeMap<u64, u64>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:016}.log"))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("wal-")
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse().ok())
        {
            out.push((n, entry.path()));
        } else if name.ends_with(".log.tmp") {
            // An interrupted rewrite: the old segments are still complete.
            let _ = fs::remove_file(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

impl FileLog {
    /// Opens (or creates) the log in `dir` and reads back every record.
    pub fn open(dir: &Path) -> Result<(FileLog, Vec<Record>, Recovery), StorageError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let segments = list_segments(dir)?;
        snapshot_file::list(dir, true)?;
        let mut records = Vec::new();
        let mut snapshots = std::collections::BTreeMap::new();
        let mut recovery = Recovery {
            segments: segments.len(),
            ..Recovery::default()
        };
        // The records' length of each segment (without the zeros after them).
        let mut ends = Vec::with_capacity(segments.len());
        for (i, (_, path)) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let bytes = fs::read(path).map_err(io(path))?;
            let mut off = 0usize;
            while off < bytes.len() {
                match frame::decode(&bytes[off..]) {
                    Decoded::Entry(e, n) => {
                        records.push(match e {
                            WalEntry::Promise(b) => Record::Promise(b),
                            WalEntry::Accept {
                                slot,
                                ballot,
                                batch,
                            } => Record::Accept {
                                slot,
                                ballot,
                                batch,
                            },
                            WalEntry::Chosen { slot, batch } => Record::Chosen { slot, batch },
                            WalEntry::Snapshot { through, data } => {
                                Record::Snapshot { through, data }
                            }
                            WalEntry::SnapshotFile { through, len, crc } => {
                                let data = snapshot_file::read(dir, through.0, len, crc)?;
                                snapshots.insert(through.0, snapshot_file::file_len(len));
                                Record::Snapshot { through, data }
                            }
                        });
                        off += n;
                    }
                    _ if zeros(&bytes[off..]) => {
                        // Preallocated space: the records end here. The last segment gives
                        // it back (nothing is dropped: it never held a record).
                        if last {
                            let f = OpenOptions::new()
                                .write(true)
                                .open(path)
                                .map_err(io(path))?;
                            f.set_len(off as u64).map_err(io(path))?;
                            f.sync_all().map_err(io(path))?;
                        }
                        break;
                    }
                    other => {
                        // A record cut short: by the end of the file, or by the zeros of
                        // preallocated space that its write did not fill.
                        let reaches_end = match other {
                            Decoded::Incomplete => true,
                            _ => {
                                let len = u32::from_le_bytes(
                                    bytes[off..off + 4].try_into().expect("header"),
                                ) as usize;
                                let claimed = off.saturating_add(HEADER).saturating_add(len);
                                claimed >= bytes.len() || zeros(&bytes[claimed..])
                            }
                        };
                        if last && reaches_end {
                            let f = OpenOptions::new()
                                .write(true)
                                .open(path)
                                .map_err(io(path))?;
                            f.set_len(off as u64).map_err(io(path))?;
                            f.sync_all().map_err(io(path))?;
                            recovery.truncated =
                                Some((path.clone(), off as u64, (bytes.len() - off) as u64));
                            break;
                        }
                        let reason = match other {
                            Decoded::Corrupt(r) => r,
                            _ => "record cut short in the middle of the log",
                        };
                        return Err(StorageError::Corrupt {
                            path: path.clone(),
                            offset: off as u64,
                            reason,
                        });
                    }
                }
            }
            ends.push(off.min(bytes.len()) as u64);
        }
        let segment = segments.last().map_or(1, |s| s.0);
        let path = segment_path(dir, segment);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        let end = ends.last().copied().unwrap_or(0);
        let size = ends.iter().sum::<u64>() + snapshots.values().sum::<u64>();
        if segments.is_empty() {
            sync_dir(dir)?;
        }
        Ok((
            FileLog {
                dir: dir.to_path_buf(),
                segment,
                file,
                end,
                allocated: end,
                buf: Vec::new(),
                size,
                grown: size,
                snapshots,
            },
            records,
            recovery,
        ))
    }

    pub fn current_segment(&self) -> PathBuf {
        segment_path(&self.dir, self.segment)
    }

    /// The length of the current segment's records (its file is longer by its free space).
    pub fn segment_len(&self) -> u64 {
        self.end
    }

    /// Frames `r` into `out`; a snapshot goes to its own file first (durable before the frame
    /// that names it). Returns the bytes of a snapshot file newly referred to.
    fn frame(&mut self, r: &Record, out: &mut Vec<u8>) -> Result<u64, StorageError> {
        let Record::Snapshot { through, data } = r else {
            frame::encode(r, out);
            return Ok(0);
        };
        let (len, crc) = snapshot_file::ensure(&self.dir, through.0, data)?;
        frame::encode(
            &WalEntry::SnapshotFile {
                through: *through,
                len,
                crc,
            },
            out,
        );
        let bytes = snapshot_file::file_len(len);
        Ok(match self.snapshots.insert(through.0, bytes) {
            Some(_) => 0,
            None => bytes,
        })
    }
}

/// Whether `bytes` are all zero (preallocated space never written).
fn zeros(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl LogStore for FileLog {
    fn append(&mut self, records: &[Record]) -> Result<(), StorageError> {
        let mut buf = std::mem::take(&mut self.buf);
        for r in records {
            match self.frame(r, &mut buf) {
                Ok(bytes) => {
                    self.size += bytes;
                    self.grown += bytes;
                }
                Err(e) => {
                    self.buf = buf;
                    return Err(e);
                }
            }
        }
        self.buf = buf;
        Ok(())
    }

    fn reserve(&mut self) -> Result<(), StorageError> {
        let end = self.end + self.buf.len() as u64;
        if end <= self.allocated {
            return Ok(());
        }
        // Zeros written (not fallocated: ext4 would then convert extents at every fdatasync)
        // and synced on their own: the size change and the blocks are on disk before any
        // record goes into them.
        let path = self.current_segment();
        let to = end.div_ceil(PREALLOCATE) * PREALLOCATE;
        let zeros = vec![0u8; (to - self.allocated) as usize];
        self.file
            .write_all_at(&zeros, self.allocated)
            .map_err(io(&path))?;
        self.file.sync_data().map_err(io(&path))?;
        self.allocated = to;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let path = self.current_segment();
        if !self.buf.is_empty() {
            let len = self.buf.len() as u64;
            let end = self.end + len;
            if end > self.allocated {
                self.reserve()?;
            }
            self.file
                .write_all_at(&self.buf, self.end)
                .map_err(io(&path))?;
            self.end = end;
            self.size += len;
            self.grown += len;
            self.buf.clear();
        }
        self.file.sync_data().map_err(io(&path))
    }

    fn rewrite(&mut self, records: &[Record]) -> Result<(), StorageError> {
        self.sync()?;
        let next = self.segment + 1;
        let path = segment_path(&self.dir, next);
        let tmp = path.with_extension("log.tmp");
        let old_snapshots = std::mem::take(&mut self.snapshots);
        let mut bytes = Vec::new();
        for r in records {
            if let Err(e) = self.frame(r, &mut bytes) {
                self.snapshots = old_snapshots;
                return Err(e);
            }
        }
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(&self.dir)?;
        for (n, old) in list_segments(&self.dir)? {
            if n < next {
                fs::remove_file(&old).map_err(io(&old))?;
            }
        }
        // Snapshot files older than the newest one the new log refers to are no longer needed
        // (newer ones may be a snapshot whose frame is still on its way).
        if let Some(&newest) = self.snapshots.keys().next_back() {
            for (n, old) in snapshot_file::list(&self.dir, false)? {
                if n < newest && !self.snapshots.contains_key(&n) {
                    snapshot_file::remove(&old)?;
                }
            }
        }
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        self.end = bytes.len() as u64;
        self.allocated = self.end;
        self.segment = next;
        self.size = bytes.len() as u64 + self.snapshots.values().sum::<u64>();
        self.grown = 0;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size + self.buf.len() as u64
    }

    fn grown(&self) -> u64 {
        self.grown + self.buf.len() as u64
    }
}
