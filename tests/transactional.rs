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

/// Sends a record per key to `topic` in `tx`.
async fn send_keys(
    tx: &mut reactive_kafka::transactional::Transaction<'_>,
    topic: &str,
    keys: impl IntoIterator<Item = String>,
) {
    for key in keys {
        tx.send(ProducerRecord::new(topic).key(key).payload("x"))
            .await
            .unwrap();
    }
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
    send_keys(&mut tx, &topic, (0..10).map(|i| format!("committed-{i}"))).await;
    send_keys(&mut tx, &other, ["committed-other".to_owned()]).await;
    tx.commit().await.unwrap();
    // Aborted, explicitly and by dropping the transaction.
    let mut tx = producer.begin().await.unwrap();
    send_keys(&mut tx, &topic, (0..5).map(|i| format!("aborted-{i}"))).await;
    // Written to the log (so a read_uncommitted reader sees them), then aborted.
    tx.flush().await.unwrap();
    tx.abort().await.unwrap();
    let mut tx = producer.begin().await.unwrap();
    send_keys(&mut tx, &topic, ["dropped".to_owned()]).await;
    tx.flush().await.unwrap();
    drop(tx);
    // The next transaction waits for the drop's abort, then commits.
    let mut tx = producer.begin().await.unwrap();
    send_keys(&mut tx, &topic, ["after".to_owned()]).await;
    tx.commit().await.unwrap();

    let other_seen = read_keys(&broker, &other, "read_committed").await;
    assert_eq!(other_seen.get("committed-other"), Some(&1));
    if !real_broker_or_skip(&broker, "checking that aborted records are invisible") {
        return;
    }
    let committed = read_keys(&broker, &topic, "read_committed").await;
    let uncommitted = read_keys(&broker, &topic, "read_uncommitted").await;
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
    } else {
        // A record the zombie sends now is refused: its delivery failure
        // names the transaction too.
        tx.send(ProducerRecord::new(topic.as_str()).payload("late"))
            .await
            .unwrap();
        let err = tx
            .flush()
            .await
            .expect_err("the zombie's record is refused");
        println!("zombie's late record: {err}");
        assert_eq!(err.kind(), ErrorKind::ProducerFenced, "{err}");
        assert!(
            err.to_string().contains(&id),
            "names the transactional id: {err}"
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
    // A transaction commits outputs with their input offsets: out-of-order
    // commits are refused by both sources.
    let consumer = reactive_kafka::ConsumerSettings::new("127.0.0.1:1")
        .group_id("g")
        .out_of_order_commits(16);
    let err =
        transactional::source(consumer.clone(), Subscription::topics(["t"])).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("out_of_order_commits"), "{err}");
    let err = transactional::partitioned_source(consumer, Subscription::topics(["t"]))
        .expect_err("refused");
    assert!(err.to_string().contains("out_of_order_commits"), "{err}");
}

/// Offsets from a consumer with out-of-order commits (a plain committable
/// source) fail a transactional sink at once, naming the setting, instead
/// of leaving the source waiting at its limit for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_sink_refuses_offsets_committed_out_of_order() {
    let (broker, input) = broker_with_topic("txn-ooo-in", 2).await;
    let output = broker.unique_topic("txn-ooo-out", 2).await.unwrap();
    produce_n(&broker, &input, 100, 2).await;
    let group = unique("g-txn-ooo");
    let (source, control) = consumer::committable_source(
        broker.consumer_settings(&group).out_of_order_commits(16),
        Subscription::topics([input.as_str()]),
    )
    .unwrap();
    let sink = transactional::sink(
        broker.producer_settings(),
        TransactionalSettings::new(unique("txn-ooo")).max_records(50),
    )
    .unwrap();
    let mut running = consumer::DrainingControl::spawn(
        control,
        source
            .map(move |m| {
                let m = m?;
                let record = ProducerRecord::new(output.as_str()).payload("x");
                Ok(Envelope::message(record, m.offset))
            })
            .forward(sink),
    );
    // It ends by itself, at the first offset.
    tokio::time::timeout(Duration::from_secs(30), running.ended())
        .await
        .expect("the pipeline ends by itself");
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        running.drain_and_shutdown(Duration::from_secs(5)),
    )
    .await
    .expect("the pipeline ends")
    .expect_err("the sink refused the offset");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("out_of_order_commits"), "{err}");
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

/// Consume `input` with `settings`, upper-case, produce to `output` in
/// transactions of at most `max_records`, each record after `pace`.
/// Counts what it processed in `seen`.
#[allow(clippy::too_many_arguments)]
fn pipeline(
    producer: reactive_kafka::ProducerSettings,
    settings: reactive_kafka::ConsumerSettings,
    id: &str,
    input: &str,
    output: &str,
    seen: Arc<AtomicUsize>,
    max_records: usize,
    pace: Duration,
) -> consumer::DrainingControl<()> {
    let (source, control) = transactional::source(settings, Subscription::topics([input])).unwrap();
    let sink = transactional::sink(
        producer,
        TransactionalSettings::new(id).max_records(max_records),
    )
    .unwrap();
    let output = output.to_owned();
    consumer::DrainingControl::spawn(
        control,
        source
            .then(move |m| {
                let (output, seen) = (output.clone(), seen.clone());
                async move {
                    let m = m?;
                    seen.fetch_add(1, Ordering::Relaxed);
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                    let record = ProducerRecord::new(output.as_str())
                        .key(m.record.key_bytes().unwrap_or_default())
                        .payload(m.record.payload().unwrap_or_default().to_ascii_uppercase());
                    Ok(Envelope::message(record, m.offset))
                }
            })
            .forward(sink),
    )
}

/// What a `read_committed` reader sees of `output` once it holds `n` keys
/// (or a key twice), within two minutes.
async fn complete_output(broker: &TestBroker, output: &str, n: usize) -> BTreeMap<String, usize> {
    let read = async {
        loop {
            let c = read_keys(broker, output, "read_committed").await;
            if c.len() >= n || c.values().any(|k| *k > 1) {
                return c;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the output is complete within 2 minutes")
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

    // The first instance commits every 400 records and crashes once it has
    // processed 1,000: it runs on a runtime of its own, shut down at once,
    // every task of it dropped where it stands (no close, no task left
    // committing, as when a process dies).
    let crashing = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Both instances: same id and group, a commit every 400 records.
    let instance = |seen: Arc<AtomicUsize>| {
        pipeline(
            broker.producer_settings(),
            broker.consumer_settings(&group),
            &id,
            &input,
            &output,
            seen,
            400,
            Duration::ZERO,
        )
    };
    let seen = Arc::new(AtomicUsize::new(0));
    let first = {
        let _on = crashing.enter();
        instance(seen.clone())
    };
    wait_until(
        "1,000 processed and two transactions committed",
        Duration::from_secs(60),
        || seen.load(Ordering::Relaxed) >= 1_000 && first.control().metrics().commits >= 2,
    )
    .await;
    crashing.shutdown_background();
    drop(first);
    let killed_after = seen.load(Ordering::Relaxed);

    // A new instance with the same id and group finishes the input.
    let seen = Arc::new(AtomicUsize::new(0));
    let second = instance(seen.clone());
    let committed = complete_output(&broker, &output, N).await;
    let drained = second
        .drain_and_shutdown(Duration::from_secs(30))
        .await
        .unwrap();
    let uncommitted = read_keys(&broker, &output, "read_uncommitted").await;
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
        broker.producer_settings(),
        broker.consumer_settings(&group),
        &unique("txn-flow"),
        &input,
        &output,
        seen.clone(),
        100,
        Duration::ZERO,
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
    let out = read_keys(&broker, &output, "read_committed").await;
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
/// read with `read_committed` holds every input once. Each member runs
/// under a restart supervisor, as the docs advise: a transaction that the
/// group coordinator refuses (with the KIP-848 protocol a member's epoch
/// moves on every assignment change, and offsets sent under the previous
/// epoch are refused) aborts and ends that member's pipeline, and the
/// supervisor starts it again from the committed offsets.
async fn join_and_leave(protocol: GroupProtocol) {
    use reactive_kafka::supervision::{restart, RestartControl, RestartSettings};

    const N: usize = 4_000;
    let (broker, input) = broker_with_topic("txn-join-in", 4).await;
    if !real_broker_or_skip(&broker, "exactly once through rebalances") {
        return;
    }
    let output = broker.unique_topic("txn-join-out", 2).await.unwrap();
    produce_n(&broker, &input, N, 4).await;
    let group = unique("g-txn-join");
    // Paced so that the rebalances happen while records flow.
    let member = |id: String, seen: Arc<AtomicUsize>| -> RestartControl<()> {
        let (consumer, producer) = (
            broker.group_settings(&group, protocol),
            broker.producer_settings(),
        );
        let (input, output) = (input.clone(), output.clone());
        restart(
            RestartSettings::new(Duration::from_millis(100), Duration::from_secs(1), 0.2),
            move |_| {
                Ok(pipeline(
                    producer.clone(),
                    consumer.clone(),
                    &id,
                    &input,
                    &output,
                    seen.clone(),
                    200,
                    Duration::from_millis(2),
                ))
            },
        )
    };
    let (seen_a, seen_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = member(unique("txn-join-a"), seen_a.clone());
    wait_until("A processed 500", Duration::from_secs(60), || {
        seen_a.load(Ordering::Relaxed) >= 500
    })
    .await;
    let b = member(unique("txn-join-b"), seen_b.clone());
    wait_until(
        "B took partitions and processed 300",
        Duration::from_secs(60),
        || seen_b.load(Ordering::Relaxed) >= 300,
    )
    .await;
    // B leaves: A gets its partitions back. A drain may end with the
    // coordinator refusing the last transaction (KIP-848: a member's epoch
    // moves when the other member restarts or leaves); that transaction is
    // aborted and its records are read again by the next owner, which the
    // output check below covers. Any other failure fails the test.
    let drained = |who: &str, result: reactive_kafka::Result<Option<()>>| match result {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::Transaction => {
            println!("{who}: last transaction refused while draining: {e}")
        }
        Err(e) => panic!("{who} drained with {e}"),
    };
    let b_restarts = b.metrics();
    drained("B", b.drain_and_shutdown().await);
    let out = complete_output(&broker, &output, N).await;
    let a_restarts = a.metrics();
    drained("A", a.drain_and_shutdown().await);
    println!(
        "{protocol:?}: A read {} (restarts {}, last failure {:?}), B read {} (restarts {}); {} read twice across members; output {} keys",
        seen_a.load(Ordering::Relaxed),
        a_restarts.restarts,
        a_restarts.last_failure.map(|e| e.to_string()),
        seen_b.load(Ordering::Relaxed),
        b_restarts.restarts,
        seen_a.load(Ordering::Relaxed) + seen_b.load(Ordering::Relaxed) - N,
        out.len(),
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_passes_each_offset_on_once_its_transaction_committed() {
    const N: usize = 600;
    let (broker, input) = broker_with_topic("txn-flowout-in", 2).await;
    let output = broker.unique_topic("txn-flowout-out", 2).await.unwrap();
    produce_n(&broker, &input, N, 2).await;
    let (source, control) = transactional::source(
        broker.consumer_settings(&unique("g-txn-flowout")),
        Subscription::topics([input.as_str()]),
    )
    .unwrap();
    let out = output.clone();
    let envelopes = source.take(N).map(move |m| {
        let m = m?;
        let record = ProducerRecord::new(out.as_str())
            .key(m.record.key_bytes().unwrap_or_default())
            .payload("x");
        Ok(Envelope::message(record, m.offset))
    });
    let mut flow = transactional::flow(
        broker.producer_settings(),
        TransactionalSettings::new(unique("txn-flowout")).max_records(100),
        envelopes,
    )
    .unwrap();
    let mut passed: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    while let Some(offset) = flow.next().await {
        let offset = offset.unwrap();
        // Passed on only after its transaction committed.
        assert!(control.metrics().commits >= 1);
        passed
            .entry(offset.topic_partition().partition)
            .or_default()
            .push(offset.offset());
    }
    control.shutdown().await.unwrap();
    let total: usize = passed.values().map(Vec::len).sum();
    assert_eq!(total, N, "every envelope's offset, once");
    for (p, offsets) in &passed {
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "partition {p} in order"
        );
    }
    let out = read_keys(&broker, &output, "read_committed").await;
    assert_eq!(out.len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_in_a_flows_envelopes_aborts_the_open_transaction_and_ends_the_flow() {
    let (broker, input) = broker_with_topic("txn-flowerr-in", 1).await;
    let output = broker.unique_topic("txn-flowerr-out", 1).await.unwrap();
    produce_n(&broker, &input, 300, 1).await;
    let (source, control) = transactional::source(
        broker.consumer_settings(&unique("g-txn-flowerr")),
        Subscription::topics([input.as_str()]),
    )
    .unwrap();
    let out = output.clone();
    // Record 150 cannot be processed: the pipeline's own error.
    let envelopes = source.take(300).map(move |m| {
        let m = m?;
        if m.record.offset() == 150 {
            return Err(reactive_kafka::Error::processing("offset 150 is poison"));
        }
        let record = ProducerRecord::new(out.as_str())
            .key(m.record.key_bytes().unwrap_or_default())
            .payload("x");
        Ok(Envelope::message(record, m.offset))
    });
    let mut flow = transactional::flow(
        broker.producer_settings(),
        TransactionalSettings::new(unique("txn-flowerr"))
            .max_records(100)
            .commit_interval(Duration::from_secs(60)),
        envelopes,
    )
    .unwrap();
    let mut passed = 0;
    let err = loop {
        match flow.next().await {
            Some(Ok(_)) => passed += 1,
            Some(Err(e)) => break e,
            None => panic!("the flow ended without the error"),
        }
    };
    println!("after {passed} offsets: {err}");
    assert_eq!(err.kind(), ErrorKind::Processing, "{err}");
    assert!(flow.next().await.is_none(), "the error ends the flow");
    assert_eq!(passed, 100, "the first transaction (100 records) committed");
    // The consumer heard of it too.
    let ended = control
        .shutdown()
        .await
        .expect_err("the consumer ended with the error");
    assert_eq!(ended.kind(), ErrorKind::Processing, "{ended}");
    if !real_broker_or_skip(
        &broker,
        "checking that the aborted transaction is invisible",
    ) {
        return;
    }
    // Records 100 to 149 were in the aborted transaction.
    let out = read_keys(&broker, &output, "read_committed").await;
    assert_eq!(out.len(), 100, "only the committed transaction's records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_source_feeds_one_sink_and_every_partition_is_committed() {
    const N: usize = 800;
    let (broker, input) = broker_with_topic("txn-part-in", 4).await;
    let output = broker.unique_topic("txn-part-out", 2).await.unwrap();
    produce_n(&broker, &input, N, 4).await;
    let group = unique("g-txn-part");
    let (source, control) = transactional::partitioned_source(
        broker.consumer_settings(&group),
        Subscription::topics([input.as_str()]),
    )
    .unwrap();
    let sink = transactional::sink(
        broker.producer_settings(),
        TransactionalSettings::new(unique("txn-part")).max_records(150),
    )
    .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let (out, counted) = (output.clone(), seen.clone());
    let running = consumer::DrainingControl::spawn(
        control,
        source
            .filter_map(|sub| futures::future::ready(sub.ok().map(|(_, s)| s)))
            .flatten_unordered(None)
            .map(move |m| {
                let m = m?;
                counted.fetch_add(1, Ordering::Relaxed);
                let record = ProducerRecord::new(out.as_str())
                    .key(m.record.key_bytes().unwrap_or_default())
                    .payload("x");
                Ok(Envelope::message(record, m.offset))
            })
            .forward(sink),
    );
    wait_until("all processed", Duration::from_secs(60), || {
        seen.load(Ordering::Relaxed) >= N
    })
    .await;
    let drained = running
        .drain_and_shutdown(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(drained.report.complete, "{:?}", drained.report);
    let committed: i64 = drained.report.committed.iter().map(|o| o.offset).sum();
    assert_eq!(committed, N as i64, "{:?}", drained.report.committed);
    assert_eq!(drained.report.committed.len(), 4, "every partition");
    let out = read_keys(&broker, &output, "read_committed").await;
    assert_eq!(out.len(), N);
    assert!(out.values().all(|n| *n == 1));
}
