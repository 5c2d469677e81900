//! Offsets carry their assignment generation: after a revocation, committing
//! an old offset is reported as stale instead of failing or pretending.

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_from_before_a_revocation_is_reported_stale() {
    let partitions = 2;
    let (broker, topic) = broker_with_topic("stale", partitions).await;
    produce_n(&broker, &topic, 100, partitions).await;
    let group = unique("g-stale");

    // The first member never commits what it took: its revocation waits
    // for those offsets until the revoke timeout, then releases them.
    let (mut first, first_control) = reactive_kafka::consumer::committable_source(
        broker
            .consumer_settings(&group)
            .revoke_timeout(Duration::from_secs(2)),
        reactive_kafka::Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let messages = take_n(&mut first, 10, Duration::from_secs(30)).await;
    let old = messages[0].offset.clone();
    assert_eq!(
        first_control.metrics().assigned_partitions,
        partitions as u64
    );

    // A second member joins: the first one's partitions are revoked (the
    // default eager assignors revoke everything) and the group rebalances.
    let (second, second_control) = committable(&broker, &group, &topic);
    let drain_second = tokio::spawn(second.for_each(|_| async {}));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while first_control.metrics().revocations == 0
        || second_control.metrics().assigned_partitions == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rebalance within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wait until the first member holds its new assignment too.
    while first_control.metrics().assignments < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reassignment within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let outcome = old
        .clone()
        .commit()
        .await
        .expect("a stale commit is not an error");
    assert!(outcome.committed.is_empty(), "{outcome:?}");
    assert_eq!(outcome.stale.len(), 1);
    assert_eq!(outcome.stale[0].tp, *old.topic_partition());
    assert_eq!(outcome.stale[0].offset, old.offset() + 1);
    assert_eq!(first_control.metrics().offsets_stale, 1);
    // Nothing was written for the group by the stale commit.
    let committed = committed_offsets(&broker, &group, &topic, partitions).await;
    assert!(committed.values().all(Option::is_none), "{committed:?}");

    // The stream that was not pulled during the rebalance still works.
    first_control.shutdown().await.unwrap();
    second_control.shutdown().await.unwrap();
    drain_second.await.unwrap();
    drop(first);
}
