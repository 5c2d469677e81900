//! Consume, transform, produce with at-least-once delivery, and a dead-letter
//! topic for records that cannot be read.
//!
//! Orders (JSON) are read from `orders`, each valid one becomes an invoice
//! (JSON) on `invoices`, each unreadable one is copied byte for byte to
//! `orders-dead-letter` with headers saying where it came from and why
//! (`DeadLetters`). Every input offset is committed only after its output
//! record was delivered.
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
use reactive_kafka::consumer::{DeserializeExt, DrainingControl};
use reactive_kafka::producer::{self, DeadLetters, SerializeExt};
use reactive_kafka::serde::{Json, Utf8};
use reactive_kafka::testkit::{unique_name, TestBroker};
use reactive_kafka::{
    consumer, AutoOffsetReset, CommitterSettings, ConsumerSettings, ProducerSettings, Subscription,
    TypedProducerRecord,
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

    // Input: every 50th order is garbage (JSON an order's bytes cannot be).
    let mut sink = producer::plain_sink(ProducerSettings::new(&brokers))?.serializing(Utf8, Json);
    let mut garbage = 0;
    for id in 0..ORDERS {
        let record = TypedProducerRecord::new(orders.as_str()).key(id.to_string());
        sink.feed(if id % 50 == 7 {
            garbage += 1;
            record.payload(serde_json::json!(format!("broken order {id}")))
        } else {
            record.payload(serde_json::json!(Order {
                id,
                cents: 100 + id
            }))
        })
        .await?;
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
    // Each order becomes an invoice; an unreadable one goes, byte for byte,
    // to the dead-letter topic with headers saying where it came from and why.
    let (inv, letters) = (invoices.clone(), DeadLetters::new(dead_letters.as_str()));
    let mut pipeline = DrainingControl::spawn(
        control,
        source
            .deserialize(Utf8, Json)
            .take(ORDERS as usize)
            .map(move |msg| {
                Ok(
                    letters.route(msg?, |r: &reactive_kafka::TypedRecord<String, Order>| {
                        let tax = r.payload.cents / 10;
                        let invoice = Invoice {
                            order: r.payload.id,
                            total_cents: r.payload.cents + tax,
                            tax_cents: tax,
                        };
                        Ok(Some(
                            TypedProducerRecord::new(inv.as_str())
                                .key(r.key.clone())
                                .payload(invoice)
                                .serialize(&Utf8, &Json)?,
                        ))
                    }),
                )
            })
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
