//! The committer flow and its commit modes.

mod support;

use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::{committer, CommitWhen, CommitterSettings};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_yields_what_each_commit_did() {
    let partitions = 3;
    let (broker, topic) = broker_with_topic("cflow", partitions).await;
    produce_n(&broker, &topic, 3_000, partitions).await;
    let group = unique("g-cflow");
    let (source, control) = committable(&broker, &group, &topic);
    let offsets = source.take(3_000).map(|m| m.expect("record").offset);
    let outcomes: Vec<_> = tokio::time::timeout(
        Duration::from_secs(60),
        committer::flow(CommitterSettings::default().max_batch(500), offsets)
            .unwrap()
            .collect::<Vec<_>>(),
    )
    .await
    .expect("the flow ends");
    let outcomes: Vec<_> = outcomes.into_iter().map(|o| o.expect("commit")).collect();
    // Batches close at 500 offsets or more (offsets arrive in chunks of up to 256).
    assert!(
        (4..=7).contains(&outcomes.len()),
        "3000 offsets in batches of about 500: {} commits",
        outcomes.len()
    );
    let mut last = [0i64; 3];
    for o in &outcomes {
        assert!(o.stale.is_empty());
        for c in &o.committed {
            let p = c.tp.partition as usize;
            assert!(c.offset > last[p], "commits go forward");
            last[p] = c.offset;
        }
    }
    assert_eq!(last, [1_000, 1_000, 1_000]);
    assert_eq!(
        committed_offsets(&broker, &group, &topic, partitions)
            .await
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![Some(1000); 3]
    );
    control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_offset_observed_holds_each_offset_until_a_newer_one_arrives() {
    let (broker, topic) = broker_with_topic("cnext", 1).await;
    produce_n(&broker, &topic, 5, 1).await;
    let group = unique("g-cnext");
    let (source, control) = committable(&broker, &group, &topic);
    let offsets = source.take(5).map(|m| m.expect("record").offset);
    let settings = CommitterSettings::default()
        .max_batch(1)
        .when(CommitWhen::NextOffsetObserved);
    let outcomes: Vec<_> = tokio::time::timeout(
        Duration::from_secs(30),
        committer::flow(settings, offsets)
            .unwrap()
            .collect::<Vec<_>>(),
    )
    .await
    .expect("the flow ends");
    let committed: Vec<i64> = outcomes
        .into_iter()
        .flat_map(|o| o.expect("commit").committed)
        .map(|c| c.offset)
        .collect();
    // Record 0 is committed (next offset 1) only once record 1 was seen; the
    // held last offset is committed when the stream ends.
    assert_eq!(committed.first(), Some(&1), "{committed:?}");
    assert_eq!(committed.last(), Some(&5), "{committed:?}");
    assert!(committed.windows(2).all(|w| w[0] < w[1]), "{committed:?}");
    control.shutdown().await.unwrap();
}

/// While commits keep coming they go out `min_commit_interval` apart, what
/// comes meanwhile merged into one; a lone commit goes out at once; a
/// shutdown sends what waits at once instead of waiting out the interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_commits_are_spaced_by_the_min_commit_interval_and_a_shutdown_sends_at_once() {
    let (broker, topic) = broker_with_topic("cspaced", 1).await;
    produce_n(&broker, &topic, 5, 1).await;
    let group = unique("g-cspaced");
    let interval = Duration::from_secs(4);
    let (mut source, control) = reactive_kafka::consumer::committable_source(
        broker
            .consumer_settings(&group)
            .min_commit_interval(interval),
        reactive_kafka::Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let mut offsets = take_n(&mut source, 5, Duration::from_secs(30))
        .await
        .into_iter()
        .map(|m| m.offset)
        .collect::<Vec<_>>()
        .into_iter();
    let mut next = || offsets.next().unwrap().commit();
    let bound = Duration::from_secs(20);
    let committed = |o: reactive_kafka::Result<reactive_kafka::consumer::CommitOutcome>| {
        o.expect("committed").committed[0].offset
    };

    // Two at once: the first goes out, the second arrives while it is in
    // flight and waits for the interval.
    let sent = std::time::Instant::now();
    let pair = tokio::spawn(futures::future::join(next(), next()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!pair.is_finished(), "the second waits for the interval");
    assert_eq!(control.metrics().commits, 1);
    let (first, second) = tokio::time::timeout(bound, pair)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!((committed(first), committed(second)), (1, 2));
    assert!(
        sent.elapsed() >= interval - Duration::from_millis(100),
        "sent after {:?}",
        sent.elapsed()
    );
    assert_eq!(control.metrics().commits, 2);

    // Alone, with nothing in flight: at once.
    let alone = std::time::Instant::now();
    assert_eq!(
        committed(tokio::time::timeout(bound, next()).await.unwrap()),
        3
    );
    assert!(alone.elapsed() < interval / 2, "{:?}", alone.elapsed());

    // Two more; the second waits, and a shutdown sends it at once.
    let pair = tokio::spawn(futures::future::join(next(), next()));
    wait_until("the fifth commit waits", bound, || {
        control.metrics().commits == 4 && control.metrics().commits_in_flight == 1
    })
    .await;
    let closing = std::time::Instant::now();
    tokio::time::timeout(bound, control.shutdown())
        .await
        .expect("shut down")
        .unwrap();
    assert!(
        closing.elapsed() < interval / 2,
        "the shutdown waited {:?} for a spaced commit",
        closing.elapsed()
    );
    let (fourth, fifth) = pair.await.unwrap();
    assert_eq!((committed(fourth), committed(fifth)), (4, 5));
    assert_eq!(
        committed_offsets(&broker, &group, &topic, 1).await[&0],
        Some(5)
    );
}

/// `n` records of a fresh one-partition topic, taken from a committable
/// source; from then on the embedded broker answers every request 300 ms
/// late. `None` (skipped) on a real broker.
async fn taken_before_slow_commits(
    prefix: &str,
    n: usize,
) -> Option<(
    reactive_kafka::testkit::TestBroker,
    String,
    String,
    reactive_kafka::Control,
    Vec<reactive_kafka::consumer::CommittableMessage>,
)> {
    let (broker, topic) = broker_with_topic(prefix, 1).await;
    if broker.embedded().is_none() {
        println!("skipped: round-trip delay injection needs the embedded broker (KAFKA_BOOTSTRAP_SERVERS is set)");
        return None;
    }
    produce_n(&broker, &topic, n, 1).await;
    let group = unique(&format!("g-{prefix}"));
    let (mut source, control) = committable(&broker, &group, &topic);
    let messages = take_n(&mut source, n, Duration::from_secs(30)).await;
    set_round_trip_time(broker.embedded()?, Duration::from_millis(300));
    Some((broker, topic, group, control, messages))
}

/// The commits made, and the group's committed offset checked against `n`;
/// the broker answers at once again.
async fn finish_slow_commits(
    broker: &reactive_kafka::testkit::TestBroker,
    topic: &str,
    group: &str,
    control: reactive_kafka::Control,
    n: usize,
) -> u64 {
    let commits = control.metrics().commits;
    assert_eq!(
        committed_offsets(broker, group, topic, 1).await[&0],
        Some(n as i64)
    );
    set_round_trip_time(broker.embedded().unwrap(), Duration::ZERO);
    control.shutdown().await.unwrap();
    commits
}

/// With every commit slot busy, offsets keep arriving and merge into the
/// next commit: a broker slow to answer commits means fewer commits, not a
/// slower stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_merge_while_every_commit_slot_is_busy() {
    let n = 2_000;
    let Some((broker, topic, group, control, messages)) =
        taken_before_slow_commits("coalesce", n).await
    else {
        return;
    };
    // One commit at a time, every 10 offsets: 200 commits of 300 ms each
    // (a minute) if offsets waited for a free slot.
    let settings = CommitterSettings::default().parallelism(1).max_batch(10);
    let started = std::time::Instant::now();
    futures::stream::iter(messages.into_iter().map(|m| Ok(m.offset)))
        .forward(committer::sink(settings).unwrap())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let commits = finish_slow_commits(&broker, &topic, &group, control, n).await;
    assert!(commits <= 5, "{commits} commits");
}

/// Commits requested while one is in flight are merged into the next one:
/// each request is answered with its own offsets, the broker sees two
/// commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_are_merged_and_each_answered() {
    let n = 50;
    let Some((broker, topic, group, control, messages)) =
        taken_before_slow_commits("merge", n).await
    else {
        return;
    };
    let started = std::time::Instant::now();
    let outcomes =
        futures::future::join_all(messages.iter().map(|m| m.offset.clone().commit())).await;
    let elapsed = started.elapsed();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let outcome = outcome.expect("commit");
        assert_eq!(outcome.committed.len(), 1);
        assert_eq!(outcome.committed[0].offset, i as i64 + 1, "request {i}");
    }
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let commits = finish_slow_commits(&broker, &topic, &group, control, n).await;
    assert!(commits <= 3, "{commits} broker commits for {n} requests");
}
