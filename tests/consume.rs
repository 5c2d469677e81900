//! Sources read every record, in order per partition, with the right coordinates.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::{consumer, StartOffset, Subscription, TopicPartition};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_source_reads_every_record_in_partition_order() {
    let (broker, topic) = broker_with_topic("plain", 4).await;
    let n = 20_000;
    produce_n(&broker, &topic, n, 4).await;

    let settings = broker.consumer_settings(&unique("g-plain"));
    let (mut source, control) =
        consumer::plain_source(settings, Subscription::topics([topic.clone()])).unwrap();
    let records = take_n(&mut source, n, Duration::from_secs(60)).await;

    let mut seen = vec![false; n];
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    for r in &records {
        assert_eq!(r.topic(), topic);
        let i = key_index(r.key());
        assert!(!seen[i], "record {i} delivered twice");
        seen[i] = true;
        assert_eq!(
            r.partition(),
            (i % 4) as i32,
            "record {i} on the wrong partition"
        );
        assert_eq!(r.payload(), Some(format!("value-{i}").as_bytes()));
        if let Some(prev) = last_offset.insert(r.partition(), r.offset()) {
            assert!(
                r.offset() > prev,
                "offsets out of order on partition {}",
                r.partition()
            );
        }
        assert!(r.timestamp().millis().is_some());
    }
    assert!(seen.iter().all(|s| *s), "some records were not delivered");
    let m = control.metrics();
    assert!(m.records >= n as u64);
    assert_eq!(m.assigned_partitions, 4);
    control.shutdown().await.unwrap();
    assert!(control.is_closed());
    // After shutdown the stream ends.
    assert!(tokio::time::timeout(Duration::from_secs(5), source.next())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_assignment_starts_at_the_given_offsets() {
    let (broker, topic) = broker_with_topic("assign", 2).await;
    produce_n(&broker, &topic, 200, 2).await;

    // Partition 0 from offset 90 (10 records left), partition 1 from the beginning (100).
    let subscription = Subscription::assignment_with_offsets([
        (
            TopicPartition::new(topic.as_str(), 0),
            StartOffset::Offset(90),
        ),
        (
            TopicPartition::new(topic.as_str(), 1),
            StartOffset::Beginning,
        ),
    ]);
    let settings = broker.consumer_settings(&unique("g-assign"));
    let (mut source, control) = consumer::committable_source(settings, subscription).unwrap();
    let messages = take_n(&mut source, 110, Duration::from_secs(30)).await;
    let p0: Vec<i64> = messages
        .iter()
        .filter(|m| m.record.partition() == 0)
        .map(|m| m.record.offset())
        .collect();
    assert_eq!(p0, (90..100).collect::<Vec<_>>());
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.record.partition() == 1)
            .count(),
        100
    );
    // Nothing more arrives.
    assert_nothing_more(&mut source).await;
    control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_subscription_reads_matching_topics() {
    let (broker, topic) = broker_with_topic("pattern", 1).await;
    produce_n(&broker, &topic, 50, 1).await;
    let settings = broker.consumer_settings(&unique("g-pattern"));
    let (mut source, control) =
        consumer::plain_source(settings, Subscription::pattern(format!("^{topic}$"))).unwrap();
    let records = take_n(&mut source, 50, Duration::from_secs(60)).await;
    assert!(records.iter().all(|r| r.topic() == topic));
    control.shutdown().await.unwrap();
}
