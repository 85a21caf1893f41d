//! Client connection limits at the proxy (`[limits]` in cluster.toml): how many connections,
//! how long a TLS handshake, a request's headers or body, and an idle connection may take. A
//! connection that breaks a limit is closed and counted; the rest are never slowed by it.
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// When the connection last moved a byte, and how many requests it has in flight.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicU64,
    /// Requests answered, and when the last one was.
    done: AtomicU64,
    last_done_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            done: AtomicU64::new(0),
            last_done_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long the connection has been idle: no byte moved and no request in flight.
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// How many requests have been answered on the connection.
    pub fn answered(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// When the last request was answered (None: none yet).
    pub fn last_answered(&self) -> Option<Instant> {
        (self.answered() > 0)
            .then(|| self.epoch + Duration::from_millis(self.last_done_ms.load(Ordering::Relaxed)))
    }

    /// Marks a request in flight until the guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
        self.0
            .last_done_ms
            .store(self.0.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.0.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// An IO stream that records its activity.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Watched<S> {
        activity.touch();
        Watched { inner, activity }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves when the connection has been idle for `limit` (checked every `limit / 4`, at
/// least every 50 ms).
pub async fn idle(activity: &Activity, limit: Duration) {
    let step = (limit / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(step).await;
        if activity.idle_for() >= limit {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn activity_follows_bytes_and_requests() {
        let (a, mut b) = tokio::io::duplex(64);
        let act = Activity::new();
        let mut w = Watched::new(a, act.clone());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(act.idle_for() >= Duration::from_millis(100));
        b.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        w.read_exact(&mut buf).await.unwrap();
        assert!(
            act.idle_for() < Duration::from_millis(50),
            "a read is activity"
        );
        let guard = act.request();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            act.idle_for(),
            Duration::ZERO,
            "a request in flight is not idle"
        );
        drop(guard);
        assert!(act.idle_for() < Duration::from_millis(50));
        let t0 = Instant::now();
        idle(&act, Duration::from_millis(200)).await;
        assert!(t0.elapsed() >= Duration::from_millis(200));
    }
}
