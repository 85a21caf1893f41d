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

/// A durability notice: every append up to `token` is on disk; the log is `bytes` long, `grown`
/// of them since its last rewrite.
pub struct Durable {
    pub token: u64,
    pub bytes: u64,
    pub grown: u64,
    pub fsync_us: u64,
}

/// `done` is told about each group commit; it returns false once nobody listens.
pub fn spawn(
    name: String,
    mut log: FileLog,
    done: impl Fn(Durable) -> bool + Send + 'static,
) -> (mpsc::Sender<WalOp>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<WalOp>();
    let planted = planted_ack_before_durable();
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if planted {
                return run_planted(&name, log, rx, done);
            }
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
                // Room for the records first (a preallocation's zeros, synced on their own):
                // the fsync timed below is the group commit's, which `meridian status` judges.
                if let Err(e) = log.reserve() {
                    fatal(&name, &e);
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
                        grown: log.grown(),
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

/// A planted bug for the real-process tests (`MERIDIAN_PLANTED_BUG=ack-before-durable`):
/// the WAL thread reports every append durable at once and writes it only every 2 s, so a
/// kill -9 of every replica loses writes the cluster acknowledged. The tests prove their
/// checks catch it; never set it anywhere else (the replica says so loudly at start).
pub fn planted_ack_before_durable() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var("MERIDIAN_PLANTED_BUG").as_deref() == Ok("ack-before-durable");
        if on {
            tracing::error!("PLANTED BUG ack-before-durable is ON: this replica acknowledges writes before they are on disk (tests only)");
        }
        on
    })
}

fn run_planted(
    name: &str,
    mut log: FileLog,
    rx: mpsc::Receiver<WalOp>,
    done: impl Fn(Durable) -> bool,
) {
    let mut pending: Vec<WalOp> = Vec::new();
    let mut last = std::time::Instant::now();
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(op) => {
                if let WalOp::Append { token, .. } = &op {
                    let d = Durable {
                        token: *token,
                        bytes: log.size(),
                        grown: log.grown(),
                        fsync_us: 0,
                    };
                    if !done(d) {
                        return;
                    }
                }
                pending.push(op);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if last.elapsed() >= std::time::Duration::from_secs(2) {
            for op in pending.drain(..) {
                let r = match op {
                    WalOp::Append { records, .. } => log.append(&records),
                    WalOp::Rewrite(records) => log.rewrite(&records),
                };
                if let Err(e) = r.and_then(|_| log.sync()) {
                    fatal(name, &e);
                }
            }
            last = std::time::Instant::now();
        }
    }
}

/// A write or fsync failed: continuing could acknowledge what is not durable. Stop.
fn fatal(name: &str, e: &crate::storage::StorageError) -> ! {
    tracing::error!(wal = name, error = %e, "WAL write failed; stopping the replica");
    std::process::exit(3);
}
