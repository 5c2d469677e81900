//! Shutdown works in every phase: during start-up, and when asked more than
//! once or from several tasks at once.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reactive_kafka::consumer::DrainingControl;
use reactive_kafka::{committer, consumer, CommitterSettings, ConsumerSettings, Subscription};
use support::*;

/// Nothing listens on the port and the connect timeout is long: a drain
/// during start-up still returns within its own timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_during_start_up_returns_within_its_timeout() {
    init_tracing();
    let port = unused_port();
    let settings = ConsumerSettings::new(format!("127.0.0.1:{port}"))
        .group_id("g")
        .connect_timeout(Duration::from_secs(30));
    let (_source, control) =
        consumer::committable_source(settings, Subscription::topics(["t"])).unwrap();
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(20), control.drain_and_shutdown(timeout))
        .await
        .expect("the drain must not wait for the connect timeout")
        .expect("a report");
    let elapsed = started.elapsed();
    println!("drain during start-up: returned after {elapsed:?} (timeout {timeout:?})");
    assert!(
        elapsed < timeout + Duration::from_secs(1),
        "took {elapsed:?}"
    );
    assert!(report.complete, "nothing was handed out: {report:?}");
    assert!(control.is_closed());
}

/// Two drains at once, and one after the consumer closed, get the same report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_repeated_drains_get_the_same_report() {
    let (broker, topic) = broker_with_topic("drains", 1).await;
    produce_n(&broker, &topic, 10, 1).await;
    let group = unique("g-drains");
    let (mut source, control) = committable(&broker, &group, &topic);
    let messages = take_n(&mut source, 10, Duration::from_secs(30)).await;
    messages[4].offset.clone().commit().await.expect("commit");
    let timeout = Duration::from_millis(500);
    let (a, b) = tokio::join!(
        control.drain_and_shutdown(timeout),
        control.drain_and_shutdown(timeout)
    );
    let (a, b) = (a.expect("first drain"), b.expect("second drain"));
    assert_eq!(a, b);
    assert!(!a.complete, "records 5 to 9 were not committed: {a:?}");
    assert_eq!(a.committed.len(), 1);
    assert_eq!(a.committed[0].offset, 5);
    assert_eq!(a.uncommitted[0].emitted_next, 10);
    let again = control
        .drain_and_shutdown(timeout)
        .await
        .expect("a drain after close");
    assert_eq!(again, a);
}

/// Partitions lost with records taken and not committed: the drain report
/// says so instead of calling the drain complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_reports_partitions_lost_with_uncommitted_records() {
    let (broker, topic) = broker_with_topic("drain-lost", 1).await;
    let Some(embedded) =
        embedded_or_skip(&broker, "forcing the loss of partitions by error injection")
    else {
        return;
    };
    produce_n(&broker, &topic, 100, 1).await;
    let group = unique("g-drain-lost");
    let (mut source, control) = committable(&broker, &group, &topic);
    let _taken = take_n(&mut source, 10, Duration::from_secs(30)).await;
    let revocations = control.metrics().revocations;
    embedded.fail_requests(
        HEARTBEAT,
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
        1,
    );
    wait_until("partitions lost", Duration::from_secs(20), || {
        control.metrics().revocations > revocations
    })
    .await;
    let report = control
        .drain_and_shutdown(Duration::from_millis(500))
        .await
        .expect("a report");
    assert!(
        !report.complete,
        "10 records taken, none committed: {report:?}"
    );
    assert_eq!(report.lost.len(), 1, "{report:?}");
    assert_eq!(report.lost[0].emitted_next, 10);
    assert_eq!(report.lost[0].committed_next, None);
}

/// The one shutdown order: a `DrainingControl` drains the consumer, lets the
/// committer commit what the pipeline processed, and returns the pipeline's
/// own output with a complete report. A new member of the group then reads
/// only what was not processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_control_returns_the_pipeline_output_and_commits_everything() {
    let (broker, topic) = broker_with_topic("draining", 2).await;
    let n = 2_000;
    produce_n(&broker, &topic, n, 2).await;
    let group = unique("g-draining");
    let (source, control) = committable(&broker, &group, &topic);
    let processed = Arc::new(AtomicUsize::new(0));
    let counter = processed.clone();
    let pipeline = DrainingControl::spawn(control, async move {
        source
            .map(move |m| {
                let m = m?;
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(m.offset)
            })
            .forward(committer::sink(CommitterSettings::default())?)
            .await?;
        Ok("pipeline output")
    });
    wait_until("some records processed", Duration::from_secs(30), || {
        processed.load(Ordering::SeqCst) >= 100
    })
    .await;
    assert!(!pipeline.is_ended());
    let drained = pipeline
        .drain_and_shutdown(Duration::from_secs(10))
        .await
        .expect("drained");
    assert_eq!(drained.output, "pipeline output");
    assert!(drained.report.complete, "{:?}", drained.report);
    let committed: i64 = drained.report.committed.iter().map(|p| p.offset).sum();
    let processed = processed.load(Ordering::SeqCst);
    assert_eq!(committed as usize, processed, "{:?}", drained.report);

    // The rest, and nothing else, is read by the next member.
    let (mut next, next_control) = committable(&broker, &group, &topic);
    let rest = take_n(&mut next, n - processed, Duration::from_secs(30)).await;
    assert_eq!(rest.len(), n - processed);
    let extra = tokio::time::timeout(Duration::from_secs(2), next.next()).await;
    assert!(
        extra.is_err(),
        "a processed record was read again: {extra:?}"
    );
    next_control.shutdown().await.unwrap();
}

/// A pipeline that fails: `ended` resolves without a shutdown signal, and
/// `drain_and_shutdown` returns the pipeline's error, not a report, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_control_returns_the_pipeline_failure() {
    let (broker, topic) = broker_with_topic("draining-fail", 1).await;
    produce_n(&broker, &topic, 100, 1).await;
    let group = unique("g-draining-fail");
    let (source, control) = committable(&broker, &group, &topic);
    let mut pipeline = DrainingControl::spawn(control, async move {
        source
            .map(|m| {
                let m = m?;
                if m.record.offset() == 42 {
                    return Err(reactive_kafka::Error::processing(
                        "processing failed at offset 42",
                    ));
                }
                Ok(m.offset)
            })
            .forward(committer::sink(CommitterSettings::default())?)
            .await
    });
    tokio::time::timeout(Duration::from_secs(30), pipeline.ended())
        .await
        .expect("the failed pipeline ended");
    assert!(pipeline.is_ended());
    // Records it took after the failed one will never be committed: a
    // drain would wait its whole timeout for them. The failed pipeline is
    // not drained; the consumer closes at once.
    let started = Instant::now();
    let err = pipeline
        .drain_and_shutdown(Duration::from_secs(30))
        .await
        .expect_err("the pipeline failed");
    assert!(err.to_string().contains("offset 42"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Every broker down, records taken and not committed: the drain still
/// returns within its timeout plus the documented slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_while_the_brokers_are_down_returns_in_bounded_time() {
    let (broker, topic) = broker_with_topic("drain-down", 1).await;
    let Some(embedded) = embedded_or_skip(&broker, "taking the embedded brokers down") else {
        return;
    };
    produce_n(&broker, &topic, 100, 1).await;
    let group = unique("g-drain-down");
    let (mut source, control) = committable(&broker, &group, &topic);
    let _taken = take_n(&mut source, 10, Duration::from_secs(30)).await;
    for id in 1..=3 {
        embedded.broker_down(id);
    }
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(60), control.drain_and_shutdown(timeout))
        .await
        .expect("the drain returns");
    let elapsed = started.elapsed();
    println!("drain with every broker down: returned after {elapsed:?} (timeout {timeout:?}): {report:?}");
    for id in 1..=3 {
        embedded.broker_up(id);
    }
    let report = report.expect("a report");
    assert!(
        !report.complete,
        "10 records taken, none committed: {report:?}"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(1),
        "took {elapsed:?}"
    );
}
