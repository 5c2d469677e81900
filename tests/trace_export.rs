//! With an OpenTelemetry SDK behind `tracing-opentelemetry` (feature
//! `opentelemetry`), one record's trace runs from the span it was sent in,
//! through the producer's `send` span and the record's headers, to the
//! consumer's `process` span, as an exporter receives them. Runs on both
//! brokers; skipped (with a printed reason) without the feature.

#[cfg(not(feature = "opentelemetry"))]
#[test]
fn one_trace_from_send_to_process() {
    println!("skipped: needs the `opentelemetry` feature (cargo test --features opentelemetry)");
}

#[cfg(feature = "opentelemetry")]
#[tokio::test]
async fn one_trace_from_send_to_process() {
    use futures::{SinkExt, StreamExt};
    use opentelemetry::trace::{SpanKind, TraceContextExt, TracerProvider};
    use opentelemetry::Value;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use reactive_kafka::testkit::TestBroker;
    use reactive_kafka::{committer, consumer, producer, CommitterSettings, ProducerRecord};
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace-export-test"))),
    )
    .expect("the only subscriber of this test binary");

    let broker = TestBroker::start().await.expect("test broker");
    let topic = broker.unique_topic("exported-trace", 1).await.unwrap();
    let group = reactive_kafka::testkit::unique_name("g-exported-trace");

    // The user's request span; the record is sent inside it.
    let request = tracing::info_span!("handle request");
    let trace_id = request.context().span().span_context().trace_id();
    async {
        let mut sink = producer::plain_sink(broker.producer_settings()).unwrap();
        sink.send(ProducerRecord::new(topic.as_str()).payload("order 7"))
            .await
            .unwrap();
        sink.close().await.unwrap();
    }
    .instrument(request.clone())
    .await;
    drop(request);

    let (source, control) = consumer::committable_source(
        broker.consumer_settings(&group),
        reactive_kafka::Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let mut consumed_in = None;
    source
        .take(1)
        .map(|m| {
            let m = m?;
            let span = m.record.process_span();
            consumed_in = Some(span.context().span().span_context().trace_id());
            drop(span);
            Ok(m.offset)
        })
        .forward(committer::sink(CommitterSettings::default()).unwrap())
        .await
        .unwrap();
    control.shutdown().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let named = |name: &str| -> &SpanData {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("a span named {name:?} in {spans:#?}"))
    };
    let attribute = |s: &SpanData, key: &str| -> Option<Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    };
    let handle = named("handle request");
    let send = named(&format!("send {topic}"));
    let process = named(&format!("process {topic}"));
    // The record's trace as an exporter receives it, in start order (the
    // README shows one).
    let mut trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace_id || s.name == "commit")
        .collect();
    trace.sort_by_key(|s| s.start_time);
    for s in &trace {
        let attributes: Vec<String> = s
            .attributes
            .iter()
            .filter(|kv| kv.key.as_str().starts_with("messaging."))
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        println!(
            "trace {} span {} parent {} {:?} {:?} {:?}: {}",
            s.span_context.trace_id(),
            s.span_context.span_id(),
            s.parent_span_id,
            s.span_kind,
            s.name,
            s.end_time.duration_since(s.start_time).unwrap_or_default(),
            attributes.join(" ")
        );
    }
    assert_eq!(send.span_context.trace_id(), trace_id);
    assert_eq!(send.parent_span_id, handle.span_context.span_id());
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(
        attribute(send, "messaging.destination.name"),
        Some(Value::from(topic.clone()))
    );
    assert_eq!(
        process.span_context.trace_id(),
        trace_id,
        "the consumer's span is in the producer's trace"
    );
    assert_eq!(consumed_in, Some(trace_id));
    assert_eq!(
        process.parent_span_id,
        send.span_context.span_id(),
        "its parent is the send span, from the record's traceparent"
    );
    assert!(process.parent_span_is_remote);
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(
        attribute(process, "messaging.kafka.offset"),
        Some(Value::I64(0))
    );
    assert_eq!(
        attribute(process, "messaging.system"),
        Some(Value::from("kafka"))
    );
    let commit = named("commit");
    assert_eq!(
        attribute(commit, "messaging.consumer.group.name"),
        Some(Value::from(group.clone()))
    );
}
