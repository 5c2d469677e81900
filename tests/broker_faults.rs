//! Apache Kafka frozen under a pipeline (`scripts/kafka-local pause`, then
//! `resume`): routine outages cost nothing.
//!
//! Only meaningful on the real broker started by `scripts/kafka-local`
//! (CI runs it); skipped with a printed reason elsewhere.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reactive_kafka::testkit::{DeliveryChecker, Fault, TestBroker};
use reactive_kafka::{
    committer, AutoOffsetReset, CommitterSettings, ConsumerSettings, ProducerSettings, Subscription,
};
use support::*;

/// Runs `scripts/kafka-local <verb>` on a blocking thread; false when that
/// broker is not the one in use.
async fn kafka_local(verb: &'static str) -> bool {
    tokio::task::spawn_blocking(move || {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka-local");
        Command::new("bash")
            .args([script, verb])
            .status()
            .is_ok_and(|s| s.success())
    })
    .await
    .unwrap_or(false)
}

/// Thaws the broker if the test panics while it is frozen (a panic leaves
/// no async context: the guard starts the script and does not wait for it).
struct Thaw {
    armed: bool,
}

impl Drop for Thaw {
    fn drop(&mut self) {
        if self.armed {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka-local");
            let _ = Command::new("bash").args([script, "resume"]).spawn();
        }
    }
}

/// Ten records of a new topic taken by a committable source and not yet
/// committed.
struct Taken {
    broker: TestBroker,
    topic: String,
    group: String,
    offsets: Vec<reactive_kafka::CommittableOffset>,
    control: reactive_kafka::Control,
    /// Kept alive: dropping the source would close the consumer.
    _source: reactive_kafka::consumer::CommittableSource,
}

/// [`Taken`] on Apache Kafka from `scripts/kafka-local`, with a session
/// timeout longer than the tests' freezes (the member stays in its group);
/// `None` after printing why the test cannot run here.
async fn ten_taken(prefix: &str) -> Option<Taken> {
    let (broker, topic) = broker_with_topic(prefix, 1).await;
    if broker.is_embedded() || !kafka_local("status").await {
        println!("skipped: needs Apache Kafka from scripts/kafka-local (KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092), which the test freezes");
        return None;
    }
    produce_n(&broker, &topic, 10, 1).await;
    let group = unique(&format!("g-{prefix}"));
    let settings = broker
        .consumer_settings(&group)
        .property("session.timeout.ms", "60000")
        .property("heartbeat.interval.ms", "3000");
    let (mut source, control) = reactive_kafka::consumer::committable_source(
        settings,
        Subscription::topics([topic.as_str()]),
    )
    .unwrap();
    let taken = take_n(&mut source, 10, Duration::from_secs(30)).await;
    Some(Taken {
        broker,
        topic,
        group,
        offsets: taken.into_iter().map(|m| m.offset).collect(),
        control,
        _source: source,
    })
}

/// A commit sent while the broker is frozen completes when it thaws: the
/// default commit timeout (60 s) outlives the freeze, and no other timer of
/// ours fails a commit librdkafka holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_flight_survives_a_broker_freeze() {
    count_warnings();
    let _one_at_a_time = BROKER.lock().await;
    let Some(Taken {
        broker,
        topic,
        group,
        offsets,
        control,
        _source,
    }) = ten_taken("freeze").await
    else {
        return;
    };
    let freeze = Duration::from_secs(12);
    assert!(kafka_local("pause").await, "the broker freezes");
    let mut thaw = Thaw { armed: true };
    let started = Instant::now();
    let offsets = futures::stream::iter(offsets);
    let mut flow = committer::flow(CommitterSettings::default(), offsets).unwrap();
    let commit = tokio::spawn(async move { flow.next().await });
    tokio::time::sleep(freeze).await;
    assert!(kafka_local("resume").await, "the broker thaws");
    thaw.armed = false;
    let outcome = tokio::time::timeout(Duration::from_secs(60), commit)
        .await
        .expect("answered after the thaw")
        .unwrap()
        .expect("one outcome")
        .expect("committed, not failed by a timer");
    println!(
        "commit during a {freeze:?} freeze (default commit_timeout): acknowledged after {:?}",
        started.elapsed()
    );
    assert_eq!(outcome.committed[0].offset, 10);
    assert_eq!(
        committed_offsets(&broker, &group, &topic, 1).await[&0],
        Some(10)
    );
    control.shutdown().await.unwrap();
}

/// A commit to a frozen broker is bounded by the commit timeout: librdkafka
/// itself holds it without a bound (its request times out after
/// `socket.timeout.ms`, then it waits for the coordinator), so the
/// committer fails at the commit timeout naming it, before the broker thaws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_to_a_frozen_broker_fails_at_the_commit_timeout() {
    count_warnings();
    let _one_at_a_time = BROKER.lock().await;
    let Some(Taken {
        offsets,
        control,
        _source,
        ..
    }) = ten_taken("commit-timeout").await
    else {
        return;
    };
    let freeze = Duration::from_secs(15);
    assert!(kafka_local("pause").await, "the broker freezes");
    let mut thaw = Thaw { armed: true };
    let started = Instant::now();
    let offsets = futures::stream::iter(offsets);
    let mut flow = committer::flow(
        CommitterSettings::default().commit_timeout(Duration::from_secs(5)),
        offsets,
    )
    .unwrap();
    let outcome = tokio::time::timeout(freeze, flow.next()).await;
    let elapsed = started.elapsed();
    assert!(kafka_local("resume").await, "the broker thaws");
    thaw.armed = false;
    let err = outcome
        .expect("the commit failed while the broker was still frozen")
        .expect("an outcome")
        .expect_err("no broker answered");
    println!(
        "commit to a frozen broker (commit_timeout 5 s): failed after {elapsed:?}: {}",
        err.report()
    );
    assert!(err.is_timeout(), "{}", err.report());
    assert!(err.to_string().contains("commit_timeout"), "{err}");
    assert!(elapsed >= Duration::from_secs(5), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(7), "{elapsed:?}");
    let _ = control.shutdown().await;
}

/// One test at a time freezes or restarts the broker.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Warnings and errors logged by this process (every target), counted by
/// a tracing layer installed by [`count_warnings`].
static WARNINGS: AtomicUsize = AtomicUsize::new(0);

struct CountWarnings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            WARNINGS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Logs at warn level, and librdkafka's debug events of the clients that
/// ask for them with a `debug` property (`RUST_LOG` overrides), and counts
/// warnings. Every test of this file calls it first, before anything
/// installs another subscriber.
fn count_warnings() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,librdkafka=debug"));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .with(CountWarnings)
            .try_init();
    });
}

/// The broker restarted on the same data (`scripts/kafka-local restart`),
/// then, once more records flowed, frozen for 30 s (`pause`, `resume`).
fn outages() -> Vec<Fault> {
    vec![
        Fault::custom("broker restart", || async {
            let before = WARNINGS.load(Ordering::Relaxed);
            let started = Instant::now();
            assert!(kafka_local("restart").await, "the broker restarts");
            let during = WARNINGS.load(Ordering::Relaxed) - before;
            println!(
                "warnings logged during the restart ({:?}): {during}",
                started.elapsed()
            );
            assert!(during <= 30, "repeated warnings are rate-limited: {during}");
        }),
        Fault::custom("30 s broker freeze", || async {
            assert!(kafka_local("pause").await, "the broker freezes");
            let thaw = Thaw { armed: true };
            let before = WARNINGS.load(Ordering::Relaxed);
            let freeze = Duration::from_secs(30);
            tokio::time::sleep(freeze).await;
            let during = WARNINGS.load(Ordering::Relaxed) - before;
            assert!(kafka_local("resume").await, "the broker thaws");
            std::mem::forget(thaw);
            println!(
                "warnings logged during the {freeze:?} freeze: {during} ({:.2}/s)",
                during as f64 / freeze.as_secs_f64()
            );
            assert!(
                during <= 30,
                "at most one warning a second during an outage: {during}"
            );
        }),
    ]
}

/// After a long freeze the broker's controller may take a while to take it
/// back (it fences and re-registers itself): waits until a topic can be
/// created again, so that a test's set-up after another's faults does not
/// time out. (Not part of a fault: records and commits flow again before
/// it returns, and the fault's end is what their resumption is timed from.)
async fn serves_admin_requests_again() {
    let started = Instant::now();
    let broker = TestBroker::start().await.unwrap();
    loop {
        match broker.unique_topic("after-thaw", 1).await {
            Ok(_) => break,
            Err(e) if started.elapsed() < Duration::from_secs(120) => {
                println!("not serving admin requests yet: {e}");
            }
            Err(e) => panic!("the broker did not serve admin requests within 120 s: {e}"),
        }
    }
    println!("admin requests served after {:?}", started.elapsed());
}

/// Crate defaults everywhere: only the servers, the group (the checker's)
/// and where a new group starts.
fn defaults(broker: &TestBroker) -> ConsumerSettings {
    ConsumerSettings::new(broker.bootstrap_servers()).auto_offset_reset(AutoOffsetReset::Earliest)
}

/// Crate defaults but small buffers: librdkafka's prefetch budget 16 KiB
/// (default 8 MiB) and a fetch response at most as much (librdkafka keeps
/// `fetch.max.bytes` at least `message.max.bytes`, 1 MB by default), and
/// this crate's batches 100 records, one waiting (default 1000 and 8). The
/// defaults hold the checker's whole input, which the pipeline would then
/// process during the freeze, and nothing would show that fetching resumes
/// after it; with these (and the checker's 4 KiB input batches) about a
/// thousand records wait in the consumer when a fault begins.
fn defaults_small_buffers(broker: &TestBroker) -> ConsumerSettings {
    defaults(broker)
        .property("queued.max.messages.kbytes", "16")
        .property("message.max.bytes", "16384")
        .max_batch_records(100)
        .buffer_batches(1)
}

/// Crate defaults, for a consumer of `group` on `servers`.
fn defaults_for(servers: &str, group: &str) -> ConsumerSettings {
    ConsumerSettings::new(servers)
        .group_id(group)
        .auto_offset_reset(AutoOffsetReset::Earliest)
}

async fn real_broker_or_skip(what: &str) -> Option<TestBroker> {
    let broker = TestBroker::start().await.unwrap();
    if broker.is_embedded() || !kafka_local("status").await {
        println!("skipped: {what} needs Apache Kafka from scripts/kafka-local (KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092), which the test freezes and restarts");
        return None;
    }
    Some(broker)
}

fn assert_outages_cost_nothing(what: &str, report: &reactive_kafka::testkit::DeliveryReport) {
    println!("{what} through a 30 s freeze and a restart: {report}");
    for fault in &report.faults {
        println!(
            "{what}: after the {}, records flowed again after {:?}, commits after {:?}",
            fault.name, fault.resumed_after, fault.commits_resumed_after
        );
        assert!(
            fault.seen_before < report.records,
            "{} hit mid-stream: {report}",
            fault.name
        );
        for (what, after) in [
            ("records", fault.resumed_after),
            ("commits", fault.commits_resumed_after),
        ] {
            let after = after.unwrap_or_else(|| panic!("{what} flowed again: {report}"));
            assert!(
                after < Duration::from_secs(15),
                "{}: {what} flowed again after {after:?}",
                fault.name
            );
        }
    }
    assert!(
        report.exactly_once(),
        "no member died and each outage was shorter than the session timeout: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_commit_runs_through_a_broker_freeze_and_restart() {
    count_warnings();
    let _one_at_a_time = BROKER.lock().await;
    let Some(broker) = real_broker_or_skip("freezing and restarting the broker").await else {
        return;
    };
    serves_admin_requests_again().await;
    let checker = DeliveryChecker::new(&broker, 12_000, 4).await.unwrap();
    let checker = checker
        .with_consumer_settings(defaults_small_buffers(&broker))
        .time_limit(Duration::from_secs(180));
    let input = checker.input_topic().to_owned();
    let processed = checker.processed();
    let report = checker
        .run(
            |settings| {
                pipelines::consume_commit(
                    settings,
                    &input,
                    processed.clone(),
                    Duration::from_millis(2),
                )
            },
            &outages(),
        )
        .await
        .unwrap();
    assert_outages_cost_nothing("consume-commit", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_produce_commit_runs_through_a_broker_freeze_and_restart() {
    count_warnings();
    let _one_at_a_time = BROKER.lock().await;
    let Some(broker) = real_broker_or_skip("freezing and restarting the broker").await else {
        return;
    };
    serves_admin_requests_again().await;
    let checker = DeliveryChecker::new(&broker, 12_000, 4).await.unwrap();
    let checker = checker
        .with_consumer_settings(defaults_small_buffers(&broker))
        .time_limit(Duration::from_secs(180));
    let (input, output) = (
        checker.input_topic().to_owned(),
        checker.output_topic().to_owned(),
    );
    let servers = broker.bootstrap_servers().to_owned();
    // In a few runs an output partition's records failed with
    // `MessageTimedOut` after the faults (see the README's delivery
    // checker). The producer's idempotence, topic, metadata and broker
    // events are logged, shown only if the test fails, to tell what state
    // it was in.
    let producer_settings =
        ProducerSettings::new(&servers).property("debug", "eos,topic,metadata,broker");
    let report = checker
        .run(
            |settings| {
                pipelines::consume_produce_commit(
                    settings,
                    producer_settings.clone(),
                    &input,
                    &output,
                    Duration::from_millis(2),
                )
            },
            &outages(),
        )
        .await
        .unwrap();
    assert_outages_cost_nothing("consume-produce-commit", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_pipeline_under_a_supervisor_is_exactly_once_through_a_broker_restart() {
    use reactive_kafka::producer::Envelope;
    use reactive_kafka::supervision::{restart, RestartSettings};
    use reactive_kafka::transactional::{self, TransactionalSettings};
    use std::sync::Arc;

    count_warnings();
    let _one_at_a_time = BROKER.lock().await;
    let Some(broker) = real_broker_or_skip("restarting the broker").await else {
        return;
    };
    serves_admin_requests_again().await;
    const N: usize = 6_000;
    let input = broker.unique_topic("txn-restart-in", 4).await.unwrap();
    let output = broker.unique_topic("txn-restart-out", 4).await.unwrap();
    produce_n(&broker, &input, N, 4).await;
    let (group, id) = (unique("g-txn-restart"), unique("txn-restart"));
    let processed = Arc::new(AtomicUsize::new(0));
    let make = {
        let (servers, input, output, processed) = (
            broker.bootstrap_servers().to_owned(),
            input.clone(),
            output.clone(),
            processed.clone(),
        );
        let group = group.clone();
        move |_attempt: u64| {
            let settings = defaults_for(&servers, &group);
            let (source, control) =
                transactional::source(settings, Subscription::topics([input.as_str()]))?;
            let sink = transactional::sink(
                ProducerSettings::new(&servers),
                TransactionalSettings::new(id.clone()).timeout(Duration::from_secs(20)),
            )?;
            let (output, processed) = (output.clone(), processed.clone());
            Ok(reactive_kafka::consumer::DrainingControl::spawn(
                control,
                source
                    .then(move |m| {
                        let (output, processed) = (output.clone(), processed.clone());
                        async move {
                            let m = m?;
                            processed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            let record = reactive_kafka::ProducerRecord::new(output.as_str())
                                .key(m.record.key_bytes().unwrap_or_default())
                                .payload("x");
                            Ok(Envelope::message(record, m.offset))
                        }
                    })
                    .forward(sink),
            ))
        }
    };
    let supervisor = restart(
        RestartSettings::new(Duration::from_millis(200), Duration::from_secs(2), 0.2),
        make,
    );
    wait_until("1,500 processed", Duration::from_secs(60), || {
        processed.load(Ordering::Relaxed) >= 1_500
    })
    .await;
    assert!(kafka_local("restart").await, "the broker restarts");
    let out = tokio::time::timeout(Duration::from_secs(240), async {
        loop {
            let c = read_keys(&broker, &output, "read_committed").await;
            if c.len() >= N || c.values().any(|n| *n > 1) {
                return c;
            }
        }
    })
    .await
    .expect("the output is complete within 4 minutes");
    let restarts = supervisor.metrics();
    let ended = supervisor.drain_and_shutdown().await;
    println!(
        "through a broker restart: {} processed for {N} inputs, output {} keys, supervisor {restarts:?}, ended {:?}",
        processed.load(Ordering::Relaxed),
        out.len(),
        ended.as_ref().map(|_| ())
    );
    assert_eq!(out.len(), N, "every input's output");
    assert!(
        out.values().all(|n| *n == 1),
        "each exactly once: {:?}",
        out.iter().filter(|(_, n)| **n > 1).count()
    );
}
