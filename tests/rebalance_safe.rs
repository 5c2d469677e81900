//! Rebalance-safe commits: a revoked partition is released only once the
//! records it handed out are committed, so the next owner does not read
//! them again.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::consumer::{self, RebalanceListener};
use reactive_kafka::{
    committer, CommitterSettings, ConsumerSettings, Subscription, TopicPartition,
};
use support::*;

/// A committer that only commits on its own when forced to: by a revocation,
/// or by the end of its stream.
fn lazy_committer() -> committer::CommitterSink {
    committer::sink(
        CommitterSettings::default()
            .max_batch(1_000_000)
            .max_interval(Duration::from_secs(600)),
    )
    .unwrap()
}

/// Runs a committable source into a lazy committer, recording the key index
/// of every record processed.
fn member(
    settings: ConsumerSettings,
    topic: &str,
    seen: Arc<Mutex<Vec<usize>>>,
) -> (
    tokio::task::JoinHandle<reactive_kafka::Result<()>>,
    reactive_kafka::Control,
) {
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([topic])).unwrap();
    let task = tokio::spawn(async move {
        source
            .map(move |m| {
                let m = m?;
                seen.lock().unwrap().push(key_index(m.record.key()));
                Ok(m.offset)
            })
            .forward(lazy_committer())
            .await
    });
    (task, control)
}

/// Stops a member, lets its committer commit what it holds, shuts it down.
async fn finish(
    task: tokio::task::JoinHandle<reactive_kafka::Result<()>>,
    control: reactive_kafka::Control,
) {
    control.stop().await.unwrap();
    task.await.unwrap().unwrap();
    control.shutdown().await.unwrap();
}

async fn redelivered_after_a_join(safe: bool) -> (usize, BTreeMap<i32, Option<i64>>) {
    let partitions = 2;
    let (broker, topic) = broker_with_topic("safe", partitions).await;
    let n = 300;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-safe");
    let settings = group_settings(&broker, &group, Protocol::Consumer)
        .rebalance_safe_commits(safe)
        .revoke_timeout(Duration::from_secs(30));

    let first_seen = Arc::new(Mutex::new(Vec::new()));
    let (first, first_control) = member(settings.clone(), &topic, first_seen.clone());
    wait_until(
        "first member processed everything",
        Duration::from_secs(30),
        || first_seen.lock().unwrap().len() == n,
    )
    .await;
    // Everything is processed, nothing committed yet: the committer waits.
    let committed = committed_offsets(&broker, &group, &topic, partitions).await;
    assert!(committed.values().all(Option::is_none), "{committed:?}");

    let second_seen = Arc::new(Mutex::new(Vec::new()));
    let (second, second_control) = member(settings, &topic, second_seen.clone());
    wait_until(
        "the second member got a partition",
        Duration::from_secs(30),
        || second_control.metrics().assigned_partitions > 0,
    )
    .await;
    // Give the second member time to read whatever it would read again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let redelivered = second_seen.lock().unwrap().len();
    let committed = committed_offsets(&broker, &group, &topic, partitions).await;
    finish(first, first_control).await;
    finish(second, second_control).await;
    (redelivered, committed)
}

/// With rebalance-safe commits the revocation flushes the committer and
/// waits for the commit: the next owner starts after every processed record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processed_records_are_not_delivered_again_after_a_revocation() {
    let (redelivered, committed) = redelivered_after_a_join(true).await;
    assert_eq!(redelivered, 0, "records delivered again");
    // The revoked partition's offset was committed during the revocation.
    assert!(committed.values().any(|c| *c == Some(150)), "{committed:?}");
}

/// The same run without rebalance-safe commits: the partition moves before
/// its offsets are committed and the next owner reads its records again.
/// (This is what the mechanism above prevents.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rebalance_safe_commits_the_next_owner_reads_them_again() {
    let (redelivered, _) = redelivered_after_a_join(false).await;
    assert_eq!(redelivered, 150, "one partition's records read again");
}

/// A sub-stream that is not pulled while its partition is revoked neither
/// holds the rebalance (its unpulled records are not waited for) nor loses
/// anything; what was handed out and committed is not read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpulled_sub_stream_does_not_hold_a_revocation() {
    let partitions = 2;
    let (broker, topic) = broker_with_topic("safe-unpulled", partitions).await;
    let n = 2_000;
    let per = n / partitions as usize;
    produce_n(&broker, &topic, n, partitions).await;
    let group = unique("g-safe-unpulled");
    let revoke_timeout = Duration::from_secs(30);
    let settings =
        group_settings(&broker, &group, Protocol::Consumer).revoke_timeout(revoke_timeout);
    let (mut first, first_control) = consumer::committable_partitioned_source(
        settings.clone(),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let mut subs = take_partitions(&mut first, partitions).await;
    // Ten records of each partition processed and committed, then neither
    // sub-stream is pulled.
    let mut seen: Vec<usize> = Vec::new();
    for sub in subs.values_mut() {
        let msgs = take_n(sub, 10, Duration::from_secs(30)).await;
        seen.extend(msgs.iter().map(|m| key_index(m.record.key())));
        msgs.last().unwrap().offset.clone().commit().await.unwrap();
    }

    let (mut second, second_control) =
        consumer::committable_partitioned_source(settings, Subscription::topics([topic.as_str()]))
            .unwrap();
    let joined = tokio::time::Instant::now();
    let (moved, mut moved_sub) = tokio::time::timeout(revoke_timeout, second.next())
        .await
        .expect("the revocation waited for records nobody pulled")
        .unwrap()
        .unwrap();
    println!("partition {moved} moved after {:?}", joined.elapsed());
    assert!(
        joined.elapsed() < Duration::from_secs(15),
        "{:?}",
        joined.elapsed()
    );

    // The moved partition's old sub-stream ends without another record.
    let mut old = subs.remove(&moved.partition).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), old.next())
        .await
        .expect("the revoked sub-stream ended");
    assert!(
        next.is_none(),
        "a record of a released partition was handed out"
    );
    // The new owner resumes exactly after the ten committed records.
    let msgs = take_n(&mut moved_sub, per - 10, Duration::from_secs(30)).await;
    assert_eq!(msgs[0].record.offset(), 10);
    seen.extend(msgs.iter().map(|m| key_index(m.record.key())));
    // The partition that stayed still delivers the rest.
    let (_, mut kept) = subs.pop_first().unwrap();
    let msgs = take_n(&mut kept, per - 10, Duration::from_secs(30)).await;
    seen.extend(msgs.iter().map(|m| key_index(m.record.key())));

    seen.sort_unstable();
    let expected: Vec<usize> = (0..n).collect();
    assert_eq!(seen, expected, "every record exactly once");
    second_control.shutdown().await.unwrap();
    first_control.shutdown().await.unwrap();
}

/// A committable source whose offsets are dropped (no committer attached):
/// nothing can ever commit its records, so a revocation is released at once
/// instead of stalling the group for the revoke timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_with_no_offset_left_to_commit_is_released_at_once() {
    let partitions = 2;
    let (broker, topic) = broker_with_topic("safe-uncommitted", partitions).await;
    produce_n(&broker, &topic, 2_000, partitions).await;
    let group = unique("g-safe-uncommitted");
    let revoke_timeout = Duration::from_secs(60);
    let settings =
        group_settings(&broker, &group, Protocol::Consumer).revoke_timeout(revoke_timeout);
    let (mut first, first_control) =
        consumer::committable_source(settings.clone(), Subscription::topics([topic.as_str()]))
            .unwrap();
    // Records are taken and their offsets dropped, never committed.
    let taken = take_n(&mut first, 10, Duration::from_secs(30)).await;
    drop(taken);
    let drain = tokio::spawn(async move {
        while let Some(m) = first.next().await {
            drop(m.unwrap().offset);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    let (mut second, second_control) =
        consumer::committable_source(settings, Subscription::topics([topic.as_str()])).unwrap();
    let joined = tokio::time::Instant::now();
    tokio::time::timeout(revoke_timeout, second.next())
        .await
        .expect("the revocation waited for offsets nobody holds")
        .unwrap()
        .unwrap();
    println!("the second member read after {:?}", joined.elapsed());
    assert!(
        joined.elapsed() < Duration::from_secs(20),
        "{:?}",
        joined.elapsed()
    );
    second_control.shutdown().await.unwrap();
    first_control.shutdown().await.unwrap();
    drain.await.unwrap();
}

/// Two members started at the same moment: the first one's partitions are
/// assigned and revoked again at once. Neither stream hangs and every
/// record is consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_and_revoked_at_once_does_not_hang() {
    for protocol in [Protocol::Eager, Protocol::Consumer] {
        let partitions = 4;
        let (broker, topic) = broker_with_topic("safe-race", partitions).await;
        let n = 2_000;
        produce_n(&broker, &topic, n, partitions).await;
        let group = unique("g-safe-race");
        let settings = group_settings(&broker, &group, protocol);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let members: Vec<_> = (0..2)
            .map(|_| member(settings.clone(), &topic, seen.clone()))
            .collect();
        wait_until(
            &format!("{protocol:?}: every record consumed"),
            Duration::from_secs(60),
            || {
                let mut s = seen.lock().unwrap().clone();
                s.sort_unstable();
                s.dedup();
                s.len() == n
            },
        )
        .await;
        for (task, control) in members {
            finish(task, control).await;
        }
    }
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    start_at: i64,
}

impl Recorder {
    /// True once an event starting with `prefix` was heard.
    fn saw(&self, prefix: &str) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.starts_with(prefix))
    }
}

impl RebalanceListener for Recorder {
    fn on_assigned(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        self.events
            .lock()
            .unwrap()
            .push(format!("assigned {}", partitions.len()));
        partitions
            .iter()
            .filter(|tp| tp.partition == 0)
            .map(|tp| (tp.clone(), self.start_at))
            .collect()
    }

    fn on_revoked(&self, partitions: &[TopicPartition]) {
        self.events
            .lock()
            .unwrap()
            .push(format!("revoked {}", partitions.len()));
    }

    fn on_lost(&self, partitions: &[TopicPartition]) {
        self.events
            .lock()
            .unwrap()
            .push(format!("lost {}", partitions.len()));
    }

    fn on_stopped(&self) {
        self.events.lock().unwrap().push("stopped".into());
    }
}

/// Lost partitions (the broker no longer knows the member) are released at
/// once, without waiting for records in flight, and their offsets are not
/// committed: another member may own them already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_partitions_are_released_at_once_and_not_committed() {
    let (broker, topic) = broker_with_topic("safe-lost", 1).await;
    let Some(embedded) =
        embedded_or_skip(&broker, "forcing the loss of partitions by error injection")
    else {
        return;
    };
    produce_n(&broker, &topic, 100, 1).await;
    let group = unique("g-safe-lost");
    let recorder = Arc::new(Recorder::default());
    let (mut source, control) = consumer::committable_source(
        broker
            .consumer_settings(&group)
            .revoke_timeout(Duration::from_secs(60))
            .rebalance_listener(recorder.clone()),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    // Ten records taken and never committed: a revocation would wait for them.
    let taken = take_n(&mut source, 10, Duration::from_secs(30)).await;
    embedded.fail_requests(
        HEARTBEAT,
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
        1,
    );
    wait_until("partitions lost", Duration::from_secs(20), || {
        recorder.saw("lost 1")
    })
    .await;
    let outcome = taken[9].offset.clone().commit().await.unwrap();
    assert!(outcome.committed.is_empty(), "{outcome:?}");
    assert_eq!(outcome.stale.len(), 1);
    assert_eq!(
        committed_offsets(&broker, &group, &topic, 1).await[&0],
        None
    );
    // The member rejoins and reads the partition again from the start. The
    // embedded broker lets the lost member's session (6 s) expire and then
    // waits out a rebalance round before it assigns again: 10 to 16 s here,
    // and more than 30 s once on a loaded machine.
    let again = take_n(&mut source, 1, Duration::from_secs(60)).await;
    assert_eq!(again[0].record.offset(), 0);
    control.shutdown().await.unwrap();
}

/// The listener chooses start offsets on assignment and hears of
/// revocations and the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_sets_start_offsets_and_hears_rebalances() {
    let partitions = 2;
    let (broker, topic) = broker_with_topic("safe-listener", partitions).await;
    produce_n(&broker, &topic, 200, partitions).await;
    let group = unique("g-safe-listener");
    let recorder = Arc::new(Recorder {
        start_at: 40,
        ..Default::default()
    });
    let settings =
        group_settings(&broker, &group, Protocol::Consumer).rebalance_listener(recorder.clone());
    let (mut source, control) = consumer::plain_partitioned_source(
        settings.clone(),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let mut first_offsets = HashMap::new();
    while first_offsets.len() < 2 {
        let (tp, mut sub) = tokio::time::timeout(Duration::from_secs(30), source.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let r = take_n(&mut sub, 1, Duration::from_secs(30)).await;
        first_offsets.insert(tp.partition, r[0].offset());
    }
    assert_eq!(
        first_offsets[&0], 40,
        "partition 0 starts where the listener said"
    );
    assert_eq!(first_offsets[&1], 0, "partition 1 starts at the beginning");

    // A second member takes a partition: the first hears the revocation.
    let (second, second_control) = consumer::plain_partitioned_source(
        group_settings(&broker, &group, Protocol::Consumer),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let drain = tokio::spawn(second.for_each(|_| async {}));
    wait_until("a revocation", Duration::from_secs(30), || {
        recorder.saw("revoked")
    })
    .await;
    control.shutdown().await.unwrap();
    let events = recorder.events.lock().unwrap().clone();
    assert_eq!(
        events.first().map(String::as_str),
        Some("assigned 2"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("stopped"),
        "{events:?}"
    );
    second_control.shutdown().await.unwrap();
    drain.await.unwrap();
}
