//! Exactly-once through Kafka transactions. What needs `read_committed`
//! (aborted records invisible, exactly once after a kill) runs on Apache
//! Kafka only and is skipped with a printed reason on the embedded broker,
//! which runs the transaction API but delivers aborted records; fencing,
//! commits, aborts and misuse run on both.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::producer::Envelope;
use reactive_kafka::testkit::{GroupProtocol, TestBroker};
use reactive_kafka::transactional::{self, TransactionalProducer, TransactionalSettings};
use reactive_kafka::{consumer, ErrorKind, ProducerRecord, Subscription};
use support::*;

/// Every record of `topic` a reader with `isolation` sees, as (key, count),
/// read until nothing new came for 3 s.
async fn read_all(broker: &TestBroker, topic: &str, isolation: &str) -> BTreeMap<String, usize> {
    let settings = broker
        .consumer_settings(&unique("g-reader"))
        .property("isolation.level", isolation);
    let (mut source, control) =
        consumer::plain_source(settings, Subscription::topics([topic])).unwrap();
    let mut seen = BTreeMap::new();
    let mut first = true;
    loop {
        // The first record may wait for the group join.
        let wait = Duration::from_secs(if first { 20 } else { 3 });
        match tokio::time::timeout(wait, source.next()).await {
            Ok(Some(record)) => {
                let record = record.unwrap();
                let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
                *seen.entry(key).or_insert(0) += 1;
                first = false;
            }
            Ok(None) | Err(_) => break,
        }
    }
    control.shutdown().await.unwrap();
    seen
}

fn real_broker_or_skip(broker: &TestBroker, what: &str) -> bool {
    if broker.is_embedded() {
        println!(
            "skipped: {what} needs read_committed, which the embedded broker does not emulate (set KAFKA_BOOTSTRAP_SERVERS)"
        );
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_is_delivered_and_an_aborted_one_only_to_read_uncommitted() {
    let (broker, topic) = broker_with_topic("txn-abort", 2).await;
    let other = broker.unique_topic("txn-abort-b", 1).await.unwrap();
    let mut producer = TransactionalProducer::new(
        broker.producer_settings(),
        TransactionalSettings::new(unique("txn-abort")),
    )
    .await
    .unwrap();

    // Committed: two topics at once.
    let mut tx = producer.begin().await.unwrap();
    for i in 0..10 {
        tx.send(
            ProducerRecord::new(topic.as_str())
                .key(format!("committed-{i}"))
                .payload("c"),
        )
        .await
        .unwrap();
    }
    tx.send(
        ProducerRecord::new(other.as_str())
            .key("committed-other")
            .payload("c"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // Aborted, explicitly and by dropping the transaction.
    let mut tx = producer.begin().await.unwrap();
    for i in 0..5 {
        tx.send(
            ProducerRecord::new(topic.as_str())
                .key(format!("aborted-{i}"))
                .payload("a"),
        )
        .await
        .unwrap();
    }
    // Written to the log (so a read_uncommitted reader sees them), then aborted.
    tx.flush().await.unwrap();
    tx.abort().await.unwrap();
    let mut tx = producer.begin().await.unwrap();
    tx.send(
        ProducerRecord::new(topic.as_str())
            .key("dropped")
            .payload("a"),
    )
    .await
    .unwrap();
    tx.flush().await.unwrap();
    drop(tx);
    // The next transaction waits for the drop's abort, then commits.
    let mut tx = producer.begin().await.unwrap();
    tx.send(
        ProducerRecord::new(topic.as_str())
            .key("after")
            .payload("c"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let other_seen = read_all(&broker, &other, "read_committed").await;
    assert_eq!(other_seen.get("committed-other"), Some(&1));
    if !real_broker_or_skip(&broker, "checking that aborted records are invisible") {
        return;
    }
    let committed = read_all(&broker, &topic, "read_committed").await;
    let uncommitted = read_all(&broker, &topic, "read_uncommitted").await;
    println!("read_committed {committed:?}\nread_uncommitted {uncommitted:?}");
    assert_eq!(committed.len(), 11, "10 + 1 committed, nothing aborted");
    assert!(committed
        .keys()
        .all(|k| k.starts_with("committed") || k == "after"));
    assert_eq!(
        uncommitted.len(),
        17,
        "read_uncommitted sees the aborted ones too"
    );
    assert_eq!(uncommitted.get("dropped"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_with_the_same_transactional_id_is_fenced_with_a_named_error() {
    let (broker, topic) = broker_with_topic("txn-zombie", 1).await;
    let id = unique("txn-zombie");
    let settings = || TransactionalSettings::new(id.clone()).timeout(Duration::from_secs(10));
    let mut zombie = TransactionalProducer::new(broker.producer_settings(), settings())
        .await
        .unwrap();
    let mut tx = zombie.begin().await.unwrap();
    tx.send(ProducerRecord::new(topic.as_str()).payload("zombie"))
        .await
        .unwrap();
    // A new instance with the same id: fences the zombie, aborts its
    // transaction. The embedded broker does not fence on its own: there the
    // coordinator's answer to the zombie's commit says it is fenced.
    let mut successor = TransactionalProducer::new(broker.producer_settings(), settings())
        .await
        .unwrap();
    if let Some(embedded) = broker.embedded() {
        const END_TXN: i16 = 26;
        embedded.fail_requests(
            END_TXN,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
            1,
        );
    }
    let err = tx.commit().await.expect_err("the zombie is fenced");
    println!("zombie: {err:?}");
    assert_eq!(err.kind(), ErrorKind::ProducerFenced, "{err}");
    assert!(err.is_fatal());
    assert!(
        err.to_string().contains(&id),
        "names the transactional id: {err}"
    );
    let mut tx = successor.begin().await.unwrap();
    tx.send(ProducerRecord::new(topic.as_str()).payload("successor"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn bad_settings_fail_at_construction() {
    let settings = reactive_kafka::ProducerSettings::new("127.0.0.1:1");
    for (tx, what) in [
        (TransactionalSettings::new(" "), "transactional id"),
        (
            TransactionalSettings::new("t").commit_interval(Duration::ZERO),
            "commit_interval",
        ),
        (
            TransactionalSettings::new("t").max_records(0),
            "max_records",
        ),
    ] {
        let err = transactional::sink(settings.clone(), tx).expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains(what), "{err}");
    }
}

#[tokio::test]
async fn an_unreachable_broker_fails_initialisation_within_the_timeout() {
    let started = std::time::Instant::now();
    let err = TransactionalProducer::new(
        reactive_kafka::ProducerSettings::new(format!("127.0.0.1:{}", unused_port())),
        TransactionalSettings::new("nowhere").timeout(Duration::from_secs(2)),
    )
    .await
    .expect_err("no broker");
    println!("after {:?}: {err}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5), "bounded");
    assert!(err.to_string().contains("nowhere"), "names the id: {err}");
}

/// Consume `input`, upper-case, produce to `output` in transactions.
/// Counts what the map saw in `seen`.
fn pipeline(
    broker: &TestBroker,
    group: &str,
    id: &str,
    input: &str,
    output: &str,
    seen: Arc<AtomicUsize>,
    max_records: usize,
) -> consumer::DrainingControl<()> {
    let (source, control) = transactional::source(
        broker.consumer_settings(group),
        Subscription::topics([input]),
    )
    .unwrap();
    let sink = transactional::sink(
        broker.producer_settings(),
        TransactionalSettings::new(id).max_records(max_records),
    )
    .unwrap();
    let output = output.to_owned();
    consumer::DrainingControl::spawn(
        control,
        source
            .map(move |m| {
                let m = m?;
                seen.fetch_add(1, Ordering::Relaxed);
                let record = ProducerRecord::new(output.as_str())
                    .key(m.record.key_bytes().unwrap_or_default())
                    .payload(m.record.payload().unwrap_or_default().to_ascii_uppercase());
                Ok(Envelope::message(record, m.offset))
            })
            .forward(sink),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_appears_once_after_the_pipeline_is_killed_mid_transaction() {
    const N: usize = 3_000;
    let (broker, input) = broker_with_topic("txn-kill-in", 2).await;
    if !real_broker_or_skip(&broker, "exactly once after a kill") {
        return;
    }
    let output = broker.unique_topic("txn-kill-out", 2).await.unwrap();
    produce_n(&broker, &input, N, 2).await;
    let (group, id) = (unique("g-txn-kill"), unique("txn-kill"));

    // The first instance commits every 400 records and is killed (its task
    // aborted: no close) once it has processed 1,000.
    let seen = Arc::new(AtomicUsize::new(0));
    let first = pipeline(&broker, &group, &id, &input, &output, seen.clone(), 400);
    wait_until(
        "1,000 processed and two transactions committed",
        Duration::from_secs(60),
        || seen.load(Ordering::Relaxed) >= 1_000 && first.control().metrics().commits >= 2,
    )
    .await;
    first.abort();
    let killed_after = seen.load(Ordering::Relaxed);

    // A new instance with the same id and group finishes the input.
    let seen = Arc::new(AtomicUsize::new(0));
    let second = pipeline(&broker, &group, &id, &input, &output, seen.clone(), 400);
    let output_seen = {
        let broker = &broker;
        let output = output.clone();
        async move {
            loop {
                let c = read_all(broker, &output, "read_committed").await;
                if c.len() >= N || c.values().any(|n| *n > 1) {
                    return c;
                }
            }
        }
    };
    let committed = tokio::time::timeout(Duration::from_secs(120), output_seen)
        .await
        .expect("the output is complete within 2 minutes");
    let drained = second
        .drain_and_shutdown(Duration::from_secs(30))
        .await
        .unwrap();
    let uncommitted = read_all(&broker, &output, "read_uncommitted").await;
    let total_uncommitted: usize = uncommitted.values().sum();
    println!(
        "killed after {killed_after}; the second read {}; read_committed {} keys, read_uncommitted {total_uncommitted} records; drain {:?}",
        seen.load(Ordering::Relaxed),
        committed.len(),
        drained.report.complete
    );
    assert_eq!(committed.len(), N, "every input's output");
    assert!(
        committed.values().all(|n| *n == 1),
        "each exactly once: {:?}",
        committed
            .iter()
            .filter(|(_, n)| **n > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    // The first instance took records its transactions did not commit
    // (the open one, aborted at the kill): the second read them again, and
    // their output is still there once.
    let second_read = seen.load(Ordering::Relaxed);
    assert!(
        killed_after + second_read > N,
        "records processed by both instances: first {killed_after}, second {second_read}"
    );
    assert!(
        seen.load(Ordering::Relaxed) < N,
        "the second instance starts from the offsets the first one's transactions committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_commits_its_offsets_in_its_transactions_and_drains() {
    const N: usize = 500;
    let (broker, input) = broker_with_topic("txn-flow-in", 2).await;
    let output = broker.unique_topic("txn-flow-out", 2).await.unwrap();
    produce_n(&broker, &input, N, 2).await;
    let group = unique("g-txn-flow");
    let seen = Arc::new(AtomicUsize::new(0));
    let running = pipeline(
        &broker,
        &group,
        &unique("txn-flow"),
        &input,
        &output,
        seen.clone(),
        100,
    );
    wait_until("all processed", Duration::from_secs(60), || {
        seen.load(Ordering::Relaxed) >= N
    })
    .await;
    let drained = running
        .drain_and_shutdown(Duration::from_secs(30))
        .await
        .unwrap();
    println!("drain: {:?}", drained.report);
    assert!(drained.report.complete, "{:?}", drained.report);
    // The consumer counts the offsets its transactions committed...
    let reported: i64 = drained.report.committed.iter().map(|o| o.offset).sum();
    assert_eq!(reported, N as i64, "{:?}", drained.report);
    // ...and they are the group's (the embedded broker accepts offsets in a
    // transaction but does not store them).
    if !broker.is_embedded() {
        let committed = committed_offsets(&broker, &group, &input, 2).await;
        assert_eq!(
            committed.values().map(|o| o.unwrap_or(0)).sum::<i64>(),
            N as i64,
            "{committed:?}"
        );
    }
    let out = read_all(&broker, &output, "read_committed").await;
    assert_eq!(out.len(), N);
    assert!(out.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_appears_once_while_a_second_member_joins_and_leaves_eager() {
    join_and_leave(GroupProtocol::Eager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_appears_once_while_a_second_member_joins_and_leaves_cooperative() {
    join_and_leave(GroupProtocol::Cooperative).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_appears_once_while_a_second_member_joins_and_leaves_kip848() {
    join_and_leave(GroupProtocol::Consumer).await;
}

/// A transactional pipeline reads a paced input; a second member joins
/// half-way, takes partitions, processes, and leaves cleanly; the output
/// read with `read_committed` holds every input once.
async fn join_and_leave(protocol: GroupProtocol) {
    const N: usize = 4_000;
    let (broker, input) = broker_with_topic("txn-join-in", 4).await;
    if !real_broker_or_skip(&broker, "exactly once through rebalances") {
        return;
    }
    let output = broker.unique_topic("txn-join-out", 2).await.unwrap();
    produce_n(&broker, &input, N, 4).await;
    let group = unique("g-txn-join");
    // Paced so that the rebalances happen while records flow.
    let paced = |id: String, seen: Arc<AtomicUsize>| {
        let (source, control) = transactional::source(
            broker.group_settings(&group, protocol),
            Subscription::topics([input.as_str()]),
        )
        .unwrap();
        let sink = transactional::sink(
            broker.producer_settings(),
            TransactionalSettings::new(id).max_records(200),
        )
        .unwrap();
        let output = output.clone();
        consumer::DrainingControl::spawn(
            control,
            source
                .then(move |m| {
                    let (output, seen) = (output.clone(), seen.clone());
                    async move {
                        let m = m?;
                        seen.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        let record = ProducerRecord::new(output.as_str())
                            .key(m.record.key_bytes().unwrap_or_default())
                            .payload("x");
                        Ok(Envelope::message(record, m.offset))
                    }
                })
                .forward(sink),
        )
    };
    let (seen_a, seen_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = paced(unique("txn-join-a"), seen_a.clone());
    wait_until("A processed 500", Duration::from_secs(60), || {
        seen_a.load(Ordering::Relaxed) >= 500
    })
    .await;
    let b = paced(unique("txn-join-b"), seen_b.clone());
    wait_until(
        "B took partitions and processed 300",
        Duration::from_secs(60),
        || seen_b.load(Ordering::Relaxed) >= 300,
    )
    .await;
    println!(
        "B joined: A {:?}, B {:?}",
        a.control().metrics(),
        b.control().metrics()
    );
    // B leaves cleanly: A gets its partitions back.
    let b_report = b.drain_and_shutdown(Duration::from_secs(30)).await.unwrap();
    let out = {
        let broker = &broker;
        let output = output.clone();
        async move {
            loop {
                let c = read_all(broker, &output, "read_committed").await;
                if c.len() >= N || c.values().any(|n| *n > 1) {
                    return c;
                }
            }
        }
    };
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the output is complete within 2 minutes");
    let a_report = a.drain_and_shutdown(Duration::from_secs(30)).await.unwrap();
    println!(
        "{protocol:?}: A read {}, B read {} ({} read twice across members); output {} keys; drains {} {}",
        seen_a.load(Ordering::Relaxed),
        seen_b.load(Ordering::Relaxed),
        seen_a.load(Ordering::Relaxed) + seen_b.load(Ordering::Relaxed) - N,
        out.len(),
        a_report.report.complete,
        b_report.report.complete
    );
    assert_eq!(out.len(), N, "every input's output");
    assert!(
        out.values().all(|n| *n == 1),
        "each exactly once: {:?}",
        out.iter()
            .filter(|(_, n)| **n > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(b_report.report.complete && a_report.report.complete);
}
