//! The quick start: produce 100,000 records, consume them with a committable
//! source, process each one, commit through the batched committer, drain and
//! shut down, then check that every record was consumed and committed.
//!
//! ```text
//! cargo run --release --example quickstart                                        # embedded broker
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run --release --example quickstart  # your broker
//! ```
//!
//! Exits 0 only if every record was consumed and its offset committed.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reactive_kafka::consumer::DrainingControl;
use reactive_kafka::testkit::{unique_name, TestBroker};
use reactive_kafka::{
    committer, consumer, producer, AutoOffsetReset, CommitterSettings, ConsumerSettings,
    ProducerRecord, ProducerSettings, Subscription,
};

const RECORDS: u64 = 100_000;
const PARTITIONS: i32 = 4;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> reactive_kafka::Result<bool> {
    // KAFKA_BOOTSTRAP_SERVERS if set, the embedded broker otherwise.
    let broker = TestBroker::start().await?;
    let brokers = broker.bootstrap_servers().to_owned();
    // Names of their own, so that runs against one broker do not meet.
    let topic = unique_name("quickstart-orders");
    let group = unique_name("quickstart-billing");
    broker.create_topic(&topic, PARTITIONS).await?;
    println!(
        "broker: {} ({})",
        brokers,
        if broker.is_embedded() {
            "embedded"
        } else {
            "external"
        }
    );

    // 1. Produce.
    let started = Instant::now();
    let mut sink = producer::plain_sink(ProducerSettings::new(&brokers))?;
    let mut expected: BTreeMap<i32, i64> = BTreeMap::new();
    for i in 0..RECORDS {
        let partition = (i % PARTITIONS as u64) as i32;
        *expected.entry(partition).or_default() += 1;
        let order = format!(r#"{{"order":{i},"cents":{}}}"#, 100 + i % 900);
        sink.feed(
            ProducerRecord::new(&topic)
                .partition(partition)
                .key(format!("customer-{}", i % 1000))
                .payload(order),
        )
        .await?;
    }
    sink.close().await?;
    let produce_secs = started.elapsed().as_secs_f64();
    println!(
        "produced: {RECORDS} records in {produce_secs:.2} s ({:.0} records/s)",
        RECORDS as f64 / produce_secs
    );

    // 2. Consume, process, commit after processing.
    let settings = ConsumerSettings::new(&brokers)
        .group_id(&group)
        .auto_offset_reset(AutoOffsetReset::Earliest);
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.clone()]))?;
    let consumed = Arc::new(AtomicU64::new(0));
    let revenue = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut pipeline = {
        let consumed = consumed.clone();
        let revenue = revenue.clone();
        let committer = committer::sink(CommitterSettings::default())?;
        // The control and the pipeline's task together: one call drains,
        // waits for the pipeline and returns its result with the report.
        DrainingControl::spawn(control, async move {
            source
                .map(move |msg| {
                    let msg = msg?;
                    // The processing step: read the amount out of the order.
                    let cents = msg
                        .record
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .and_then(|s| s.rsplit_once("\"cents\":"))
                        .and_then(|(_, rest)| rest.trim_end_matches('}').parse::<u64>().ok())
                        .unwrap_or(0);
                    revenue.fetch_add(cents, Ordering::Relaxed);
                    consumed.fetch_add(1, Ordering::Relaxed);
                    Ok(msg.offset)
                })
                .forward(committer)
                .await
        })
    };

    // 3. Run until everything was consumed, the process is asked to stop
    //    (Ctrl-C, SIGTERM) or the pipeline fails; then drain (commit what is
    //    in flight), wait for the pipeline and shut down: the one shutdown order.
    let all_consumed = async {
        while consumed.load(Ordering::Relaxed) < RECORDS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = all_consumed => {}
        _ = consumer::shutdown_signal() => println!("asked to stop: draining"),
        _ = pipeline.ended() => {}
        _ = tokio::time::sleep(Duration::from_secs(120)) => println!("gave up waiting after 120 s"),
    }
    let consume_secs = started.elapsed().as_secs_f64();
    let metrics_control = pipeline.control().clone();
    let report = match pipeline.drain_and_shutdown(Duration::from_secs(30)).await {
        Ok(drained) => drained.report,
        Err(e) => {
            eprintln!("pipeline failed: {}", e.report());
            return Ok(false);
        }
    };

    // 4. Summary.
    let consumed = consumed.load(Ordering::Relaxed);
    let committed: BTreeMap<i32, i64> = report
        .committed
        .iter()
        .map(|c| (c.tp.partition, c.offset))
        .collect();
    println!(
        "consumed: {consumed} records in {consume_secs:.2} s ({:.0} records/s), revenue {} cents",
        consumed as f64 / consume_secs,
        revenue.load(Ordering::Relaxed)
    );
    println!("committed offsets per partition (next offset to read):");
    for (partition, end) in &expected {
        println!(
            "  {topic}-{partition}: committed {} of {end}",
            committed
                .get(partition)
                .map_or("none".to_string(), |c| c.to_string())
        );
    }
    let metrics = metrics_control.metrics();
    println!(
        "commits: {}, offsets committed: {}, stale: {}",
        metrics.commits, metrics.offsets_committed, metrics.offsets_stale
    );
    let all_consumed = consumed == RECORDS;
    let all_committed = expected
        .iter()
        .all(|(p, end)| committed.get(p) == Some(end));
    if all_consumed && all_committed && report.complete {
        println!("OK: every record consumed and committed");
        Ok(true)
    } else {
        println!("FAILED: consumed {consumed} of {RECORDS}, all committed: {all_committed}, drain complete: {}", report.complete);
        Ok(false)
    }
}
