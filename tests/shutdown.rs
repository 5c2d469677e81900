//! Shutdown works in every phase: during start-up, and when asked more than
//! once or from several tasks at once.

mod support;

use std::time::{Duration, Instant};

use reactive_kafka::{consumer, ConsumerSettings, Subscription};
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
