//! Two members of one consumer group, each with a committable partitioned
//! source: a task per assigned partition processes its records and commits
//! them. The second member joins half-way, so partitions move between them;
//! a rebalance listener prints what each member is given and gives up.
//!
//! ```text
//! cargo run --release --example partitioned                                        # embedded broker
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run --release --example partitioned  # your broker
//! ```
//!
//! Exits 0 only if every record was processed and every partition's offset
//! committed to its end. Prints how many records were processed twice
//! (records a member had taken but not committed when its partition moved).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt, TryStreamExt};
use reactive_kafka::consumer::{
    self, CommittablePartitionedSource, DrainingControl, RebalanceListener,
};
use reactive_kafka::testkit::{unique_name, TestBroker};
use reactive_kafka::{
    committer, producer, AutoOffsetReset, CommitterSettings, ConsumerSettings, ProducerRecord,
    ProducerSettings, Subscription, TopicPartition,
};

const RECORDS: usize = 40_000;
const PARTITIONS: i32 = 6;

/// Prints the member's rebalances.
struct Announce(&'static str);

impl RebalanceListener for Announce {
    fn on_assigned(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        let p: Vec<i32> = partitions.iter().map(|tp| tp.partition).collect();
        println!("{}: assigned {p:?}", self.0);
        Vec::new() // start where the group committed
    }

    fn on_revoked(&self, partitions: &[TopicPartition]) {
        let p: Vec<i32> = partitions.iter().map(|tp| tp.partition).collect();
        println!(
            "{}: revoked {p:?} (their records in flight are committed)",
            self.0
        );
    }
}

/// Runs a member: every sub-stream in a task of its own, committing through
/// its own committer. `seen` counts how often each record was processed.
fn member(
    name: &'static str,
    settings: ConsumerSettings,
    topic: &str,
    seen: Arc<Mutex<Vec<u32>>>,
) -> reactive_kafka::Result<DrainingControl<()>> {
    let settings = settings.rebalance_listener(Announce(name));
    let (partitions, control): (CommittablePartitionedSource, consumer::Control) =
        consumer::committable_partitioned_source(settings, Subscription::topics([topic]))?;
    // One committer per partition; the first failure of any partition ends
    // the member's pipeline (and its consumer) with that error.
    let pipeline = DrainingControl::spawn(
        control,
        partitions.try_for_each_concurrent(None, move |(_tp, source)| {
            let seen = seen.clone();
            async move {
                source
                    .then(move |msg| {
                        let seen = seen.clone();
                        async move {
                            let msg = msg?;
                            // "Processing": note the record, now and then take a moment.
                            let i: usize =
                                std::str::from_utf8(msg.record.payload().unwrap_or_default())
                                    .ok()
                                    .and_then(|s| s.parse().ok())
                                    .unwrap_or(0);
                            seen.lock().unwrap()[i] += 1;
                            if i % 500 == 0 {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Ok(msg.offset)
                        }
                    })
                    .forward(committer::sink(CommitterSettings::default())?)
                    .await
                    .inspect_err(|e| eprintln!("{name}: a partition's pipeline failed: {e}"))
            }
        }),
    );
    Ok(pipeline)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("partitioned example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let broker = TestBroker::start().await?;
    let brokers = broker.bootstrap_servers().to_owned();
    let topic = unique_name("partitioned");
    broker.create_topic(&topic, PARTITIONS).await?;

    let mut sink = producer::plain_sink(ProducerSettings::new(&brokers))?;
    for i in 0..RECORDS {
        sink.feed(
            ProducerRecord::new(&topic)
                .partition((i % PARTITIONS as usize) as i32)
                .payload(i.to_string()),
        )
        .await?;
    }
    sink.close().await?;
    println!("produced {RECORDS} records to {PARTITIONS} partitions");

    let group = unique_name("partitioned");
    // The KIP-848 group protocol (Apache Kafka 4.0 or newer, and the embedded
    // broker): incremental rebalances run by the broker. Remove the property
    // for an older broker.
    let settings = ConsumerSettings::new(&brokers)
        .group_id(&group)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .property("group.protocol", "consumer");
    let seen = Arc::new(Mutex::new(vec![0u32; RECORDS]));
    let processed =
        |seen: &Mutex<Vec<u32>>| seen.lock().unwrap().iter().filter(|n| **n > 0).count();

    let first = member("first", settings.clone(), &topic, seen.clone())?;
    while processed(&seen) < RECORDS / 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("half processed: a second member joins");
    let second = member("second", settings, &topic, seen.clone())?;
    // Done when every partition's committed offset reached its end (record
    // i went to partition i % PARTITIONS).
    let parts = PARTITIONS as usize;
    let end = |p: i32| (RECORDS / parts + usize::from((p as usize) < RECORDS % parts)) as i64;
    let at_end = |committed: &BTreeMap<i32, Option<i64>>| {
        committed.len() == parts && committed.iter().all(|(p, c)| *c == Some(end(*p)))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut committed = BTreeMap::new();
    let wait_for_end = async {
        while tokio::time::Instant::now() < deadline {
            committed = broker.committed_offsets(&group, &topic, PARTITIONS).await?;
            if at_end(&committed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<_, reactive_kafka::Error>(())
    };
    tokio::select! {
        waited = wait_for_end => waited?,
        _ = consumer::shutdown_signal() => println!("asked to stop: draining"),
    }
    // The one shutdown order, per member: drain, wait for the pipeline, close.
    for pipeline in [first, second] {
        let drained = pipeline.drain_and_shutdown(Duration::from_secs(30)).await?;
        if !drained.report.complete {
            println!(
                "drain left offsets uncommitted: {:?}",
                drained.report.uncommitted
            );
        }
    }

    let counts = seen.lock().unwrap().clone();
    let missing = counts.iter().filter(|n| **n == 0).count();
    let twice: u32 = counts.iter().map(|n| n.saturating_sub(1)).sum();
    let all_committed = at_end(&committed);
    println!(
        "processed: {} of {RECORDS}, missing {missing}, processed twice {twice}",
        RECORDS - missing
    );
    println!("committed offsets: {committed:?}");
    Ok(missing == 0 && all_committed)
}
