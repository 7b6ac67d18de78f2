//! Trace context on messages: a publish made while handling a traced
//! request or message carries `traceparent`, and a delivered message's
//! handler runs inside that trace (a `deliver` span with `trace_id`, and
//! the current context its own calls and publishes continue).

use std::future::Future;

use mortar_bus_proto::{Message, NewMessage};
use mortar_trace::{TRACEPARENT, TraceContext};
use tracing::Instrument;

/// Adds the current trace to messages that carry none (a relayed outbox
/// message already has the trace of the command that caused it).
pub(crate) fn stamp(messages: &mut [NewMessage]) {
    let Some(ctx) = mortar_trace::current() else {
        return;
    };
    for message in messages {
        let has = message
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT));
        if !has {
            message
                .headers
                .push((TRACEPARENT.to_owned(), ctx.child().header()));
        }
    }
}

/// The trace a delivered message belongs to, if it names a valid one.
pub(crate) fn context_of(message: &Message) -> Option<TraceContext> {
    message.header(TRACEPARENT).and_then(TraceContext::parse)
}

/// Runs a handler for the message `(topic, id, attempt)` inside its trace:
/// one `debug` line for the delivery, and every line the handler logs
/// carries the `trace_id`.
pub(crate) async fn delivered<F: Future>(
    ctx: Option<TraceContext>,
    topic: &str,
    id: u64,
    attempt: u32,
    work: F,
) -> F::Output {
    let Some(ctx) = ctx else {
        return work.await;
    };
    let ctx = ctx.child();
    let span = tracing::info_span!("deliver", trace_id = %ctx.trace_id(), topic, message_id = id);
    let work = async move {
        tracing::debug!(attempt, "bus delivery");
        work.await
    };
    mortar_trace::scope(ctx, work.instrument(span)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishes_inside_a_trace_carry_it_and_keep_their_own() {
        let ctx = TraceContext::start();
        let own = TraceContext::start().header();
        let mut messages = vec![
            NewMessage::new(b"a".to_vec()),
            NewMessage::new(b"b".to_vec()).with_header("traceparent", own.clone()),
        ];
        mortar_trace::scope(ctx, async { stamp(&mut messages) }).await;
        let first = messages[0]
            .headers
            .iter()
            .find(|(k, _)| k == TRACEPARENT)
            .map(|(_, v)| TraceContext::parse(v).unwrap())
            .unwrap();
        assert_eq!(first.trace_id(), ctx.trace_id());
        assert_eq!(messages[1].headers, vec![("traceparent".to_owned(), own)]);

        let mut outside = vec![NewMessage::new(b"c".to_vec())];
        stamp(&mut outside);
        assert!(outside[0].headers.is_empty());
    }

    #[tokio::test]
    async fn a_handler_runs_in_the_message_trace() {
        let ctx = TraceContext::start();
        let seen = delivered(Some(ctx), "orders", 7, 1, async {
            mortar_trace::current().map(|c| c.trace_id())
        })
        .await;
        assert_eq!(seen, Some(ctx.trace_id()));
        assert_eq!(
            delivered(None, "orders", 8, 1, async { mortar_trace::current() }).await,
            None
        );
    }
}
