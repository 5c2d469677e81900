//! Apache Kafka frozen under a pipeline (`scripts/kafka-local pause`, then
//! `resume`): routine outages cost nothing.
//!
//! Only meaningful on the real broker started by `scripts/kafka-local`
//! (CI runs it); skipped with a printed reason elsewhere.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reactive_kafka::{committer, CommitterSettings, Subscription};
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

/// A commit sent while the broker is frozen for longer than the commit
/// timeout completes when the broker thaws: no timer of ours fails a commit
/// the broker acknowledges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_flight_survives_a_broker_freeze_longer_than_the_commit_timeout() {
    let (broker, topic) = broker_with_topic("freeze", 1).await;
    if broker.is_embedded() || !kafka_local("status").await {
        println!("skipped: needs Apache Kafka from scripts/kafka-local (KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092), which the test freezes");
        return;
    }
    produce_n(&broker, &topic, 10, 1).await;
    let group = unique("g-freeze");
    // A session timeout longer than the freeze: the member stays in its group.
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
    let commit_timeout = Duration::from_secs(5);
    let freeze = Duration::from_secs(12);
    assert!(kafka_local("pause").await, "the broker freezes");
    let mut thaw = Thaw { armed: true };
    let started = Instant::now();
    let offsets = futures::stream::iter(taken.into_iter().map(|m| m.offset));
    let mut flow = committer::flow(
        CommitterSettings::default().commit_timeout(commit_timeout),
        offsets,
    )
    .unwrap();
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
        "commit during a {freeze:?} freeze (commit_timeout {commit_timeout:?}): acknowledged after {:?}",
        started.elapsed()
    );
    assert_eq!(outcome.committed[0].offset, 10);
    assert_eq!(
        committed_offsets(&broker, &group, &topic, 1).await[&0],
        Some(10)
    );
    control.shutdown().await.unwrap();
}
