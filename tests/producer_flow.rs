//! Producer flows and envelopes, produce-then-commit, the send handle, and
//! (de)serialization errors.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reactive_kafka::producer::{self, Envelope, ProducerResult, SendProducer};
use reactive_kafka::serde::Json;
use reactive_kafka::{consumer, CommitterSettings, ErrorKind, ProducerRecord, Subscription};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_envelope_kind_yields_its_result_in_input_order() {
    let (broker, topic) = broker_with_topic("flow", 3).await;
    let n = 300;
    let envelopes = (0..n).map(|i| {
        let record = |part: i32| {
            ProducerRecord::new(topic.as_str())
                .partition(part)
                .key(format!("key-{i}"))
                .payload(format!("value-{i}"))
        };
        match i % 3 {
            0 => Envelope::message(record(0), i),
            1 => Envelope::multi(vec![record(1), record(2)], i),
            _ => Envelope::pass_through(i),
        }
    });
    let results: Vec<_> =
        producer::flow(broker.producer_settings(), futures::stream::iter(envelopes))
            .unwrap()
            .collect()
            .await;
    assert_eq!(results.len(), n);
    let mut last_offset = [-1i64; 3];
    for (i, result) in results.into_iter().enumerate() {
        let result = result.unwrap_or_else(|f| panic!("envelope {i} failed: {f}"));
        assert_eq!(*result.pass_through(), i, "results out of input order");
        match (i % 3, result) {
            (
                0,
                ProducerResult::Message {
                    metadata, record, ..
                },
            ) => {
                assert_eq!(record.topic(), topic);
                assert_eq!(metadata.partition, 0);
                assert!(metadata.offset > last_offset[0]);
                last_offset[0] = metadata.offset;
                assert_eq!(
                    record.key_bytes().as_deref(),
                    Some(format!("key-{i}").as_bytes())
                );
            }
            (1, ProducerResult::MultiMessage { parts, .. }) => {
                assert_eq!(parts.len(), 2);
                for (metadata, record) in parts {
                    let p = metadata.partition as usize;
                    assert_eq!(Some(metadata.partition), record.partition_number());
                    assert!(metadata.offset > last_offset[p]);
                    last_offset[p] = metadata.offset;
                }
            }
            (2, ProducerResult::PassThrough(_)) => {}
            (k, other) => panic!("envelope {i} (kind {k}) gave {other:?}"),
        }
    }
    // 100 single records and 100 pairs reached the topic.
    let (mut source, control) = consumer::plain_source(
        broker.consumer_settings(&unique("g-flow")),
        Subscription::topics([topic.clone()]),
    )
    .unwrap();
    let records = take_n(&mut source, 300, Duration::from_secs(30)).await;
    assert_eq!(records.iter().filter(|r| r.partition() == 0).count(), 100);
    assert_nothing_more(&mut source).await;
    control.shutdown().await.unwrap();
}

/// A record librdkafka refuses at once (larger than `message.max.bytes`)
/// fails its envelope with every record of it, and the records sent after it
/// get their own answers, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_at_once_fails_its_envelope_and_no_other() {
    let (broker, topic) = broker_with_topic("flow-refused", 2).await;
    let record = |part: i32, size: usize| {
        ProducerRecord::new(topic.as_str())
            .partition(part)
            .payload(vec![b'x'; size])
    };
    let envelopes = vec![
        Envelope::message(record(0, 10), 0),
        Envelope::multi(vec![record(0, 10), record(1, 5000), record(1, 10)], 1),
        Envelope::message(record(1, 10), 2),
        Envelope::multi(vec![record(0, 10), record(1, 10)], 3),
    ];
    let settings = broker
        .producer_settings()
        .property("message.max.bytes", "2000");
    let flow = producer::flow(settings, futures::stream::iter(envelopes)).unwrap();
    let results: Vec<_> = tokio::time::timeout(Duration::from_secs(30), flow.collect())
        .await
        .expect("every envelope answered within 30 s");
    assert_eq!(results.len(), 4);
    let mut results = results.into_iter();
    let first = results.next().unwrap().expect("envelope 0 delivered");
    assert_eq!(*first.pass_through(), 0);
    let failure = results
        .next()
        .unwrap()
        .expect_err("envelope 1 holds a refused record");
    assert_eq!(failure.pass_through, 1);
    assert_eq!(
        failure.records.len(),
        3,
        "every record of the envelope comes back"
    );
    assert_eq!(
        failure.records[1].payload_bytes().map(|p| p.len()),
        Some(5000)
    );
    assert!(
        failure.error.to_string().contains(topic.as_str()),
        "the error names the topic: {}",
        failure.error
    );
    let mut last_offset = [-1i64; 2];
    for (i, result) in results.enumerate() {
        let result = result.unwrap_or_else(|f| panic!("envelope {} failed: {f}", i + 2));
        assert_eq!(*result.pass_through(), i + 2, "results out of input order");
        let parts = match result {
            ProducerResult::Message {
                metadata, record, ..
            } => vec![(metadata, record)],
            ProducerResult::MultiMessage { parts, .. } => parts,
            other => panic!("envelope {} gave {other:?}", i + 2),
        };
        for (metadata, record) in parts {
            // Each answer is its own record's: a refused record's place
            // went to no other.
            assert_eq!(Some(metadata.partition), record.partition_number());
            let p = metadata.partition as usize;
            assert!(metadata.offset > last_offset[p]);
            last_offset[p] = metadata.offset;
        }
    }
}

/// Consumes `n` records of `input` as `group`, turns each into a record
/// with `to_record` and produces it through a committable sink that commits
/// every delivered offset (max_batch 1); shuts the consumer down and returns
/// how the sink ended. Fails the test if the sink neither fails nor ends
/// within 30 s.
async fn through_committable_sink(
    broker: &reactive_kafka::testkit::TestBroker,
    group: &str,
    input: &str,
    n: usize,
    producer: reactive_kafka::ProducerSettings,
    to_record: impl Fn(&reactive_kafka::ConsumerRecord) -> ProducerRecord + Send + 'static,
) -> reactive_kafka::Result<()> {
    let (source, control) = consumer::committable_source(
        broker.consumer_settings(group),
        Subscription::topics([input]),
    )
    .unwrap();
    let sink =
        producer::committable_sink(producer, CommitterSettings::default().max_batch(1)).unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        source
            .take(n)
            .map(move |m| {
                let m = m?;
                Ok(Envelope::message(to_record(&m.record), m.offset))
            })
            .forward(sink),
    )
    .await
    .expect("the sink fails rather than hangs");
    let closed = control.shutdown().await;
    // A failed sink ends its consumer with the same error.
    match &result {
        Ok(()) => closed.unwrap(),
        Err(e) => assert_eq!(closed.unwrap_err().kind(), e.kind()),
    }
    result
}

/// Consume, transform, produce: record 10 goes to a partition that does not
/// exist. The sink fails, and no offset past record 10 is ever committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committable_sink_commits_only_delivered_records() {
    let (broker, input) = broker_with_topic("cs-in", 1).await;
    let output = unique("cs-out");
    broker.create_topic(&output, 1).await.unwrap();
    produce_n(&broker, &input, 20, 1).await;
    let group = unique("g-cs");
    let settings = broker
        .producer_settings()
        .property("message.timeout.ms", "5000");
    let out = output.clone();
    let result = through_committable_sink(&broker, &group, &input, 20, settings, move |r| {
        let partition = if r.offset() == 10 { 99 } else { 0 };
        ProducerRecord::new(out.as_str())
            .partition(partition)
            .payload(r.payload_bytes().unwrap_or_default())
    })
    .await;
    let err = result.expect_err("record 10 cannot be delivered");
    let c = err.coordinates().expect("coordinates");
    assert_eq!(
        (c.topic.as_str(), c.partition),
        (output.as_str(), Some(99)),
        "{err}"
    );
    let committed = committed_offsets(&broker, &group, &input, 1).await[&0];
    assert!(
        committed.unwrap_or(0) <= 10,
        "offset {committed:?} committed past the failed record 10"
    );
}

/// Produce errors injected into the embedded broker: the failed records'
/// offsets are not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_produce_errors_keep_offsets_uncommitted() {
    let (broker, input) = broker_with_topic("inject-in", 1).await;
    let Some(embedded) = embedded_or_skip(&broker, "fault injection") else {
        return;
    };
    let output = unique("inject-out");
    broker.create_topic(&output, 1).await.unwrap();
    produce_n(&broker, &input, 10, 1).await;
    let group = unique("g-inject");
    // Every produce request fails with a non-retriable error from now on.
    embedded.fail_requests(
        0,
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        1000,
    );
    let settings = broker
        .producer_settings()
        .property("enable.idempotence", "false")
        .property("message.timeout.ms", "5000");
    let result = through_committable_sink(&broker, &group, &input, 10, settings, move |_| {
        ProducerRecord::new(output.as_str()).payload("x")
    })
    .await;
    let err = result.expect_err("produce requests fail");
    // The injected cause decides the kind: an ACL refusal, whatever was being done.
    assert_eq!(err.kind(), ErrorKind::TopicAuthorization, "{err}");
    assert!(err.to_string().contains("not delivered"), "{err}");
    assert_eq!(
        committed_offsets(&broker, &group, &input, 1)
            .await
            .get(&0)
            .copied()
            .flatten(),
        None
    );
}

/// A slow broker (injected round-trip delay): the flow keeps at most
/// `max_in_flight` records unacknowledged, then catches up without loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_broker_bounds_records_in_flight() {
    let (broker, topic) = broker_with_topic("slow", 1).await;
    let Some(embedded) = embedded_or_skip(&broker, "round-trip delay injection") else {
        return;
    };
    set_round_trip_time(embedded, Duration::from_millis(200));
    let n = 2_000;
    let envelopes = futures::stream::iter(
        (0..n).map(|i| Envelope::message(ProducerRecord::new(topic.as_str()).payload("x"), i)),
    );
    let mut flow =
        producer::flow(broker.producer_settings().max_in_flight(100), envelopes).unwrap();
    let mut max_in_flight = 0;
    let mut count = 0;
    loop {
        // Sampled when the flow waits: it has taken every envelope it may,
        // so the window is as full as it gets. (Sampled only after results,
        // it could miss the full window: a burst of acknowledgements empties
        // it before the next envelopes are taken.)
        let next = match futures::poll!(flow.next()) {
            std::task::Poll::Ready(next) => next,
            std::task::Poll::Pending => {
                max_in_flight = max_in_flight.max(flow.in_flight());
                tokio::time::timeout(Duration::from_secs(60), flow.next())
                    .await
                    .expect("progress")
            }
        };
        let Some(result) = next else { break };
        assert_eq!(
            *result.expect("delivered").pass_through(),
            count,
            "out of order"
        );
        count += 1;
        max_in_flight = max_in_flight.max(flow.in_flight());
        if count == 200 {
            set_round_trip_time(embedded, Duration::ZERO);
        }
    }
    assert_eq!(count, n);
    assert!(max_in_flight <= 100, "{max_in_flight} records in flight");
    assert!(
        max_in_flight >= 50,
        "the delay should have filled the window: {max_in_flight}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_handle_answers_each_caller() {
    let (broker, topic) = broker_with_topic("send", 2).await;
    let producer = SendProducer::new(broker.producer_settings()).unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let producer = producer.clone();
            let record = ProducerRecord::new(topic.as_str())
                .partition(i % 2)
                .payload(format!("{i}"));
            tokio::spawn(async move { producer.send(record).await })
        })
        .collect();
    let mut per_partition = [0; 2];
    for t in tasks {
        let metadata = t.await.unwrap().unwrap();
        per_partition[metadata.partition as usize] += 1;
    }
    assert_eq!(per_partition, [10, 10]);
    let failed = producer
        .send(
            ProducerRecord::new(topic.as_str())
                .partition(42)
                .payload("lost?"),
        )
        .await
        .expect_err("no partition 42");
    assert_eq!(
        failed.record().payload_bytes().as_deref(),
        Some(&b"lost?"[..]),
        "the record comes back with the error"
    );
    assert_eq!(
        failed.error().coordinates().and_then(|c| c.partition),
        Some(42)
    );
    // `?` into the crate's error, where the record is not needed.
    let sent: reactive_kafka::Result<_> = async {
        producer
            .send(ProducerRecord::new(topic.as_str()).partition(42))
            .await?;
        Ok(())
    }
    .await;
    assert_eq!(
        sent.unwrap_err().coordinates().and_then(|c| c.partition),
        Some(42)
    );
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct Order {
    id: u32,
    cents: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_payload_gives_its_coordinates_and_bytes() {
    let (broker, topic) = broker_with_topic("serde", 1).await;
    let mut sink = producer::plain_sink(broker.producer_settings()).unwrap();
    let good = ProducerRecord::new(topic.as_str())
        .serialize_payload(&Json, &Order { id: 1, cents: 250 })
        .unwrap();
    sink.feed(good).await.unwrap();
    sink.feed(ProducerRecord::new(topic.as_str()).payload("not json"))
        .await
        .unwrap();
    sink.close().await.unwrap();

    let (mut source, control) = consumer::plain_source(
        broker.consumer_settings(&unique("g-serde")),
        Subscription::topics([topic.clone()]),
    )
    .unwrap();
    let records = take_n(&mut source, 2, Duration::from_secs(30)).await;
    let order: Order = records[0].deserialize_payload(&Json).unwrap();
    assert_eq!(order, Order { id: 1, cents: 250 });
    let err = records[1].deserialize_payload::<Order>(&Json).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Deserialize);
    let c = err.coordinates().unwrap();
    assert_eq!(
        (c.topic.as_str(), c.partition, c.offset),
        (topic.as_str(), Some(0), Some(1))
    );
    assert_eq!(
        err.record().and_then(|r| r.payload()),
        Some(&b"not json"[..])
    );
    control.shutdown().await.unwrap();
}
