//! One client connection after its TLS handshake: HTTP/2 when ALPN chose it, HTTP/1.1
//! otherwise. An HTTP/1.1 keep-alive connection idle for [`PARK_AFTER`] is *parked*: hyper's
//! connection (its read and write buffers, its dispatcher) is shut down gracefully without
//! closing the stream and freed; only the TLS stream stays, waiting for its next bytes, which
//! start a fresh hyper connection with whatever hyper had already read in front. That keeps a
//! parked client at the TLS session and socket alone (the issue's ≤ 16 KiB per idle connection).
//! The connection futures are boxed so the task itself stays small while parked (a task's
//! allocation is as large as the largest state of its future).
//!
//! Limits (`[limits]`) hold throughout: the header read timeout (slowloris), the idle timeout
//! (parked time counts as idle), and the HTTP/2 stream bound.
use crate::conn_limits::{idle, Activity, Watched};
use crate::Proxy;
use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use meridian_replica::config::LimitsSection;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An idle HTTP/1.1 connection is parked after this long without a byte or a request.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

type Tls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
type Reply = Pin<
    Box<
        dyn Future<Output = Result<hyper::Response<crate::http::Body>, std::convert::Infallible>>
            + Send,
    >,
>;

/// Who is on the other end, and under which limits.
pub struct Client {
    pub proxy: Arc<Proxy>,
    /// The client name of the connection's certificate, if it presented one.
    pub cert_client: Option<Arc<str>>,
    pub limits: LimitsSection,
    pub peer: std::net::SocketAddr,
}

/// The service of one connection: every request to `http::handle`, its future boxed (Unpin,
/// as parking needs).
fn service(
    c: &Client,
    activity: &Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::http::Body>,
    Error = std::convert::Infallible,
    Future = Reply,
> + Clone {
    let (proxy, client, activity) = (c.proxy.clone(), c.cert_client.clone(), activity.clone());
    hyper::service::service_fn(move |req| -> Reply {
        let proxy = proxy.clone();
        let client = client.clone();
        let busy = activity.request();
        Box::pin(async move {
            let r = crate::http::handle(proxy, req, client.as_deref()).await;
            drop(busy);
            Ok(r)
        })
    })
}

/// Serves the connection until the client leaves or a limit closes it.
pub async fn serve(tls: Tls, c: Client) {
    let activity = Activity::new();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let io = Watched::new(tls, activity.clone());
    if h2 {
        Box::pin(serve_h2(io, &c, &activity)).await;
        return;
    }
    let idle_limit = Duration::from_millis(c.limits.idle_timeout_ms);
    let header_limit = Duration::from_millis(c.limits.header_timeout_ms);
    let mut io = io;
    let mut prefix = Bytes::new();
    // When the unfinished request carried over a park began (at the latest): the header
    // timeout runs on across parks, so a slowloris client cannot reset it by pausing.
    let mut partial_since: Option<Instant> = None;
    loop {
        let round = Instant::now();
        let answered = activity.answered();
        let budget =
            partial_since.map_or(header_limit, |t| header_limit.saturating_sub(t.elapsed()));
        if budget.is_zero() {
            c.proxy.metrics.closed("header_timeout");
            tracing::debug!(peer = %c.peer, "request headers timed out");
            return;
        }
        match Box::pin(serve_h1(io, prefix, budget, &c, &activity)).await {
            Some((back, rest)) => {
                io = back;
                partial_since = if rest.is_empty() {
                    None
                } else if activity.answered() == answered && partial_since.is_some() {
                    partial_since
                } else {
                    Some(activity.last_answered().map_or(round, |d| d.max(round)))
                };
                prefix = rest;
            }
            None => return,
        }
        c.proxy.metrics.parked_connections.inc();
        let woke = if prefix.is_empty() {
            tokio::select! {
                r = io.get_ref().get_ref().0.readable() => r.is_ok(),
                _ = idle(&activity, idle_limit) => {
                    c.proxy.metrics.closed("idle_timeout");
                    false
                }
            }
        } else {
            true
        };
        c.proxy.metrics.parked_connections.dec();
        if !woke {
            return;
        }
    }
}

async fn serve_h2(io: Watched<Tls>, c: &Client, activity: &Arc<Activity>) {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(c.limits.max_streams_per_connection);
    let conn = b.serve_connection(TokioIo::new(io), service(c, activity));
    tokio::pin!(conn);
    let idle_limit = Duration::from_millis(c.limits.idle_timeout_ms);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = idle(activity, idle_limit) => {
            c.proxy.metrics.closed("idle_timeout");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// Serves HTTP/1.1 until the connection closes (`None`) or it has been idle for
/// [`PARK_AFTER`]: then hyper is shut down gracefully, keeping the stream, which comes back
/// with the bytes hyper had read but not used.
async fn serve_h1(
    io: Watched<Tls>,
    prefix: Bytes,
    header_timeout: Duration,
    c: &Client,
    activity: &Arc<Activity>,
) -> Option<(Watched<Tls>, Bytes)> {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut conn = b.serve_connection(
        TokioIo::new(Rewind { prefix, inner: io }),
        service(c, activity),
    );
    let park = PARK_AFTER.min(Duration::from_millis(c.limits.idle_timeout_ms));
    let mut parking = false;
    let mut wait = Box::pin(idle(activity, park));
    let r = std::future::poll_fn(|cx| {
        if !parking && wait.as_mut().poll(cx).is_ready() {
            parking = true;
            Pin::new(&mut conn).graceful_shutdown();
        }
        conn.poll_without_shutdown(cx)
    })
    .await;
    match r {
        Err(e) => {
            if e.is_timeout() {
                c.proxy.metrics.closed("header_timeout");
                tracing::debug!(peer = %c.peer, "request headers timed out");
            }
            None
        }
        // Finished by itself: the client closed (or asked to close) the connection.
        Ok(()) if !parking => None,
        Ok(()) => {
            let parts = conn.into_parts();
            let Rewind { prefix, inner } = parts.io.into_inner();
            let mut rest = BytesMut::with_capacity(prefix.len() + parts.read_buf.len());
            rest.extend_from_slice(&prefix);
            rest.extend_from_slice(&parts.read_buf);
            Some((inner, rest.freeze()))
        }
    }
}

/// A stream with bytes already read from it in front.
struct Rewind {
    prefix: Bytes,
    inner: Watched<Tls>,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
