//! Supervision: restarts with backoff (schedule checked with a paused
//! clock, pipelines without a broker), and on both brokers a pipeline that
//! fails three times and then completes, fatal errors not retried, a drain
//! during the backoff, and a circuit breaker open longer than
//! `max.poll.interval.ms` while the consumer keeps its partitions.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reactive_kafka::consumer::{self, DrainingControl};
use reactive_kafka::supervision::{
    self, Backoff, BreakerState, CircuitBreaker, Processing, RestartSettings, RestartState,
};
use reactive_kafka::testkit::CommitRecorder;
use reactive_kafka::{
    committer, CommitterSettings, ConsumerSettings, Error, ErrorKind, Subscription,
};
use support::*;
use tokio::time::Instant;

/// A broker-free pipeline that ends with `result` after `lasting`.
fn pipeline(result: reactive_kafka::Result<u64>, lasting: Duration) -> DrainingControl<u64> {
    let recorder = CommitRecorder::new();
    DrainingControl::spawn(recorder.control(), async move {
        tokio::time::sleep(lasting).await;
        result
    })
}

fn failed(run: u64) -> reactive_kafka::Result<u64> {
    Err(Error::processing(format!("run {run} failed")))
}

#[tokio::test(start_paused = true)]
async fn failed_runs_are_restarted_after_backoffs_within_their_bounds() {
    let settings = RestartSettings::new(Duration::from_secs(1), Duration::from_secs(30), 0.2);
    let backoff = settings.backoff();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let seen = starts.clone();
    let began = Instant::now();
    let control = supervision::restart(settings, move |run| {
        seen.lock().unwrap().push(began.elapsed());
        Ok(pipeline(
            if run < 4 { failed(run) } else { Ok(42) },
            Duration::ZERO,
        ))
    });
    assert_eq!(control.join().await.unwrap(), Some(42));
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 5, "{starts:?}");
    for n in 0..4 {
        let waited = starts[n + 1] - starts[n];
        let (low, high) = backoff.bounds(n as u32);
        assert!(
            low <= waited && waited <= high + Duration::from_millis(5),
            "wait {n}: {waited:?} not in {low:?}..{high:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_healthy_run_resets_the_backoff() {
    let settings = RestartSettings::new(Duration::from_secs(1), Duration::from_secs(8), 0.0)
        .reset_after(Duration::from_secs(60));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let seen = starts.clone();
    let began = Instant::now();
    let control = supervision::restart(settings, move |run| {
        seen.lock().unwrap().push(began.elapsed());
        // Runs 0 to 2 fail at once, run 3 after 2 minutes, run 4 at once, run 5 completes.
        let lasting = if run == 3 {
            Duration::from_secs(120)
        } else {
            Duration::ZERO
        };
        Ok(pipeline(if run < 5 { failed(run) } else { Ok(1) }, lasting))
    });
    assert_eq!(control.join().await.unwrap(), Some(1));
    let s = starts.lock().unwrap().clone();
    let waits: Vec<u64> = (0..5).map(|n| (s[n + 1] - s[n]).as_secs()).collect();
    // 1, 2, 4; the run that lasted 120 s counts as healthy: 1 again (after its 120 s).
    assert_eq!(waits, [1, 2, 4, 121, 2], "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn too_many_restarts_within_the_window_give_up_with_the_last_failure() {
    let settings = RestartSettings::new(Duration::from_secs(1), Duration::from_secs(1), 0.0)
        .with_max_restarts(2, Duration::from_secs(60));
    let runs = Arc::new(AtomicU64::new(0));
    let counted = runs.clone();
    let control = supervision::restart(settings, move |run| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(pipeline(failed(run), Duration::ZERO))
    });
    let err = control.join().await.unwrap_err();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "the first run and two restarts"
    );
    assert!(err.to_string().contains("run 2 failed"), "{err}");
    assert!(err.to_string().contains("max_restarts"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_drain_during_the_backoff_returns_at_once_and_cancels_the_restart() {
    let settings = RestartSettings::new(Duration::from_secs(60), Duration::from_secs(60), 0.0);
    let runs = Arc::new(AtomicU64::new(0));
    let counted = runs.clone();
    let control = supervision::restart(settings, move |run| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(pipeline(failed(run), Duration::ZERO))
    });
    tokio::time::timeout(Duration::from_secs(1), async {
        while control.state() != RestartState::BackingOff {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("backing off");
    assert_eq!(control.metrics().restarts, 0);
    assert!(control.metrics().last_failure.is_some());
    let asked = Instant::now();
    assert_eq!(control.drain_and_shutdown().await.unwrap(), None);
    assert!(
        asked.elapsed() < Duration::from_millis(10),
        "{:?}",
        asked.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "no restart after the drain");
}

/// The committable pipeline the broker test supervises: processes records
/// (noting their keys), failing on runs before `fail_runs` at the 40th
/// record; it runs until drained.
fn make_pipeline(
    settings: ConsumerSettings,
    topic: String,
    fail_runs: u64,
    processed: Arc<Mutex<Vec<usize>>>,
) -> impl FnMut(u64) -> reactive_kafka::Result<DrainingControl<()>> {
    move |run| {
        let (source, control) =
            consumer::committable_source(settings.clone(), Subscription::topics([topic.as_str()]))?;
        let processed = processed.clone();
        let mut in_this_run = 0;
        let pipeline = source
            .map(move |m| {
                let m = m?;
                in_this_run += 1;
                if run < fail_runs && in_this_run == 40 {
                    return Err(Error::processing(format!("run {run}: downstream refused")));
                }
                processed.lock().unwrap().push(key_index(m.record.key()));
                Ok(m.offset)
            })
            .forward(committer::sink(CommitterSettings::default())?);
        Ok(DrainingControl::spawn(control, pipeline))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_that_fails_three_times_is_restarted_three_times_and_then_completes() {
    let (broker, topic) = broker_with_topic("restarted", 2).await;
    let n = 400;
    produce_n(&broker, &topic, n, 2).await;
    let group = unique("g-restarted");
    let processed = Arc::new(Mutex::new(Vec::new()));
    let settings = RestartSettings::new(Duration::from_millis(100), Duration::from_secs(1), 0.2);
    let seen = processed.clone();
    let consumer_settings = broker.consumer_settings(&group);
    let mut make = make_pipeline(consumer_settings, topic.clone(), 3, processed.clone());
    let control = supervision::restart(settings, move |run| {
        let pipeline = make(run)?;
        Ok(pipeline)
    });
    // Done once every key was processed and committed.
    let done = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let keys: BTreeSet<usize> = seen.lock().unwrap().iter().copied().collect();
            if keys.len() == n {
                let committed = committed_offsets(&broker, &group, &topic, 2).await;
                if committed.values().map(|o| o.unwrap_or(0)).sum::<i64>() == n as i64 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let metrics = control.metrics();
    assert!(
        done.is_ok(),
        "every record processed and committed: {metrics:?}"
    );
    assert_eq!(metrics.restarts, 3, "{metrics:?}");
    assert_eq!(control.state(), RestartState::Running);
    let last = metrics.last_failure.expect("a failure");
    assert!(last.to_string().contains("run 2"), "{last}");
    control.drain_and_shutdown().await.unwrap();
    let committed = committed_offsets(&broker, &group, &topic, 2).await;
    assert_eq!(committed[&0], Some(200));
    assert_eq!(committed[&1], Some(200));
    let processed = processed.lock().unwrap().clone();
    let keys: BTreeSet<usize> = processed.iter().copied().collect();
    assert_eq!(keys.len(), n, "nothing lost across restarts");
    println!(
        "{} records processed for {n} ({} again after restarts, read from the committed offsets)",
        processed.len(),
        processed.len() - n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_is_not_retried() {
    let runs = Arc::new(AtomicU64::new(0));
    let counted = runs.clone();
    let settings = RestartSettings::new(Duration::from_millis(10), Duration::from_millis(10), 0.0);
    let control = supervision::restart(settings, move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        // A setting librdkafka does not know: a configuration error, fatal.
        let settings = ConsumerSettings::new("127.0.0.1:9092")
            .group_id("g")
            .property("no.such.setting", "1");
        let (source, control) = consumer::plain_source(settings, Subscription::topics(["t"]))?;
        Ok(DrainingControl::spawn(control, async move {
            let _ = source.count().await;
            Ok(())
        }))
    });
    let err = tokio::time::timeout(Duration::from_secs(10), control.join())
        .await
        .expect("ends at once")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_backpressures_longer_than_max_poll_interval_and_the_group_holds() {
    let (broker, topic) = broker_with_topic("breaker", 2).await;
    let n = 200;
    produce_n(&broker, &topic, n, 2).await;
    let group = unique("g-breaker");
    let settings = broker
        .consumer_settings(&group)
        .property("max.poll.interval.ms", "6000");
    let (source, control) =
        consumer::committable_source(settings, Subscription::topics([topic.as_str()])).unwrap();

    // The downstream is away from the 50th call for 10 s (longer than
    // max.poll.interval.ms), then answers again.
    let calls = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let (c, d) = (calls.clone(), down.clone());
    let breaker = CircuitBreaker::new(3, Duration::from_secs(1));
    let processing = Processing::from_fn(move |m: reactive_kafka::CommittableMessage| {
        let (calls, down) = (c.clone(), d.clone());
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) == 50 {
                down.store(true, Ordering::SeqCst);
                let down = down.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    down.store(false, Ordering::SeqCst);
                });
            }
            if down.load(Ordering::SeqCst) {
                Err("downstream away")
            } else {
                Ok(key_index(m.record.key()))
            }
        }
    })
    .timeout(Duration::from_secs(2))
    .retries(
        2,
        Backoff::new(Duration::from_millis(50), Duration::from_millis(200), 0.2),
    )
    .circuit_breaker(breaker.clone())
    .concurrency(4);

    let mut transitions = breaker.transitions();
    let watched = tokio::spawn(async move {
        let mut seen = Vec::new();
        while transitions.changed().await.is_ok() {
            let s = *transitions.borrow_and_update();
            seen.push(s);
            if s == BreakerState::Closed {
                break;
            }
        }
        seen
    });
    let started = Instant::now();
    let keys = Arc::new(Mutex::new(Vec::new()));
    let recorded = keys.clone();
    let pipeline = processing
        .run(source.take(n))
        .map(move |outcome| {
            let outcome = outcome?;
            let key = outcome
                .result
                .expect("no record fails: they wait for the breaker");
            recorded.lock().unwrap().push(key);
            Ok(outcome.item.offset)
        })
        .forward(committer::sink(CommitterSettings::default()).unwrap());
    tokio::time::timeout(Duration::from_secs(90), pipeline)
        .await
        .expect("completes once the downstream is back")
        .unwrap();
    let took = started.elapsed();
    let transitions = watched.await.unwrap();
    println!("breaker: {transitions:?}; {n} records in {took:?}");
    assert_eq!(
        transitions.first(),
        Some(&BreakerState::Open),
        "{transitions:?}"
    );
    assert_eq!(
        transitions.last(),
        Some(&BreakerState::Closed),
        "{transitions:?}"
    );
    assert!(
        took >= Duration::from_secs(9),
        "the breaker held the stream: {took:?}"
    );

    let metrics = control.metrics();
    assert_eq!(
        metrics.revocations, 0,
        "the consumer kept its partitions: {metrics:?}"
    );
    let keys = keys.lock().unwrap().clone();
    assert_eq!(
        keys.len(),
        n,
        "each record once: none lost, none read again"
    );
    assert_eq!(keys.iter().copied().collect::<BTreeSet<_>>().len(), n);
    control.shutdown().await.unwrap();
    let committed = committed_offsets(&broker, &group, &topic, 2).await;
    assert_eq!(
        committed.values().map(|o| o.unwrap_or(0)).sum::<i64>(),
        n as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_while_a_failed_pipeline_waits_to_restart_returns_at_once() {
    let (broker, topic) = broker_with_topic("backing-off", 1).await;
    produce_n(&broker, &topic, 100, 1).await;
    let group = unique("g-backing-off");
    let processed = Arc::new(Mutex::new(Vec::new()));
    // Every run fails at its 40th record; the next would start a minute later.
    let make = make_pipeline(
        broker.consumer_settings(&group),
        topic.clone(),
        u64::MAX,
        processed,
    );
    let settings = RestartSettings::new(Duration::from_secs(60), Duration::from_secs(60), 0.0);
    let control = supervision::restart(settings, make);
    tokio::time::timeout(Duration::from_secs(60), async {
        while control.state() != RestartState::BackingOff {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first run fails and the supervisor backs off");
    let asked = Instant::now();
    assert_eq!(control.drain_and_shutdown().await.unwrap(), None);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "returned after {:?}",
        asked.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_factory_that_panics_is_reported_not_taken_for_success() {
    let settings = RestartSettings::new(Duration::from_secs(1), Duration::from_secs(1), 0.0);
    let control = supervision::restart(
        settings,
        |_run| -> reactive_kafka::Result<DrainingControl<u64>> { panic!("the factory broke") },
    );
    let err = control.join().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(err.to_string().contains("panic"), "{err}");
}
