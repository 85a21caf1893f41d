//! Request tracing across processes: a W3C `traceparent` (trace id, span id) carried from a
//! client through the proxy to the replicas in gRPC metadata, so one request's log lines (and,
//! with the `otel` feature of the `meridian` binary, its OpenTelemetry spans) can be joined
//! across the proxy and every replica it touched.
//!
//! Each process opens one `debug` span per request it handles (`request` at the proxy, `batch`
//! for a proxy's write batch, `replica_request` at a replica) whose fields include `trace_id`,
//! `span_id` and `parent_span`; with `RUST_LOG=meridian=debug` (or `debug`) each span logs one
//! line when it closes, with its timings.
use std::cell::Cell;
use std::fmt;

/// The metadata key (gRPC) and header (HTTP) that carry the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// One span's place in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// Never zero.
    pub trace_id: u128,
    /// Never zero.
    pub span_id: u64,
    /// The span this one continues (zero: a root).
    pub parent: u64,
}

impl TraceContext {
    /// A new root: a fresh trace with no parent.
    pub fn root() -> TraceContext {
        let hi = random_u64();
        let lo = random_u64();
        TraceContext {
            trace_id: (((hi as u128) << 64) | lo as u128).max(1),
            span_id: random_u64(),
            parent: 0,
        }
    }

    /// A new span of the same trace whose parent is this one.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: random_u64(),
            parent: self.span_id,
        }
    }

    /// The context for a request that arrived with `header` (a `traceparent` value): a child of
    /// the caller's span when the header is valid, else a new root. A malformed header is not an
    /// error (the W3C rule: restart the trace).
    pub fn incoming(header: Option<&str>) -> TraceContext {
        match header.and_then(parse_traceparent) {
            Some((trace_id, parent)) => TraceContext {
                trace_id,
                span_id: random_u64(),
                parent,
            },
            None => TraceContext::root(),
        }
    }

    /// The `traceparent` value a call made from this span carries.
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }

    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn span_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The parent span id in hex, empty for a root.
    pub fn parent_hex(&self) -> String {
        if self.parent == 0 {
            String::new()
        } else {
            format!("{:016x}", self.parent)
        }
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>` → (trace id, span id); all-zero ids
/// and other versions' malformed values are refused, as W3C Trace Context says.
pub fn parse_traceparent(s: &str) -> Option<(u128, u64)> {
    let parts: Vec<&str> = s.trim().split('-').collect();
    let [version, trace, span, flags, ..] = parts.as_slice() else {
        return None;
    };
    if version.len() != 2 || *version == "ff" || !hex(version) {
        return None;
    }
    if *version == "00" && parts.len() != 4 {
        return None;
    }
    if trace.len() != 32 || span.len() != 16 || flags.len() != 2 || !hex(flags) {
        return None;
    }
    if !hex(trace) || !hex(span) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let span_id = u64::from_str_radix(span, 16).ok()?;
    (trace_id != 0 && span_id != 0).then_some((trace_id, span_id))
}

fn hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Ids need to be unique, not secret: a per-thread SplitMix64 seeded from the process's
/// randomly keyed hasher, the thread and the clock.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|s| {
        let mut x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (x ^ (x >> 31)).max(1)
    })
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::thread::current().id().hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    std::process::id().hash(&mut h);
    h.finish()
}

/// Makes `span` the span of `ctx` and returns the context calls made under it carry. Records the
/// span's `trace_id`, `span_id` and `parent_span` fields (declared `Empty` by its creator).
/// With the `otel` feature and an OpenTelemetry layer installed, the span joins the caller's
/// remote trace and its OpenTelemetry ids are the ones returned, so the exported spans chain
/// across processes.
pub fn enter(ctx: TraceContext, span: &tracing::Span) -> TraceContext {
    if span.is_disabled() {
        // Nothing records the ids (no subscriber wants the span): do not format them.
        return ctx;
    }
    let ctx = otel::adopt(ctx, span);
    span.record("trace_id", tracing::field::display(ctx.trace_hex()));
    span.record("span_id", tracing::field::display(ctx.span_hex()));
    span.record("parent_span", tracing::field::display(ctx.parent_hex()));
    ctx
}

#[cfg(feature = "otel")]
mod otel {
    use super::TraceContext;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    pub fn adopt(ctx: TraceContext, span: &tracing::Span) -> TraceContext {
        if ctx.parent != 0 {
            let remote = SpanContext::new(
                TraceId::from_bytes(ctx.trace_id.to_be_bytes()),
                SpanId::from_bytes(ctx.parent.to_be_bytes()),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let otel = span.context();
        let sc = otel.span().span_context().clone();
        if !sc.is_valid() {
            return ctx; // no OpenTelemetry layer: our own ids
        }
        TraceContext {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            parent: ctx.parent,
        }
    }
}

#[cfg(not(feature = "otel"))]
mod otel {
    use super::TraceContext;

    pub fn adopt(ctx: TraceContext, _span: &tracing::Span) -> TraceContext {
        ctx
    }
}

tokio::task_local! {
    static CURRENT: Cell<TraceContext>;
}

/// Runs `fut` with `ctx` as the current trace context of the task (what outgoing calls carry).
///
/// Not an `async fn`: that would keep `fut` in its own state beside the task-local future
/// holding it (a request future of the proxy was three times its size by such nesting, and
/// every byte is copied when the future is boxed).
pub fn scope<F: std::future::Future>(
    ctx: TraceContext,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope(Cell::new(ctx), fut)
}

/// `scope`, also returning the context as `fut` left it (see `replace_current`): an edge
/// reports the trace id its request span really had.
pub fn scope_reporting<F: std::future::Future>(
    ctx: TraceContext,
    fut: F,
) -> impl std::future::Future<Output = (F::Output, TraceContext)> {
    // A combinator, not an async block: that would hold `fut` twice (captured and awaited).
    use futures::FutureExt;
    CURRENT.scope(
        Cell::new(ctx),
        fut.map(move |out| (out, current().unwrap_or(ctx))),
    )
}

/// The current task's trace context, if it runs inside `scope`.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| c.get()).ok()
}

/// Replaces the current scope's context (a span that took other ids, see `enter`).
pub fn replace_current(ctx: TraceContext) {
    let _ = CURRENT.try_with(|c| c.set(ctx));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_children_keep_the_trace() {
        let root = TraceContext::root();
        assert_eq!(root.parent, 0);
        let (t, s) = parse_traceparent(&root.traceparent()).unwrap();
        assert_eq!((t, s), (root.trace_id, root.span_id));
        let child = TraceContext::incoming(Some(&root.traceparent()));
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent, root.span_id);
        assert_ne!(child.span_id, root.span_id);
        let grandchild = child.child();
        assert_eq!(grandchild.trace_id, root.trace_id);
        assert_eq!(grandchild.parent, child.span_id);
    }

    #[test]
    fn the_w3c_example_parses_and_malformed_values_restart_the_trace() {
        let ex = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(ex),
            Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7))
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
            let c = TraceContext::incoming(Some(bad));
            assert_eq!(c.parent, 0, "{bad:?} starts a new trace");
        }
        // A later version may carry more fields.
        assert!(parse_traceparent(&format!("01-{}-extra", &ex[3..])).is_some());
    }

    #[test]
    fn ids_are_distinct() {
        let ids: std::collections::HashSet<u64> = (0..10_000).map(|_| random_u64()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[tokio::test]
    async fn the_scope_is_what_current_sees() {
        assert_eq!(current(), None);
        let c = TraceContext::root();
        assert_eq!(scope(c, async { current() }).await, Some(c));
        let d = c.child();
        let ((), seen) = scope_reporting(c, async { replace_current(d) }).await;
        assert_eq!(seen, d);
        assert_eq!(current(), None);
    }
}
