//! The `opentelemetry` feature: W3C trace context travels from a producer
//! through record headers to the consumer, and the crate's `send`, `poll`,
//! `process` and `commit` spans carry the OpenTelemetry messaging
//! attributes. Runs on both brokers; skipped (with a printed reason)
//! without the feature.

#[cfg(not(feature = "opentelemetry"))]
#[test]
fn trace_context_travels_with_the_record() {
    println!("skipped: needs the `opentelemetry` feature (cargo test --features opentelemetry)");
}

#[cfg(feature = "opentelemetry")]
mod enabled {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::{SinkExt, StreamExt};
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use reactive_kafka::testkit::TestBroker;
    use reactive_kafka::{committer, consumer, producer, CommitterSettings, ProducerRecord};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    type Fields = BTreeMap<String, String>;

    /// Keeps the fields of every closed span of the crate's OpenTelemetry target.
    #[derive(Clone, Default)]
    struct Capture {
        open: Arc<Mutex<HashMap<u64, (String, Fields)>>>,
        closed: Arc<Mutex<Vec<(String, Fields)>>>,
    }

    struct Visitor<'a>(&'a mut Fields);

    impl Visit for Visitor<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(
                field.name().to_owned(),
                format!("{value:?}").trim_matches('"').to_owned(),
            );
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
            if attrs.metadata().target() != "reactive_kafka::otel" {
                return;
            }
            let mut fields = Fields::new();
            attrs.record(&mut Visitor(&mut fields));
            let name = attrs.metadata().name().to_owned();
            self.open
                .lock()
                .unwrap()
                .insert(id.into_u64(), (name, fields));
        }
        fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
            if let Some((_, fields)) = self.open.lock().unwrap().get_mut(&id.into_u64()) {
                values.record(&mut Visitor(fields));
            }
        }
        fn on_close(&self, id: Id, _: Context<'_, S>) {
            if let Some(span) = self.open.lock().unwrap().remove(&id.into_u64()) {
                self.closed.lock().unwrap().push(span);
            }
        }
    }

    fn span_context(trace: &str, span: &str, state: &[(&str, &str)]) -> SpanContext {
        SpanContext::new(
            TraceId::from_hex(trace).unwrap(),
            SpanId::from_hex(span).unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value(state.iter().copied()).unwrap(),
        )
    }

    #[tokio::test]
    async fn trace_context_travels_with_the_record_and_spans_carry_the_conventions() {
        let capture = Capture::default();
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(capture.clone()),
        )
        .expect("the only subscriber of this test binary");

        let broker = TestBroker::start().await.expect("test broker");
        let topic = broker.unique_topic("traced", 1).await.unwrap();
        let group = reactive_kafka::testkit::unique_name("g-traced");

        let sender = span_context(
            "0af7651916cd43dd8448eb211c80319c",
            "b7ad6b7169203331",
            &[("rk", "t1")],
        );
        let upstream = span_context("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", &[]);
        let mut sink = producer::plain_sink(broker.producer_settings()).unwrap();
        {
            // The current OpenTelemetry context is the sender's: record 0 carries it.
            let _current = opentelemetry::Context::new()
                .with_remote_span_context(sender.clone())
                .attach();
            sink.feed(ProducerRecord::new(topic.as_str()).payload("in a trace"))
                .await
                .unwrap();
            // A record given its own context keeps it.
            sink.feed(
                ProducerRecord::new(topic.as_str())
                    .payload("continues upstream")
                    .trace_context(&upstream),
            )
            .await
            .unwrap();
        }
        // Outside any trace: no header.
        sink.feed(ProducerRecord::new(topic.as_str()).payload("untraced"))
            .await
            .unwrap();
        sink.close().await.unwrap();

        let settings = broker.consumer_settings(&group);
        let (source, control) = consumer::committable_source(
            settings,
            reactive_kafka::Subscription::topics([topic.as_str()]),
        )
        .unwrap();
        let mut contexts = Vec::new();
        source
            .take(3)
            .map(|m| {
                let m = m?;
                let span = m.record.process_span();
                let _in = span.enter();
                contexts.push(m.record.trace_context());
                Ok(m.offset)
            })
            .forward(committer::sink(CommitterSettings::default()).unwrap())
            .await
            .unwrap();
        control.shutdown().await.unwrap();

        let first = contexts[0]
            .as_ref()
            .expect("record 0 carries a traceparent");
        assert_eq!(first.trace_id(), sender.trace_id(), "same trace id");
        assert_eq!(first.span_id(), sender.span_id());
        assert!(first.is_sampled() && first.is_remote());
        assert_eq!(
            first.trace_state().get("rk"),
            Some("t1"),
            "tracestate travels"
        );
        let second = contexts[1]
            .as_ref()
            .expect("record 1 carries its own context");
        assert_eq!(second.trace_id(), upstream.trace_id());
        assert_eq!(second.span_id(), upstream.span_id());
        assert!(
            contexts[2].is_none(),
            "a record sent outside any trace has none"
        );

        // Spans are closed on the consumer thread too: wait for the commit's.
        let spans = {
            let mut waited = Duration::ZERO;
            loop {
                let spans = capture.closed.lock().unwrap().clone();
                if spans.iter().any(|(n, _)| n == "commit") || waited > Duration::from_secs(10) {
                    break spans;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                waited += Duration::from_millis(50);
            }
        };
        let of = |name: &str| -> Vec<&Fields> {
            spans
                .iter()
                .filter(|(n, f)| {
                    n == name
                        && (name == "commit" || f.get("messaging.destination.name") == Some(&topic))
                })
                .map(|(_, f)| f)
                .collect()
        };
        let send = of("send");
        assert_eq!(send.len(), 3, "{send:?}");
        assert_eq!(send[0]["otel.name"], format!("send {topic}"));
        assert_eq!(send[0]["otel.kind"], "producer");
        assert_eq!(send[0]["messaging.system"], "kafka");

        let poll = of("poll");
        let polled: usize = poll
            .iter()
            .map(|f| f["messaging.batch.message_count"].parse::<usize>().unwrap())
            .sum();
        assert_eq!(polled, 3, "{poll:?}");
        assert_eq!(poll[0]["messaging.consumer.group.name"], group);
        assert_eq!(poll[0]["messaging.destination.partition.id"], "0");

        let process = of("process");
        let offsets: Vec<&str> = process
            .iter()
            .map(|f| f["messaging.kafka.offset"].as_str())
            .collect();
        assert_eq!(offsets, ["0", "1", "2"], "{process:?}");
        assert_eq!(process[0]["otel.name"], format!("process {topic}"));

        let commit: Vec<&Fields> = of("commit")
            .into_iter()
            .filter(|f| f.get("messaging.consumer.group.name") == Some(&group))
            .collect();
        assert!(!commit.is_empty(), "a commit span for the group: {spans:?}");
        assert_eq!(commit[0]["messaging.operation.name"], "commit");
        assert!(
            commit.iter().all(|f| !f.contains_key("otel.status_code")),
            "no commit failed: {commit:?}"
        );
    }
}
