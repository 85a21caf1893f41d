//! Snapshot files: a state machine snapshot lives in its own file `snap-<through>.bin` next to
//! the WAL segments, and the WAL holds a small frame naming it (`WalEntry::SnapshotFile`). A
//! snapshot may be far larger than a WAL frame may be, and a rewrite of the log copies only the
//! reference, not the state.
//!
//! Layout: `MSNAP001 | len: u64 LE | crc32c(data): u32 LE | data`. A file is written to
//! `snap-<through>.bin.tmp`, fsync'd, renamed and the directory fsync'd, so a file under its final
//! name is always complete: whoever writes it first (the snapshot thread, or the WAL thread for a
//! snapshot installed from a peer) does so before any WAL frame refers to it.
use super::wal::StorageError;
use bytes::Bytes;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MSNAP001";
const HEADER: usize = 20;
/// How much of a snapshot is written before it is flushed to disk.
const FLUSH_EVERY: usize = 1 << 20;

/// The file holding the snapshot through slot `through`.
pub fn path(dir: &Path, through: u64) -> PathBuf {
    dir.join(format!("snap-{through:016}.bin"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Length and CRC32C of `data`, as a reference frame records them.
pub fn identity(data: &[u8]) -> (u64, u32) {
    (data.len() as u64, crc32c::crc32c(data))
}

/// Writes the snapshot through `through` durably (tmp, fsync, rename, directory fsync) unless a
/// complete file with the same length and checksum is already there. Returns its identity.
pub fn ensure(dir: &Path, through: u64, data: &[u8]) -> Result<(u64, u32), StorageError> {
    let final_path = path(dir, through);
    // The snapshot thread wrote it moments ago and the WAL thread now refers to it: the state
    // through a slot is the same wherever it was taken, so its identity is not computed again
    // (a checksum of a large state costs the WAL thread a group commit's time).
    if let Some(&(len, crc)) = written().lock().expect("lock").get(&final_path) {
        if len == data.len() as u64 && header(&final_path).is_ok_and(|h| h == (len, crc)) {
            return Ok((len, crc));
        }
    }
    let (len, crc) = identity(data);
    if header(&final_path).is_ok_and(|h| h == (len, crc)) {
        remember(&final_path, len, crc);
        return Ok((len, crc));
    }
    // A name of its own per writer: the snapshot thread and the WAL thread never share one.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = final_path.with_extension(format!("bin.{n}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        let mut head = Vec::with_capacity(HEADER);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&len.to_le_bytes());
        head.extend_from_slice(&crc.to_le_bytes());
        f.write_all(&head).map_err(io(&tmp))?;
        // Written and made durable a piece at a time: the WAL's fsyncs on the same disk never
        // queue behind more than one piece of dirty snapshot data (on ext4, a WAL fsync's
        // journal commit first writes out the other files' pending data).
        let mut pieces = data.chunks(FLUSH_EVERY).peekable();
        while let Some(piece) = pieces.next() {
            f.write_all(piece).map_err(io(&tmp))?;
            if pieces.peek().is_some() {
                f.sync_data().map_err(io(&tmp))?;
            }
        }
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, &final_path).map_err(io(&final_path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    remember(&final_path, len, crc);
    Ok((len, crc))
}

type Written = std::sync::Mutex<std::collections::HashMap<PathBuf, (u64, u32)>>;

/// Identities of the snapshot files this process wrote or checked (a few per shard: entries
/// go when their file is removed).
fn written() -> &'static Written {
    static W: std::sync::OnceLock<Written> = std::sync::OnceLock::new();
    W.get_or_init(Default::default)
}

fn remember(path: &Path, len: u64, crc: u32) {
    written()
        .lock()
        .expect("lock")
        .insert(path.to_path_buf(), (len, crc));
}

/// Removes a snapshot file no log refers to any more.
pub fn remove(path: &Path) -> Result<(), StorageError> {
    written().lock().expect("lock").remove(path);
    fs::remove_file(path).map_err(io(path))
}

fn header(path: &Path) -> Result<(u64, u32), StorageError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut head = [0u8; HEADER];
    f.read_exact(&mut head).map_err(io(path))?;
    if &head[..8] != MAGIC {
        return Err(corrupt(path, 0, "not a snapshot file (bad magic)"));
    }
    Ok((
        u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")),
        u32::from_le_bytes(head[16..20].try_into().expect("4 bytes")),
    ))
}

fn corrupt(path: &Path, offset: u64, reason: &'static str) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

/// Reads the snapshot a WAL frame refers to and checks it is exactly that one.
pub fn read(dir: &Path, through: u64, len: u64, crc: u32) -> Result<Bytes, StorageError> {
    let p = path(dir, through);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(corrupt(&p, 0, "snapshot file the log refers to is missing"))
        }
        Err(e) => return Err(io(&p)(e)),
    };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(corrupt(&p, 0, "not a snapshot file (bad magic)"));
    }
    let h_len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let h_crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    if h_len != len || h_crc != crc {
        return Err(corrupt(
            &p,
            8,
            "snapshot file is not the one the log refers to (length or checksum differs)",
        ));
    }
    if (bytes.len() - HEADER) as u64 != len {
        return Err(corrupt(
            &p,
            bytes.len().min(HEADER + len as usize) as u64,
            "snapshot file is cut short or too long",
        ));
    }
    let data = Bytes::from(bytes).slice(HEADER..);
    if crc32c::crc32c(&data) != crc {
        return Err(corrupt(&p, HEADER as u64, "snapshot CRC32C mismatch"));
    }
    Ok(data)
}

/// Snapshot files in `dir` by slot; with `clean`, leftovers of an interrupted write are removed
/// (only when nothing may be writing one: at open).
pub fn list(dir: &Path, clean: bool) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("snap-")
            .and_then(|s| s.strip_suffix(".bin"))
            .and_then(|s| s.parse().ok())
        {
            out.push((n, entry.path()));
        } else if clean && name.starts_with("snap-") && name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Bytes a snapshot file of `len` data bytes occupies.
pub fn file_len(len: u64) -> u64 {
    len + HEADER as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot of several flush pieces (and a partial last one) is written whole: it reads
    /// back byte for byte under its length and checksum.
    #[test]
    fn a_snapshot_of_many_pieces_reads_back_whole() {
        let dir = crate::storage::conformance::temp_dir("snap-pieces");
        fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..FLUSH_EVERY * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let (len, crc) = ensure(&dir, 7, &data).unwrap();
        assert_eq!((len, crc), identity(&data));
        assert_eq!(
            fs::metadata(path(&dir, 7)).unwrap().len(),
            file_len(data.len() as u64)
        );
        assert_eq!(read(&dir, 7, len, crc).unwrap(), data);
        let _ = fs::remove_dir_all(&dir);
    }
}
