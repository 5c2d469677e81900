//! Consume, transform, produce with at-least-once delivery, and a dead-letter
//! topic for records that cannot be read.
//!
//! Orders (JSON) are read from `orders`, each valid one becomes an invoice
//! (JSON) on `invoices`, each unreadable one is copied byte for byte to
//! `orders-dead-letter` with headers saying where it came from and why. Every
//! input offset is committed only after its output record was delivered.
//!
//! ```text
//! cargo run --example consume_transform_produce                                        # embedded broker
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run --example consume_transform_produce  # your broker
//! ```
//!
//! Exits 0 when every order went to exactly one of the two topics and every
//! input offset was committed.

use std::process::ExitCode;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reactive_kafka::consumer::DrainingControl;
use reactive_kafka::producer::{self, Envelope};
use reactive_kafka::serde::Json;
use reactive_kafka::testkit::{unique_name, TestBroker};
use reactive_kafka::{
    consumer, AutoOffsetReset, CommittableMessage, CommitterSettings, ConsumerSettings,
    ProducerRecord, ProducerSettings, Subscription,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    cents: u64,
}

#[derive(Debug, Serialize)]
struct Invoice {
    order: u64,
    total_cents: u64,
    tax_cents: u64,
}

const ORDERS: u64 = 1_000;

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

/// Turns one consumed order into the envelope to produce: an invoice, or the
/// raw record for the dead-letter topic. Either way the offset rides along.
fn transform(
    msg: CommittableMessage,
    invoices: &str,
    dead_letters: &str,
) -> reactive_kafka::Result<Envelope<reactive_kafka::CommittableOffset>> {
    let record = match msg.record.deserialize_payload::<Order>(&Json) {
        Ok(order) => {
            let tax = order.cents / 10;
            let invoice = Invoice {
                order: order.id,
                total_cents: order.cents + tax,
                tax_cents: tax,
            };
            ProducerRecord::new(invoices)
                .key(order.id.to_string())
                .serialize_payload(&Json, &invoice)?
        }
        Err(e) => {
            // Nothing is skipped: the original bytes go to the dead-letter topic.
            let bad = e.record().expect("deserialize errors carry the record");
            let mut dead = ProducerRecord::new(dead_letters)
                .header("error", e.to_string())
                .header("source-topic", bad.topic().to_owned())
                .header("source-partition", bad.partition().to_string())
                .header("source-offset", bad.offset().to_string());
            if let Some(payload) = bad.payload_bytes() {
                dead = dead.payload(payload);
            }
            if let Some(key) = bad.key_bytes() {
                dead = dead.key(key);
            }
            dead
        }
    };
    Ok(Envelope::message(record, msg.offset))
}

async fn run() -> reactive_kafka::Result<bool> {
    let broker = TestBroker::start().await?;
    let brokers = broker.bootstrap_servers().to_owned();
    let (orders, invoices, dead_letters) = (
        unique_name("orders"),
        unique_name("invoices"),
        unique_name("orders-dead-letter"),
    );
    for topic in [&orders, &invoices, &dead_letters] {
        broker.create_topic(topic, 2).await?;
    }

    // Input: every 50th order is garbage.
    let mut sink = producer::plain_sink(ProducerSettings::new(&brokers))?;
    let mut garbage = 0;
    for i in 0..ORDERS {
        let record = ProducerRecord::new(orders.as_str()).key(i.to_string());
        let record = if i % 50 == 7 {
            garbage += 1;
            record.payload(format!("{{broken order {i}"))
        } else {
            record.serialize_payload(
                &Json,
                &Order {
                    id: i,
                    cents: 100 + i,
                },
            )?
        };
        sink.feed(record).await?;
    }
    sink.close().await?;

    // The pipeline.
    let group = unique_name("invoicing");
    let settings = ConsumerSettings::new(&brokers)
        .group_id(&group)
        .auto_offset_reset(AutoOffsetReset::Earliest);
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([orders.clone()]))?;
    let sink = producer::committable_sink(
        ProducerSettings::new(&brokers),
        CommitterSettings::default(),
    )?;
    let (inv, dlq) = (invoices.clone(), dead_letters.clone());
    let mut pipeline = DrainingControl::spawn(
        control,
        source
            .take(ORDERS as usize)
            .map(move |msg| transform(msg?, &inv, &dlq))
            .forward(sink),
    );
    // Until the pipeline has taken every order, the process is asked to stop
    // (Ctrl-C, SIGTERM) or 120 s passed; then the one shutdown order: drain,
    // wait for the pipeline, close.
    tokio::select! {
        _ = pipeline.ended() => {}
        _ = consumer::shutdown_signal() => println!("asked to stop: draining"),
        _ = tokio::time::sleep(Duration::from_secs(120)) => println!("gave up waiting after 120 s"),
    }
    let report = match pipeline.drain_and_shutdown(Duration::from_secs(30)).await {
        Ok(drained) => drained.report,
        Err(e) => {
            eprintln!("pipeline failed: {}", e.report());
            return Ok(false);
        }
    };

    // Check: counts on both outputs, and the committed input offsets.
    let count = |topic: String, n: u64| {
        let brokers = brokers.clone();
        async move {
            let settings = ConsumerSettings::new(&brokers)
                .group_id(format!("check-{topic}"))
                .auto_offset_reset(AutoOffsetReset::Earliest);
            let (source, control) =
                consumer::plain_source(settings, Subscription::topics([topic]))?;
            let got = tokio::time::timeout(Duration::from_secs(30), source.take(n as usize).count())
                .await
                .unwrap_or(0) as u64;
            control.shutdown().await?;
            Ok::<u64, reactive_kafka::Error>(got)
        }
    };
    let invoiced = count(invoices.clone(), ORDERS - garbage).await?;
    let dead = count(dead_letters.clone(), garbage).await?;
    let committed: i64 = report.committed.iter().map(|c| c.offset).sum();
    println!("orders: {ORDERS} ({garbage} unreadable)");
    println!("invoices produced: {invoiced}, dead letters: {dead}");
    println!(
        "input offsets committed: {committed} (drain complete: {})",
        report.complete
    );
    let ok = invoiced == ORDERS - garbage
        && dead == garbage
        && committed == ORDERS as i64
        && report.complete;
    println!("{}", if ok { "OK" } else { "FAILED" });
    Ok(ok)
}
