//! Commit failures injected into the embedded broker: retriable ones are
//! retried with backoff, others surface with the partitions and offsets.

mod support;

use std::time::Duration;

use futures::StreamExt;
use rdkafka::types::RDKafkaRespErr;
use reactive_kafka::{committer, CommitterSettings, ErrorKind};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_commit_errors_are_retried_until_the_commit_succeeds() {
    let (broker, topic) = broker_with_topic("retry", 1).await;
    let Some(embedded) = embedded_or_skip(&broker, "error injection") else {
        return;
    };
    produce_n(&broker, &topic, 10, 1).await;
    let group = unique("g-retry");
    let (mut source, control) = committable(&broker, &group, &topic);
    let messages = take_n(&mut source, 10, Duration::from_secs(30)).await;
    embedded.fail_requests(
        OFFSET_COMMIT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        3,
    );
    let outcome = messages[9]
        .offset
        .clone()
        .commit()
        .await
        .expect("commit after retries");
    assert_eq!(outcome.committed[0].offset, 10);
    let m = control.metrics();
    assert!(m.commit_retries >= 1, "{m:?}");
    assert_eq!(m.commit_failures, 0);
    assert_eq!(m.commits_in_flight, 0);
    assert_eq!(
        committed_offsets(&broker, &group, &topic, 1).await[&0],
        Some(10)
    );
    control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retriable_commit_error_fails_the_committer_naming_the_offsets() {
    let (broker, topic) = broker_with_topic("commitfail", 1).await;
    let Some(embedded) = embedded_or_skip(&broker, "error injection") else {
        return;
    };
    produce_n(&broker, &topic, 10, 1).await;
    let group = unique("g-commitfail");
    let (source, control) = committable(&broker, &group, &topic);
    embedded.fail_requests(
        OFFSET_COMMIT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE,
        5,
    );
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        source
            .take(10)
            .map(|m| m.map(|m| m.offset))
            .forward(committer::sink(CommitterSettings::default()).unwrap()),
    )
    .await
    .expect("fails rather than hangs");
    let err = result.expect_err("the commit fails");
    assert_eq!(err.kind(), ErrorKind::Commit, "{err}");
    let c = err.coordinates().expect("one partition: coordinates");
    assert_eq!(
        (c.topic.as_str(), c.partition, c.offset),
        (topic.as_str(), Some(0), Some(10))
    );
    assert_eq!(control.metrics().commit_retries, 0, "not retriable");
    // The failed committer ended its consumer with the same error.
    assert_eq!(
        control.shutdown().await.unwrap_err().kind(),
        ErrorKind::Commit
    );
}

/// The partial batch is committed on each kind of stop: stream end (close),
/// `Control::stop`, and `drain_and_shutdown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partial_batch_is_committed_when_the_stream_stops() {
    let (broker, topic) = broker_with_topic("partial", 1).await;
    produce_n(&broker, &topic, 30, 1).await;
    let group = unique("g-partial");
    let (source, control) = committable(&broker, &group, &topic);
    // A batch size and interval that are never reached.
    let sink = committer::sink(
        CommitterSettings::default()
            .max_batch(1_000_000)
            .max_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let pipeline = tokio::spawn(
        source
            .inspect(move |_| {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .map(|m| m.map(|m| m.offset))
            .forward(sink),
    );
    while seen.load(std::sync::atomic::Ordering::Relaxed) < 30 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        committed_offsets(&broker, &group, &topic, 1).await[&0],
        None,
        "nothing committed before the stop"
    );
    control.stop().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), pipeline)
        .await
        .expect("the pipeline ends after stop")
        .unwrap()
        .unwrap();
    assert_eq!(
        committed_offsets(&broker, &group, &topic, 1).await[&0],
        Some(30)
    );
    control.shutdown().await.unwrap();
}

/// A commit retried after a later one succeeded does not move the committed
/// offset back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_commit_never_moves_the_offset_back() {
    let (broker, topic) = broker_with_topic("noback", 1).await;
    let Some(embedded) = embedded_or_skip(&broker, "error injection") else {
        return;
    };
    produce_n(&broker, &topic, 20, 1).await;
    let group = unique("g-noback");
    let (mut source, control) = committable(&broker, &group, &topic);
    let messages = take_n(&mut source, 20, Duration::from_secs(30)).await;
    // The first commit (offset 10) fails and is retried; the second
    // (offset 20) goes through meanwhile.
    embedded.fail_requests(
        OFFSET_COMMIT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        3,
    );
    let (older, newer) = futures::join!(
        messages[9].offset.clone().commit(),
        messages[19].offset.clone().commit()
    );
    assert_eq!(older.unwrap().committed[0].offset, 10);
    assert_eq!(newer.unwrap().committed[0].offset, 20);
    assert!(control.metrics().commit_retries >= 1);
    assert_eq!(
        committed_offsets(&broker, &group, &topic, 1).await[&0],
        Some(20)
    );
    control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_are_read_through_a_coordinator_move() {
    // After a broker freeze or restart the group coordinator answers
    // "not coordinator" or "loading" for a while; readers of committed
    // offsets find the coordinator again instead of failing.
    let (broker, topic) = broker_with_topic("coordmove", 1).await;
    let Some(embedded) = embedded_or_skip(&broker, "error injection") else {
        return;
    };
    produce_n(&broker, &topic, 5, 1).await;
    let group = unique("g-coordmove");
    let (mut source, control) = committable(&broker, &group, &topic);
    let messages = take_n(&mut source, 5, Duration::from_secs(30)).await;
    messages[4].offset.clone().commit().await.unwrap();
    control.shutdown().await.unwrap();

    let client = reactive_kafka::metadata::MetadataClient::new(
        reactive_kafka::ConsumerSettings::new(broker.bootstrap_servers()),
    )
    .unwrap();
    for error in [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
    ] {
        embedded.fail_requests(OFFSET_FETCH, error, 2);
        let read = client.committed_offsets(&group, &topic).await;
        assert_eq!(read.unwrap()[&0], Some(5), "metadata client, {error:?}");
        embedded.fail_requests(OFFSET_FETCH, error, 2);
        assert_eq!(
            committed_offsets(&broker, &group, &topic, 1).await[&0],
            Some(5),
            "test kit, {error:?}"
        );
    }
}
