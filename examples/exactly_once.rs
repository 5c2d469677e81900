//! Consume, transform, produce exactly once, through Kafka transactions,
//! with a crash in the middle.
//!
//! Payments are read from one topic and each becomes a ledger entry on
//! another; the entry and the payment's consumed offset are committed in
//! one transaction. The first instance of the service crashes half-way
//! (its runtime is shut down at once: no close, an open transaction with
//! records in it);
//! a second instance with the same transactional id and group takes over.
//!
//! ```text
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run --example exactly_once   # Apache Kafka: checks exactly once
//! cargo run --example exactly_once                                         # embedded broker: see below
//! ```
//!
//! On Apache Kafka it reads the ledger as a `read_committed` consumer and
//! exits 0 when every payment has exactly one entry, then shows what a
//! `read_uncommitted` reader sees: the crashed instance's aborted entries
//! too. The embedded broker runs the transaction API but neither emulates
//! `read_committed` (aborted records are delivered to every reader) nor
//! stores offsets committed in a transaction, so there it runs the same
//! pipeline, says so, and checks only that every payment has at least one
//! entry and the drain committed everything.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::consumer::DrainingControl;
use reactive_kafka::producer::Envelope;
use reactive_kafka::testkit::{produce_n, unique_name, TestBroker};
use reactive_kafka::transactional::{self, TransactionalSettings};
use reactive_kafka::{consumer, ProducerRecord, Subscription};

const PAYMENTS: usize = 5_000;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One instance of the service: payments in, ledger entries out, exactly once.
fn instance(
    broker: &TestBroker,
    group: &str,
    transactional_id: &str,
    payments: &str,
    ledger: &str,
    processed: Arc<AtomicUsize>,
) -> reactive_kafka::Result<DrainingControl<()>> {
    let (source, control) = transactional::source(
        broker.consumer_settings(group),
        Subscription::topics([payments]),
    )?;
    let sink = transactional::sink(
        broker.producer_settings(),
        // Stable per instance of the service, the same after a restart.
        TransactionalSettings::new(transactional_id).max_records(500),
    )?;
    let ledger = ledger.to_owned();
    Ok(DrainingControl::spawn(
        control,
        source
            .map(move |m| {
                let m = m?;
                processed.fetch_add(1, Ordering::Relaxed);
                let entry = format!(
                    "debit {}",
                    String::from_utf8_lossy(m.record.payload().unwrap_or_default())
                );
                let record = ProducerRecord::new(ledger.as_str())
                    .key(m.record.key_bytes().unwrap_or_default())
                    .payload(entry);
                Ok(Envelope::message(record, m.offset))
            })
            .forward(sink),
    ))
}

/// Entries per payment key a reader with `isolation` sees.
async fn read_ledger(
    broker: &TestBroker,
    ledger: &str,
    isolation: &str,
) -> reactive_kafka::Result<BTreeMap<String, usize>> {
    let settings = broker
        .consumer_settings(&unique_name("ledger-reader"))
        .property("isolation.level", isolation);
    let (mut source, control) = consumer::plain_source(settings, Subscription::topics([ledger]))?;
    let mut seen = BTreeMap::new();
    let mut wait = Duration::from_secs(20);
    while let Ok(Some(record)) = tokio::time::timeout(wait, source.next()).await {
        let record = record?;
        let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
        *seen.entry(key).or_insert(0) += 1;
        wait = Duration::from_secs(3);
    }
    control.shutdown().await?;
    Ok(seen)
}

async fn run() -> reactive_kafka::Result<bool> {
    let broker = TestBroker::start().await?;
    let embedded = broker.is_embedded();
    let (payments, ledger) = (unique_name("payments"), unique_name("ledger"));
    broker.create_topic(&payments, 2).await?;
    broker.create_topic(&ledger, 2).await?;
    produce_n(&broker, &payments, PAYMENTS, 2).await?;
    let (group, id) = (unique_name("ledger-writer"), unique_name("ledger-writer-0"));

    // The first instance crashes after 2,000 payments, two transactions
    // committed: it runs on a runtime of its own, which is shut down at
    // once, every task of it dropped where it stands (a process crash stops
    // them all, no task goes on committing).
    let crashing = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| reactive_kafka::Error::processing(format!("a runtime: {e}")))?;
    let processed = Arc::new(AtomicUsize::new(0));
    let first = {
        let _on = crashing.enter();
        instance(&broker, &group, &id, &payments, &ledger, processed.clone())?
    };
    while processed.load(Ordering::Relaxed) < 2_000 || first.control().metrics().commits < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let committed_by_first = first.control().metrics().commits;
    crashing.shutdown_background();
    drop(first);
    println!(
        "first instance killed after {} payments and {committed_by_first} committed transactions",
        processed.load(Ordering::Relaxed)
    );

    // The second takes over with the same transactional id and group.
    let processed = Arc::new(AtomicUsize::new(0));
    let second = instance(&broker, &group, &id, &payments, &ledger, processed.clone())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let lag: i64 = second.control().lag().iter().map(|(_, l)| *l).sum();
        if processed.load(Ordering::Relaxed) > 0
            && lag == 0
            && second.control().health().since_committed.is_some()
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!("the second instance did not catch up within 2 minutes");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = second.drain_and_shutdown(Duration::from_secs(30)).await?;
    println!(
        "second instance processed {} payments; drain complete: {}",
        processed.load(Ordering::Relaxed),
        drained.report.complete
    );

    // A read_committed reader sees a partition's records only once every
    // transaction before them is settled (committed or aborted), so read
    // again until every payment is there or a minute has passed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut reads = 0;
    let committed = loop {
        let committed = read_ledger(&broker, &ledger, "read_committed").await?;
        reads += 1;
        if committed.len() == PAYMENTS || tokio::time::Instant::now() > deadline {
            break committed;
        }
        println!(
            "read {reads}: {} payments visible so far; reading again",
            committed.len()
        );
    };
    let entries: usize = committed.values().sum();
    let missing = PAYMENTS - committed.len();
    let duplicated = committed.values().filter(|n| **n > 1).count();
    println!(
        "read_committed: {} payments, {entries} entries, {missing} missing, {duplicated} with more than one",
        committed.len()
    );
    if embedded {
        println!(
            "embedded broker: it neither emulates read_committed (the crashed instance's aborted entries are delivered too) nor stores offsets committed in a transaction (the second instance reads every payment again); run against Apache Kafka (KAFKA_BOOTSTRAP_SERVERS) to see exactly once"
        );
        return Ok(missing == 0 && drained.report.complete);
    }
    let uncommitted: usize = read_ledger(&broker, &ledger, "read_uncommitted")
        .await?
        .values()
        .sum();
    println!(
        "read_uncommitted: {uncommitted} entries (with the crashed instance's aborted ones that had reached the broker)"
    );
    let ok = missing == 0 && duplicated == 0 && entries == PAYMENTS && drained.report.complete;
    println!(
        "{}",
        if ok {
            "ok: every payment exactly once"
        } else {
            "NOT exactly once"
        }
    );
    Ok(ok)
}
