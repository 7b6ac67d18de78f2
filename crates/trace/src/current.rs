//! The trace context of the work a task is doing now.
//!
//! Why a task-local and not a function argument: the context has to reach
//! calls made deep inside handlers written by service authors (the
//! resilient client, the bus client) without every signature in between
//! carrying it. The SDK sets it around each request and each delivered
//! message; work spawned onto other tasks does not inherit it.

use std::future::Future;

use crate::TraceContext;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Runs `work` with `ctx` as the current trace context.
pub async fn scope<F: Future>(ctx: TraceContext, work: F) -> F::Output {
    CURRENT.scope(ctx, work).await
}

/// The trace context of the request or message this task is handling.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|ctx| *ctx).ok()
}

/// The `traceparent` to send on an outgoing call or message: the current
/// trace with a new span id, or `None` outside any trace.
pub fn outgoing() -> Option<String> {
    current().map(|ctx| ctx.child().header())
}

/// A span named `name` (`request`, `deliver`…) carrying `trace_id`, so every
/// line logged inside it names the trace.
pub fn span(name: &'static str, ctx: &TraceContext) -> tracing::Span {
    match name {
        "request" => tracing::info_span!("request", trace_id = %ctx.trace_id()),
        "deliver" => tracing::info_span!("deliver", trace_id = %ctx.trace_id()),
        _ => tracing::info_span!("trace", trace_id = %ctx.trace_id()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scope_sets_the_context_and_outgoing_continues_it() {
        assert_eq!(current(), None);
        assert_eq!(outgoing(), None);
        let ctx = TraceContext::start();
        let out = scope(ctx, async { outgoing() }).await.unwrap();
        let out = TraceContext::parse(&out).unwrap();
        assert_eq!(out.trace_id(), ctx.trace_id());
        assert_ne!(out.span_id(), ctx.span_id());
        assert_eq!(current(), None);
    }
}
