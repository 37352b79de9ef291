//! OpenTelemetry spans, off until the binary installs an exporter ([`enable`]). Every
//! helper here first checks [`enabled`], one relaxed atomic load, so the request path
//! does no tracing work at all when tracing is off.
//!
//! The context travels with the request's future ([`in_span`] attaches it on each
//! poll), so a span started deep inside a store or an identity-provider call becomes a
//! child of the request's span without being passed along. Span attributes never carry
//! tokens, cookies, secrets or query strings (which may hold codes); paths and names only.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{FutureExt, Span, SpanKind, Status, TraceContextExt, Tracer};

pub use opentelemetry::Context;
pub use opentelemetry::KeyValue;

static ON: AtomicBool = AtomicBool::new(false);
static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// Turns span creation on, once the global tracer provider and the W3C propagator are
/// installed.
pub fn enable() {
    let _ = TRACER.get_or_init(|| global::tracer("portcullis"));
    ON.store(true, Ordering::Relaxed);
}

#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Whether a span started now would be recorded: tracing is on, and the current request
/// (if any) was sampled. Call sites check it before building a traced future at all, so
/// the 99% of requests a 1% sampler drops pay for nothing but their own span.
#[inline]
pub fn recording() -> bool {
    enabled() && parent_to_trace().is_some()
}

fn tracer() -> Option<&'static BoxedTracer> {
    if enabled() { TRACER.get() } else { None }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The span of a request that arrived: a child of the client's `traceparent` (and
/// `tracestate`) when it sent one, else the root of a new trace. Its `attributes` are
/// computed only when the sampler keeps the span. `None` when tracing is off.
pub fn server_span(
    name: &'static str,
    headers: &HeaderMap,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Option<Context> {
    let tracer = tracer()?;
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .start_with_context(tracer, &parent);
    if span.is_recording() {
        span.set_attributes(attributes());
    }
    Some(parent.with_span(span))
}

/// The current context, unless it belongs to a span the sampler dropped: the work of
/// such a request records no child spans (they would be dropped too), and skips their
/// cost. Work outside any request (a key refresh) starts its own trace.
fn parent_to_trace() -> Option<Context> {
    let parent = Context::current();
    if parent.has_active_span() && !parent.span().span_context().is_sampled() {
        return None;
    }
    Some(parent)
}

/// Writes the current span's `traceparent` (and `tracestate`) into `headers`, replacing
/// what the client sent, so the next hop continues this trace. Does nothing when
/// tracing is off: the client's own headers then pass on untouched.
pub fn inject(headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = Context::current();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

/// Runs `work` in a span `name` (a child of the current one) when tracing is on.
pub async fn in_span<F: Future>(name: &'static str, kind: SpanKind, work: F) -> F::Output {
    let Some((tracer, parent)) = tracer().zip(parent_to_trace()) else {
        return work.await;
    };
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .start_with_context(tracer, &parent);
    work.with_context(parent.with_span(span)).await
}

/// [`in_span`] for work that can fail: a failure marks the span as an error (with the
/// failure's text, which must hold no secret).
pub async fn in_span_result<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    name: &'static str,
    kind: SpanKind,
    work: F,
) -> Result<T, E> {
    let Some((tracer, parent)) = tracer().zip(parent_to_trace()) else {
        return work.await;
    };
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .start_with_context(tracer, &parent);
    let cx = parent.with_span(span);
    let out = work.with_context(cx.clone()).await;
    if let Err(e) = &out {
        cx.span().set_status(Status::error(e.to_string()));
    }
    out
}

/// Runs `work` under the context `cx` (a request's span); the span ends when the last
/// copy of `cx` is dropped.
pub async fn within<F: Future>(cx: Context, work: F) -> F::Output {
    work.with_context(cx).await
}

/// Sets attributes on the current span (when tracing is on).
pub fn record(attributes: impl FnOnce() -> Vec<KeyValue>) {
    if !enabled() {
        return;
    }
    let cx = Context::current();
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
    for kv in attributes() {
        span.set_attribute(kv);
    }
}

/// Ends a request's span: its status code, and an error status for a 5xx.
pub fn finish(cx: &Context, status: u16) {
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
}

/// Marks the current span as failed.
pub fn fail(reason: &str) {
    if !enabled() {
        return;
    }
    Context::current()
        .span()
        .set_status(Status::error(reason.to_string()));
}

pub use opentelemetry::trace::SpanKind as Kind;
