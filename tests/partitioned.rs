//! Partitioned sources: one sub-stream per assigned partition, each with its
//! own backpressure.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::consumer::{self, CommittableSource, PlainSource};
use reactive_kafka::{committer, CommitterSettings, Subscription};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sub_stream_carries_its_partition_in_order() {
    let partitions = 4;
    let (broker, topic) = broker_with_topic("part-order", partitions).await;
    let n = 2_000;
    produce_n(&broker, &topic, n, partitions).await;
    let (mut source, control) = consumer::plain_partitioned_source(
        broker.consumer_settings(&unique("g-part-order")),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let subs = take_partitions(&mut source, partitions).await;
    let per = n / partitions as usize;
    for (partition, mut sub) in subs {
        let records = take_n(&mut sub, per, Duration::from_secs(30)).await;
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.partition(), partition);
            assert_eq!(r.offset(), i as i64, "partition {partition}");
            assert_eq!(key_index(r.key()) % partitions as usize, partition as usize);
        }
    }
    control.shutdown().await.unwrap();
    // Stopping ends the stream of sub-streams.
    assert!(tokio::time::timeout(Duration::from_secs(5), source.next())
        .await
        .expect("ended")
        .is_none());
}

/// A sub-stream nobody pulls holds back only its own partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_stream_not_pulled_does_not_hold_up_the_others() {
    let partitions = 2;
    let (broker, topic) = broker_with_topic("part-slow", partitions).await;
    let n = 20_000;
    produce_n(&broker, &topic, n, partitions).await;
    let (mut source, control) = consumer::plain_partitioned_source(
        broker
            .consumer_settings(&unique("g-part-slow"))
            .max_batch_records(100)
            .buffer_batches(2),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let mut subs = take_partitions(&mut source, partitions).await;
    let mut idle: PlainSource = subs.remove(&0).unwrap();
    let mut busy = subs.remove(&1).unwrap();
    // All of partition 1, far beyond partition 0's buffer, while 0 waits.
    let records = take_n(&mut busy, n / 2, Duration::from_secs(30)).await;
    assert_eq!(records.last().unwrap().offset(), (n / 2 - 1) as i64);
    assert!(
        control.metrics().records < n as u64,
        "partition 0 was not held back: {:?}",
        control.metrics()
    );
    // The idle partition lost nothing meanwhile.
    let records = take_n(&mut idle, n / 2, Duration::from_secs(30)).await;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset(), i as i64);
    }
    control.shutdown().await.unwrap();
}

/// Dropping one sub-stream stops that partition only; the others keep going
/// and a rebalance still completes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_sub_stream_stalls_neither_the_others_nor_a_rebalance() {
    let partitions = 4;
    let (broker, topic) = broker_with_topic("part-drop", partitions).await;
    let n = 4_000;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-part-drop");
    let settings =
        group_settings(&broker, &group, Protocol::Consumer).revoke_timeout(Duration::from_secs(60));
    let (mut source, control) = consumer::committable_partitioned_source(
        settings.clone(),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let mut subs: BTreeMap<i32, CommittableSource> = take_partitions(&mut source, partitions).await;
    // Partition 0: ten records processed and committed, then dropped.
    let mut dropped = subs.remove(&0).unwrap();
    let ten = take_n(&mut dropped, 10, Duration::from_secs(30)).await;
    ten.last().unwrap().offset.clone().commit().await.unwrap();
    drop(dropped);
    drop(ten);
    // The others are consumed completely.
    let per = n / partitions as usize;
    for (p, mut sub) in subs {
        let msgs = take_n(&mut sub, per, Duration::from_secs(30)).await;
        assert_eq!(msgs.len(), per, "partition {p}");
        msgs.last().unwrap().offset.clone().commit().await.unwrap();
    }

    // A second member joins: partitions move although one sub-stream is gone.
    let (mut second, second_control) =
        consumer::committable_partitioned_source(settings, Subscription::topics([topic.as_str()]))
            .unwrap();
    // Well before the 60 s revoke timeout: the dropped sub-stream's
    // partition (its ten records committed) did not hold the revocation.
    let (tp, mut sub) = tokio::time::timeout(Duration::from_secs(20), second.next())
        .await
        .expect("the second member got partitions within 20 s")
        .unwrap()
        .unwrap();
    if tp.partition == 0 {
        // Resumes after the ten committed records.
        let msgs = take_n(&mut sub, per - 10, Duration::from_secs(30)).await;
        assert_eq!(msgs[0].record.offset(), 10);
    }
    second_control.shutdown().await.unwrap();
    control.shutdown().await.unwrap();
}

/// Each sub-stream commits through a committer of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_streams_commit_through_the_committer() {
    let partitions = 3;
    let (broker, topic) = broker_with_topic("part-commit", partitions).await;
    let n = 3_000;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-part-commit");
    let (mut source, control) = consumer::committable_partitioned_source(
        broker.consumer_settings(&group),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let per = n / partitions as usize;
    let subs = take_partitions(&mut source, partitions).await;
    let tasks: Vec<_> = subs
        .into_values()
        .map(|sub| {
            tokio::spawn(async move {
                sub.take(per)
                    .map(|m| m.map(|m| m.offset))
                    .forward(committer::sink(CommitterSettings::default()).unwrap())
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let committed = committed_offsets(&broker, &group, &topic, partitions).await;
    for p in 0..partitions {
        assert_eq!(committed[&p], Some(per as i64), "partition {p}");
    }
    control.shutdown().await.unwrap();
}

/// In an incremental rebalance (KIP-848 protocol) only the partitions that
/// move end their sub-streams; the ones kept go on in the same sub-stream,
/// without a gap or a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_partitions_keep_their_sub_streams_through_a_rebalance() {
    let partitions = 4;
    let (broker, topic) = broker_with_topic("part-keep", partitions).await;
    let n = 4_000;
    let per = n / partitions as usize;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-part-keep");
    let settings = group_settings(&broker, &group, Protocol::Consumer);
    let (mut first, first_control) = consumer::committable_partitioned_source(
        settings.clone(),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let mut subs: BTreeMap<i32, CommittableSource> = take_partitions(&mut first, partitions).await;
    // Half of each partition processed and committed.
    for sub in subs.values_mut() {
        let msgs = take_n(sub, per / 2, Duration::from_secs(30)).await;
        msgs.last().unwrap().offset.clone().commit().await.unwrap();
    }
    let (second, second_control) =
        consumer::committable_partitioned_source(settings, Subscription::topics([topic.as_str()]))
            .unwrap();
    let drain = tokio::spawn(second.for_each_concurrent(None, |sub| async move {
        let (_, sub) = sub.unwrap();
        sub.for_each(|_| async {}).await;
    }));
    // The revocation is counted as it starts; the partitions it takes
    // leave the assignment when it is done.
    wait_until("a partition moved", Duration::from_secs(30), || {
        let m = first_control.metrics();
        m.revocations > 0 && (m.assigned_partitions as usize) < partitions as usize
    })
    .await;
    let kept = first_control.metrics().assigned_partitions as usize;
    assert!(kept > 0 && kept < partitions as usize, "kept {kept}");
    let mut continued = 0;
    for (p, mut sub) in subs {
        match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
            Ok(Some(Ok(m))) => {
                // A kept partition: the same sub-stream, right after the commit.
                assert_eq!(m.record.offset(), (per / 2) as i64, "partition {p}");
                let rest = take_n(&mut sub, per / 2 - 1, Duration::from_secs(30)).await;
                assert_eq!(rest.last().unwrap().record.offset(), per as i64 - 1);
                continued += 1;
            }
            Ok(None) => {} // moved to the second member
            other => panic!(
                "partition {p}: {:?}",
                other.map(|o| o.map(|r| r.map(|m| m.record.offset())))
            ),
        }
    }
    assert_eq!(continued, kept);
    // No kept partition was handed out again as a new sub-stream.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), first.next())
            .await
            .is_err(),
        "a new sub-stream for a partition that was kept"
    );
    first_control.shutdown().await.unwrap();
    second_control.shutdown().await.unwrap();
    drain.await.unwrap();
}
