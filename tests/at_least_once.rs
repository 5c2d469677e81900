//! Committable source + committer: what is processed is committed, and a new
//! consumer of the group resumes exactly after the last commit.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::{committer, CommitterSettings};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_equal_what_was_processed() {
    let partitions = 3;
    let (broker, topic) = broker_with_topic("alo", partitions).await;
    let n = 9_000;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-alo");

    let (source, control) = committable(&broker, &group, &topic);
    // Process exactly n records, then end the stream: the committer commits on close.
    let sink = committer::sink(CommitterSettings::default().max_batch(500)).unwrap();
    let processed = tokio::time::timeout(
        Duration::from_secs(60),
        source.take(n).map(|m| m.map(|m| m.offset)).forward(sink),
    )
    .await
    .expect("pipeline within 60 s");
    processed.expect("pipeline");

    let committed = committed_offsets(&broker, &group, &topic, partitions).await;
    for p in 0..partitions {
        assert_eq!(
            committed[&p],
            Some((n / partitions as usize) as i64),
            "partition {p}"
        );
    }
    let m = control.metrics();
    assert!(m.commits >= 1);
    assert_eq!(m.offsets_stale, 0);
    control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_consumer_resumes_exactly_after_the_last_commit() {
    let partitions = 2;
    let (broker, topic) = broker_with_topic("resume", partitions).await;
    let n = 4_000;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-resume");

    // First consumer: process and commit the first 300 records of each partition only.
    let (source, control) = committable(&broker, &group, &topic);
    let sink = committer::sink(CommitterSettings::default().max_batch(100)).unwrap();
    let first = tokio::spawn(
        source
            .filter(|m| {
                futures::future::ready(m.as_ref().map_or(true, |m| m.record.offset() < 300))
            })
            .take(600)
            .map(|m| m.map(|m| m.offset))
            .forward(sink),
    );
    tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .expect("first consumer within 60 s")
        .unwrap()
        .unwrap();
    control.shutdown().await.unwrap();
    let committed = committed_offsets(&broker, &group, &topic, partitions).await;
    assert_eq!(
        committed.values().copied().collect::<Vec<_>>(),
        vec![Some(300), Some(300)]
    );

    // Second consumer: starts at offset 300 of each partition and reads the rest.
    let (mut source, control) = committable(&broker, &group, &topic);
    let rest = take_n(&mut source, n - 600, Duration::from_secs(60)).await;
    let mut first_offset: BTreeMap<i32, i64> = BTreeMap::new();
    for m in &rest {
        first_offset
            .entry(m.record.partition())
            .or_insert(m.record.offset());
        assert!(
            m.record.offset() >= 300,
            "record {} read again",
            m.record.offset()
        );
    }
    assert_eq!(
        first_offset.values().copied().collect::<Vec<_>>(),
        vec![300, 300]
    );
    assert_nothing_more(&mut source).await;
    control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_interval_commits_while_the_stream_is_idle() {
    let (broker, topic) = broker_with_topic("interval", 1).await;
    produce_n(&broker, &topic, 10, 1).await;
    let group = unique("g-interval");
    let (source, control) = committable(&broker, &group, &topic);
    // A batch size never reached: only the interval can trigger the commit.
    let sink = committer::sink(
        CommitterSettings::default()
            .max_batch(1_000_000)
            .max_interval(Duration::from_millis(300)),
    )
    .unwrap();
    let pipeline = tokio::spawn(source.map(|m| m.map(|m| m.offset)).forward(sink));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let committed = committed_offsets(&broker, &group, &topic, 1).await;
        if committed[&0] == Some(10) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not committed by interval: {committed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    control.shutdown().await.unwrap();
    // The stream ends with the shutdown and the sink closes cleanly.
    tokio::time::timeout(Duration::from_secs(10), pipeline)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_offset_can_be_committed_directly() {
    let (broker, topic) = broker_with_topic("single", 1).await;
    produce_n(&broker, &topic, 5, 1).await;
    let group = unique("g-single");
    let (mut source, control) = committable(&broker, &group, &topic);
    let messages = take_n(&mut source, 5, Duration::from_secs(30)).await;
    let outcome = messages[2].offset.clone().commit().await.unwrap();
    assert_eq!(outcome.committed.len(), 1);
    assert_eq!(outcome.committed[0].offset, 3);
    assert!(outcome.stale.is_empty());
    assert_eq!(
        committed_offsets(&broker, &group, &topic, 1).await[&0],
        Some(3)
    );
    control.shutdown().await.unwrap();
}
