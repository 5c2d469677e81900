//! A failed sink ends its pipeline at once, even while the source is idle,
//! and the consumer it commits for ends with the same error.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::types::RDKafkaRespErr;
use reactive_kafka::producer::{self, Envelope};
use reactive_kafka::{committer, CommitterSettings, ErrorKind, ProducerRecord};
use support::*;

/// How long after its failure a pipeline on an idle source may take to end.
const AT_ONCE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_committer_ends_an_idle_pipeline_and_its_consumer_at_once() {
    let (broker, topic) = broker_with_topic("failed-committer", 1).await;
    let Some(embedded) = embedded_or_skip(&broker, "commit error injection") else {
        return;
    };
    produce_n(&broker, &topic, 5, 1).await;
    let group = unique("g-failed-committer");
    let (source, control) = committable(&broker, &group, &topic);
    embedded.fail_requests(
        OFFSET_COMMIT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE,
        5,
    );
    let interval = Duration::from_millis(200);
    let sink = committer::sink(CommitterSettings::default().max_interval(interval)).unwrap();
    let started = Instant::now();
    // Five records, then the source is idle: nothing but the failure can end it.
    let pipeline = tokio::spawn(source.map(|m| m.map(|m| m.offset)).forward(sink));
    let result = tokio::time::timeout(Duration::from_secs(15), pipeline)
        .await
        .expect("the pipeline ends although its source is idle")
        .unwrap();
    let elapsed = started.elapsed();
    println!("failed committer: the pipeline ended {elapsed:?} after it started (commit interval {interval:?})");
    let err = result.expect_err("the commit fails");
    assert_eq!(err.kind(), ErrorKind::Commit, "{err}");
    let closed = tokio::time::timeout(AT_ONCE, control.is_shutdown())
        .await
        .expect("the consumer closes at once");
    assert_eq!(closed.unwrap_err().kind(), ErrorKind::Commit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_committable_sink_ends_an_idle_pipeline_and_its_consumer_at_once() {
    let (broker, input) = broker_with_topic("failed-sink-in", 1).await;
    let output = broker
        .unique_topic("failed-sink-out", 1)
        .await
        .expect("output topic");
    produce_n(&broker, &input, 3, 1).await;
    let group = unique("g-failed-sink");
    let (source, control) = committable(&broker, &group, &input);
    let settings = broker
        .producer_settings()
        .property("message.timeout.ms", "2000");
    let sink = producer::committable_sink(settings, CommitterSettings::default()).unwrap();
    let out = output.clone();
    let pipeline = source
        .map(move |m| {
            let m = m?;
            // Record 2 goes to a partition that does not exist.
            let partition = if m.record.offset() == 2 { 99 } else { 0 };
            let record = ProducerRecord::new(out.as_str())
                .partition(partition)
                .payload("x");
            Ok(Envelope::message(record, m.offset))
        })
        .forward(sink);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), tokio::spawn(pipeline))
        .await
        .expect("the pipeline ends although its source is idle")
        .unwrap();
    println!(
        "failed committable sink: the pipeline ended {:?} after it started (message.timeout.ms 2000)",
        started.elapsed()
    );
    let err = result.expect_err("record 2 cannot be delivered");
    let c = err.coordinates().expect("coordinates");
    assert_eq!((c.topic.as_str(), c.partition), (output.as_str(), Some(99)));
    let closed = tokio::time::timeout(AT_ONCE, control.is_shutdown())
        .await
        .expect("the consumer closes at once");
    assert_eq!(closed.unwrap_err().coordinates(), Some(c));
    // The records before the failed one were committed, and nothing after it.
    assert_eq!(
        committed_offsets(&broker, &group, &input, 1).await[&0],
        Some(2)
    );
}
