//! The delivery checker on the crate's own pipelines under faults, and on a
//! deliberately broken pipeline, which it must catch losing records.

mod support;

use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::consumer::{self, DrainingControl};
use reactive_kafka::testkit::{DeliveryChecker, Fault, TestBroker};
use reactive_kafka::{CommittableOffsetBatch, Subscription};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_produce_commit_loses_nothing_when_members_die_and_groups_rebalance() {
    init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let checker = DeliveryChecker::new(&broker, 20_000, 4).await.unwrap();
    let (input, output) = (
        checker.input_topic().to_owned(),
        checker.output_topic().to_owned(),
    );
    let report = checker
        .run(
            |settings| {
                pipelines::consume_produce_commit(
                    settings,
                    broker.producer_settings(),
                    &input,
                    &output,
                    Duration::ZERO,
                )
            },
            &[
                Fault::KillMember,
                Fault::Rebalance(Duration::from_secs(3)),
                Fault::KillMember,
            ],
        )
        .await
        .unwrap();
    println!("consume-produce-commit: {report}");
    assert!(report.at_least_once(), "{report}");
    assert_eq!(report.faults.len(), 3);
}

/// Partition sub-streams sharing one producer and committer (clones of one
/// committable sink) through a killed member and rebalances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_consume_produce_commit_over_one_producer_loses_nothing() {
    let broker = TestBroker::start().await.unwrap();
    let checker = DeliveryChecker::new(&broker, 20_000, 6).await.unwrap();
    let (input, output) = (
        checker.input_topic().to_owned(),
        checker.output_topic().to_owned(),
    );
    let report = checker
        .run(
            |settings| {
                pipelines::partitioned_consume_produce_commit(
                    settings,
                    broker.producer_settings(),
                    &input,
                    &output,
                    Duration::from_millis(2),
                )
            },
            &[Fault::KillMember, Fault::Rebalance(Duration::from_secs(3))],
        )
        .await
        .unwrap();
    println!("partitioned consume-produce-commit, one producer: {report}");
    assert!(report.at_least_once(), "{report}");
    for fault in &report.faults {
        assert!(
            fault.seen_before < report.records,
            "{} hit mid-stream: {report}",
            fault.name
        );
    }
}

/// Partition sub-streams processing records concurrently, committed out
/// of order under a limit below what the sub-streams could take at once,
/// through a killed member and a rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_out_of_order_consume_produce_commit_loses_nothing() {
    let broker = TestBroker::start().await.unwrap();
    let checker = DeliveryChecker::new(&broker, 10_000, 6).await.unwrap();
    let (input, output) = (
        checker.input_topic().to_owned(),
        checker.output_topic().to_owned(),
    );
    let report = checker
        .run(
            |settings| {
                pipelines::partitioned_out_of_order_consume_produce_commit(
                    settings,
                    broker.producer_settings(),
                    &input,
                    &output,
                    32,
                )
            },
            &[Fault::KillMember, Fault::Rebalance(Duration::from_secs(3))],
        )
        .await
        .unwrap();
    println!("partitioned out-of-order consume-produce-commit: {report}");
    assert!(report.at_least_once(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_commit_loses_nothing_through_an_outage_of_the_embedded_broker() {
    let broker = TestBroker::start().await.unwrap();
    let Some(_) = embedded_or_skip(&broker, "taking the embedded brokers down") else {
        return;
    };
    let checker = DeliveryChecker::new(&broker, 4_000, 4).await.unwrap();
    // The member's session outlasts the outage and the reconnection after
    // it (the test settings' 6 s does not, under load: the session then
    // ends, the offsets processed during the outage cannot be committed and
    // their records are read again, as at-least-once allows).
    let settings = checker
        .consumer_settings()
        .property("session.timeout.ms", "15000");
    let checker = checker.with_consumer_settings(settings);
    let input = checker.input_topic().to_owned();
    let processed = checker.processed();
    let report = checker
        .run(
            |settings| {
                // Slow enough for the outage to hit mid-stream.
                pipelines::consume_commit(
                    settings,
                    &input,
                    processed.clone(),
                    Duration::from_millis(1),
                )
            },
            &[Fault::BrokerOutage(Duration::from_secs(5))],
        )
        .await
        .unwrap();
    println!("consume-commit through an outage: {report}");
    assert!(report.exactly_once(), "no member died: {report}");
    // Records were still being processed (and committed) when the brokers
    // went down. (With the default buffers they had all been fetched
    // already, so consumption itself went on; the Apache Kafka freeze tests
    // use small buffers to show fetching resume.)
    assert!(
        report.faults[0].seen_before < report.records,
        "the outage hit mid-stream: {report}"
    );
}

/// A pipeline whose committer holds each partition's last offset until the
/// stream ends (`CommitWhen::NextOffsetObserved`) never commits the end of
/// the input by itself: the run ends 30 s after the last record was seen,
/// not at its time limit, and the drain commits the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_that_commits_its_last_offsets_when_drained_ends_before_the_time_limit() {
    use reactive_kafka::{CommitWhen, CommitterSettings};
    let broker = TestBroker::start().await.unwrap();
    let checker = DeliveryChecker::new(&broker, 400, 2).await.unwrap();
    let limit = Duration::from_secs(90);
    let checker = checker.time_limit(limit);
    let input = checker.input_topic().to_owned();
    let processed = checker.processed();
    let started = std::time::Instant::now();
    let report = checker
        .run(
            |settings| {
                pipelines::consume_commit_with(
                    settings,
                    &input,
                    processed.clone(),
                    Duration::ZERO,
                    CommitterSettings::default().when(CommitWhen::NextOffsetObserved),
                )
            },
            &[],
        )
        .await
        .unwrap();
    let took = started.elapsed();
    println!("held last offsets: {report} (run took {took:?})");
    assert!(report.exactly_once(), "{report}");
    assert!(
        took >= Duration::from_secs(30) && took < limit,
        "the run ends 30 s after the last record, not at the {limit:?} limit: {took:?}"
    );
    let committed = broker
        .committed_offsets(checker.group_id(), &input, 2)
        .await
        .unwrap();
    assert_eq!(
        committed.values().map(|c| c.unwrap_or(0)).sum::<i64>(),
        400,
        "the drain committed the held offsets: {committed:?}"
    );
}

/// A pipeline that commits each chunk of records before processing it: a
/// member killed mid-chunk loses the rest of the chunk, and the checker says
/// which records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_pipeline_that_commits_before_processing() {
    let broker = TestBroker::start().await.unwrap();
    let checker = DeliveryChecker::new(&broker, 4_000, 2).await.unwrap();
    let input = checker.input_topic().to_owned();
    let processed = checker.processed();
    let report = checker
        .run(
            |settings| {
                let (source, control) =
                    consumer::committable_source(settings, Subscription::topics([input.as_str()]))?;
                let processed = processed.clone();
                Ok(DrainingControl::spawn(control, async move {
                    let mut chunks = source.ready_chunks(200);
                    while let Some(chunk) = chunks.next().await {
                        let messages = chunk
                            .into_iter()
                            .collect::<reactive_kafka::Result<Vec<_>>>()?;
                        // Wrong: commit first...
                        let mut batch = CommittableOffsetBatch::new();
                        for m in &messages {
                            batch.add(m.offset.clone());
                        }
                        batch.commit().await?;
                        // ...then process, slowly.
                        for m in &messages {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            processed.record(&m.record);
                        }
                    }
                    Ok(())
                }))
            },
            &[Fault::KillMember, Fault::KillMember],
        )
        .await
        .unwrap();
    println!("commit-before-process: {report}");
    assert!(
        !report.lost.is_empty(),
        "the checker missed the loss: {report}"
    );
    assert!(!report.at_least_once());
    let lost = &report.lost[0];
    assert_eq!(lost.tp.topic.as_ref(), checker.input_topic());
}
