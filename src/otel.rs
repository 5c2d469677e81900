//! Spans after the OpenTelemetry messaging conventions and W3C trace
//! context in record headers (feature `opentelemetry`).
//!
//! - A producer opens a `send` span for each record it hands to librdkafka
//!   (named `send {topic}` for OpenTelemetry) and writes the span's context
//!   (or, with no OpenTelemetry layer, the current OpenTelemetry context)
//!   into the record's `traceparent` and `tracestate` headers, unless the
//!   record carries a `traceparent` already.
//! - A consumed record gives back that context
//!   ([`ConsumerRecord::trace_context`](crate::ConsumerRecord::trace_context))
//!   and a `process {topic}` span whose parent it is
//!   ([`ConsumerRecord::process_span`](crate::ConsumerRecord::process_span)).
//! - The consumer thread opens a `poll {topic}` span per batch read and a
//!   `commit` span per commit, from sending it to the broker's answer.
//!
//! Spans are `tracing` spans at `INFO` level under the target
//! `reactive_kafka::otel`: with no subscriber interested, each costs one
//! check of a cached flag. `tracing-opentelemetry` turns them into
//! OpenTelemetry spans (`otel.name`, `otel.kind` and the attributes).
//! Without the feature this module is empty.

/// The W3C trace-context header with the trace and parent span ids.
#[cfg(feature = "opentelemetry")]
pub(crate) const TRACEPARENT: &str = "traceparent";
/// The W3C trace-context header with vendor state.
#[cfg(feature = "opentelemetry")]
pub(crate) const TRACESTATE: &str = "tracestate";

/// The target of this crate's OpenTelemetry spans.
#[cfg(feature = "opentelemetry")]
pub(crate) const TARGET: &str = "reactive_kafka::otel";

#[cfg(feature = "opentelemetry")]
mod enabled {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{TARGET, TRACEPARENT, TRACESTATE};

    /// `00-{trace id}-{span id}-{flags}`.
    pub(crate) fn traceparent(sc: &SpanContext) -> String {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    }

    /// Parses a `traceparent` value (and the `tracestate` beside it) after
    /// the W3C rules: two hex digits of version (not `ff`; version `00` has
    /// exactly four fields, later versions may add fields), a trace id of 32
    /// lower-case hex digits and a span id of 16, neither all zeros, two hex
    /// digits of flags. `None` for anything else; an unparsable `tracestate`
    /// is dropped, the parent kept.
    pub(crate) fn parse(traceparent: &[u8], tracestate: Option<&[u8]>) -> Option<SpanContext> {
        let s = std::str::from_utf8(traceparent).ok()?.trim();
        let mut fields = s.split('-');
        let (version, trace, span, flags) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        let hex = |f: &str, n: usize| {
            f.len() == n
                && f.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        if version == "00" && fields.next().is_some() {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1);
        let state = tracestate
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<TraceState>().ok())
            .unwrap_or_default();
        Some(SpanContext::new(trace_id, span_id, flags, true, state))
    }

    /// The headers that carry `sc`: `traceparent`, and `tracestate` unless
    /// empty.
    pub(crate) fn headers(sc: &SpanContext) -> Vec<(&'static str, String)> {
        let mut headers = vec![(TRACEPARENT, traceparent(sc))];
        let state = sc.trace_state().header();
        if !state.is_empty() {
            headers.push((TRACESTATE, state));
        }
        headers
    }

    /// The span of handing one record to librdkafka, and the context to
    /// write into the record: the span's own, with an OpenTelemetry layer
    /// installed; else the current OpenTelemetry context's, if valid.
    pub(crate) fn send(
        topic: &str,
        partition: Option<i32>,
        has_traceparent: bool,
    ) -> (tracing::Span, Option<SpanContext>) {
        let span = tracing::info_span!(
            target: TARGET,
            "send",
            otel.name = %format_args!("send {topic}"),
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.destination.name = %topic,
            messaging.destination.partition.id = partition,
        );
        if has_traceparent {
            return (span, None);
        }
        let from_span = span.context();
        let sc = from_span.span().span_context().clone();
        if sc.is_valid() {
            return (span, Some(sc));
        }
        let current = opentelemetry::Context::current();
        let sc = current.span().span_context().clone();
        (span, sc.is_valid().then_some(sc))
    }

    /// The span of processing one consumed record, a child of what
    /// `parent` gives (the context its headers carry; read only when the
    /// span is enabled).
    pub(crate) fn process(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        parent: impl FnOnce() -> Option<SpanContext>,
    ) -> tracing::Span {
        let span = tracing::info_span!(
            target: TARGET,
            "process",
            otel.name = %format_args!("process {topic}"),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %topic,
            messaging.destination.partition.id = partition,
            messaging.kafka.offset = offset,
            messaging.kafka.message.key = key.and_then(|k| std::str::from_utf8(k).ok()),
        );
        if !span.is_disabled() {
            if let Some(sc) = parent() {
                // Only fails when no OpenTelemetry layer is installed.
                let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
            }
        }
        span
    }

    /// The span of reading one batch of a partition.
    pub(crate) fn poll(topic: &str, partition: i32, group: Option<&str>) -> tracing::Span {
        tracing::info_span!(
            target: TARGET,
            "poll",
            otel.name = %format_args!("poll {topic}"),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "receive",
            messaging.destination.name = %topic,
            messaging.destination.partition.id = partition,
            messaging.consumer.group.name = group,
            messaging.batch.message_count = tracing::field::Empty,
        )
    }

    /// The span of one commit, from sending it to the broker's answer.
    pub(crate) fn commit(group: Option<&str>, partitions: usize) -> tracing::Span {
        tracing::info_span!(
            target: TARGET,
            "commit",
            otel.name = "commit",
            otel.kind = "client",
            messaging.system = "kafka",
            messaging.operation.type = "settle",
            messaging.operation.name = "commit",
            messaging.consumer.group.name = group,
            messaging.kafka.partitions = partitions,
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn traceparent_round_trips_and_bad_values_are_refused() {
            let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let sc = parse(good, Some(b"congo=t61rcWkgMzE")).expect("valid");
            assert_eq!(
                sc.trace_id(),
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
            );
            assert!(sc.is_sampled() && sc.is_remote());
            assert_eq!(sc.trace_state().get("congo"), Some("t61rcWkgMzE"));
            assert_eq!(traceparent(&sc).as_bytes(), good);
            // A later version may carry more fields.
            assert!(parse(
                b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x",
                None
            )
            .is_some());
            for bad in [
                &b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"[..],
                b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                b"",
            ] {
                assert!(
                    parse(bad, None).is_none(),
                    "{}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }
}

#[cfg(feature = "opentelemetry")]
pub(crate) use enabled::{commit, headers, parse, poll, process, send};

/// Without the feature: no span.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn commit(_group: Option<&str>, _partitions: usize) -> tracing::Span {
    tracing::Span::none()
}
