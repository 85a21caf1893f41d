//! The async runtime of a server process (replica, proxy) and how many worker threads it gets.
//!
//! A process alone on its machine wants one worker per core (tokio's default). Processes that
//! share a machine — a local cluster, a benchmark — do better with the cores split among them:
//! every worker that parks and is woken by another costs a futex wake and a context switch,
//! and with ten processes of two workers each on two cores that was a tenth of the machine
//! (README, performance).
use anyhow::{Context, Result};

/// A multi-threaded runtime with `threads` workers (0: one per core).
pub fn server(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        b.worker_threads(threads);
    }
    b.enable_all().build().context("tokio runtime")
}

/// Workers for each of `processes` server processes sharing `cores`: an equal share, at least
/// one.
pub fn share(cores: usize, processes: usize) -> usize {
    (cores / processes.max(1)).max(1)
}

/// This machine's cores (1 when it cannot tell).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_split_the_cores_and_each_keeps_one() {
        assert_eq!(share(2, 10), 1);
        assert_eq!(share(2, 5), 1);
        assert_eq!(share(16, 5), 3);
        assert_eq!(share(32, 10), 3);
        assert_eq!(share(8, 1), 8);
        assert_eq!(share(4, 0), 4);
    }

    #[test]
    fn a_server_runtime_has_the_workers_asked_for() {
        for n in [1, 3] {
            let rt = server(n).unwrap();
            assert_eq!(rt.metrics().num_workers(), n);
        }
        assert_eq!(server(0).unwrap().metrics().num_workers(), cores());
    }
}
