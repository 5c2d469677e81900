//! The producer sink: delivery, backpressure, errors, flush on close and on drop.

mod support;

use std::time::Duration;

use futures::SinkExt;
use reactive_kafka::testkit::TestBroker;
use reactive_kafka::{consumer, producer, ErrorKind, ProducerRecord, Subscription, Timestamp};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_with_key_payload_headers_and_timestamp() {
    let (broker, topic) = broker_with_topic("fields", 1).await;
    let mut sink = producer::plain_sink(broker.producer_settings()).unwrap();
    sink.send(
        ProducerRecord::new(&topic)
            .key("k")
            .payload("p")
            .header("h1", "v1")
            .header("h2", "v2")
            .timestamp(1_700_000_000_123),
    )
    .await
    .unwrap();
    // A tombstone: no payload.
    sink.send(ProducerRecord::new(&topic).key("gone"))
        .await
        .unwrap();
    assert_eq!(sink.delivered(), 2);
    sink.close().await.unwrap();

    let (mut source, control) = consumer::plain_source(
        broker.consumer_settings(&unique("g-fields")),
        Subscription::topics([topic.clone()]),
    )
    .unwrap();
    let records = take_n(&mut source, 2, Duration::from_secs(30)).await;
    let r = &records[0];
    assert_eq!(r.key(), Some(&b"k"[..]));
    assert_eq!(r.payload(), Some(&b"p"[..]));
    assert_eq!(r.timestamp(), Timestamp::CreateTime(1_700_000_000_123));
    let headers: Vec<(&str, Option<&[u8]>)> = r
        .headers()
        .iter()
        .map(|h| (h.key.as_str(), h.value.as_deref()))
        .collect();
    assert_eq!(
        headers,
        vec![("h1", Some(&b"v1"[..])), ("h2", Some(&b"v2"[..]))]
    );
    assert_eq!(records[1].payload(), None);
    control.shutdown().await.unwrap();
}

/// Records with and without headers, with empty and without payloads,
/// side by side in one batch: each reads back with its own headers (the
/// consumer tells a record without headers from one with them by its bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_and_without_headers_read_back_each_with_its_own() {
    let (broker, topic) = broker_with_topic("mixed-headers", 1).await;
    let mut sink = producer::plain_sink(broker.producer_settings()).unwrap();
    // (payload, headers)
    type Case<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        (Some("p0"), vec![]),
        (Some("p1"), vec![("h", "v")]),
        (Some(""), vec![]),
        (Some(""), vec![("a", ""), ("b", "bb")]),
        (None, vec![("t", "tomb")]),
        (None, vec![]),
        (Some("p6"), vec![]),
    ];
    for (payload, headers) in &cases {
        let mut record = ProducerRecord::new(&topic).key("k");
        if let Some(p) = payload {
            record = record.payload(*p);
        }
        for (k, v) in headers {
            record = record.header(*k, *v);
        }
        sink.feed(record).await.unwrap();
    }
    sink.close().await.unwrap();

    let (mut source, control) = consumer::plain_source(
        broker.consumer_settings(&unique("g-mixed-headers")),
        Subscription::topics([topic.clone()]),
    )
    .unwrap();
    let records = take_n(&mut source, cases.len(), Duration::from_secs(30)).await;
    for (r, (payload, headers)) in records.iter().zip(&cases) {
        assert_eq!(
            r.payload(),
            payload.map(str::as_bytes),
            "offset {}",
            r.offset()
        );
        let got: Vec<(&str, Option<&[u8]>)> = r
            .headers()
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref()))
            .collect();
        let want: Vec<(&str, Option<&[u8]>)> = headers
            .iter()
            .map(|(k, v)| (*k, Some(v.as_bytes())))
            .collect();
        assert_eq!(got, want, "offset {}", r.offset());
    }
    control.shutdown().await.unwrap();
}

/// Reads `n` records of `topic` (keys `key-0` to `key-{n-1}`) with a new
/// group, asserting that each key comes once; returns the source, for more
/// checks, and its control.
async fn read_each_key_once(
    broker: &TestBroker,
    topic: &str,
    n: usize,
    group: &str,
) -> (consumer::PlainSource, consumer::Control) {
    let (mut source, control) = consumer::plain_source(
        broker.consumer_settings(&unique(group)),
        Subscription::topics([topic]),
    )
    .unwrap();
    let records = take_n(&mut source, n, Duration::from_secs(60)).await;
    let mut seen = vec![false; n];
    for r in &records {
        let i = key_index(r.key());
        assert!(!seen[i], "record {i} twice");
        seen[i] = true;
    }
    (source, control)
}

/// A queue of 50 records forces the sink to wait for deliveries hundreds of
/// times; every record still arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_applies_backpressure_and_loses_nothing() {
    let (broker, topic) = broker_with_topic("backpressure", 2).await;
    let settings = broker
        .producer_settings()
        .property("queue.buffering.max.messages", "50");
    let mut sink = producer::plain_sink(settings).unwrap();
    let n = 10_000;
    let mut max_in_flight = 0;
    for i in 0..n {
        sink.feed(
            ProducerRecord::new(&topic)
                .partition((i % 2) as i32)
                .key(format!("key-{i}"))
                .payload(format!("value-{i}")),
        )
        .await
        .unwrap();
        max_in_flight = max_in_flight.max(sink.in_flight());
    }
    sink.close().await.unwrap();
    assert!(
        max_in_flight <= 50,
        "in flight {max_in_flight} beyond the queue limit"
    );

    let (mut source, control) = read_each_key_once(&broker, &topic, n, "g-bp").await;
    assert_nothing_more(&mut source).await;
    control.shutdown().await.unwrap();
}

/// The sink keeps at most `max_in_flight` records unacknowledged, long
/// before librdkafka's own queue (100,000 records) would stop it; every
/// record still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_keeps_at_most_max_in_flight_records_unacknowledged() {
    let (broker, topic) = broker_with_topic("sink-window", 1).await;
    let mut sink = producer::plain_sink(broker.producer_settings().max_in_flight(100)).unwrap();
    let n = 5_000;
    let mut max_in_flight = 0;
    for i in 0..n {
        sink.feed(
            ProducerRecord::new(&topic)
                .key(format!("key-{i}"))
                .payload("v"),
        )
        .await
        .unwrap();
        max_in_flight = max_in_flight.max(sink.in_flight());
    }
    sink.close().await.unwrap();
    assert!(
        max_in_flight <= 100,
        "in flight {max_in_flight} beyond max_in_flight"
    );
    assert_eq!(sink.delivered(), n as u64);
    let (_source, control) = read_each_key_once(&broker, &topic, n, "g-sink-window").await;
    control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_for_a_missing_partition_fails_the_sink_naming_it() {
    let (broker, topic) = broker_with_topic("badpart", 1).await;
    let mut sink = producer::plain_sink(
        broker
            .producer_settings()
            .property("message.timeout.ms", "3000"),
    )
    .unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        sink.send(ProducerRecord::new(&topic).partition(7).payload("x")),
    )
    .await
    .expect("the sink must not hang");
    let err = result.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Delivery | ErrorKind::Produce),
        "{err:?}"
    );
    let c = err.coordinates().expect("coordinates");
    assert_eq!(c.topic, topic);
    assert_eq!(c.partition, Some(7));
}

/// A sink dropped without close still delivers what it queued, from a
/// background thread, and the drop itself returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_sink_still_delivers_its_queued_records() {
    let (broker, topic) = broker_with_topic("dropsink", 1).await;
    let mut sink =
        producer::plain_sink(broker.producer_settings().property("linger.ms", "200")).unwrap();
    for i in 0..500 {
        sink.feed(
            ProducerRecord::new(&topic)
                .key(format!("key-{i}"))
                .payload("v"),
        )
        .await
        .unwrap();
    }
    let started = std::time::Instant::now();
    drop(sink);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "drop blocked"
    );

    let (mut source, control) = consumer::plain_source(
        broker.consumer_settings(&unique("g-dropsink")),
        Subscription::topics([topic.clone()]),
    )
    .unwrap();
    let records = take_n(&mut source, 500, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 500);
    control.shutdown().await.unwrap();
}

/// One sink writing to more topics than a producer keeps handles of, the
/// records of all of them interleaved: each record reaches its own topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_for_many_topics_each_reach_their_own() {
    let (broker, first) = broker_with_topic("many-topics", 1).await;
    let mut topics = vec![first];
    for i in 1..24 {
        let topic = format!("{}-{i}", topics[0]);
        broker.create_topic(&topic, 1).await.unwrap();
        topics.push(topic);
    }
    let mut sink = producer::plain_sink(broker.producer_settings()).unwrap();
    for round in 0..3 {
        for topic in &topics {
            sink.feed(ProducerRecord::new(topic.as_str()).payload(format!("{topic}/{round}")))
                .await
                .unwrap();
        }
    }
    tokio::time::timeout(Duration::from_secs(30), sink.close())
        .await
        .expect("the sink closes within 30 s")
        .unwrap();
    assert_eq!(sink.delivered(), 3 * topics.len() as u64);

    let (mut source, control) = consumer::plain_source(
        broker.consumer_settings(&unique("g-many-topics")),
        Subscription::topics(topics.clone()),
    )
    .unwrap();
    let records = take_n(&mut source, 3 * topics.len(), Duration::from_secs(60)).await;
    for r in &records {
        let payload = std::str::from_utf8(r.payload().expect("a payload")).unwrap();
        let (topic, _) = payload.rsplit_once('/').expect("topic/round");
        assert_eq!(r.topic(), topic, "a record reached another topic");
    }
    for topic in &topics {
        assert_eq!(
            records.iter().filter(|r| r.topic() == topic).count(),
            3,
            "{topic}"
        );
    }
    control.shutdown().await.unwrap();
}

/// A topic name librdkafka cannot take (it holds a NUL byte) fails the
/// send at once, naming the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_name_with_a_nul_byte_fails_naming_it() {
    let broker = TestBroker::start().await.unwrap();
    let mut sink = producer::plain_sink(broker.producer_settings()).unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        sink.send(ProducerRecord::new("bad\0name").payload("x")),
    )
    .await
    .expect("the sink must not hang")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Produce, "{err:?}");
    assert_eq!(err.coordinates().expect("coordinates").topic, "bad\0name");
}
