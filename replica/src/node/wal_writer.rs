//! One thread per shard group doing the WAL's group commit: it drains every queued write,
//! appends them all, fsyncs once, and only then reports the highest token durable.
use crate::storage::{FileLog, LogStore};
use meridian_core::Record;
use std::sync::mpsc;

pub enum WalOp {
    Append {
        token: u64,
        records: Vec<Record>,
    },
    /// Replace the log with an equivalent compacted state.
    Rewrite(Vec<Record>),
}

/// A durability notice: every append up to `token` is on disk; the log is `bytes` long.
pub struct Durable {
    pub token: u64,
    pub bytes: u64,
    pub fsync_us: u64,
}

/// `done` is told about each group commit; it returns false once nobody listens.
pub fn spawn(
    name: String,
    mut log: FileLog,
    done: impl Fn(Durable) -> bool + Send + 'static,
) -> (mpsc::Sender<WalOp>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<WalOp>();
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut ops = vec![first];
                while let Ok(op) = rx.try_recv() {
                    ops.push(op);
                }
                let mut token = None;
                for op in ops {
                    let r = match op {
                        WalOp::Append { token: t, records } => {
                            token = Some(t);
                            log.append(&records)
                        }
                        WalOp::Rewrite(records) => log.rewrite(&records),
                    };
                    if let Err(e) = r {
                        fatal(&name, &e);
                    }
                }
                let start = std::time::Instant::now();
                if let Err(e) = log.sync() {
                    fatal(&name, &e);
                }
                let fsync_us = start.elapsed().as_micros() as u64;
                if let Some(token) = token {
                    if !done(Durable {
                        token,
                        bytes: log.size(),
                        fsync_us,
                    }) {
                        return;
                    }
                }
            }
            // Channel closed: everything queued was written and synced above.
        })
        .expect("spawn WAL thread");
    (tx, handle)
}

/// A write or fsync failed: continuing could acknowledge what is not durable. Stop.
fn fatal(name: &str, e: &crate::storage::StorageError) -> ! {
    tracing::error!(wal = name, error = %e, "WAL write failed; stopping the replica");
    std::process::exit(3);
}
