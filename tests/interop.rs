//! Interoperability with Apache Kafka's Java client: records written by the
//! Java producer (every codec, idempotent and transactional producers,
//! headers, null keys and values, both timestamp types, a record near the
//! size limit) read back field for field; records written by the crate read
//! by the Java consumer; the murmur2 partitioner mapping keys as Java does;
//! committed offsets as Kafka's own `kafka-consumer-groups` tool shows them.
//!
//! The Java side is `scripts/interop/Interop.java` and Kafka's tools, run
//! through `scripts/kafka-local java` (which fetches Kafka's jars). Needs a
//! real broker (`KAFKA_BOOTSTRAP_SERVERS`), Java and Maven; CI runs it.
//! Skipped with a printed reason on the embedded broker.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reactive_kafka::{
    committer, consumer, AutoOffsetReset, CommitterSettings, ConsumerRecord, ConsumerSettings,
    ErrorKind, ProducerRecord, ProducerSettings, Subscription, Timestamp,
};
use serde::Deserialize;
use support::*;

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// One record as the Java side prints it (bytes in base64).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Line {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, Option<String>)>,
    timestamp: i64,
    timestamp_type: String,
    aborted: bool,
}

impl Line {
    /// The record as the crate read it, in the Java side's terms.
    fn of(r: &ConsumerRecord) -> Line {
        let (timestamp, timestamp_type) = match r.timestamp() {
            Timestamp::CreateTime(t) => (t, "create_time"),
            Timestamp::LogAppendTime(t) => (t, "log_append_time"),
            Timestamp::NotAvailable => (-1, "none"),
        };
        Line {
            topic: r.topic().to_owned(),
            partition: r.partition(),
            offset: r.offset(),
            key: r.key().map(base64),
            value: r.payload().map(base64),
            headers: r
                .headers()
                .iter()
                .map(|h| (h.key.clone(), h.value.as_deref().map(base64)))
                .collect(),
            timestamp,
            timestamp_type: timestamp_type.to_owned(),
            aborted: false,
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The real broker's address, or `None` after printing why the test
/// cannot run here.
fn real_broker(what: &str) -> Option<String> {
    match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(servers) if !servers.is_empty() => Some(servers),
        _ => {
            println!("skipped: {what} needs Apache Kafka and its Java client (KAFKA_BOOTSTRAP_SERVERS, Java and Maven; see scripts/kafka-local)");
            None
        }
    }
}

/// Runs a Java class or program with Kafka's jars; its standard output.
fn java(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka-local");
    let out = Command::new(script)
        .arg("java")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run scripts/kafka-local java");
    assert!(
        out.status.success(),
        "java {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Produces `records` with `settings`, then has the Java consumer read
/// them all back from `topic`.
async fn produced_then_read_by_java(
    servers: &str,
    settings: ProducerSettings,
    topic: &str,
    records: &[ProducerRecord],
) -> Vec<Line> {
    let mut sink = reactive_kafka::producer::plain_sink(settings).unwrap();
    for r in records {
        sink.feed(r.clone()).await.unwrap();
    }
    sink.close().await.unwrap();
    let n = records.len().to_string();
    let read = lines(&java(&[
        "scripts/interop/Interop.java",
        "read",
        servers,
        topic,
        &n,
        "read_uncommitted",
    ]));
    assert_eq!(
        read.len(),
        records.len(),
        "Java read every record of {topic}"
    );
    read
}

fn lines(output: &str) -> Vec<Line> {
    output
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// What the Java producer wrote, per topic (once per test binary).
struct Written {
    prefix: String,
    by_topic: BTreeMap<String, Vec<Line>>,
}

fn java_written(servers: &str) -> &'static Written {
    static WRITTEN: OnceLock<Written> = OnceLock::new();
    WRITTEN.get_or_init(|| {
        let prefix = unique("interop");
        let started = std::time::Instant::now();
        let output = java(&["scripts/interop/Interop.java", "write", servers, &prefix]);
        let mut by_topic: BTreeMap<String, Vec<Line>> = BTreeMap::new();
        for line in lines(&output) {
            by_topic.entry(line.topic.clone()).or_default().push(line);
        }
        println!(
            "the Java producer wrote {} records to {} topics in {:?}",
            by_topic.values().map(Vec::len).sum::<usize>(),
            by_topic.len(),
            started.elapsed()
        );
        Written { prefix, by_topic }
    })
}

fn sorted(mut lines: Vec<Line>) -> Vec<Line> {
    lines.sort_by_key(|l| (l.partition, l.offset));
    lines
}

/// Reads `n` records of `topic` from the beginning with the crate's plain
/// source (and `isolation.level`), then checks that no more come.
async fn crate_reads(servers: &str, topic: &str, n: usize, isolation: &str) -> Vec<Line> {
    let settings = ConsumerSettings::new(servers)
        .group_id(unique("g-interop"))
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .property("isolation.level", isolation);
    let (mut source, control) =
        consumer::plain_source(settings, Subscription::topics([topic])).unwrap();
    let mut read = Vec::new();
    while read.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(30), source.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{topic}: read {} of {n} records, then nothing for 30 s",
                    read.len()
                )
            });
        match next {
            Some(Ok(r)) => read.push(Line::of(&r)),
            Some(Err(e)) => panic!("{topic}: {}", e.report()),
            None => panic!("{topic}: the stream ended after {} records", read.len()),
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(2), source.next())
            .await
            .is_err(),
        "{topic}: more than {n} records"
    );
    control.shutdown().await.unwrap();
    sorted(read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_written_by_java_is_read_back_field_for_field() {
    init_tracing();
    let Some(servers) = real_broker("reading every codec written by Java") else {
        return;
    };
    let written = java_written(&servers);
    for codec in CODECS {
        let topic = format!("{}-codec-{codec}", written.prefix);
        let expected = sorted(written.by_topic[&topic].clone());
        if codec == "zstd" && !cfg!(feature = "zstd") {
            zstd_is_refused_with_its_coordinates(&servers, &topic).await;
            continue;
        }
        let read = crate_reads(&servers, &topic, expected.len(), "read_uncommitted").await;
        assert_eq!(read, expected, "{codec}");
        println!("{codec}: {} records read back equal", read.len());
    }
}

/// A build without zstd (`--no-default-features`) cannot decode zstd
/// records: the stream ends at once naming the partition and offset, it
/// does not stall.
async fn zstd_is_refused_with_its_coordinates(servers: &str, topic: &str) {
    let settings = ConsumerSettings::new(servers)
        .group_id(unique("g-interop"))
        .auto_offset_reset(AutoOffsetReset::Earliest);
    let (mut source, _control) =
        consumer::plain_source(settings, Subscription::topics([topic])).unwrap();
    let started = std::time::Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(30), source.next())
        .await
        .expect("a codec this build lacks must not stall the stream");
    let err = match next {
        Some(Err(e)) => e,
        Some(Ok(r)) => panic!("decoded a zstd record without zstd: {r:?}"),
        None => panic!("the stream ended without an error"),
    };
    println!(
        "zstd without the zstd feature: {:?}: {}",
        started.elapsed(),
        err.report()
    );
    assert_eq!(err.kind(), ErrorKind::Consume, "{err}");
    assert!(
        err.to_string().contains("`zstd` feature"),
        "says what is missing: {err}"
    );
    let at = err.coordinates().expect("coordinates");
    assert_eq!(at.topic, topic);
    assert!(at.partition.is_some() && at.offset.is_some(), "{at:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_nulls_timestamps_and_a_big_record_written_by_java_read_back_equal() {
    init_tracing();
    let Some(servers) = real_broker("reading record shapes written by Java") else {
        return;
    };
    let written = java_written(&servers);
    for suffix in ["shapes", "log-append", "big"] {
        let topic = format!("{}-{suffix}", written.prefix);
        let expected = sorted(written.by_topic[&topic].clone());
        let read = crate_reads(&servers, &topic, expected.len(), "read_uncommitted").await;
        assert_eq!(read, expected, "{suffix}");
        println!("{suffix}: {} records read back equal", read.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_transactions_are_invisible_to_read_committed_and_visible_to_read_uncommitted() {
    init_tracing();
    let Some(servers) = real_broker("reading Java's transactions") else {
        return;
    };
    let written = java_written(&servers);
    let topic = format!("{}-txn", written.prefix);
    let all = sorted(written.by_topic[&topic].clone());
    let committed: Vec<Line> = all.iter().filter(|l| !l.aborted).cloned().collect();
    assert_eq!((all.len(), committed.len()), (30, 20));
    let read = crate_reads(&servers, &topic, committed.len(), "read_committed").await;
    assert_eq!(read, committed, "read_committed");
    let unaborted = |lines: &[Line]| -> Vec<Line> {
        lines
            .iter()
            .map(|l| Line {
                aborted: false,
                ..l.clone()
            })
            .collect()
    };
    let read = crate_reads(&servers, &topic, all.len(), "read_uncommitted").await;
    assert_eq!(read, unaborted(&all), "read_uncommitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_by_the_crate_are_read_by_java_field_for_field() {
    init_tracing();
    let Some(servers) = real_broker("Java reading what the crate wrote") else {
        return;
    };
    let broker = reactive_kafka::testkit::TestBroker::start().await.unwrap();
    // Explicit create times: recent, or the broker's time retention deletes them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for codec in CODECS {
        if codec == "zstd" && !cfg!(feature = "zstd") {
            continue;
        }
        let topic = broker
            .unique_topic(&format!("from-rust-{codec}"), 2)
            .await
            .unwrap();
        let records: Vec<ProducerRecord> = (0..100)
            .map(|i| {
                let r = ProducerRecord::new(&topic)
                    .partition(i % 2)
                    .timestamp(now - 60_000 + i64::from(i));
                match i % 5 {
                    0 => r
                        .key(format!("key-{i}"))
                        .payload(format!("value-{i}-").repeat(20)),
                    1 => r.payload(format!("no key {i}")),
                    2 => r.key(format!("tombstone-{i}")),
                    3 => r
                        .key(format!("headers-{i}"))
                        .payload("v")
                        .header("trace", "a")
                        .header("trace", "b")
                        .header("empty", ""),
                    _ => r,
                }
            })
            .collect();
        let settings = ProducerSettings::new(&servers).property("compression.type", codec);
        let read = produced_then_read_by_java(&servers, settings, &topic, &records).await;
        for partition in 0..2 {
            let sent: Vec<&ProducerRecord> = records
                .iter()
                .filter(|r| r.partition_number() == Some(partition))
                .collect();
            let got: Vec<Line> = sorted(read.clone())
                .into_iter()
                .filter(|l| l.partition == partition)
                .collect();
            assert_eq!(got.len(), sent.len(), "{codec} partition {partition}");
            for (r, l) in sent.iter().zip(&got) {
                assert_eq!(
                    l.key,
                    r.key_bytes().as_deref().map(base64),
                    "{codec}: {l:?}"
                );
                assert_eq!(
                    l.value,
                    r.payload_bytes().as_deref().map(base64),
                    "{codec}: {l:?}"
                );
                let headers: Vec<(String, Option<String>)> = r
                    .headers()
                    .iter()
                    .map(|h| (h.key.clone(), h.value.as_deref().map(base64)))
                    .collect();
                assert_eq!(l.headers, headers, "{codec}: {l:?}");
                assert_eq!(l.timestamp, r.timestamp_millis().unwrap(), "{codec}: {l:?}");
                assert_eq!(l.timestamp_type, "create_time");
            }
        }
        println!(
            "{codec}: Java read the crate's {} records equal",
            records.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn murmur2_random_puts_keys_where_java_does_and_the_default_uses_crc32() {
    init_tracing();
    let Some(servers) = real_broker("comparing partitioners with Java") else {
        return;
    };
    let written = java_written(&servers);
    let java_keys = &written.by_topic[&format!("{}-keys", written.prefix)];
    let java_partition: BTreeMap<String, i32> = java_keys
        .iter()
        .map(|l| (l.key.clone().unwrap(), l.partition))
        .collect();
    assert!(
        java_partition
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 8,
        "Java spread the keys over all 8 partitions"
    );

    let broker = reactive_kafka::testkit::TestBroker::start().await.unwrap();
    // The same keys through the crate, with murmur2_random and with
    // librdkafka's default partitioner; Java reads where each key went.
    let mut placed = BTreeMap::new();
    for partitioner in ["murmur2_random", "default"] {
        let topic = broker.unique_topic("rust-keys", 8).await.unwrap();
        let mut settings = ProducerSettings::new(&servers);
        if partitioner != "default" {
            settings = settings.property("partitioner", partitioner);
        }
        let records: Vec<ProducerRecord> = (0..java_keys.len())
            .map(|i| {
                ProducerRecord::new(&topic)
                    .key(format!("k{i}"))
                    .payload("v")
            })
            .collect();
        let read = produced_then_read_by_java(&servers, settings, &topic, &records).await;
        let by_key: BTreeMap<String, i32> = read
            .iter()
            .map(|l| (l.key.clone().unwrap(), l.partition))
            .collect();
        placed.insert(partitioner, by_key);
    }
    assert_eq!(
        placed["murmur2_random"], java_partition,
        "murmur2_random places keys as Java does"
    );
    // The default hashes with CRC32 (consistent_random), as the README says.
    for i in 0..java_keys.len() {
        let key = format!("k{i}");
        let expected = (crc32(key.as_bytes()) % 8) as i32;
        assert_eq!(
            placed["default"][&base64(key.as_bytes())],
            expected,
            "key {key}"
        );
    }
    let differ = java_partition
        .iter()
        .filter(|(k, p)| placed["default"][*k] != **p)
        .count();
    println!(
        "murmur2_random: {} keys on the same partitions as the Java client's; the default partitioner put {differ} of them elsewhere (CRC32)",
        java_partition.len()
    );
    assert!(differ > 0);
}

/// CRC-32 (IEEE), as librdkafka's `consistent` partitioners hash keys.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_are_what_kafkas_consumer_groups_tool_shows() {
    init_tracing();
    let Some(servers) = real_broker("describing the crate's group with Kafka's tool") else {
        return;
    };
    let (broker, topic) = broker_with_topic("described", 2).await;
    produce_n(&broker, &topic, 100, 2).await;
    let group = unique("g-described");
    let settings = ConsumerSettings::new(&servers)
        .group_id(&group)
        .auto_offset_reset(AutoOffsetReset::Earliest);
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.as_str()])).unwrap();
    // 60 of 100, split between the partitions as the fetches came.
    tokio::time::timeout(
        Duration::from_secs(60),
        source
            .take(60)
            .map(|m| m.map(|m| m.offset))
            .forward(committer::sink(CommitterSettings::default()).unwrap()),
    )
    .await
    .expect("60 records within 60 s")
    .unwrap();
    control.shutdown().await.unwrap();

    let described = java(&[
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server",
        &servers,
        "--describe",
        "--group",
        &group,
    ]);
    // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    let mut shown = BTreeMap::new();
    for line in described.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 6 && cols[0] == group && cols[1] == topic {
            shown.insert(
                cols[2].parse::<i32>().unwrap(),
                (
                    cols[3].parse::<i64>().unwrap(),
                    cols[4].parse::<i64>().unwrap(),
                ),
            );
        }
    }
    let committed = committed_offsets(&broker, &group, &topic, 2).await;
    println!("kafka-consumer-groups: {shown:?}; the crate committed {committed:?}");
    assert_eq!(shown.len(), 2, "{described}");
    for p in 0..2 {
        assert_eq!(Some(shown[&p].0), committed[&p], "partition {p}");
        assert_eq!(shown[&p].1, 50, "partition {p}: log-end offset");
    }
    assert_eq!(shown[&0].0 + shown[&1].0, 60, "60 records committed in all");
}
