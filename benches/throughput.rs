//! Consumer throughput: reactive-kafka's sources against a raw rdkafka
//! `BaseConsumer` poll loop with the same librdkafka settings, in one run.
//!
//! ```text
//! cargo bench --bench throughput -- --quick      # about a minute on 2 cores
//! cargo bench --bench throughput                  # more records, more repetitions
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo bench --bench throughput
//! ```
//!
//! Each case reads the same pre-produced topic from the beginning with a new
//! consumer group; the clock starts at the first record, so group joins are
//! not measured. Each case runs several times and the median is reported,
//! one line per case:
//!
//! `case=plain_source size=100 records=200000 records_per_s=... mb_per_s=... ratio_vs_raw=...`

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use reactive_kafka::testkit::TestBroker;
use reactive_kafka::{consumer, producer, ConsumerSettings, ProducerRecord, Subscription};

struct Plan {
    partitions: i32,
    records: usize,
    sizes: Vec<usize>,
    runs: usize,
}

/// The librdkafka settings every case shares.
fn shared_properties() -> Vec<(&'static str, &'static str)> {
    vec![
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("fetch.queue.backoff.ms", "10"),
        ("fetch.wait.max.ms", "50"),
        ("enable.partition.eof", "false"),
    ]
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

async fn produce(broker: &TestBroker, topic: &str, plan: &Plan, size: usize) {
    let mut sink = producer::plain_sink(broker.producer_settings().property("linger.ms", "20"))
        .expect("producer");
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    for i in 0..plan.records {
        sink.feed(
            ProducerRecord::new(topic)
                .partition((i % plan.partitions as usize) as i32)
                .payload(payload.clone()),
        )
        .await
        .expect("produce");
    }
    sink.close().await.expect("flush");
}

/// Checks that the broker kept every record (the embedded broker drops data
/// beyond 5 MiB per partition).
fn check_watermarks(servers: &str, topic: &str, plan: &Plan) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .expect("consumer");
    let mut total = 0;
    for p in 0..plan.partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        assert_eq!(
            low, 0,
            "partition {p} lost data (low watermark {low}): shrink the data set"
        );
        total += high;
    }
    assert_eq!(total as usize, plan.records, "records on the broker");
}

/// A raw rdkafka loop: poll, touch the payload, count.
fn raw_base_consumer(servers: &str, topic: &str, n: usize) -> (Duration, usize) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", servers)
        .set("group.id", unique("bench-raw"));
    for (k, v) in shared_properties() {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut count = 0;
    let mut bytes = 0;
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while count < n {
        assert!(
            Instant::now() < deadline,
            "raw loop stalled at {count} of {n}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                started.get_or_insert_with(Instant::now);
                bytes += m.payload().map_or(0, <[u8]>::len);
                count += 1;
            }
            Some(Err(e)) => panic!("raw consumer error: {e}"),
            None => {}
        }
    }
    let elapsed = started.expect("records").elapsed();
    drop(consumer);
    (elapsed, bytes)
}

async fn plain_source(servers: &str, topic: &str, n: usize) -> (Duration, usize) {
    let mut settings = ConsumerSettings::new(servers).group_id(unique("bench-plain"));
    for (k, v) in shared_properties() {
        settings = settings.property(k, v);
    }
    let (mut source, control) =
        consumer::plain_source(settings, Subscription::topics([topic])).expect("source");
    let mut count = 0;
    let mut bytes = 0;
    let mut started = None;
    let read = async {
        while count < n {
            let record = source.next().await.expect("stream ended").expect("record");
            started.get_or_insert_with(Instant::now);
            bytes += record.payload().map_or(0, <[u8]>::len);
            count += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .expect("plain source stalled");
    let elapsed = started.expect("records").elapsed();
    control.shutdown().await.expect("shutdown");
    (elapsed, bytes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            partitions: 8,
            records: 200_000,
            sizes: vec![100],
            runs: 3,
        }
    } else {
        Plan {
            partitions: 16,
            records: 400_000,
            sizes: vec![100, 1024],
            runs: 5,
        }
    };
    let broker = TestBroker::start().await.expect("broker");
    let servers = broker.bootstrap_servers().to_owned();
    println!(
        "# broker={} partitions={} records={} runs={} mode={}",
        if broker.is_embedded() {
            "embedded"
        } else {
            "external"
        },
        plan.partitions,
        plan.records,
        plan.runs,
        if quick { "quick" } else { "full" }
    );
    let mut rows = Vec::new();
    for &size in &plan.sizes {
        // Keep each partition under the embedded broker's 5 MiB limit.
        let records = if broker.is_embedded() {
            plan.records
                .min(plan.partitions as usize * (4 << 20) / (size + 64))
        } else {
            plan.records
        };
        let plan = Plan {
            records,
            sizes: vec![size],
            ..plan
        };
        let topic = unique(&format!("bench-{size}"));
        broker
            .create_topic(&topic, plan.partitions)
            .await
            .expect("topic");
        produce(&broker, &topic, &plan, size).await;
        {
            let (servers, topic) = (servers.clone(), topic.clone());
            let check_plan = Plan {
                sizes: vec![],
                ..plan
            };
            tokio::task::spawn_blocking(move || check_watermarks(&servers, &topic, &check_plan))
                .await
                .expect("watermarks");
        }

        let mut raw = Vec::new();
        let mut plain = Vec::new();
        // Interleave the cases so drift on the machine hits both alike.
        for _ in 0..plan.runs {
            let (s, t) = (servers.clone(), topic.clone());
            let n = plan.records;
            let (elapsed, bytes) =
                tokio::task::spawn_blocking(move || raw_base_consumer(&s, &t, n))
                    .await
                    .expect("raw loop");
            assert_eq!(bytes, n * size);
            raw.push(n as f64 / elapsed.as_secs_f64());
            let (elapsed, bytes) = plain_source(&servers, &topic, n).await;
            assert_eq!(bytes, n * size);
            plain.push(n as f64 / elapsed.as_secs_f64());
        }
        let raw_rate = median(raw);
        let plain_rate = median(plain);
        for (case, rate) in [
            ("raw_base_consumer", raw_rate),
            ("plain_source", plain_rate),
        ] {
            let line = format!(
                "case={case} size={size} records={} records_per_s={:.0} mb_per_s={:.1} ratio_vs_raw={:.2}",
                plan.records,
                rate,
                rate * size as f64 / 1e6,
                rate / raw_rate
            );
            println!("{line}");
            rows.push((case, size, rate, rate / raw_rate));
        }
    }
    println!();
    println!("| case | record size | records/s | MB/s | ratio vs raw |");
    println!("|---|---|---|---|---|");
    for (case, size, rate, ratio) in rows {
        println!(
            "| {case} | {size} B | {rate:.0} | {:.1} | {ratio:.2} |",
            rate * size as f64 / 1e6
        );
    }
}
