//! A service that survives a flaky downstream: consume requests, call the
//! downstream for each (with a timeout, retries and a circuit breaker),
//! produce the answers, commit; the whole pipeline under a restart
//! supervisor.
//!
//! The downstream is simulated here: it fails for 3 s after its 400th call,
//! then recovers, then slows down for a while. The pipeline also crashes
//! once, on purpose, to show a restart. Prints the breaker's transitions
//! and the restarts, and checks itself: every request answered, every
//! offset committed.
//!
//! ```text
//! cargo run --example resilient_service                                        # embedded broker
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run --example resilient_service  # your broker
//! ```

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reactive_kafka::consumer::DrainingControl;
use reactive_kafka::producer::{self, DeadLetters, Envelope};
use reactive_kafka::supervision::{self, Backoff, CircuitBreaker, Processing, RestartSettings};
use reactive_kafka::testkit::{produce_n, unique_name, TestBroker};
use reactive_kafka::{
    consumer, AutoOffsetReset, CommittableMessage, CommitterSettings, ConsumerSettings, Error,
    ProducerRecord, Subscription,
};

const REQUESTS: usize = 2_000;

/// The simulated downstream: fails for 3 s after its 400th call, slows
/// down (40 ms a call) from its 1,200th to its 1,400th.
#[derive(Clone, Default)]
struct Downstream {
    calls: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

impl Downstream {
    async fn answer(&self, request: &CommittableMessage) -> Result<String, String> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n == 400 {
            self.down.store(true, Ordering::SeqCst);
            let down = self.down.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                down.store(false, Ordering::SeqCst);
            });
        }
        if self.down.load(Ordering::SeqCst) {
            return Err("503 service unavailable".into());
        }
        if (1_200..1_400).contains(&n) {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let key = request.record.key().unwrap_or_default();
        Ok(format!("answer to {}", String::from_utf8_lossy(key)))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("failed: {}", e.report());
            ExitCode::FAILURE
        }
    }
}

async fn run() -> reactive_kafka::Result<bool> {
    let broker = TestBroker::start().await?;
    let brokers = broker.bootstrap_servers().to_owned();
    let (requests, answers, dead) = (
        unique_name("requests"),
        unique_name("answers"),
        unique_name("requests-dead-letter"),
    );
    broker.create_topic(&requests, 4).await?;
    broker.create_topic(&answers, 4).await?;
    broker.create_topic(&dead, 1).await?;
    produce_n(&broker, &requests, REQUESTS, 4).await?;

    let downstream = Downstream::default();
    let breaker = CircuitBreaker::new(5, Duration::from_millis(500));
    let mut transitions = breaker.transitions();
    let started = Instant::now();
    tokio::spawn(async move {
        while transitions.changed().await.is_ok() {
            let state = *transitions.borrow_and_update();
            println!(
                "{:>6.2} s  breaker {state:?}",
                started.elapsed().as_secs_f64()
            );
        }
    });

    let group = unique_name("answering");
    let crashed = Arc::new(AtomicBool::new(false));
    let settings = RestartSettings::new(Duration::from_millis(200), Duration::from_secs(5), 0.2);
    let make = {
        let (brokers, requests, answers, dead, group) = (
            brokers.clone(),
            requests.clone(),
            answers.clone(),
            dead.clone(),
            group.clone(),
        );
        let (downstream, breaker, crashed) = (downstream.clone(), breaker.clone(), crashed.clone());
        // The test kit's settings (short session timeout): the embedded
        // broker lets a restarted run rejoin only after the session timeout
        // of the member that left.
        let consumer_settings = broker.consumer_settings(&group);
        move |run: u64| {
            println!(
                "{:>6.2} s  run {run} starts",
                started.elapsed().as_secs_f64()
            );
            let consumer = consumer_settings.clone();
            let (source, control) =
                consumer::committable_source(consumer, Subscription::topics([requests.as_str()]))?;
            let sink = producer::committable_sink(
                reactive_kafka::ProducerSettings::new(&brokers),
                CommitterSettings::default(),
            )?;
            let downstream = downstream.clone();
            let processing = Processing::from_fn(move |m: CommittableMessage| {
                let downstream = downstream.clone();
                async move { downstream.answer(&m).await }
            })
            .timeout(Duration::from_millis(500))
            .retries(
                3,
                Backoff::new(Duration::from_millis(20), Duration::from_millis(200), 0.2),
            )
            .circuit_breaker(breaker.clone())
            .concurrency(8);
            let (answers, letters, crashed) = (
                answers.clone(),
                DeadLetters::new(dead.as_str()),
                crashed.clone(),
            );
            let mut seen = 0;
            let pipeline = processing
                .run(source)
                .map(move |outcome| {
                    let outcome = outcome?;
                    seen += 1;
                    // One crash, on purpose: the supervisor restarts the pipeline.
                    if seen == 150 && !crashed.swap(true, Ordering::SeqCst) {
                        return Err(Error::processing("simulated crash"));
                    }
                    let offset = outcome.item.offset;
                    Ok(match outcome.result {
                        Ok(answer) => Envelope::message(
                            ProducerRecord::new(answers.as_str())
                                .key(outcome.item.record.key_bytes().unwrap_or_default())
                                .payload(answer),
                            offset,
                        ),
                        Err(e) => {
                            Envelope::message(letters.record(&outcome.item.record, &e), offset)
                        }
                    })
                })
                .forward(sink);
            Ok(DrainingControl::spawn(control, pipeline))
        }
    };
    let control = supervision::restart(settings, make);

    // Wait until every request is answered and committed (or 120 s).
    let answered = reactive_kafka::testkit::wait_until_async(
        "every request answered and committed",
        Duration::from_secs(120),
        || async {
            let committed = broker.committed_offsets(&group, &requests, 4).await;
            committed
                .is_ok_and(|c| c.values().map(|o| o.unwrap_or(0)).sum::<i64>() == REQUESTS as i64)
        },
    )
    .await;
    let metrics = control.metrics();
    control.drain_and_shutdown().await?;
    answered?;

    // Check: every request key on the answers topic (a restart may answer a
    // record twice: at-least-once), nothing dead-lettered, the breaker
    // opened and closed again.
    let settings = ConsumerSettings::new(&brokers)
        .group_id(unique_name("check"))
        .auto_offset_reset(AutoOffsetReset::Earliest);
    let (mut source, check) =
        consumer::plain_source(settings, Subscription::topics([answers.as_str()]))?;
    let mut keys = BTreeSet::new();
    let mut total = 0;
    while keys.len() < REQUESTS {
        match tokio::time::timeout(Duration::from_secs(30), source.next()).await {
            Ok(Some(Ok(r))) => {
                total += 1;
                keys.insert(r.key_bytes());
            }
            _ => break,
        }
    }
    check.shutdown().await?;
    println!(
        "requests: {REQUESTS}; answered: {} ({} answers, {} again after the restart); downstream calls: {}",
        keys.len(),
        total,
        total - keys.len(),
        downstream.calls.load(Ordering::SeqCst)
    );
    println!(
        "restarts: {}; breaker opened {} times; last failure: {}",
        metrics.restarts,
        breaker.times_opened(),
        metrics
            .last_failure
            .as_ref()
            .map_or("none".into(), |e| e.to_string())
    );
    let ok = keys.len() == REQUESTS && metrics.restarts == 1 && breaker.times_opened() >= 1;
    println!("{}", if ok { "OK" } else { "FAILED" });
    Ok(ok)
}
