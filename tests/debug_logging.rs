//! A consumer whose librdkafka logs at debug level. A binary of its own:
//! librdkafka makes debug lines only if the `log` facade lets them through
//! when the client is made, which depends on the process's one subscriber.

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::*;

/// Installs this binary's subscriber (before anything else can): librdkafka's
/// debug lines pass, and are written nowhere.
fn librdkafka_debug_lines_on() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,librdkafka=debug"))
        .with_writer(std::io::sink)
        .try_init();
}

/// librdkafka queues its log lines, commit results and rebalance events
/// on one queue. With debug logging on, lines arrive far faster than one
/// per driver pass: each must not cost a pass, or a commit's answer waits
/// behind the backlog until the commit times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_answered_promptly_while_librdkafka_logs_at_debug_level() {
    librdkafka_debug_lines_on();
    let (broker, topic) = broker_with_topic("debuglog", 2).await;
    produce_n(&broker, &topic, 200, 2).await;
    let settings = broker
        .consumer_settings(&unique("g-debuglog"))
        .property("debug", "all");
    let (source, control) = reactive_kafka::consumer::committable_source(
        settings,
        reactive_kafka::Subscription::topics([&topic]),
    )
    .expect("committable source");
    let mut source = Box::pin(source);
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(30), source.next())
            .await
            .expect("a record")
            .expect("not ended")
            .expect("a record");
        // Let debug lines pile up between commits, as in a quiet pipeline.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(20), m.offset.commit())
            .await
            .expect("the commit is answered within 20 s")
            .expect("the commit succeeds");
        latencies.push(started.elapsed());
    }
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(2),
        "commit latencies with debug logging: {latencies:?}"
    );
    tokio::time::timeout(Duration::from_secs(30), control.shutdown())
        .await
        .expect("the consumer shuts down within 30 s")
        .expect("a clean shutdown");
}
