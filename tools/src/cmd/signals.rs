//! Shutdown triggers shared by long-running commands.
use std::time::Duration;

/// Resolves on SIGTERM, SIGINT, or when `parent` (if given) no longer exists.
pub async fn until_shutdown(parent: Option<i32>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let orphaned = async move {
        let Some(pid) = parent else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
        _ = orphaned => tracing::warn!("parent process gone"),
    }
}
