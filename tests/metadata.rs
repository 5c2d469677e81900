//! The metadata client on both brokers: its figures match what the tests
//! produced and committed.

mod support;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reactive_kafka::metadata::MetadataClient;
use reactive_kafka::{
    committer, consumer, CommitterSettings, ConsumerSettings, ErrorKind, ProducerRecord,
    Subscription,
};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_committed_offsets_and_lag_match_what_was_produced_and_committed() {
    let (broker, topic) = broker_with_topic("meta", 2).await;
    // 30 records on partition 0, 20 on partition 1.
    let mut sink = reactive_kafka::producer::plain_sink(broker.producer_settings()).unwrap();
    for i in 0..50 {
        let partition = if i < 30 { 0 } else { 1 };
        sink.feed(
            ProducerRecord::new(topic.as_str())
                .partition(partition)
                .payload("x"),
        )
        .await
        .unwrap();
    }
    sink.close().await.unwrap();

    // A group commits 10 of partition 0 and 5 of partition 1.
    let group = unique("g-meta");
    let (source, control) = consumer::committable_source(
        broker.consumer_settings(&group),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let mut taken = [0; 2];
    let wanted = [10, 5];
    let offsets = source
        .filter_map(move |m| {
            let m = m.unwrap();
            let p = m.record.partition() as usize;
            taken[p] += 1;
            futures::future::ready((taken[p] <= wanted[p]).then_some(Ok(m.offset)))
        })
        .take(15)
        .forward(committer::sink(CommitterSettings::default()).unwrap());
    tokio::time::timeout(Duration::from_secs(60), offsets)
        .await
        .expect("15 records within 60 s")
        .unwrap();
    control.shutdown().await.unwrap();

    let client = MetadataClient::new(ConsumerSettings::new(broker.bootstrap_servers())).unwrap();
    let topics = client.topics().await.unwrap();
    assert_eq!(topics.get(&topic), Some(&vec![0, 1]), "{topics:?}");
    assert_eq!(client.partitions(&topic).await.unwrap(), [0, 1]);
    let end = client.end_offsets(&topic).await.unwrap();
    assert_eq!((end[&0], end[&1]), (30, 20));
    let beginning = client.beginning_offsets(&topic).await.unwrap();
    assert_eq!((beginning[&0], beginning[&1]), (0, 0));
    let committed = client.committed_offsets(&group, &topic).await.unwrap();
    assert_eq!((committed[&0], committed[&1]), (Some(10), Some(5)));
    let lag = client.lag(&group, &topic).await.unwrap();
    let lags: Vec<(i32, i64, Option<i64>, i64)> = lag
        .iter()
        .map(|l| (l.partition, l.end, l.committed, l.lag))
        .collect();
    assert_eq!(lags, [(0, 30, Some(10), 20), (1, 20, Some(5), 15)]);
    // A group that committed nothing is behind by everything retained.
    let fresh = client.lag(&unique("g-none"), &topic).await.unwrap();
    assert_eq!(fresh.iter().map(|l| l.lag).collect::<Vec<_>>(), [30, 20]);
    assert!(fresh.iter().all(|l| l.committed.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_for_a_time_point_at_the_first_record_that_recent() {
    let (broker, topic) = broker_with_topic("meta-time", 1).await;
    if broker.is_embedded() {
        println!("skipped: the embedded broker answers no offset for a time (needs Apache Kafka: KAFKA_BOOTSTRAP_SERVERS)");
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let base = now - 100_000;
    let mut sink = reactive_kafka::producer::plain_sink(broker.producer_settings()).unwrap();
    for i in 0..10 {
        sink.feed(
            ProducerRecord::new(topic.as_str())
                .partition(0)
                .timestamp(base + i * 1000)
                .payload("x"),
        )
        .await
        .unwrap();
    }
    sink.close().await.unwrap();
    let client = MetadataClient::new(ConsumerSettings::new(broker.bootstrap_servers())).unwrap();
    let at = client.offsets_for_time(&topic, base + 4500).await.unwrap();
    assert_eq!(at[&0], Some(5), "the first record at or after the time");
    let first = client.offsets_for_time(&topic, base - 1).await.unwrap();
    assert_eq!(first[&0], Some(0));
    let none = client
        .offsets_for_time(&topic, now + 3_600_000)
        .await
        .unwrap();
    assert_eq!(none[&0], None, "nothing that recent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_named_and_an_unreachable_broker_fails_within_the_timeout() {
    let (broker, _topic) = broker_with_topic("meta-missing", 1).await;
    let client = MetadataClient::new(ConsumerSettings::new(broker.bootstrap_servers())).unwrap();
    let missing = unique("no-such-topic");
    let err = client.end_offsets(&missing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownTopic, "{err}");
    assert_eq!(err.coordinates().map(|c| c.topic.clone()), Some(missing));

    let nowhere = MetadataClient::new(ConsumerSettings::new(format!(
        "127.0.0.1:{}",
        unused_port()
    )))
    .unwrap()
    .with_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let err = nowhere.topics().await.unwrap_err();
    println!("unreachable: {:?}: {err}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_and_deleted() {
    let (broker, _topic) = broker_with_topic("meta-admin", 1).await;
    if broker.is_embedded() {
        println!("skipped: the embedded broker does not take CreateTopics requests (needs Apache Kafka: KAFKA_BOOTSTRAP_SERVERS)");
        return;
    }
    let client = MetadataClient::new(ConsumerSettings::new(broker.bootstrap_servers())).unwrap();
    let topic = unique("meta-created");
    client.create_topic(&topic, 3, 1).await.unwrap();
    wait_until_async_ok(&client, &topic, Some(vec![0, 1, 2])).await;
    let again = client.create_topic(&topic, 3, 1).await.unwrap_err();
    assert!(again.to_string().contains("exists"), "{again}");
    client.delete_topic(&topic).await.unwrap();
    wait_until_async_ok(&client, &topic, None).await;
}

/// Waits until `topic` has `partitions` (or is gone, for `None`).
async fn wait_until_async_ok(client: &MetadataClient, topic: &str, partitions: Option<Vec<i32>>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = client.partitions(topic).await.ok();
        if now == partitions {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: {now:?}, wanted {partitions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_tells_pulls_polls_commits_and_stalls() {
    let (broker, topic) = broker_with_topic("health", 1).await;
    produce_n(&broker, &topic, 50, 1).await;
    let settings = broker
        .consumer_settings(&unique("g-health"))
        .max_pull_interval(Duration::from_millis(500), false);
    let (mut source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.as_str()])).unwrap();
    let before = control.health();
    assert!(before.running);
    assert_eq!(before.since_committed, None);

    let first = take_n(&mut source, 10, Duration::from_secs(30)).await;
    let offsets = first.iter().map(|m| m.offset.clone());
    let mut batch = reactive_kafka::CommittableOffsetBatch::new();
    for o in offsets {
        batch.add(o);
    }
    batch.commit().await.unwrap();
    let h = control.health();
    assert!(h.since_pulled.unwrap() < Duration::from_secs(1), "{h:?}");
    assert!(h.since_polled.unwrap() < Duration::from_secs(1), "{h:?}");
    assert!(h.since_committed.unwrap() < Duration::from_secs(1), "{h:?}");
    assert_eq!(h.assigned_partitions, 1);
    assert_eq!(h.stalls, 0, "pulled in time: no stall");

    // Records wait, the stream is not pulled: one stall, reported once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let h = control.health();
    assert_eq!(h.stalls, 1, "{h:?}");
    assert!(h.since_pulled.unwrap() >= Duration::from_secs(2));
    let e = h.last_error.expect("the stall is the last error");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("max_pull_interval"), "{e}");
    // Pulling again ends the stall; the stream goes on (no `fail`).
    assert_eq!(
        take_n(&mut source, 40, Duration::from_secs(30)).await.len(),
        40
    );
    control.shutdown().await.unwrap();
    assert!(!control.health().running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stall_watchdog_fails_a_stream_not_pulled_when_asked_to() {
    let (broker, topic) = broker_with_topic("stall", 1).await;
    produce_n(&broker, &topic, 50, 1).await;
    let settings = broker
        .consumer_settings(&unique("g-stall"))
        .max_pull_interval(Duration::from_millis(500), true);
    let (mut source, control) =
        consumer::plain_source(settings, Subscription::topics([topic.as_str()])).unwrap();
    take_n(&mut source, 1, Duration::from_secs(30)).await;
    let err = tokio::time::timeout(Duration::from_secs(10), control.is_shutdown())
        .await
        .expect("the watchdog ends the consumer")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("not pulled"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_is_not_a_stall() {
    let (broker, topic) = broker_with_topic("idle", 1).await;
    let settings = broker
        .consumer_settings(&unique("g-idle"))
        .max_pull_interval(Duration::from_millis(300), true);
    let (_source, control) =
        consumer::plain_source(settings, Subscription::topics([topic.as_str()])).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let h = control.health();
    assert!(h.running, "nothing to hand out: not stalled");
    assert_eq!(h.stalls, 0);
    control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_and_lag_follow_what_was_committed() {
    let (broker, topic) = broker_with_topic("stats", 1).await;
    produce_n(&broker, &topic, 100, 1).await;
    let group = unique("g-stats");
    let settings = broker
        .consumer_settings(&group)
        .property("statistics.interval.ms", "200");
    let (mut source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.as_str()])).unwrap();
    let mut stats = control.statistics();
    let taken = take_n(&mut source, 40, Duration::from_secs(30)).await;
    let mut batch = reactive_kafka::CommittableOffsetBatch::new();
    for m in taken {
        batch.add(m.offset);
    }
    batch.commit().await.unwrap();

    // Within a few statistics intervals the lag is end minus committed.
    let started = Instant::now();
    let lag = loop {
        let lag = control.lag();
        if lag.first().map(|l| l.1) == Some(60) {
            break lag;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "lag from statistics: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("lag from statistics after {:?}: {lag:?}", started.elapsed());
    assert_eq!(lag.len(), 1);
    assert_eq!(&*lag[0].0.topic, topic.as_str());
    stats.changed().await.unwrap();
    let latest = stats.borrow().clone().expect("statistics");
    assert_eq!(latest.client_type, "consumer");
    let client = MetadataClient::new(ConsumerSettings::new(broker.bootstrap_servers())).unwrap();
    assert_eq!(client.lag(&group, &topic).await.unwrap()[0].lag, 60);
    control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_handed_out_is_what_was_pulled_and_records_what_was_buffered() {
    let (broker, topic) = broker_with_topic("handed", 1).await;
    produce_n(&broker, &topic, 50, 1).await;
    let (mut source, control) = consumer::plain_source(
        broker.consumer_settings(&unique("g-handed")),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    take_n(&mut source, 10, Duration::from_secs(30)).await;
    let m = control.metrics();
    assert_eq!(m.records_handed_out, 10, "{m:?}");
    assert!(m.records >= 10, "read ahead into the buffer: {m:?}");
    take_n(&mut source, 40, Duration::from_secs(30)).await;
    let m = control.metrics();
    assert_eq!((m.records_handed_out, m.records), (50, 50), "{m:?}");
    control.shutdown().await.unwrap();
}
