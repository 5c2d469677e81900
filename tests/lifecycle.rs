//! Control: stop, drain and shutdown; backpressure that keeps the group;
//! dropping without shutdown.

mod support;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reactive_kafka::{committer, consumer, CommitterSettings, Subscription};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_shutdown_commits_everything_processed() {
    let partitions = 3;
    let (broker, topic) = broker_with_topic("drain", partitions).await;
    let n = 3_000;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-drain");

    // Small buffers: batches often wait in the engine for room, the path
    // where it must still account for what it hands over.
    let settings = broker
        .consumer_settings(&group)
        .max_batch_records(50)
        .buffer_batches(1);
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.clone()])).unwrap();
    // A slow-ish pipeline with a commit batch that is never full: only the
    // final flush on stream end commits.
    let sink = committer::sink(CommitterSettings::default().max_batch(1_000_000)).unwrap();
    let processed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = processed.clone();
    let pipeline = tokio::spawn(
        source
            .then(move |m| {
                let counter = counter.clone();
                async move {
                    let m = m?;
                    if m.record.offset() % 100 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(m.offset)
                }
            })
            .forward(sink),
    );
    // Let part of the data through, then drain.
    while processed.load(std::sync::atomic::Ordering::Relaxed) < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = control
        .drain_and_shutdown(Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), pipeline)
        .await
        .expect("pipeline ends after drain")
        .unwrap()
        .unwrap();
    let processed = processed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(report.complete, "{report:?}");
    assert!(report.uncommitted.is_empty());
    assert!(control.is_closed());

    // What was committed is exactly what was processed.
    let committed = committed_offsets(&broker, &group, &topic, partitions).await;
    let total: i64 = committed.values().map(|o| o.unwrap_or(0)).sum();
    assert_eq!(
        total as usize, processed,
        "committed {committed:?}, processed {processed}"
    );
    for c in &report.committed {
        assert_eq!(committed[&c.tp.partition], Some(c.offset));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_reports_what_was_not_committed_at_its_deadline() {
    let (broker, topic) = broker_with_topic("drain-late", 1).await;
    produce_n(&broker, &topic, 100, 1).await;
    let group = unique("g-drain-late");
    let (mut source, control) = committable(&broker, &group, &topic);
    let messages = take_n(&mut source, 100, Duration::from_secs(30)).await;
    // Commit only up to offset 49: the drain cannot complete.
    messages[49].offset.clone().commit().await.unwrap();
    let started = Instant::now();
    let report = control
        .drain_and_shutdown(Duration::from_millis(500))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert!(!report.complete);
    assert_eq!(report.uncommitted.len(), 1);
    assert_eq!(report.uncommitted[0].committed_next, Some(50));
    assert_eq!(report.uncommitted[0].emitted_next, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_stream_and_keeps_commits_working() {
    let (broker, topic) = broker_with_topic("stop", 1).await;
    produce_n(&broker, &topic, 50, 1).await;
    let group = unique("g-stop");
    let (mut source, control) = committable(&broker, &group, &topic);
    let messages = take_n(&mut source, 50, Duration::from_secs(30)).await;
    control.stop().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), source.next())
        .await
        .unwrap()
        .is_none());
    assert!(!control.is_closed());
    // The consumer is still in the group: commits go through.
    let outcome = messages[49].offset.clone().commit().await.unwrap();
    assert_eq!(outcome.committed[0].offset, 50);
    control.shutdown().await.unwrap();
    assert_eq!(
        committed_offsets(&broker, &group, &topic, 1).await[&0],
        Some(50)
    );
    // After shutdown a commit fails with a clear error instead of hanging.
    let err = messages[10].offset.clone().commit().await.unwrap_err();
    assert!(err.is_fatal(), "{err}");
}

/// A stream that nobody pulls for longer than `max.poll.interval.ms` keeps
/// its partitions and then resumes without losing a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpulled_stream_keeps_its_partitions_past_max_poll_interval() {
    let partitions = 2;
    let (broker, topic) = broker_with_topic("stall", partitions).await;
    let n = 20_000;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-stall");
    let settings = broker
        .consumer_settings(&group)
        .property("max.poll.interval.ms", "6000")
        .max_batch_records(100)
        .buffer_batches(2);
    let (mut source, control) =
        consumer::plain_source(settings, Subscription::topics([topic.clone()])).unwrap();
    let mut records = take_n(&mut source, 1_000, Duration::from_secs(30)).await;
    let before = control.metrics();
    assert_eq!(before.assigned_partitions, partitions as u64);

    // Stall well past max.poll.interval.ms.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let during = control.metrics();
    assert_eq!(
        during.revocations, 0,
        "partitions were revoked during the stall"
    );
    assert_eq!(
        during.assignments, before.assignments,
        "a rebalance happened during the stall"
    );
    // The engine held back: only the bounded buffer was filled meanwhile.
    assert!(
        during.records - before.records <= 2 * 100 + 100,
        "the engine kept fetching into memory: {} records",
        during.records - before.records
    );

    records.extend(take_n(&mut source, n - 1_000, Duration::from_secs(60)).await);
    let mut seen = vec![false; n];
    for r in &records {
        let i = key_index(r.key());
        assert!(!seen[i], "record {i} twice");
        seen[i] = true;
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(control.metrics().revocations, 0);
    control.shutdown().await.unwrap();
}

/// Dropping the stream, the control, held offsets and a committer without
/// any shutdown returns at once, and the engine closes the consumer by itself:
/// it leaves the group, so the next member gets the partitions at once rather
/// than after the session timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_shutdown_does_not_hang_and_leaves_the_group() {
    let (broker, topic) = broker_with_topic("drop", 2).await;
    produce_n(&broker, &topic, 2_000, 2).await;
    let group = unique("g-drop");
    // The KIP-848 protocol: a member that vanished without leaving keeps its
    // partitions until its (broker-side) session expires, well over 7 s.
    let settings = reactive_kafka::ConsumerSettings::new(broker.bootstrap_servers())
        .group_id(&group)
        .auto_offset_reset(reactive_kafka::AutoOffsetReset::Earliest)
        .property("group.protocol", "consumer")
        .property("fetch.wait.max.ms", "20");
    for round in 0..3 {
        let (mut source, control) =
            consumer::committable_source(settings.clone(), Subscription::topics([topic.clone()]))
                .unwrap();
        // The previous member left cleanly, so this one is served at once.
        let joined = Instant::now();
        let messages = take_n(&mut source, 10, Duration::from_secs(30)).await;
        if round > 0 {
            assert!(
                joined.elapsed() < Duration::from_secs(7),
                "round {round}: the previous consumer did not leave the group ({:?})",
                joined.elapsed()
            );
        }
        let mut sink = committer::sink(CommitterSettings::default()).unwrap();
        sink.feed(messages[0].offset.clone()).await.unwrap();
        let dropped = Instant::now();
        drop(sink);
        drop(source);
        drop(control);
        drop(messages);
        assert!(
            dropped.elapsed() < Duration::from_millis(100),
            "drop blocked"
        );
    }
}
