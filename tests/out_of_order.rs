//! Concurrent processing with out-of-order acknowledgement: the committed
//! offset is the contiguous watermark of processed records, never past a
//! record still being processed; a crash loses nothing.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::{committer, consumer, CommitterSettings, Subscription};
use support::*;

/// A small deterministic pseudo-random sequence (xorshift).
fn delays(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % 4
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_follow_the_contiguous_watermark_of_processed_records() {
    let partitions = 4;
    let (broker, topic) = broker_with_topic("ooo", partitions).await;
    let n = 2_000;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-ooo");
    let settings = broker
        .consumer_settings(&group)
        .max_batch_records(50)
        .out_of_order_commits(200);
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.clone()])).unwrap();

    // The model: every record whose processing finished.
    let done: Arc<Mutex<HashSet<(i32, i64)>>> = Arc::default();
    let model = done.clone();
    let mut next_delay = delays(7);
    let processed = source
        .take(n)
        .map(move |m| {
            let m = m.expect("record");
            let delay = Duration::from_millis(next_delay());
            let done = model.clone();
            async move {
                tokio::time::sleep(delay).await;
                done.lock()
                    .unwrap()
                    .insert((m.record.partition(), m.record.offset()));
                m.offset
            }
        })
        .buffer_unordered(16);
    let settings = CommitterSettings::default()
        .max_batch(20)
        .max_interval(Duration::from_millis(20));
    let mut outcomes = committer::flow(settings, processed).unwrap();
    let mut commits = 0;
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    while let Some(outcome) = tokio::time::timeout(Duration::from_secs(60), outcomes.next())
        .await
        .expect("progress")
    {
        let outcome = outcome.expect("commit");
        let finished = done.lock().unwrap().clone();
        for c in &outcome.committed {
            commits += 1;
            // Everything below the committed offset was processed.
            for offset in 0..c.offset {
                assert!(
                    finished.contains(&(c.tp.partition, offset)),
                    "committed {} on partition {} while record {offset} was not processed",
                    c.offset,
                    c.tp.partition
                );
            }
            let prev = last.insert(c.tp.partition, c.offset).unwrap_or(0);
            assert!(c.offset >= prev, "the watermark went back");
        }
    }
    assert!(
        commits > partitions as usize,
        "several commits per partition: {commits}"
    );
    let per_partition = (n / partitions as usize) as i64;
    assert_eq!(
        last.values().copied().collect::<Vec<_>>(),
        vec![per_partition; partitions as usize]
    );
    assert_eq!(
        committed_offsets(&broker, &group, &topic, partitions)
            .await
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![Some(per_partition); partitions as usize]
    );
    control.shutdown().await.unwrap();
}

/// The pipeline is dropped mid-way (a crash); a new consumer of the group
/// resumes at the committed watermark, so every record is processed at least
/// once and only records not covered by a commit are delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_way_loses_nothing() {
    let partitions = 2;
    let (broker, topic) = broker_with_topic("ooo-crash", partitions).await;
    let n = 1_000;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-ooo-crash");
    let seen: Arc<Mutex<HashSet<(i32, i64)>>> = Arc::default();

    for (round, crash_after) in [(0, 300usize), (1, 350), (2, usize::MAX)] {
        let settings = broker
            .consumer_settings(&group)
            .max_batch_records(40)
            .out_of_order_commits(100);
        let (source, control) =
            consumer::committable_source(settings, Subscription::topics([topic.clone()])).unwrap();
        let committed_before = committed_offsets(&broker, &group, &topic, partitions).await;
        let model = seen.clone();
        let mut next_delay = delays(round + 11);
        let first_offsets: Arc<Mutex<BTreeMap<i32, i64>>> = Arc::default();
        let firsts = first_offsets.clone();
        let pipeline = source
            .map(move |m| {
                let m = m.expect("record");
                firsts
                    .lock()
                    .unwrap()
                    .entry(m.record.partition())
                    .or_insert(m.record.offset());
                let delay = Duration::from_millis(next_delay());
                let seen = model.clone();
                async move {
                    tokio::time::sleep(delay).await;
                    seen.lock()
                        .unwrap()
                        .insert((m.record.partition(), m.record.offset()));
                    m.offset
                }
            })
            .buffer_unordered(8)
            .map(Ok)
            .forward(
                committer::sink(
                    CommitterSettings::default()
                        .max_batch(10)
                        .max_interval(Duration::from_millis(10)),
                )
                .unwrap(),
            );
        let handle = tokio::spawn(pipeline);
        // Run until `crash_after` more records were processed (or all are).
        let target = seen
            .lock()
            .unwrap()
            .len()
            .saturating_add(crash_after)
            .min(n);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.lock().unwrap().len() < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round} stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Each round starts exactly at the committed watermark.
        for (p, first) in first_offsets.lock().unwrap().iter() {
            assert_eq!(
                Some(*first),
                Some(committed_before[p].unwrap_or(0)),
                "round {round}, partition {p}"
            );
        }
        // The crash: the task and every handle go away without shutdown.
        handle.abort();
        let _ = handle.await;
        drop(control);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        n,
        "every record processed at least once"
    );
}

/// `CommitWhen::NextOffsetObserved` holds the newest offset of each
/// partition; with more partitions than the source may have outstanding,
/// the held offsets alone must not stop the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_newest_offsets_do_not_stall_a_source_with_more_partitions_than_its_limit() {
    let partitions = 8;
    let (broker, topic) = broker_with_topic("ooo-held", partitions).await;
    let n = 800;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-ooo-held");
    let settings = broker
        .consumer_settings(&group)
        .max_batch_records(10)
        .out_of_order_commits(4);
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.clone()])).unwrap();
    let (got, handle) = count_into_a_holding_committer(source, n).await;
    assert_eq!(got, n, "records handed out before the source stopped");
    // Each partition's last record is still held: the commits stop just
    // before it, never past it.
    let per_partition = (n / partitions as usize) as i64;
    let expected = vec![Some(per_partition - 1); partitions as usize];
    let mut committed = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        committed = committed_offsets(&broker, &group, &topic, partitions)
            .await
            .into_values()
            .collect::<Vec<_>>();
        if committed == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.abort();
    // The aborted pipeline's committer may still send a commit as the
    // consumer closes, which fails it ("commit not sent"): not under test.
    let _ = control.shutdown().await;
    assert_eq!(committed, expected);
}

/// The limit holds record by record: a batch larger than the room left is
/// handed out only as far as the room goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_records_than_the_limit_are_handed_out_before_one_is_committed() {
    let partitions = 2;
    let (broker, topic) = broker_with_topic("ooo-limit", partitions).await;
    produce_n(&broker, &topic, 100, partitions).await;
    let group = unique("g-ooo-limit");
    let settings = broker.consumer_settings(&group).out_of_order_commits(4);
    let (mut source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.clone()])).unwrap();
    // The first record after the group join, then what follows within 2 s.
    let first = tokio::time::timeout(Duration::from_secs(30), source.next())
        .await
        .expect("a first record")
        .expect("not ended")
        .expect("no error");
    let mut held = vec![first];
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), source.next()).await {
        held.push(m.expect("record"));
    }
    assert_eq!(held.len(), 4, "records handed out at the limit");
    // Processing the first record of a partition moves its watermark and
    // makes room for one more.
    let first = held
        .iter()
        .position(|m| m.record.offset() == 0)
        .expect("a first record");
    let done = held.remove(first);
    let outcome = done.offset.commit().await.expect("commit");
    assert_eq!(outcome.committed.len(), 1, "{outcome:?}");
    let next = tokio::time::timeout(Duration::from_secs(10), source.next())
        .await
        .expect("room for one more")
        .expect("a record")
        .expect("no error");
    held.push(next);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), source.next())
            .await
            .is_err(),
        "at the limit again"
    );
    control.shutdown().await.unwrap();
}

/// A partitioned source under a limit smaller than its partition count,
/// with each partition's newest offset held by the committer, runs to the
/// end: its sub-streams wait for room together and every one is woken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_source_below_its_partition_count_runs_to_the_end() {
    let partitions = 8;
    let (broker, topic) = broker_with_topic("ooo-part", partitions).await;
    let n = 800;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-ooo-part");
    let settings = broker
        .consumer_settings(&group)
        .max_batch_records(10)
        .out_of_order_commits(3);
    let (source, control) =
        consumer::committable_partitioned_source(settings, Subscription::topics([topic.clone()]))
            .unwrap();
    let records = source
        .map(|s| s.expect("sub-stream").1)
        .flatten_unordered(None);
    let (got, handle) = count_into_a_holding_committer(records, n).await;
    handle.abort();
    // The aborted pipeline's committer may still send a commit as the
    // consumer closes, which fails it ("commit not sent"): not under test.
    let _ = control.shutdown().await;
    assert_eq!(got, n, "records handed out before the sub-streams stopped");
}

/// Sub-streams polled by tasks of their own all wait for room at once; each
/// commit gives room back, and every waiting sub-stream must hear of it,
/// not only the last one that started to wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sub_stream_waiting_for_room_is_woken() {
    let partitions = 4;
    let (broker, topic) = broker_with_topic("ooo-wake", partitions).await;
    let n = 80;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-ooo-wake");
    let settings = broker.consumer_settings(&group).out_of_order_commits(2);
    let (mut source, control) =
        consumer::committable_partitioned_source(settings, Subscription::topics([topic.clone()]))
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for _ in 0..partitions {
        let (_, mut sub) = tokio::time::timeout(Duration::from_secs(30), source.next())
            .await
            .expect("a sub-stream")
            .expect("not ended")
            .expect("no error");
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if tx.send(m.expect("record")).is_err() {
                    break;
                }
            }
        }));
    }
    // Each record is committed by itself, in the order it arrives: its
    // partition's watermark moves and its room comes back.
    let mut got = 0;
    while got < n {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await else {
            break;
        };
        m.offset.commit().await.expect("commit");
        got += 1;
    }
    for task in tasks {
        task.abort();
    }
    control.shutdown().await.unwrap();
    assert_eq!(got, n, "records received before the sub-streams stopped");
}

/// Runs `records` into a committer that holds each partition's newest
/// offset back (`NextOffsetObserved`, batches of 10 or every 10 ms),
/// counting them until `n` came or 30 s passed; returns the count and the
/// pipeline, still running.
async fn count_into_a_holding_committer<S>(
    records: S,
    n: usize,
) -> (usize, tokio::task::JoinHandle<reactive_kafka::Result<()>>)
where
    S: futures::Stream<Item = reactive_kafka::Result<reactive_kafka::CommittableMessage>>
        + Send
        + 'static,
{
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    let pipeline = records
        .map(move |m| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(m.expect("record").offset)
        })
        .forward(
            committer::sink(
                CommitterSettings::default()
                    .max_batch(10)
                    .max_interval(Duration::from_millis(10))
                    .when(reactive_kafka::CommitWhen::NextOffsetObserved),
            )
            .unwrap(),
        );
    let handle = tokio::spawn(pipeline);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.load(std::sync::atomic::Ordering::Relaxed) < n
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (seen.load(std::sync::atomic::Ordering::Relaxed), handle)
}

/// A sub-stream whose partition is revoked while it waits for room that
/// partitions it keeps hold ends at once: it hands out nothing more, and
/// the room may not come back for long. (Cooperative rebalancing, so the
/// partition holding the room stays.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_sub_stream_waiting_for_room_ends() {
    use reactive_kafka::{ConsumerSettings, TopicPartition};
    let (broker, held) = broker_with_topic("ooo-held", 1).await;
    let moving = broker.unique_topic("ooo-moving", 2).await.unwrap();
    produce_n(&broker, &held, 10, 1).await;
    produce_n(&broker, &moving, 20, 2).await;
    let group = unique("g-ooo-revoked");
    let cooperative =
        |s: ConsumerSettings| s.property("partition.assignment.strategy", "cooperative-sticky");
    let settings = cooperative(broker.consumer_settings(&group)).out_of_order_commits(2);
    let (mut source, control) = consumer::committable_partitioned_source(
        settings,
        Subscription::topics([held.clone(), moving.clone()]),
    )
    .unwrap();
    let mut subs = take_sub_streams(&mut source, 3).await;
    // The held topic's partition takes all the room: two records, never
    // committed.
    let mut held_sub = subs.remove(&TopicPartition::new(held.as_str(), 0)).unwrap();
    let kept = take_n(&mut held_sub, 2, Duration::from_secs(10)).await;
    // The moving topic's sub-streams wait for room, with nothing handed out.
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    for (tp, mut sub) in subs {
        let ended_tx = ended_tx.clone();
        tokio::spawn(async move {
            let mut records = 0;
            while let Some(m) = sub.next().await {
                m.expect("record");
                records += 1;
            }
            let _ = ended_tx.send((tp, records));
        });
    }
    // A second member, of the moving topic only, takes one of its partitions.
    let (mut other, other_control) = consumer::committable_partitioned_source(
        cooperative(broker.consumer_settings(&group)),
        Subscription::topics([moving.clone()]),
    )
    .unwrap();
    let other_task = tokio::spawn(async move {
        let mut subs = Vec::new();
        while let Some(Ok(sub)) = other.next().await {
            subs.push(sub);
        }
    });
    let (tp, records) = tokio::time::timeout(Duration::from_secs(30), ended.recv())
        .await
        .expect("the revoked sub-stream ends while the room is held")
        .expect("a sub-stream ended");
    assert_eq!(
        &*tp.topic,
        moving.as_str(),
        "a partition of the moving topic was revoked"
    );
    assert_eq!(records, 0, "no room was free: it handed out nothing");
    drop(kept);
    other_task.abort();
    let _ = other_control.shutdown().await;
    let _ = control.shutdown().await;
}
