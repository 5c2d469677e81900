//! The `metrics` feature: a consumer's and a producer's figures reach the installed recorder
//! with their OpenTelemetry names and labels. Skipped (with a printed
//! reason) without the feature.

mod support;

use std::time::Duration;

use futures::StreamExt;
use metrics_util::debugging::DebugValue;
use reactive_kafka::{committer, consumer, CommitterSettings, ProducerRecord, Subscription};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_producer_figures_reach_the_recorder_with_their_labels() {
    if !cfg!(feature = "metrics") {
        println!("skipped: needs the `metrics` feature (cargo test --features metrics)");
        return;
    }
    if std::env::var("KAFKA_BOOTSTRAP_SERVERS").is_ok_and(|s| !s.is_empty()) {
        println!("skipped: injects produce errors into the embedded broker (unset KAFKA_BOOTSTRAP_SERVERS)");
        return;
    }
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let (broker, topic) = broker_with_topic("exported", 1).await;
    produce_n(&broker, &topic, 100, 1).await;
    let group = unique("g-exported");
    let settings = broker
        .consumer_settings(&group)
        .client_id("exporter-test")
        .property("statistics.interval.ms", "200");
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.as_str()])).unwrap();
    source
        .take(40)
        .map(|m| m.map(|m| m.offset))
        .forward(committer::sink(CommitterSettings::default()).unwrap())
        .await
        .unwrap();

    // Published once a second by the consumer thread.
    let mut found = (None, None, None, None);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let ours = labels.contains(&("messaging.consumer.group.name".into(), group.clone()))
                && labels.contains(&("messaging.client.id".into(), "exporter-test".into()));
            if !ours {
                continue;
            }
            match (key.name(), value) {
                ("messaging.kafka.consumer.commits", DebugValue::Counter(n)) => found.0 = Some(n),
                // One stream is never paused: counted, and zero.
                ("messaging.kafka.consumer.partition.pauses", DebugValue::Counter(n)) => {
                    found.3 = Some(n)
                }
                ("messaging.kafka.consumer.assigned.partitions", DebugValue::Gauge(g)) => {
                    found.1 = Some(g.into_inner())
                }
                ("messaging.kafka.consumer.lag", DebugValue::Gauge(g)) => {
                    assert!(labels.contains(&("messaging.destination.name".into(), topic.clone())));
                    assert!(
                        labels.contains(&("messaging.destination.partition.id".into(), "0".into()))
                    );
                    found.2 = Some(g.into_inner())
                }
                _ => {}
            }
        }
        if found.0.is_some_and(|n| n > 0)
            && found.1 == Some(1.0)
            && found.2 == Some(60.0)
            && found.3.is_some()
        {
            break;
        }
    }
    println!("commits, assigned partitions, lag, partition pauses: {found:?}");
    assert!(found.0.is_some_and(|n| n > 0), "{found:?}");
    assert_eq!(found.1, Some(1.0), "{found:?}");
    assert_eq!(found.2, Some(60.0), "100 produced, 40 committed: {found:?}");
    assert_eq!(found.3, Some(0), "{found:?}");
    control.shutdown().await.unwrap();

    // A producer: 2048 records delivered, then one that fails.
    let settings = broker.producer_settings().client_id("producer-exported");
    let mut sink = reactive_kafka::producer::plain_sink(settings).unwrap();
    for _ in 0..2048 {
        futures::SinkExt::feed(&mut sink, ProducerRecord::new(topic.as_str()).payload("x"))
            .await
            .unwrap();
    }
    futures::SinkExt::flush(&mut sink).await.unwrap();
    // The broker refuses the next produce requests: a delivery failure.
    let embedded = broker
        .embedded()
        .expect("this test runs on the embedded broker");
    embedded.fail_requests(
        0,
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        100,
    );
    let failed = async {
        futures::SinkExt::send(&mut sink, ProducerRecord::new(topic.as_str()).payload("y")).await?;
        futures::SinkExt::close(&mut sink).await
    };
    assert!(failed.await.is_err(), "refused");
    let (mut sent, mut failures) = (None, None);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let ours = key
            .labels()
            .any(|l| l.key() == "messaging.client.id" && l.value() == "producer-exported");
        match (ours, key.name(), value) {
            (true, "messaging.client.sent.messages", DebugValue::Counter(n)) => sent = Some(n),
            (true, "messaging.kafka.producer.delivery.failures", DebugValue::Counter(n)) => {
                failures = Some(n)
            }
            _ => {}
        }
    }
    println!("producer: sent {sent:?}, failures {failures:?}");
    assert_eq!(
        sent,
        Some(2048),
        "published at the 1024th and 2048th delivery and the failure"
    );
    assert_eq!(failures, Some(1));
}

/// Keeps every value set on the producer's in-flight gauge.
#[derive(Default)]
struct InFlight(std::sync::Mutex<Vec<f64>>);

impl metrics::GaugeFn for InFlight {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

struct InFlightRecorder(std::sync::Arc<InFlight>);

impl metrics::Recorder for InFlightRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        if key.name() == "messaging.kafka.producer.in_flight" {
            metrics::Gauge::from_arc(self.0.clone())
        } else {
            metrics::Gauge::noop()
        }
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committable_sinks_in_flight_gauge_rises_and_falls_back_to_zero() {
    if !cfg!(feature = "metrics") {
        println!("skipped: needs the `metrics` feature (cargo test --features metrics)");
        return;
    }
    let (broker, input) = broker_with_topic("in-flight-in", 1).await;
    let output = broker.unique_topic("in-flight-out", 1).await.unwrap();
    produce_n(&broker, &input, 3000, 1).await;
    let (source, control) = consumer::committable_source(
        broker.consumer_settings(&unique("g-in-flight")),
        Subscription::topics([input.as_str()]),
    )
    .unwrap();
    // A producer's figures are registered when it is built: with this
    // recorder, for this thread only, while the sink is made.
    let gauge = std::sync::Arc::new(InFlight::default());
    let sink = metrics::with_local_recorder(&InFlightRecorder(gauge.clone()), || {
        reactive_kafka::producer::committable_sink(
            broker.producer_settings(),
            CommitterSettings::default(),
        )
        .unwrap()
    });
    let output_topic = output.clone();
    source
        .take(3000)
        .map(move |m| {
            let m = m?;
            Ok(reactive_kafka::producer::Envelope::message(
                ProducerRecord::new(output_topic.as_str())
                    .payload(m.record.payload_bytes().unwrap_or_default()),
                m.offset,
            ))
        })
        .forward(sink)
        .await
        .unwrap();
    control.shutdown().await.unwrap();
    let values = gauge.0.lock().unwrap().clone();
    let peak = values.iter().copied().fold(0.0, f64::max);
    println!(
        "in-flight gauge: {} values, peak {peak}, last {:?}",
        values.len(),
        values.last()
    );
    assert_eq!(values.len(), 3000, "set on each delivery");
    assert!(peak > 1.0, "records were in flight together: {peak}");
    assert_eq!(
        values.last(),
        Some(&0.0),
        "back to 0 once all were delivered"
    );
}
