//! Helpers shared by the integration tests: broker choice, unique names,
//! producing and consuming known records, reading committed offsets.
#![allow(dead_code, unreachable_pub)]

pub mod pipelines;

use std::collections::BTreeMap;
use std::sync::Once;
use std::time::Duration;

use futures::{Stream, StreamExt};
use reactive_kafka::testkit::{self, TestBroker};

pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
    });
}

/// Kafka's API key of OffsetCommit requests (for the embedded broker's error injection).
pub const OFFSET_COMMIT: i16 = 8;
/// Kafka's API key of OffsetFetch requests (reading committed offsets).
pub const OFFSET_FETCH: i16 = 9;
/// Kafka's API key of Heartbeat requests.
pub const HEARTBEAT: i16 = 12;

/// The embedded broker of `broker`, or `None` after printing why the test
/// is skipped: `what` (fault injection) needs it, and
/// `KAFKA_BOOTSTRAP_SERVERS` named another broker.
pub fn embedded_or_skip<'a>(
    broker: &'a TestBroker,
    what: &str,
) -> Option<&'a reactive_kafka::testkit::EmbeddedKafka> {
    let embedded = broker.embedded();
    if embedded.is_none() {
        println!("skipped: {what} needs the embedded broker (KAFKA_BOOTSTRAP_SERVERS is set)");
    }
    embedded
}

/// A port on 127.0.0.1 that was free a moment ago: nothing listens on it.
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    testkit::unique_name(prefix)
}

/// The broker for this test and a fresh topic on it.
pub async fn broker_with_topic(prefix: &str, partitions: i32) -> (TestBroker, String) {
    init_tracing();
    let broker = TestBroker::start().await.expect("test broker");
    let topic = broker
        .unique_topic(prefix, partitions)
        .await
        .expect("create topic");
    (broker, topic)
}

/// Produces `n` records `key-i` / `value-i`, record `i` to partition
/// `i % partitions`, and waits for every acknowledgement.
pub async fn produce_n(broker: &TestBroker, topic: &str, n: usize, partitions: i32) {
    testkit::produce_n(broker, topic, n, partitions)
        .await
        .expect("produce");
}

/// Takes `n` items from a stream, failing the test if that takes longer than `limit`.
pub async fn take_n<S, T>(stream: &mut S, n: usize, limit: Duration) -> Vec<T>
where
    S: Stream<Item = reactive_kafka::Result<T>> + Unpin,
{
    match testkit::consume_n(stream, n, limit).await {
        Ok(items) => items,
        Err(e) => panic!("{e}"),
    }
}

/// Committed offsets of `group` for each partition of `topic` (`None` where
/// nothing is committed).
pub async fn committed_offsets(
    broker: &TestBroker,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Option<i64>> {
    broker
        .committed_offsets(group, topic, partitions)
        .await
        .expect("committed offsets")
}

/// The index `i` encoded in a test record's key `key-i`.
pub fn key_index(key: Option<&[u8]>) -> usize {
    let key = std::str::from_utf8(key.expect("key")).expect("utf-8 key");
    key.strip_prefix("key-")
        .expect("key-")
        .parse()
        .expect("index")
}

/// Asserts that the stream yields nothing more within half a second.
pub async fn assert_nothing_more<S: Stream + Unpin>(stream: &mut S) {
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stream.next())
            .await
            .is_err(),
        "more items than expected"
    );
}

/// A committable source of `group` on `topic` with the test settings.
pub fn committable(
    broker: &TestBroker,
    group: &str,
    topic: &str,
) -> (
    reactive_kafka::consumer::CommittableSource,
    reactive_kafka::Control,
) {
    reactive_kafka::consumer::committable_source(
        broker.consumer_settings(group),
        reactive_kafka::Subscription::topics([topic]),
    )
    .expect("committable source")
}

pub use reactive_kafka::testkit::GroupProtocol as Protocol;

/// Consumer settings for `group` with the given protocol.
pub fn group_settings(
    broker: &TestBroker,
    group: &str,
    protocol: Protocol,
) -> reactive_kafka::ConsumerSettings {
    broker.group_settings(group, protocol)
}

/// Waits until `done` holds, polling every 20 ms; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    if let Err(e) = testkit::wait_until(what, limit, done).await {
        panic!("{e}");
    }
}

/// Takes sub-streams until every one of `partitions` (of one topic) arrived.
pub async fn take_partitions<S>(
    source: &mut (impl Stream<Item = reactive_kafka::Result<(reactive_kafka::TopicPartition, S)>>
              + Unpin),
    partitions: i32,
) -> std::collections::BTreeMap<i32, S> {
    take_sub_streams(source, partitions as usize)
        .await
        .into_iter()
        .map(|(tp, sub)| (tp.partition, sub))
        .collect()
}

/// Takes sub-streams until `n` arrived, by topic and partition.
pub async fn take_sub_streams<S>(
    source: &mut (impl Stream<Item = reactive_kafka::Result<(reactive_kafka::TopicPartition, S)>>
              + Unpin),
    n: usize,
) -> std::collections::BTreeMap<reactive_kafka::TopicPartition, S> {
    let mut subs = std::collections::BTreeMap::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while subs.len() < n {
            let (tp, sub) = source.next().await.expect("more").expect("sub-stream");
            subs.insert(tp, sub);
        }
    })
    .await
    .expect("every partition assigned within 30 s");
    subs
}

/// Sets the embedded broker's three brokers' round-trip time (every request,
/// commits included, is answered that much later).
pub fn set_round_trip_time(embedded: &reactive_kafka::testkit::EmbeddedKafka, delay: Duration) {
    for id in 1..=3 {
        embedded.set_round_trip_time(id, delay);
    }
}

/// Starts a committable source on topic `t` that is expected to fail, and
/// returns the error its stream ends with, how long that took, and its
/// control. Panics if the stream yields a record, ends without an error, or
/// gives nothing within 60 s.
pub async fn start_failure(
    settings: reactive_kafka::ConsumerSettings,
) -> (reactive_kafka::Error, Duration, reactive_kafka::Control) {
    let started = std::time::Instant::now();
    let (mut source, control) = reactive_kafka::consumer::committable_source(
        settings,
        reactive_kafka::Subscription::topics(["t"]),
    )
    .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(60), source.next())
        .await
        .expect("the source must not hang")
        .expect("an error item")
        .unwrap_err();
    (err, started.elapsed(), control)
}

/// Every record of `topic` a reader with `isolation` (`read_committed` or
/// `read_uncommitted`) sees, counted by key, read until nothing new came
/// for 3 s (the first record may wait 20 s for the group join).
pub async fn read_keys(
    broker: &TestBroker,
    topic: &str,
    isolation: &str,
) -> BTreeMap<String, usize> {
    let settings = broker
        .consumer_settings(&unique("g-reader"))
        .property("isolation.level", isolation);
    let (mut source, control) = reactive_kafka::consumer::plain_source(
        settings,
        reactive_kafka::Subscription::topics([topic]),
    )
    .unwrap();
    let mut seen = BTreeMap::new();
    let mut wait = Duration::from_secs(20);
    while let Ok(Some(record)) = tokio::time::timeout(wait, source.next()).await {
        let record = record.unwrap();
        let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
        *seen.entry(key).or_insert(0) += 1;
        wait = Duration::from_secs(3);
    }
    control.shutdown().await.unwrap();
    seen
}
