//! Typed records and dead letters, on both brokers: typed committable
//! pipelines (single and partitioned sources) where a tenth of the JSON
//! records are malformed: every good record is processed once, every bad one
//! reaches the dead-letter topic with its original bytes and the coordinate
//! headers, every offset is committed, nothing is lost.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reactive_kafka::consumer::{self, DeserializeExt, DrainingControl};
use reactive_kafka::producer::{self, DeadLetters, SerializeExt};
use reactive_kafka::serde::{Json, Nullable, Utf8};
use reactive_kafka::testkit::TestBroker;
use reactive_kafka::{
    CommitterSettings, ConsumerRecord, Error, ErrorKind, ProducerRecord, Subscription,
    TypedProducerRecord,
};
use serde::{Deserialize, Serialize};
use support::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    cents: u64,
}

const ORDERS: u64 = 500;

/// Writes `ORDERS` orders over `partitions` partitions with the typed sink;
/// every tenth (id % 10 == 3) is written as broken JSON instead. Returns the
/// broken ids.
async fn write_orders(broker: &TestBroker, topic: &str) -> BTreeSet<u64> {
    let mut typed = producer::plain_sink(broker.producer_settings())
        .unwrap()
        .serializing(Utf8, Json);
    let mut raw = producer::plain_sink(broker.producer_settings()).unwrap();
    let mut broken = BTreeSet::new();
    for id in 0..ORDERS {
        let key = id.to_string();
        if id % 10 == 3 {
            broken.insert(id);
            raw.feed(
                ProducerRecord::new(topic)
                    .key(key)
                    .payload(format!("{{\"id\": {id}, broken"))
                    .header("origin", "test"),
            )
            .await
            .unwrap();
        } else {
            let order = Order {
                id,
                cents: 100 + id,
            };
            typed
                .feed(
                    TypedProducerRecord::<String, Order>::new(topic)
                        .key(key)
                        .payload(order),
                )
                .await
                .unwrap();
        }
    }
    typed.close().await.unwrap();
    raw.close().await.unwrap();
    broken
}

/// What the pipeline produces for a good order.
fn invoice(
    invoices: &str,
    r: &reactive_kafka::TypedRecord<Option<String>, Order>,
) -> reactive_kafka::Result<Option<ProducerRecord>> {
    let out = TypedProducerRecord::<String, u64>::new(invoices)
        .key(r.payload.id.to_string())
        .payload(r.payload.cents * 11 / 10)
        .serialize(&Utf8, &Json)?;
    Ok(Some(out))
}

/// Reads `n` records of `topic` and checks that no more come.
async fn read_all(broker: &TestBroker, topic: &str, n: usize) -> Vec<ConsumerRecord> {
    let (mut source, control) = consumer::plain_source(
        broker.consumer_settings(&unique("g-check")),
        Subscription::topics([topic]),
    )
    .unwrap();
    let records = take_n(&mut source, n, Duration::from_secs(60)).await;
    assert_nothing_more(&mut source).await;
    control.shutdown().await.unwrap();
    records
}

/// Checks the invoices, the dead letters and the committed offsets.
async fn check(
    broker: &TestBroker,
    orders: &str,
    invoices: &str,
    dead: &str,
    group: &str,
    broken: &BTreeSet<u64>,
    partitions: i32,
) {
    let good = read_all(broker, invoices, (ORDERS as usize) - broken.len()).await;
    let ids: BTreeSet<u64> = good
        .iter()
        .map(|r| r.deserialize_key::<String>(&Utf8).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), good.len(), "each good order invoiced once");
    assert!(ids.is_disjoint(broken));

    let letters = read_all(broker, dead, broken.len()).await;
    let mut dead_ids = BTreeSet::new();
    for letter in &letters {
        let header = |k: &str| {
            letter
                .headers()
                .iter()
                .find(|h| h.key == k)
                .and_then(|h| h.value.as_deref())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| panic!("header {k} on {letter:?}"))
        };
        let id: u64 = letter
            .deserialize_key::<String>(&Utf8)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            letter.payload(),
            Some(format!("{{\"id\": {id}, broken").as_bytes()),
            "the original bytes"
        );
        assert_eq!(header("origin"), "test", "the original headers");
        assert_eq!(header(DeadLetters::SOURCE_TOPIC), orders);
        assert_eq!(header(DeadLetters::ERROR_KIND), "Deserialize");
        assert!(header(DeadLetters::ERROR_MESSAGE).contains("payload"));
        // The coordinates point at the original record.
        let partition: i32 = header(DeadLetters::SOURCE_PARTITION).parse().unwrap();
        let offset: i64 = header(DeadLetters::SOURCE_OFFSET).parse().unwrap();
        let original = reread(broker, orders, partition, offset).await;
        assert_eq!(original.key(), letter.key());
        assert_eq!(original.payload(), letter.payload());
        dead_ids.insert(id);
    }
    assert_eq!(
        &dead_ids, broken,
        "every broken order is a dead letter, once"
    );

    let committed = committed_offsets(broker, group, orders, partitions).await;
    let total: i64 = committed.values().map(|o| o.unwrap_or(0)).sum();
    assert_eq!(
        total, ORDERS as i64,
        "every offset committed: {committed:?}"
    );
}

/// The record at `offset` of `topic`/`partition`.
async fn reread(broker: &TestBroker, topic: &str, partition: i32, offset: i64) -> ConsumerRecord {
    let settings = broker.consumer_settings(&unique("g-reread"));
    let (mut source, control) = consumer::plain_source(
        settings,
        Subscription::assignment_with_offsets([(
            reactive_kafka::TopicPartition::new(topic, partition),
            reactive_kafka::StartOffset::Offset(offset),
        )]),
    )
    .unwrap();
    let r = take_n(&mut source, 1, Duration::from_secs(30))
        .await
        .remove(0);
    control.shutdown().await.unwrap();
    assert_eq!((r.partition(), r.offset()), (partition, offset));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_pipeline_routes_malformed_records_to_dead_letters_and_commits_all() {
    let (broker, orders) = broker_with_topic("typed-orders", 2).await;
    let invoices = unique("typed-invoices");
    let dead = unique("typed-dead");
    broker.create_topic(&invoices, 2).await.unwrap();
    broker.create_topic(&dead, 1).await.unwrap();
    let broken = write_orders(&broker, &orders).await;

    let group = unique("g-typed");
    let (source, control) = consumer::committable_source(
        broker.consumer_settings(&group),
        Subscription::topics([orders.as_str()]),
    )
    .unwrap();
    let letters = DeadLetters::new(dead.as_str());
    let out = invoices.clone();
    let sink = producer::committable_sink(broker.producer_settings(), CommitterSettings::default())
        .unwrap();
    let mut pipeline = DrainingControl::spawn(
        control,
        source
            .deserialize(Nullable(Utf8), Json)
            .take(ORDERS as usize)
            .map(move |m| Ok(letters.route(m?, |r| invoice(&out, r))))
            .forward(sink),
    );
    tokio::time::timeout(Duration::from_secs(60), pipeline.ended())
        .await
        .expect("the pipeline takes every order within 60 s");
    pipeline
        .drain_and_shutdown(Duration::from_secs(30))
        .await
        .expect("the pipeline succeeds");
    check(&broker, &orders, &invoices, &dead, &group, &broken, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_partitioned_pipeline_routes_malformed_records_and_commits_all() {
    let (broker, orders) = broker_with_topic("typed-porders", 3).await;
    let invoices = unique("typed-pinvoices");
    let dead = unique("typed-pdead");
    broker.create_topic(&invoices, 2).await.unwrap();
    broker.create_topic(&dead, 1).await.unwrap();
    let broken = write_orders(&broker, &orders).await;

    let group = unique("g-typed-p");
    let (mut partitions, control) = consumer::committable_partitioned_source(
        broker.consumer_settings(&group),
        Subscription::topics([orders.as_str()]),
    )
    .unwrap();
    let sink = producer::committable_sink(broker.producer_settings(), CommitterSettings::default())
        .unwrap();
    let letters = DeadLetters::new(dead.as_str());
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut tasks = Vec::new();
    // One task per partition; each counts what it handled.
    while tasks.len() < 3 {
        let (_tp, sub) = tokio::time::timeout(Duration::from_secs(30), partitions.next())
            .await
            .expect("three partitions assigned")
            .expect("a sub-stream")
            .unwrap();
        let (letters, out, sink, done) = (
            letters.clone(),
            invoices.clone(),
            sink.clone(),
            done_tx.clone(),
        );
        tasks.push(tokio::spawn(
            sub.deserialize(Nullable(Utf8), Json)
                .map(move |m| {
                    let _ = done.send(1);
                    Ok::<_, Error>(letters.route(m?, |r| invoice(&out, r)))
                })
                .forward(sink),
        ));
    }
    drop(sink);
    let mut handled = 0;
    while handled < ORDERS {
        handled += tokio::time::timeout(Duration::from_secs(60), done_rx.recv())
            .await
            .expect("every order handled within 60 s")
            .unwrap();
    }
    control
        .drain_and_shutdown(Duration::from_secs(30))
        .await
        .unwrap();
    for t in tasks {
        t.await
            .unwrap()
            .expect("each partition's pipeline succeeds");
    }
    check(&broker, &orders, &invoices, &dead, &group, &broken, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processing_failure_becomes_a_dead_letter_of_kind_processing() {
    let (broker, orders) = broker_with_topic("typed-proc", 1).await;
    let dead = unique("typed-proc-dead");
    broker.create_topic(&dead, 1).await.unwrap();
    let mut sink = producer::plain_sink(broker.producer_settings())
        .unwrap()
        .serializing(Utf8, Json);
    for id in 0..10u64 {
        sink.feed(
            TypedProducerRecord::<String, Order>::new(orders.as_str())
                .payload(Order { id, cents: id }),
        )
        .await
        .unwrap();
    }
    sink.close().await.unwrap();
    let group = unique("g-proc");
    let (source, control) = consumer::committable_source(
        broker.consumer_settings(&group),
        Subscription::topics([orders.as_str()]),
    )
    .unwrap();
    let letters = DeadLetters::new(dead.as_str());
    let out = producer::committable_sink(broker.producer_settings(), CommitterSettings::default())
        .unwrap();
    // Keyless records: `Nullable(Utf8)` makes the missing key `None`.
    let mut pipeline = DrainingControl::spawn(
        control,
        source
            .deserialize(Nullable(Utf8), Json)
            .take(10)
            .map(move |m| {
                Ok(letters.route(
                    m?,
                    |r: &reactive_kafka::TypedRecord<Option<String>, Order>| {
                        assert_eq!(r.key, None);
                        if r.payload.id == 4 {
                            Err(Error::processing(format!(
                                "order {} is refused",
                                r.payload.id
                            )))
                        } else {
                            Ok(None) // nothing to produce: only commit
                        }
                    },
                ))
            })
            .forward(out),
    );
    tokio::time::timeout(Duration::from_secs(60), pipeline.ended())
        .await
        .unwrap();
    pipeline
        .drain_and_shutdown(Duration::from_secs(30))
        .await
        .unwrap();
    let letters = read_all(&broker, &dead, 1).await;
    let kind = letters[0]
        .headers()
        .iter()
        .find(|h| h.key == DeadLetters::ERROR_KIND)
        .and_then(|h| h.value.clone())
        .unwrap();
    assert_eq!(&kind[..], b"Processing");
    let order: Order = letters[0].deserialize_payload(&Json).unwrap();
    assert_eq!(order.id, 4);
    let committed = committed_offsets(&broker, &group, &orders, 1).await;
    assert_eq!(committed[&0], Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_typed_source_hands_out_bad_records_without_ending() {
    let (broker, topic) = broker_with_topic("typed-plain", 1).await;
    let mut raw = producer::plain_sink(broker.producer_settings()).unwrap();
    raw.feed(ProducerRecord::new(topic.as_str()).key("a").payload("1"))
        .await
        .unwrap();
    raw.feed(
        ProducerRecord::new(topic.as_str())
            .key("b")
            .payload("not a number"),
    )
    .await
    .unwrap();
    raw.feed(ProducerRecord::new(topic.as_str()).key("c")) // a tombstone
        .await
        .unwrap();
    raw.feed(ProducerRecord::new(topic.as_str()).key("d").payload("4"))
        .await
        .unwrap();
    raw.close().await.unwrap();
    let (source, control) = consumer::plain_source(
        broker.consumer_settings(&unique("g-plain-typed")),
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let mut typed = source.deserialize(Utf8, Json);
    let mut seen = BTreeMap::new();
    for _ in 0..4 {
        let item = tokio::time::timeout(Duration::from_secs(30), typed.next())
            .await
            .unwrap()
            .unwrap()
            .expect("the stream itself does not fail");
        match item {
            Ok(r) => {
                let v: u64 = r.payload;
                seen.insert(r.key, Ok(v));
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Deserialize);
                let raw = e.record().expect("the raw record");
                seen.insert(
                    String::from_utf8(raw.key().unwrap().to_vec()).unwrap(),
                    Err(e.to_string()),
                );
            }
        }
    }
    control.shutdown().await.unwrap();
    assert_eq!(seen["a"], Ok(1));
    assert_eq!(seen["d"], Ok(4));
    assert!(
        matches!(&seen["b"], Err(m) if m.contains("payload")),
        "{seen:?}"
    );
    assert!(
        matches!(&seen["c"], Err(m) if m.contains("null")),
        "{seen:?}"
    );
}
